package admin_test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestStatsHourlyInSQL checks the hourly series of GET /api/stats with more
// deliveries than one page of the log holds (the console used to bucket
// GET /api/deliveries?limit=500 and showed 500 of 1,022): every delivery of
// the last 24 hours is counted, in its hour and by status, scoped to the
// caller and to one webhook on request.
func TestStatsHourlyInSQL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	a := e.hook(e.alice, "busy")
	other := e.hook(e.alice, "other")
	bobs := e.hook(e.bob, "bob's")
	const n = 1022
	// Delivery i is created k = i % 24 hours before the current hour's
	// start, with status i % 3: succeeded, failed, pending.
	e.db.Exec(t, `
		WITH o AS (
			INSERT INTO relay.outbox (event_type, owner, payload)
			SELECT 'thread.created', 'alice', jsonb_build_object('i', i) FROM generate_series(0, $2 - 1) AS i
			RETURNING event_id, (payload->>'i')::int AS i)
		INSERT INTO relay.deliveries (event_id, subscription_id, status, created_at, completed_at)
		SELECT event_id, $1, (ARRAY['succeeded', 'failed', 'pending'])[i % 3 + 1],
		       date_trunc('hour', now()) - (i % 24) * interval '1 hour',
		       CASE WHEN i % 3 < 2 THEN now() END
		FROM o`, a, n)
	// Outside the series: older than 24 hours, another webhook, another owner.
	old := e.delivery(a, "thread.created", "alice", "succeeded", 10)
	e.db.Exec(t, `UPDATE relay.deliveries SET created_at = now() - interval '30 hours' WHERE id = $1`, old)
	e.delivery(other, "thread.created", "alice", "failed", 10)
	e.delivery(bobs, "thread.created", "bob", "succeeded", 10)

	// By hour start, so that the test holds when it straddles an hour.
	var base time.Time
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT date_trunc('hour', now())`).Scan(&base); err != nil {
		t.Fatal(err)
	}
	want := map[time.Time][3]float64{}
	for i := range n {
		start := base.Add(-time.Duration(i%24) * time.Hour).UTC()
		w := want[start]
		w[i%3]++
		want[start] = w
	}
	check := func(path, token string, extraFailedNow float64) {
		t.Helper()
		r := e.do("GET", path, token, nil).want(t, 200)
		hourly := arr(t, r.obj["hourly"])
		if len(hourly) != 24 {
			t.Fatalf("%s: %d hours, want 24", path, len(hourly))
		}
		var total float64
		var prev time.Time
		for i, hv := range hourly {
			h := obj(t, hv)
			wantKeys(t, h, "start", "succeeded", "failed", "pending")
			start, err := time.Parse(time.RFC3339, h["start"].(string))
			if err != nil || (i > 0 && start.Sub(prev) != time.Hour) {
				t.Fatalf("%s: hour %d starts %v (%v), previous %v", path, i, h["start"], err, prev)
			}
			prev = start
			w := want[start.UTC()]
			if i == 23 {
				w[1] += extraFailedNow
			}
			got := [3]float64{num(t, h["succeeded"]), num(t, h["failed"]), num(t, h["pending"])}
			if got != w {
				t.Errorf("%s: hour %d (%s) = %v, want %v", path, i, h["start"], got, w)
			}
			total += got[0] + got[1] + got[2]
		}
		if now := time.Now(); prev.After(now) || now.Sub(prev) >= time.Hour {
			t.Errorf("%s: the last hour starts %s, not the current hour", path, prev)
		}
		t.Logf("%s: %v deliveries over 24 hours", path, total)
	}
	check(fmt.Sprintf("/api/stats?webhook_id=%d", a), e.alice, 0)
	check(fmt.Sprintf("/api/stats?webhook_id=%d&days=1", a), operatorToken, 0)
	// Without webhook_id: every webhook of the caller (alice's other one
	// adds its failure in the current hour; bob's is not hers).
	check("/api/stats", e.alice, 1)

	// With webhook_id, the figures are that webhook's only.
	r := e.do("GET", fmt.Sprintf("/api/stats?webhook_id=%d&days=1", a), e.alice, nil).want(t, 200)
	if hooks := arr(t, r.obj["webhooks"]); len(hooks) != 1 || num(t, obj(t, hooks[0])["webhook_id"]) != float64(a) ||
		num(t, obj(t, r.obj["overall"])["deliveries"]) != n {
		t.Errorf("webhook_id stats: %s", r.raw)
	}
	// Another owner's webhook is not found; bad parameters are named.
	e.do("GET", fmt.Sprintf("/api/stats?webhook_id=%d", bobs), e.alice, nil).wantError(t, 404, "not_found", "")
	e.do("GET", "/api/stats?webhook_id=x", e.alice, nil).wantError(t, 400, "invalid_field", "webhook_id")
	e.do("GET", "/api/stats?hours=0", e.alice, nil).wantError(t, 400, "invalid_field", "hours")
	if r := e.do("GET", "/api/stats?hours=168", e.alice, nil).want(t, 200); len(arr(t, r.obj["hourly"])) != 168 {
		t.Errorf("hours=168 gave %d hours", len(arr(t, r.obj["hourly"])))
	}
}
