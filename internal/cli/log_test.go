package cli_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
)

// fxSub inserts a subscription and returns its id.
func fxSub(t *testing.T, db *pgtest.DB, name string, owner any) int64 {
	t.Helper()
	var id int64
	err := db.Pool.QueryRow(context.Background(), `INSERT INTO relay.subscriptions (owner, name, url, event_types)
		VALUES ($1, $2, 'https://hooks.example.com/private/path', '{*}') RETURNING id`, owner, name).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fxDelivery inserts an event of type eventType and owner, created age ago,
// and its delivery to sub in status; it returns the delivery id.
func fxDelivery(t *testing.T, db *pgtest.DB, sub int64, eventType string, owner any, status string, age time.Duration) int64 {
	t.Helper()
	var id int64
	err := db.Pool.QueryRow(context.Background(), `
		WITH o AS (
			INSERT INTO relay.outbox (event_type, owner, payload, created_at)
			VALUES ($2, $3, '{}', now() - $5::interval) RETURNING event_id)
		INSERT INTO relay.deliveries (event_id, subscription_id, status, created_at, completed_at)
		SELECT event_id, $1, $4, now() - $5::interval,
		       CASE WHEN $4 IN ('succeeded', 'failed') THEN now() - $5::interval END FROM o
		RETURNING id`, sub, eventType, owner, status, age).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fxAttempt records attempt n of a delivery, started age ago.
func fxAttempt(t *testing.T, db *pgtest.DB, delivery int64, n int, outcome string, code any, errText any, age time.Duration) {
	t.Helper()
	db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, error)
		VALUES ($1, $2, now() - $3::interval, 42, $4, $5, $6)`, delivery, n, age, code, outcome, errText)
	db.Exec(t, `UPDATE relay.deliveries SET attempts = greatest(attempts, $2) WHERE id = $1`, delivery, n)
}

type logJSON struct {
	AttemptID        int64   `json:"attempt_id"`
	DeliveryID       int64   `json:"delivery_id"`
	EventID          string  `json:"event_id"`
	SubscriptionID   int64   `json:"subscription_id"`
	SubscriptionName string  `json:"subscription_name"`
	URL              string  `json:"url"`
	EventType        string  `json:"event_type"`
	Owner            *string `json:"owner"`
	Attempt          int     `json:"attempt"`
	Outcome          string  `json:"outcome"`
	DeliveryStatus   string  `json:"delivery_status"`
	StatusCode       *int    `json:"status_code"`
	Error            *string `json:"error"`
}

func logIDs(t *testing.T, env map[string]string, args ...string) []int64 {
	t.Helper()
	var entries []logJSON
	decodeJSON(t, expectCLI(t, env, 0, nil, append([]string{"log", "--json"}, args...)...), &entries)
	ids := make([]int64, len(entries))
	for i, e := range entries {
		ids[i] = e.DeliveryID*10 + int64(e.Attempt)
	}
	return ids
}

func sameIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLogCommand(t *testing.T) {
	t.Parallel()
	db, env := opsDB(t)
	orders := fxSub(t, db, "orders", "acme")
	ops := fxSub(t, db, "ops", nil)
	h := time.Hour

	ok := fxDelivery(t, db, orders, "order.created", "acme", "succeeded", 3*h)
	fxAttempt(t, db, ok, 1, "retry", 503, "HTTP 503 Service Unavailable", 3*h)
	fxAttempt(t, db, ok, 2, "succeeded", 200, nil, 2*h)
	dead := fxDelivery(t, db, ops, "user.deleted", nil, "failed", 72*h)
	fxAttempt(t, db, dead, 1, "failed", 404, "HTTP 404 Not Found", 72*h)
	wait := fxDelivery(t, db, ops, "order.paid", "acme", "pending", 10*time.Minute)
	fxAttempt(t, db, wait, 1, "retry", nil, "timeout after 10s", 10*time.Minute)

	// All in the order they started (relay records an attempt as soon as
	// it ends, so that is also the order of attempt ids in practice; here
	// the 72-hour-old one was written last); attempts as deliveryID*10 +
	// attempt.
	all := []int64{dead*10 + 1, ok*10 + 1, ok*10 + 2, wait*10 + 1}
	acme := []int64{ok*10 + 1, ok*10 + 2, wait*10 + 1}
	if got := logIDs(t, env); !sameIDs(got, all) {
		t.Fatalf("log: %v, want %v", got, all)
	}
	if got := logIDs(t, env, "--status", "failed"); !sameIDs(got, []int64{dead*10 + 1}) {
		t.Fatalf("--status failed: %v", got)
	}
	if got := logIDs(t, env, "--outcome", "retry"); !sameIDs(got, []int64{ok*10 + 1, wait*10 + 1}) {
		t.Fatalf("--outcome retry: %v", got)
	}
	if got := logIDs(t, env, "--days", "1"); !sameIDs(got, acme) {
		t.Fatalf("--days 1: %v", got)
	}
	if got := logIDs(t, env, "--since", "150m"); !sameIDs(got, []int64{ok*10 + 2, wait*10 + 1}) {
		t.Fatalf("--since 150m: %v", got)
	}
	if got := logIDs(t, env, "--since", "4d"); !sameIDs(got, all) {
		t.Fatalf("--since 4d: %v", got)
	}
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	if got := logIDs(t, env, "--since", since); !sameIDs(got, []int64{wait*10 + 1}) {
		t.Fatalf("--since %s: %v", since, got)
	}
	if got := logIDs(t, env, "--sub", strconv.FormatInt(ops, 10)); !sameIDs(got, []int64{dead*10 + 1, wait*10 + 1}) {
		t.Fatalf("--sub: %v", got)
	}
	if got := logIDs(t, env, "--owner", "acme"); !sameIDs(got, acme) {
		t.Fatalf("--owner acme: %v", got)
	}
	if got := logIDs(t, env, "--event-type", "order.*"); !sameIDs(got, acme) {
		t.Fatalf("--event-type order.*: %v", got)
	}
	if got := logIDs(t, env, "--event-type", "user.deleted"); !sameIDs(got, []int64{dead*10 + 1}) {
		t.Fatalf("--event-type user.deleted: %v", got)
	}
	if got := logIDs(t, env, "--limit", "2"); !sameIDs(got, all[2:]) {
		t.Fatalf("--limit 2: %v", got)
	}
	if got := logIDs(t, env, "--status", "succeeded", "--sub", strconv.FormatInt(ops, 10)); len(got) != 0 {
		t.Fatalf("no match: %v", got)
	}
	out := expectCLI(t, env, 0, nil, "log", "--json", "--status", "delivering")
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty --json: %q", out)
	}

	// The JSON carries what the view has, the URL masked.
	var entries []logJSON
	decodeJSON(t, expectCLI(t, env, 0, nil, "log", "--json", "--status", "failed"), &entries)
	e := entries[0]
	if e.SubscriptionName != "ops" || e.URL != "https://hooks.example.com/pri***" || e.EventType != "user.deleted" ||
		e.Owner != nil || e.Outcome != "failed" || e.DeliveryStatus != "failed" || e.StatusCode == nil || *e.StatusCode != 404 ||
		e.Error == nil || *e.Error != "HTTP 404 Not Found" || e.EventID == "" {
		t.Fatalf("entry: %+v", e)
	}

	// The human table.
	out = expectCLI(t, env, 0, []string{"TIME", "DELIVERY", "OUTCOME", "order.created", "1 orders", "acme", "HTTP 503 Service Unavailable",
		"timeout after 10s", "42ms", "404"}, "log")
	if strings.Count(out, "\n") != 5 {
		t.Fatalf("log: want a header and 4 lines:\n%s", out)
	}
	expectCLI(t, env, 0, []string{"no delivery attempts match"}, "log", "--status", "delivering")

	// Bad input.
	expectCLI(t, env, 2, []string{"invalid --status", "done"}, "log", "--status", "done")
	expectCLI(t, env, 2, []string{"invalid --outcome"}, "log", "--outcome", "maybe")
	expectCLI(t, env, 2, []string{"invalid --since", "yesterday"}, "log", "--since", "yesterday")
	expectCLI(t, env, 2, []string{"invalid --days"}, "log", "--days", "0")
	expectCLI(t, env, 2, []string{"invalid value", "-days"}, "log", "--days", "two")
	expectCLI(t, env, 2, []string{"exclude each other"}, "log", "--days", "1", "--since", "2h")
	expectCLI(t, env, 2, []string{"invalid --limit"}, "log", "--limit", "0")
	expectCLI(t, env, 2, []string{"invalid --event-type"}, "log", "--event-type", "Order")
	expectCLI(t, env, 2, []string{"invalid --sub"}, "log", "--sub", "-3")
	expectCLI(t, env, 2, []string{"log takes no arguments"}, "log", "extra")
	expectCLI(t, env, 1, []string{"subscription 4242 not found"}, "log", "--sub", "4242")
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLogFollow(t *testing.T) {
	t.Parallel()
	db, env := opsDB(t)
	sub := fxSub(t, db, "orders", "acme")
	old := fxDelivery(t, db, sub, "order.created", "acme", "succeeded", time.Hour)
	fxAttempt(t, db, old, 1, "succeeded", 200, nil, time.Hour)

	for _, asJSON := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errb syncBuffer
		args := []string{"log", "--follow", "--event-type", "order.*"}
		if asJSON {
			args = append(args, "--json")
		}
		done := make(chan int, 1)
		go func() { done <- runCLIIn(ctx, env, nil, &out, &errb, args...) }()
		waitFor(t, "the existing attempt", func() bool { return strings.Contains(out.String(), "order.created") })

		d := fxDelivery(t, db, sub, "order.shipped", "acme", "pending", 0)
		fxAttempt(t, db, d, 1, "retry", 502, "HTTP 502 Bad Gateway", 0)
		other := fxDelivery(t, db, sub, "user.created", "acme", "succeeded", 0)
		fxAttempt(t, db, other, 1, "succeeded", 200, nil, 0)

		// Transactions commit out of id order: the attempt with the smaller
		// id becomes visible last, and is printed all the same.
		tx, err := db.Pool.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		late := fxDelivery(t, db, sub, "order.late", "acme", "pending", 0)
		if _, err := tx.Exec(context.Background(), `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome, error)
			VALUES ($1, 1, now(), 'retry', 'late')`, late); err != nil {
			t.Fatal(err)
		}
		early := fxDelivery(t, db, sub, "order.early", "acme", "pending", 0)
		fxAttempt(t, db, early, 1, "retry", 500, "HTTP 500", 0)
		waitFor(t, "new attempts", func() bool {
			s := out.String()
			return strings.Contains(s, "order.shipped") && strings.Contains(s, "order.early")
		})
		if err := tx.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the attempt committed late", func() bool { return strings.Contains(out.String(), "order.late") })

		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("follow exited %d: %s", code, errb.String())
		}
		s := out.String()
		if strings.Contains(s, "user.created") {
			t.Fatalf("follow ignored --event-type:\n%s", s)
		}
		for _, typ := range []string{"order.created", "order.shipped", "order.early", "order.late"} {
			if strings.Count(s, typ) != 1 {
				t.Fatalf("%s printed %d times:\n%s", typ, strings.Count(s, typ), s)
			}
		}
		if asJSON {
			lines := strings.Split(strings.TrimSpace(s), "\n")
			if len(lines) != 4 {
				t.Fatalf("want 4 JSON lines:\n%s", s)
			}
			for _, l := range lines {
				var e logJSON
				if err := json.Unmarshal([]byte(l), &e); err != nil || e.AttemptID == 0 {
					t.Fatalf("line %q: %v", l, err)
				}
			}
		} else if !strings.HasPrefix(s, "TIME") || strings.Count(s, "TIME") != 1 {
			t.Fatalf("want one header:\n%s", s)
		}
		// Clean up for the JSON round.
		db.Exec(t, `DELETE FROM relay.outbox WHERE event_type <> 'order.created'`)
	}
}
