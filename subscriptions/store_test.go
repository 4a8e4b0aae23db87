package subscriptions_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/subscriptions"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ptr[T any](v T) *T { return &v }

func newStore(t *testing.T) (*subscriptions.Store, *pgtest.DB) {
	t.Helper()
	db := pgtest.NewDB(t)
	return subscriptions.NewStore(db.Pool), db
}

func mustCreate(t *testing.T, st *subscriptions.Store, p subscriptions.CreateParams) subscriptions.Subscription {
	t.Helper()
	s, err := st.Create(context.Background(), p)
	if err != nil {
		t.Fatalf("create %q: %v", p.Name, err)
	}
	return s
}

func wantValidation(t *testing.T, err error, field, msg string) {
	t.Helper()
	var ve *subscriptions.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T), want a *ValidationError on %s", err, err, field)
	}
	if ve.Field != field || !strings.Contains(ve.Message, msg) {
		t.Fatalf("validation error on %q: %q, want %q containing %q", ve.Field, ve.Message, field, msg)
	}
}

func TestCreateDefaultsAndGet(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := context.Background()
	s := mustCreate(t, st, subscriptions.CreateParams{
		Owner: ptr("alice"), Name: "Slack", URL: "https://hooks.example.com/services/abc", EventTypes: []string{"thread.*"},
	})
	if s.ID == 0 || *s.Owner != "alice" || !s.Enabled || s.Format != "json" || s.TimeoutMS != 10000 ||
		s.MaxInFlight != 8 || s.WindowStart != nil || s.Window() != nil || s.WindowTimeZone != "UTC" || len(s.Headers) != 0 {
		t.Fatalf("defaults: %+v", s)
	}
	if want := subscriptions.DefaultRetrySchedule; len(s.RetrySchedule) != 3 || s.RetrySchedule[0] != want[0] || s.RetrySchedule[2] != want[2] {
		t.Fatalf("retry schedule %v", s.RetrySchedule)
	}
	if !strings.HasPrefix(s.Secret, "whsec_") || len(s.PreviousSecrets) != 0 {
		t.Fatalf("secret %q previous %v", s.Secret, s.PreviousSecrets)
	}
	got, err := st.Get(ctx, s.ID, ptr("alice"))
	if err != nil || got.Secret != s.Secret || got.Name != "Slack" {
		t.Fatalf("get as owner: %+v %v", got, err)
	}
	if _, err := st.Get(ctx, s.ID, nil); err != nil {
		t.Fatalf("get as operator: %v", err)
	}
	if _, err := st.Get(ctx, s.ID, ptr("bob")); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("get as another owner: %v, want ErrNotFound", err)
	}
	if _, err := st.Get(ctx, 987654, nil); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
}

func TestCreateEveryField(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	secret := "whsec_" + strings.Repeat("QUJD", 11)
	s := mustCreate(t, st, subscriptions.CreateParams{
		Name: "ops", URL: "https://ops.example.com:8443/h?x=1", EventTypes: []string{"*", "relay.subscription.failing"},
		Secret: secret, Enabled: ptr(false), Format: "slack", Template: ptr("New {{type}}"),
		Headers: map[string]string{"X-Team": "core"}, TimeoutMS: 5000, RetrySchedule: []time.Duration{},
		MaxInFlight: 2, Window: &subscriptions.Window{Start: "22:00", End: "06:00:30", TimeZone: "Europe/Paris"},
		IgnoreGlobalWindow: true,
	})
	w := s.Window()
	if s.Owner != nil || s.Secret != secret || s.Enabled || s.Format != "slack" || *s.Template != "New {{type}}" ||
		s.Headers["X-Team"] != "core" || s.TimeoutMS != 5000 || len(s.RetrySchedule) != 0 || s.RetrySchedule == nil ||
		s.MaxInFlight != 2 || w == nil || w.Start != "22:00" || w.End != "06:00:30" || w.TimeZone != "Europe/Paris" || !s.IgnoreGlobalWindow {
		t.Fatalf("created %+v window %+v", s, w)
	}
}

func TestCreateValidation(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	ctx := context.Background()
	base := func() subscriptions.CreateParams {
		return subscriptions.CreateParams{Name: "n", URL: "https://a.example.com/", EventTypes: []string{"a.b"}}
	}
	// Caught in Go.
	p := base()
	p.Format = "xml"
	_, err := st.Create(ctx, p)
	wantValidation(t, err, "format", "format must be one of")
	// Caught by the SQL trigger: the PgError's column becomes the field.
	for _, c := range []struct{ url, field, msg string }{
		{"http://a.example.com/", "url", "url must use https://"},
		{"https:///path", "url", "has no valid host name"},
		{"ftp://a.example.com/", "url", "url must use https://"},
	} {
		p := base()
		p.URL = c.url
		_, err := st.Create(ctx, p)
		wantValidation(t, err, c.field, c.msg)
	}
	p = base()
	p.Window = &subscriptions.Window{Start: "09:00", End: "18:00", TimeZone: "Mars/Base"}
	_, err = st.Create(ctx, p)
	wantValidation(t, err, "window_time_zone", "is not a known time zone")
	// http:// passes when the settings allow it.
	db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
	p = base()
	p.URL = "http://127.0.0.1:9/hook"
	mustCreate(t, st, p)
}

func TestListUpdateDelete(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := context.Background()
	a1 := mustCreate(t, st, subscriptions.CreateParams{Owner: ptr("alice"), Name: "a1", URL: "https://a.example.com/1", EventTypes: []string{"thread.*"}})
	a2 := mustCreate(t, st, subscriptions.CreateParams{Owner: ptr("alice"), Name: "a2", URL: "https://a.example.com/2", EventTypes: []string{"message.sent"}, Enabled: ptr(false)})
	b1 := mustCreate(t, st, subscriptions.CreateParams{Owner: ptr("bob"), Name: "b1", URL: "https://b.example.com/1", EventTypes: []string{"*"}})
	op := mustCreate(t, st, subscriptions.CreateParams{Name: "op", URL: "https://o.example.com/1", EventTypes: []string{"*"}})

	ids := func(subs []subscriptions.Subscription, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range subs {
			names = append(names, s.Name)
		}
		return strings.Join(names, ",")
	}
	if got := ids(st.List(ctx, subscriptions.ListParams{})); got != "a1,a2,b1,op" {
		t.Fatalf("operator list %s", got)
	}
	if got := ids(st.List(ctx, subscriptions.ListParams{Owner: ptr("alice")})); got != "a1,a2" {
		t.Fatalf("alice list %s", got)
	}
	if got := ids(st.List(ctx, subscriptions.ListParams{Enabled: ptr(true)})); got != "a1,b1,op" {
		t.Fatalf("enabled list %s", got)
	}
	if got := ids(st.List(ctx, subscriptions.ListParams{EventType: "thread.created"})); got != "a1,b1,op" {
		t.Fatalf("matching thread.created %s", got)
	}
	if got := ids(st.List(ctx, subscriptions.ListParams{Limit: 1})); got != "a1" {
		t.Fatalf("limit %s", got)
	}

	// Update: only set fields change.
	u, err := st.Update(ctx, a1.ID, ptr("alice"), subscriptions.UpdateParams{
		Name: ptr("renamed"), EventTypes: &[]string{"thread.created", "thread.archived"},
		RetrySchedule: &[]time.Duration{30 * time.Second}, Window: &subscriptions.Window{Start: "08:00", End: "18:00"},
		Headers: &map[string]string{"X-A": "b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "renamed" || u.URL != a1.URL || len(u.EventTypes) != 2 || u.RetrySchedule[0] != 30*time.Second ||
		u.Window() == nil || u.Window().Start != "08:00" || u.Headers["X-A"] != "b" || !u.UpdatedAt.After(a1.UpdatedAt) || u.Secret != a1.Secret {
		t.Fatalf("updated %+v", u)
	}
	u, err = st.Update(ctx, a1.ID, nil, subscriptions.UpdateParams{Window: &subscriptions.Window{}, Template: ptr("")})
	if err != nil || u.Window() != nil || u.Template != nil {
		t.Fatalf("clearing window: %+v %v", u, err)
	}
	if _, err := st.Update(ctx, a1.ID, ptr("bob"), subscriptions.UpdateParams{Name: ptr("stolen")}); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("update by another owner: %v", err)
	}
	_, err = st.Update(ctx, a1.ID, nil, subscriptions.UpdateParams{URL: ptr("http://x.example.com/")})
	wantValidation(t, err, "url", "https://")
	_, err = st.Update(ctx, a1.ID, nil, subscriptions.UpdateParams{EventTypes: &[]string{}})
	wantValidation(t, err, "event_types", "at least one")
	if got, err := st.Update(ctx, a1.ID, nil, subscriptions.UpdateParams{}); err != nil || got.Name != "renamed" {
		t.Fatalf("empty update: %v", err)
	}

	// SetEnabled: disabling records a reason, enabling clears the health record.
	d, err := st.SetEnabled(ctx, b1.ID, ptr("bob"), false, "")
	if err != nil || d.Enabled || d.DisabledReason == nil || *d.DisabledReason != subscriptions.DefaultDisabledReason {
		t.Fatalf("disable: %+v %v", d, err)
	}
	if _, err := st.Update(ctx, a2.ID, nil, subscriptions.UpdateParams{}); err != nil {
		t.Fatal(err)
	}
	e, err := st.SetEnabled(ctx, a2.ID, ptr("alice"), true, "")
	if err != nil || !e.Enabled || e.DisabledReason != nil || e.ConsecutiveFailures != 0 {
		t.Fatalf("enable: %+v %v", e, err)
	}
	if _, err := st.SetEnabled(ctx, op.ID, ptr("alice"), false, ""); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("owner disabling an operator subscription: %v", err)
	}

	// Delete.
	if err := st.Delete(ctx, b1.ID, ptr("alice")); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("delete by another owner: %v", err)
	}
	if err := st.Delete(ctx, b1.ID, ptr("bob")); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, b1.ID, nil); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestRotateSecret(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	ctx := context.Background()
	s := mustCreate(t, st, subscriptions.CreateParams{Owner: ptr("alice"), Name: "a", URL: "https://a.example.com/", EventTypes: []string{"*"}})
	if _, err := st.RotateSecret(ctx, s.ID, ptr("bob"), time.Hour); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("rotate by another owner: %v", err)
	}
	secret, err := st.RotateSecret(ctx, s.ID, ptr("alice"), time.Hour)
	if err != nil || secret == s.Secret || !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("rotate: %q %v", secret, err)
	}
	got, err := st.Get(ctx, s.ID, nil)
	if err != nil || got.Secret != secret || len(got.PreviousSecrets) != 1 || got.PreviousSecrets[0].Secret != s.Secret ||
		time.Until(got.PreviousSecrets[0].ExpiresAt) < 59*time.Minute {
		t.Fatalf("after rotate: %+v %v", got.PreviousSecrets, err)
	}
	if _, err := st.RotateSecret(ctx, s.ID, nil, 31*24*time.Hour); err == nil {
		t.Fatal("grace of 31 days accepted")
	}
	// Negative grace means the default (24 h).
	if _, err := st.RotateSecret(ctx, s.ID, nil, -1); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT jsonb_array_length(previous_secrets) FROM relay.subscriptions WHERE id = $1`, s.ID).Scan(&n); err != nil || n != 2 {
		t.Fatalf("previous secrets %d %v", n, err)
	}
}

// fixture inserts an event and a delivery with attempts.
type fixture struct {
	db  *pgtest.DB
	ctx context.Context
}

func (f fixture) delivery(t *testing.T, subID int64, eventType string, owner *string, status string, durations []int, codes []int) int64 {
	t.Helper()
	var eventID string
	if err := f.db.Pool.QueryRow(f.ctx, `SELECT relay.emit($1, '{"n":1}', $2, 'k1')::text`, eventType, owner).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	var id int64
	err := f.db.Pool.QueryRow(f.ctx, `INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts, completed_at, last_duration_ms)
		VALUES ($1, $2, $3, $4, CASE WHEN $3 IN ('succeeded', 'failed') THEN now() END, $5) RETURNING id`,
		eventID, subID, status, len(durations), lastOr(durations)).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range durations {
		outcome, errText := "retry", (*string)(nil)
		var code *int
		if codes[i] > 0 {
			code = &codes[i]
		} else {
			errText = ptr("timeout after 10s")
		}
		if i == len(durations)-1 && (status == "succeeded" || status == "failed") {
			outcome = status
		}
		f.db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, error)
			VALUES ($1, $2, now(), $3, $4, $5, $6)`, id, i+1, d, code, outcome, errText)
	}
	return id
}

func lastOr(xs []int) *int {
	if len(xs) == 0 {
		return nil
	}
	return &xs[len(xs)-1]
}

func TestStatsAndSummary(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	ctx := context.Background()
	f := fixture{db, ctx}
	a := mustCreate(t, st, subscriptions.CreateParams{Owner: ptr("alice"), Name: "a", URL: "https://a.example.com/", EventTypes: []string{"*"}})
	b := mustCreate(t, st, subscriptions.CreateParams{Owner: ptr("bob"), Name: "b", URL: "https://b.example.com/", EventTypes: []string{"*"}})
	f.delivery(t, a.ID, "thread.created", ptr("alice"), "succeeded", []int{10}, []int{200})
	f.delivery(t, a.ID, "thread.created", ptr("alice"), "succeeded", []int{20}, []int{200})
	f.delivery(t, a.ID, "thread.created", ptr("alice"), "failed", []int{30, 40}, []int{0, 500})
	f.delivery(t, a.ID, "thread.created", ptr("alice"), "pending", nil, nil)
	f.delivery(t, b.ID, "message.sent", ptr("bob"), "succeeded", []int{100}, []int{204})
	db.Exec(t, `UPDATE relay.subscriptions SET consecutive_failures = 1, last_failure_at = now(), last_error = 'HTTP 500' WHERE id = $1`, a.ID)

	s, err := st.Stats(ctx, a.ID, ptr("alice"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Deliveries != 4 || s.Succeeded != 2 || s.Failed != 1 || s.Pending != 1 || s.Backlog != 1 ||
		s.SuccessRate == nil || *s.SuccessRate < 0.666 || *s.SuccessRate > 0.667 ||
		s.Attempts != 4 || s.Timeouts != 1 || *s.TimeoutRate != 0.25 || *s.AvgDurationMS != 25 ||
		*s.P50DurationMS != 25 || *s.P95DurationMS < 38 || *s.P95DurationMS > 40 ||
		s.ConsecutiveFailures != 1 || s.LastFailureAt == nil || *s.LastError != "HTTP 500" || s.OldestPendingSeconds == nil {
		t.Fatalf("stats %+v", s)
	}
	if _, err := st.Stats(ctx, a.ID, ptr("bob"), 0); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("stats of another owner: %v", err)
	}
	empty := mustCreate(t, st, subscriptions.CreateParams{Owner: ptr("bob"), Name: "e", URL: "https://e.example.com/", EventTypes: []string{"*"}})
	es, err := st.Stats(ctx, empty.ID, nil, time.Hour)
	if err != nil || es.Deliveries != 0 || es.SuccessRate != nil || es.P95DurationMS != nil || es.TimeoutRate != nil {
		t.Fatalf("empty stats %+v %v", es, err)
	}

	sum, err := st.Summary(ctx, nil, 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Subscriptions) != 3 || sum.Overall.Deliveries != 5 || sum.Overall.Succeeded != 3 || sum.Overall.Attempts != 5 ||
		*sum.Overall.SuccessRate != 0.75 || *sum.Overall.AvgDurationMS != 40 {
		t.Fatalf("operator summary %+v", sum)
	}
	sum, err = st.Summary(ctx, ptr("bob"), 7*24*time.Hour)
	if err != nil || len(sum.Subscriptions) != 2 || sum.Overall.Deliveries != 1 || *sum.Overall.SuccessRate != 1 || sum.Subscriptions[0].Name != "b" {
		t.Fatalf("bob summary %+v %v", sum, err)
	}
}

func TestDeliveriesLog(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	ctx := context.Background()
	f := fixture{db, ctx}
	a := mustCreate(t, st, subscriptions.CreateParams{Owner: ptr("alice"), Name: "Make", URL: "https://hooks.make.com/abcdef?token=s", EventTypes: []string{"*"}})
	b := mustCreate(t, st, subscriptions.CreateParams{Owner: ptr("bob"), Name: "b", URL: "https://b.example.com/", EventTypes: []string{"*"}})
	d1 := f.delivery(t, a.ID, "thread.created", ptr("alice"), "succeeded", []int{10}, []int{200})
	d2 := f.delivery(t, a.ID, "message.sent", ptr("alice"), "failed", []int{5, 7}, []int{503, 500})
	d3 := f.delivery(t, a.ID, "thread.archived", ptr("alice"), "pending", nil, nil)
	db4 := f.delivery(t, b.ID, "thread.created", ptr("bob"), "failed", []int{1}, []int{404})
	db.Exec(t, `UPDATE relay.deliveries SET created_at = now() - interval '10 days' WHERE id = $1`, d1)

	list := func(p subscriptions.DeliveryListParams) []int64 {
		t.Helper()
		ds, err := st.ListDeliveries(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, d := range ds {
			ids = append(ids, d.ID)
		}
		return ids
	}
	eq := func(got []int64, want ...int64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("ids %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("ids %v, want %v", got, want)
			}
		}
	}
	eq(list(subscriptions.DeliveryListParams{}), db4, d3, d2, d1)
	eq(list(subscriptions.DeliveryListParams{Owner: ptr("alice")}), d3, d2, d1)
	eq(list(subscriptions.DeliveryListParams{Owner: ptr("alice"), Status: "failed"}), d2)
	eq(list(subscriptions.DeliveryListParams{Since: time.Now().Add(-7 * 24 * time.Hour)}), db4, d3, d2)
	eq(list(subscriptions.DeliveryListParams{EventType: "thread.*"}), db4, d3, d1)
	eq(list(subscriptions.DeliveryListParams{EventType: "message.sent"}), d2)
	eq(list(subscriptions.DeliveryListParams{SubscriptionID: b.ID}), db4)
	eq(list(subscriptions.DeliveryListParams{SubscriptionID: b.ID, Owner: ptr("alice")}))
	eq(list(subscriptions.DeliveryListParams{Limit: 2}), db4, d3)
	eq(list(subscriptions.DeliveryListParams{Limit: 2, BeforeID: d3}), d2, d1)
	if _, err := st.ListDeliveries(ctx, subscriptions.DeliveryListParams{Status: "done"}); err == nil {
		t.Fatal("bad status accepted")
	}

	ds, err := st.ListDeliveries(ctx, subscriptions.DeliveryListParams{SubscriptionID: a.ID, Status: "pending"})
	if err != nil || len(ds) != 1 {
		t.Fatal(err)
	}
	if p := ds[0]; p.URL != "https://hooks.make.com/abc***" || p.SubscriptionName != "Make" || p.NextAttemptAt == nil ||
		p.EventType != "thread.archived" || *p.Owner != "alice" || len(p.EventID) != 36 {
		t.Fatalf("pending delivery %+v", p)
	}

	dd, err := st.GetDelivery(ctx, d2, ptr("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if dd.Status != "failed" || dd.NextAttemptAt != nil || dd.CompletedAt == nil || dd.Attempts != 2 || len(dd.AttemptLog) != 2 ||
		*dd.AttemptLog[0].StatusCode != 503 || dd.AttemptLog[1].Outcome != "failed" || string(dd.Payload) != `{"n": 1}` || *dd.Key != "k1" {
		t.Fatalf("delivery detail %+v", dd)
	}
	if _, err := st.GetDelivery(ctx, d2, ptr("bob")); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("another owner's delivery: %v", err)
	}

	// Redeliver: owner-scoped, refuses a queued delivery.
	if err := st.Redeliver(ctx, d2, ptr("bob")); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("redeliver by another owner: %v", err)
	}
	if err := st.Redeliver(ctx, d3, ptr("alice")); !errors.Is(err, subscriptions.ErrConflict) {
		t.Fatalf("redeliver pending: %v", err)
	}
	if err := st.Redeliver(ctx, d2, ptr("alice")); err != nil {
		t.Fatal(err)
	}
	if dd, _ := st.GetDelivery(ctx, d2, nil); dd.Status != "pending" {
		t.Fatalf("after redeliver: %s", dd.Status)
	}

	// Replay: failed deliveries of a subscription in a range.
	if _, err := st.Replay(ctx, b.ID, ptr("alice"), time.Now().Add(-time.Hour), time.Now().Add(time.Minute)); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("replay by another owner: %v", err)
	}
	_, err = st.Replay(ctx, b.ID, nil, time.Now(), time.Now().Add(-time.Hour))
	wantValidation(t, err, "since", "before until")
	n, err := st.Replay(ctx, b.ID, ptr("bob"), time.Now().Add(-time.Hour), time.Now().Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("replay: %d %v", n, err)
	}

	// Event types: owner-scoped, the test event left out.
	db.Exec(t, `SELECT relay.emit('webhook.test', '{}', 'alice')`)
	types, err := st.EventTypes(ctx, ptr("alice"))
	if err != nil || strings.Join(types, ",") != "message.sent,thread.archived,thread.created" {
		t.Fatalf("alice's event types %v %v", types, err)
	}
	types, err = st.EventTypes(ctx, ptr("carol"))
	if err != nil || types == nil || len(types) != 0 {
		t.Fatalf("carol's event types %v %v", types, err)
	}
}

func TestSettings(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	ctx := context.Background()
	s, err := st.GetSettings(ctx)
	if err != nil || s.Paused || s.FailureAlertThreshold != 5 || s.Retention != 7*24*time.Hour || s.Window() != nil || s.AllowHTTP {
		t.Fatalf("defaults %+v %v", s, err)
	}
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `LISTEN relay_settings`); err != nil {
		t.Fatal(err)
	}
	s, err = st.UpdateSettings(ctx, subscriptions.SettingsUpdate{
		Paused: ptr(true), PausedReason: ptr("maintenance"), AbsenceDays: &[]string{"saturday", "sunday"},
		Window:                &subscriptions.Window{Start: "08:00", End: "20:00", TimeZone: "Europe/Paris"},
		FailureAlertThreshold: ptr(3), Retention: ptr(48 * time.Hour), DisableAfter: ptr(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Paused || *s.PausedReason != "maintenance" || s.PausedAt == nil || len(s.AbsenceDays) != 2 ||
		s.Window().Start != "08:00" || s.WindowTimeZone != "Europe/Paris" || s.FailureAlertThreshold != 3 ||
		s.Retention != 48*time.Hour || s.DisableAfter != time.Hour {
		t.Fatalf("updated %+v", s)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := conn.Conn().WaitForNotification(wctx)
	if err != nil || n.Payload != "paused" {
		t.Fatalf("notification %+v %v", n, err)
	}
	s, err = st.UpdateSettings(ctx, subscriptions.SettingsUpdate{Paused: ptr(false), Window: &subscriptions.Window{}})
	if err != nil || s.Paused || s.PausedReason != nil || s.Window() != nil {
		t.Fatalf("resumed %+v %v", s, err)
	}
	_, err = st.UpdateSettings(ctx, subscriptions.SettingsUpdate{AbsenceDays: &[]string{"funday"}})
	wantValidation(t, err, "absence_days", "not a weekday")
	_, err = st.UpdateSettings(ctx, subscriptions.SettingsUpdate{Window: &subscriptions.Window{Start: "08:00", End: "09:00", TimeZone: "Nowhere/Land"}})
	wantValidation(t, err, "window_time_zone", "not a known time zone")
	_, err = st.UpdateSettings(ctx, subscriptions.SettingsUpdate{Retention: ptr(time.Minute)})
	wantValidation(t, err, "retention", "at least 1 hour")
	if allow, err := st.AllowHTTP(ctx); err != nil || allow {
		t.Fatalf("allow http %v %v", allow, err)
	}
}

// Attempts reference their delivery without a foreign key (migration
// 000007), so deleting a subscription deletes its deliveries' attempts
// itself, and nobody else's.
func TestDeleteRemovesItsAttempts(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	ctx := context.Background()
	gone := mustCreate(t, st, subscriptions.CreateParams{Name: "gone", URL: "https://a.example.com/1", EventTypes: []string{"*"}})
	kept := mustCreate(t, st, subscriptions.CreateParams{Name: "kept", URL: "https://b.example.com/1", EventTypes: []string{"*"}})
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) VALUES ('a.b', '{}')`)
	db.Exec(t, `INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts)
		SELECT o.event_id, s.id, 'succeeded', 2 FROM relay.outbox AS o, relay.subscriptions AS s`)
	db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome)
		SELECT d.id, n, now(), 'succeeded' FROM relay.deliveries AS d, generate_series(1, 2) AS n`)
	if err := st.Delete(ctx, gone.ID, nil); err != nil {
		t.Fatal(err)
	}
	var left, leftKept int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE d.subscription_id = $1)
		FROM relay.delivery_attempts AS a LEFT JOIN relay.deliveries AS d ON d.id = a.delivery_id`, kept.ID).Scan(&left, &leftKept); err != nil {
		t.Fatal(err)
	}
	if left != 2 || leftKept != 2 {
		t.Fatalf("%d attempts left (%d of the kept subscription), want the kept subscription's 2", left, leftKept)
	}
	if err := st.Delete(ctx, kept.ID, ptr("someone")); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("delete by another owner: %v", err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM relay.delivery_attempts`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("a refused delete left %d attempts (%v), want 2", n, err)
	}
}
