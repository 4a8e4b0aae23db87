package migrations_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestLatestMatchesNewestFile(t *testing.T) {
	versions, err := migrations.FileVersions()
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) == 0 {
		t.Fatal("no migration files embedded")
	}
	if got := versions[len(versions)-1]; got != migrations.Latest {
		t.Fatalf("migrations.Latest = %d, newest file is version %d", migrations.Latest, got)
	}
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDBWith(t, &pgtest.Options{Empty: true})
	ctx := context.Background()

	st, err := migrations.GetStatus(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 0 || !st.Pending() {
		t.Fatalf("fresh database status = %+v, want version 0 and pending", st)
	}
	if err := migrations.Up(ctx, db.URL); err != nil {
		t.Fatalf("up: %v", err)
	}
	if err := migrations.Up(ctx, db.URL); err != nil {
		t.Fatalf("second up (no change) must succeed: %v", err)
	}
	assertRelaySchema(t, db, true)
	if err := migrations.Down(ctx, db.URL); err != nil {
		t.Fatalf("down: %v", err)
	}
	assertRelaySchema(t, db, false)
	if err := migrations.Up(ctx, db.URL); err != nil {
		t.Fatalf("up again: %v", err)
	}
	assertRelaySchema(t, db, true)
	st, err = migrations.GetStatus(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != migrations.Latest || st.Dirty || st.Pending() {
		t.Fatalf("status after up = %+v", st)
	}
}

func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDBWith(t, &pgtest.Options{Empty: true})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = migrations.Up(context.Background(), db.URL)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent up %d: %v", i, err)
		}
	}
	assertRelaySchema(t, db, true)
}

func assertRelaySchema(t *testing.T, db *pgtest.DB, want bool) {
	t.Helper()
	var n int
	err := db.Pool.QueryRow(context.Background(), `
		SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'relay' AND c.relname IN
		('outbox', 'subscriptions', 'deliveries', 'delivery_attempts', 'settings', 'api_tokens',
		 'delivery_log', 'subscription_health', 'dead_letters')`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if want && n != 9 || !want && n != 0 {
		t.Fatalf("relay relations present = %d, want %v", n, want)
	}
	var fns int
	err = db.Pool.QueryRow(context.Background(), `
		SELECT count(DISTINCT p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'relay' AND p.proname IN ('emit', 'redeliver', 'replay', 'rotate_secret', 'pause', 'resume')`).Scan(&fns)
	if err != nil {
		t.Fatal(err)
	}
	if want && fns != 6 || !want && fns != 0 {
		t.Fatalf("relay functions present = %d, want %v", fns, want)
	}
}

// pgErr runs sql and returns the PostgreSQL error it must raise.
func pgErr(t *testing.T, db *pgtest.DB, sql string, args ...any) *pgconn.PgError {
	t.Helper()
	_, err := db.Pool.Exec(context.Background(), sql, args...)
	if err == nil {
		t.Fatalf("%s: succeeded, want an error", sql)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: %v is not a PostgreSQL error", sql, err)
	}
	return pe
}

func TestOutboxConstraints(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cases := []struct {
		name      string
		eventType any
		payload   any
		wantInMsg string
	}{
		{"empty event type", "", `{}`, "event_type must be lowercase dotted words"},
		{"uppercase event type", "Thread.Created", `{}`, "event_type must be lowercase dotted words"},
		{"trailing dot", "thread.", `{}`, "event_type must be lowercase dotted words"},
		{"space in event type", "thread created", `{}`, "event_type must be lowercase dotted words"},
		{"null event type", nil, `{}`, `null value in column "event_type"`},
		{"array payload", "thread.created", `[1,2]`, "payload must be a JSON object"},
		{"string payload", "thread.created", `"hello"`, "payload must be a JSON object"},
		{"null json payload", "thread.created", `null`, "payload must be a JSON object"},
		{"null payload", "thread.created", nil, `null value in column "payload"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pe := pgErr(t, db, `INSERT INTO relay.outbox (event_type, payload) VALUES ($1, $2::jsonb)`, tc.eventType, tc.payload)
			if !strings.Contains(pe.Message, tc.wantInMsg) && !strings.Contains(pe.ConstraintName, tc.wantInMsg) {
				t.Fatalf("error %q (constraint %q), want it to mention %q", pe.Message, pe.ConstraintName, tc.wantInMsg)
			}
		})
	}
	t.Run("good row", func(t *testing.T) {
		db.Exec(t, `INSERT INTO relay.outbox (event_type, owner, key, payload) VALUES ('thread.created', 'user-1', 'thread-9', '{"title": "Hi"}')`)
		db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) VALUES ('ping', '{}')`)
	})
}

func TestEmit(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	var id string
	if err := db.Pool.QueryRow(ctx, `SELECT relay.emit('thread.created', '{"title":"Hello"}', 'user-1', 'thread-1')::text`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	var n int
	var typ, owner, key, title string
	err := db.Pool.QueryRow(ctx, `SELECT count(*) OVER (), event_type, owner, key, payload->>'title' FROM relay.outbox WHERE event_id = $1`, id).
		Scan(&n, &typ, &owner, &key, &title)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || typ != "thread.created" || owner != "user-1" || key != "thread-1" || title != "Hello" {
		t.Fatalf("outbox row = %d %s %s %s %s", n, typ, owner, key, title)
	}
	pe := pgErr(t, db, `SELECT relay.emit('Bad Type', '{}')`)
	if !strings.Contains(pe.Message, "event_type must be lowercase dotted words") {
		t.Fatalf("emit bad type: %q", pe.Message)
	}
	pe = pgErr(t, db, `SELECT relay.emit('a.b', '[1]')`)
	if !strings.Contains(pe.Message, "payload must be a JSON object (got array)") {
		t.Fatalf("emit bad payload: %q", pe.Message)
	}
}

// TestEmitWithHeaders: the five-argument overload stores headers (trace
// context travels there), checks them, and leaves the older calls working.
func TestEmitWithHeaders(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	var id string
	if err := db.Pool.QueryRow(ctx, `SELECT relay.emit('order.paid', '{"amount": 1}', 'acme', NULL,
		jsonb_build_object('traceparent', $1::text, 'tracestate', 'vendor=x'))::text`, tp).Scan(&id); err != nil {
		t.Fatal(err)
	}
	var got, state string
	var owner string
	if err := db.Pool.QueryRow(ctx, `SELECT headers->>'traceparent', headers->>'tracestate', owner FROM relay.outbox WHERE event_id = $1`, id).
		Scan(&got, &state, &owner); err != nil {
		t.Fatal(err)
	}
	if got != tp || state != "vendor=x" || owner != "acme" {
		t.Fatalf("stored headers %q %q owner %q", got, state, owner)
	}
	// The older calls are not ambiguous with the new overload.
	for _, q := range []string{`SELECT relay.emit('a.b')`, `SELECT relay.emit('a.b', '{}')`, `SELECT relay.emit('a.b', '{}', 'o', 'k')`,
		`SELECT relay.emit(event_type => 'a.b', payload => '{}', owner => 'o')`, `SELECT relay.emit('a.b', '{}', NULL, NULL, NULL)`} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	pe := pgErr(t, db, `SELECT relay.emit('a.b', '{}', NULL, NULL, '{"traceparent": 1}')`)
	if !strings.Contains(pe.Message, "headers: the value of 'traceparent' must be a single-line string") {
		t.Fatalf("emit bad header value: %q", pe.Message)
	}
	pe = pgErr(t, db, `SELECT relay.emit('a.b', '{}', NULL, NULL, '["x"]')`)
	if !strings.Contains(pe.Message, "headers must be null or a JSON object") {
		t.Fatalf("emit bad headers: %q", pe.Message)
	}
}

func TestSubscriptionConstraints(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	const insert = `INSERT INTO relay.subscriptions (owner, name, url, event_types, format, timeout_ms, retry_schedule, headers, window_start, window_end, window_time_zone)
		VALUES ($1, $2, $3, $4, coalesce($5, 'json'), coalesce($6, 10000), coalesce($7::interval[], '{1 minute}'), coalesce($8::jsonb, '{}'), $9::time, $10::time, coalesce($11, 'UTC'))`
	type row struct {
		owner, name, url any
		types            any
		format           any
		timeout          any
		schedule         any
		headers          any
		ws, we, tz       any
	}
	good := func() row {
		return row{owner: "user-1", name: "Slack", url: "https://hooks.example.com/T000/B000", types: []string{"thread.created"}}
	}
	cases := []struct {
		name   string
		mutate func(*row)
		column string
		msg    string
	}{
		{"http url", func(r *row) { r.url = "http://hooks.example.com/x" }, "url", "url must use https://"},
		{"relative url", func(r *row) { r.url = "/hooks" }, "url", "url must be an absolute https:// URL"},
		{"ftp url", func(r *row) { r.url = "ftp://hooks.example.com/x" }, "url", "url must use https://"},
		{"url without host", func(r *row) { r.url = "https:///path" }, "url", "has no valid host name"},
		{"url with space", func(r *row) { r.url = "https://hooks.example .com/x" }, "url", "has no valid host name"},
		{"empty name", func(r *row) { r.name = " " }, "name", "name must not be empty"},
		{"empty owner", func(r *row) { r.owner = "" }, "owner", "owner must be null"},
		{"no event types", func(r *row) { r.types = []string{} }, "event_types", "event_types must list at least one"},
		{"bad pattern", func(r *row) { r.types = []string{"thread.*.x"} }, "event_types", `'thread.*.x' is not an event type or pattern`},
		{"uppercase pattern", func(r *row) { r.types = []string{"Thread"} }, "event_types", "is not an event type or pattern"},
		{"unknown format", func(r *row) { r.format = "xml" }, "format", "format must be one of json, slack, discord"},
		{"timeout too small", func(r *row) { r.timeout = 10 }, "timeout_ms", "timeout_ms must be between 1000 and 60000"},
		{"timeout too big", func(r *row) { r.timeout = 120000 }, "timeout_ms", "timeout_ms must be between 1000 and 60000"},
		{"negative retry", func(r *row) { r.schedule = "{-5 minutes}" }, "retry_schedule", "every delay must be a positive interval"},
		{"zero retry", func(r *row) { r.schedule = "{0 seconds}" }, "retry_schedule", "every delay must be a positive interval"},
		{"reserved header", func(r *row) { r.headers = `{"webhook-id": "x"}` }, "headers", "is set by relay"},
		{"non-string header", func(r *row) { r.headers = `{"x-team": 5}` }, "headers", "must be a single-line string"},
		{"half window", func(r *row) { r.ws = "09:00" }, "window_start", "must both be set"},
		{"bad time zone", func(r *row) { r.ws, r.we, r.tz = "09:00", "18:00", "Mars/Base" }, "window_time_zone", "is not a known time zone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.mutate(&r)
			pe := pgErr(t, db, insert, r.owner, r.name, r.url, r.types, r.format, r.timeout, r.schedule, r.headers, r.ws, r.we, r.tz)
			if !strings.Contains(pe.Message, tc.msg) {
				t.Fatalf("message %q, want it to contain %q", pe.Message, tc.msg)
			}
			if pe.ColumnName != tc.column {
				t.Fatalf("error names column %q, want %q", pe.ColumnName, tc.column)
			}
		})
	}
	t.Run("good rows", func(t *testing.T) {
		r := good()
		db.Exec(t, insert, r.owner, r.name, r.url, r.types, r.format, r.timeout, r.schedule, r.headers, r.ws, r.we, r.tz)
		db.Exec(t, insert, nil, "ops", "https://ops.example.com:8443/hook?x=1", []string{"*", "thread.*", "relay.subscription.failing"},
			"slack", 5000, "{}", `{"x-team": "core"}`, "22:00", "06:00", "Europe/Paris")
		// A bare insert with only the four columns works, secret generated.
		db.Exec(t, `INSERT INTO relay.subscriptions (owner, name, url, event_types) VALUES ('u', 'n', 'https://a.example.com/', '{a.b}')`)
	})
	t.Run("http allowed by settings", func(t *testing.T) {
		db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
		defer db.Exec(t, `UPDATE relay.settings SET allow_http = false`)
		db.Exec(t, `INSERT INTO relay.subscriptions (owner, name, url, event_types) VALUES ('u', 'dev', 'http://127.0.0.1:9000/hook', '{*}')`)
	})
}

func TestSecretDefaultAndUpdatedAt(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	var id int64
	var secret string
	var created, updated time.Time
	err := db.Pool.QueryRow(ctx, `INSERT INTO relay.subscriptions (owner, name, url, event_types)
		VALUES ('u', 'n', 'https://a.example.com/h', '{a.b}') RETURNING id, secret, created_at, updated_at`).Scan(&id, &secret, &created, &updated)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("secret %q lacks whsec_", secret)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(raw) != 32 {
		t.Fatalf("secret decodes to %d bytes (%v), want 32", len(raw), err)
	}
	var other string
	if err := db.Pool.QueryRow(ctx, `SELECT relay.generate_secret()`).Scan(&other); err != nil || other == secret {
		t.Fatalf("second secret %q equals the first or failed: %v", other, err)
	}
	// updated_at moves on a configuration update (a new transaction, so now() differs).
	var after time.Time
	if err := db.Pool.QueryRow(ctx, `UPDATE relay.subscriptions SET name = 'renamed' WHERE id = $1 RETURNING updated_at`, id).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if !after.After(updated) {
		t.Fatalf("updated_at %v did not move past %v", after, updated)
	}
}

func TestFunctionsAndViews(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	var subID, deliveryID int64
	var eventID string
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(db.Pool.QueryRow(ctx, `INSERT INTO relay.subscriptions (owner, name, url, event_types)
		VALUES ('u1', 'Make', 'https://hooks.example.com/abcdef?token=secret', '{thread.*}') RETURNING id`).Scan(&subID))
	must(db.Pool.QueryRow(ctx, `SELECT relay.emit('thread.created', '{"title":"x"}', 'u1')::text`).Scan(&eventID))
	must(db.Pool.QueryRow(ctx, `INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts, last_status_code, last_error, completed_at)
		VALUES ($1, $2, 'failed', 2, 500, 'HTTP 500', now()) RETURNING id`, eventID, subID).Scan(&deliveryID))
	db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, error)
		VALUES ($1, 1, now() - interval '1 minute', 12, 503, 'retry', 'HTTP 503'), ($1, 2, now(), 30, 500, 'failed', 'HTTP 500')`, deliveryID)

	// delivery_log: two rows, URL masked.
	rows, err := db.Pool.Query(ctx, `SELECT attempt, url, event_type, owner, subscription_name, status_code, outcome FROM relay.delivery_log WHERE delivery_id = $1 ORDER BY attempt`, deliveryID)
	must(err)
	type logRow struct {
		Attempt          int
		URL, Type, Owner string
		Sub              string
		Code             int
		Outcome          string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[logRow])
	must(err)
	if len(got) != 2 {
		t.Fatalf("delivery_log rows = %d, want 2", len(got))
	}
	want0 := logRow{1, "https://hooks.example.com/abc***", "thread.created", "u1", "Make", 503, "retry"}
	if got[0] != want0 || got[1].Code != 500 || got[1].Outcome != "failed" {
		t.Fatalf("delivery_log = %+v", got)
	}
	// dead_letters: the failed delivery with its last error.
	var dlErr string
	must(db.Pool.QueryRow(ctx, `SELECT last_error FROM relay.dead_letters WHERE delivery_id = $1`, deliveryID).Scan(&dlErr))
	if dlErr != "HTTP 500" {
		t.Fatalf("dead letter error %q", dlErr)
	}
	// subscription_health.
	var deliveries, failed, backlog int
	var p50 float64
	must(db.Pool.QueryRow(ctx, `SELECT deliveries_24h, failed_24h, backlog, p50_duration_ms FROM relay.subscription_health WHERE subscription_id = $1`, subID).
		Scan(&deliveries, &failed, &backlog, &p50))
	if deliveries != 1 || failed != 1 || backlog != 0 || p50 != 21 {
		t.Fatalf("health = %d deliveries, %d failed, %d backlog, p50 %v", deliveries, failed, backlog, p50)
	}
	// redeliver re-queues a failed delivery; unknown ids are refused.
	var st string
	must(db.Pool.QueryRow(ctx, `SELECT relay.redeliver($1)`, deliveryID).Scan(&st))
	if st != "pending" {
		t.Fatalf("redeliver status %q", st)
	}
	must(db.Pool.QueryRow(ctx, `SELECT backlog FROM relay.subscription_health WHERE subscription_id = $1`, subID).Scan(&backlog))
	if backlog != 1 {
		t.Fatalf("backlog after redeliver = %d", backlog)
	}
	if pe := pgErr(t, db, `SELECT relay.redeliver(987654)`); !strings.Contains(pe.Message, "delivery 987654 does not exist") {
		t.Fatalf("redeliver unknown: %q", pe.Message)
	}
	// replay re-queues failed deliveries in a range.
	db.Exec(t, `UPDATE relay.deliveries SET status = 'failed', completed_at = now() WHERE id = $1`, deliveryID)
	var n int
	must(db.Pool.QueryRow(ctx, `SELECT relay.replay($1, now() - interval '1 hour')`, subID).Scan(&n))
	if n != 1 {
		t.Fatalf("replay queued %d, want 1", n)
	}
	if pe := pgErr(t, db, `SELECT relay.replay($1, now(), now() - interval '1 hour')`, subID); !strings.Contains(pe.Message, "must be before until") {
		t.Fatalf("replay bad range: %q", pe.Message)
	}
	if pe := pgErr(t, db, `SELECT relay.replay(424242, now() - interval '1 hour')`); !strings.Contains(pe.Message, "subscription 424242 does not exist") {
		t.Fatalf("replay unknown sub: %q", pe.Message)
	}
	// rotate_secret keeps the old secret for the grace period.
	var oldSecret, newSecret string
	var prev int
	must(db.Pool.QueryRow(ctx, `SELECT secret FROM relay.subscriptions WHERE id = $1`, subID).Scan(&oldSecret))
	must(db.Pool.QueryRow(ctx, `SELECT relay.rotate_secret($1, '1 hour')`, subID).Scan(&newSecret))
	must(db.Pool.QueryRow(ctx, `SELECT jsonb_array_length(previous_secrets) FROM relay.subscriptions WHERE id = $1 AND secret = $2 AND previous_secrets->0->>'secret' = $3`,
		subID, newSecret, oldSecret).Scan(&prev))
	if prev != 1 || newSecret == oldSecret {
		t.Fatalf("rotation kept %d previous secrets", prev)
	}
	if pe := pgErr(t, db, `SELECT relay.rotate_secret($1, '-1 hour')`, subID); !strings.Contains(pe.Message, "grace must be between") {
		t.Fatalf("rotate bad grace: %q", pe.Message)
	}
	// pause and resume.
	db.Exec(t, `SELECT relay.pause('maintenance')`)
	var paused bool
	var reason *string
	must(db.Pool.QueryRow(ctx, `SELECT paused, paused_reason FROM relay.settings`).Scan(&paused, &reason))
	if !paused || reason == nil || *reason != "maintenance" {
		t.Fatalf("after pause: %v %v", paused, reason)
	}
	db.Exec(t, `SELECT relay.resume()`)
	must(db.Pool.QueryRow(ctx, `SELECT paused FROM relay.settings`).Scan(&paused))
	if paused {
		t.Fatal("still paused after resume")
	}
	if pe := pgErr(t, db, `UPDATE relay.settings SET absence_days = '{funday}'`); !strings.Contains(pe.Message, `"funday" is not a weekday name`) {
		t.Fatalf("settings absence: %q", pe.Message)
	}
	if pe := pgErr(t, db, `INSERT INTO relay.settings (id) VALUES (false)`); !strings.Contains(pe.Message, "exactly one row") && !strings.Contains(pe.ConstraintName, "exactly one row") {
		t.Fatalf("second settings row: %q %q", pe.Message, pe.ConstraintName)
	}
	// event_type_candidates drives matching.
	var cands []string
	must(db.Pool.QueryRow(ctx, `SELECT relay.event_type_candidates('a.b.c')`).Scan(&cands))
	if strings.Join(cands, ",") != "*,a.*,a.b.*,a.b.c" {
		t.Fatalf("candidates %v", cands)
	}
}
