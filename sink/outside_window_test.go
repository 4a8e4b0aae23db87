package sink_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/sink/dispatch"
)

// TestOutsideWindowSkip: a new delivery due outside its subscription's
// window ends skipped with the reason, as an attempt in the delivery log,
// without a request and without a retry; relay.redeliver takes it back, the
// closed window then defers it (it is not skipped again), and it is sent
// once the window opens. The dispatcher's clock is the test's, so the
// window is closed or open on demand.
func TestOutsideWindowSkip(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	subID, _ := subscribe(t, db, nil, rc.URL, []string{"*"},
		`window_start = '09:00', window_end = '10:00', window_time_zone = 'UTC', outside_window = 'skip'`)
	var clock atomic.Int64
	noon := time.Date(2030, 5, 6, 12, 0, 0, 0, time.UTC)
	clock.Store(noon.UnixNano())
	// The skip is recorded at the dispatcher's time, in its day's partition.
	db.AttemptPartitionsFor(t, noon, noon.AddDate(0, 0, 2))
	startCapture(t, db, nil)
	startDispatcher(t, db, loopback, func(c *dispatch.Config) {
		c.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	db.Exec(t, `SELECT relay.emit('order.paid', '{"amount": 1}')`)
	waitFor(t, 10*time.Second, "the skip", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'skipped'`, subID) == 1
	})
	d := delivery(t, db, subID)
	if d.Attempts != 1 || d.LastError == nil || !strings.Contains(*d.LastError, "outside the subscription's delivery window 09:00-10:00 UTC") {
		t.Fatalf("skipped delivery: %+v (%v)", d, d.LastError)
	}
	var outcome, logErr string
	var code *int
	if err := db.Pool.QueryRow(context.Background(), `SELECT outcome, error, status_code FROM relay.delivery_log WHERE subscription_id = $1`, subID).
		Scan(&outcome, &logErr, &code); err != nil {
		t.Fatal(err)
	}
	if outcome != "skipped" || !strings.Contains(logErr, "outside_window = skip") || code != nil {
		t.Fatalf("delivery log: %s %q %v", outcome, logErr, code)
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("the receiver got %d requests for a skipped delivery", n)
	}

	// Redelivered while the window is still closed: deferred to its
	// opening, not skipped again.
	var st string
	if err := db.Pool.QueryRow(context.Background(), `SELECT relay.redeliver(id) FROM relay.deliveries WHERE subscription_id = $1`, subID).Scan(&st); err != nil || st != "pending" {
		t.Fatalf("redeliver: %q %v", st, err)
	}
	nextNine := time.Date(2030, 5, 7, 9, 0, 0, 0, time.UTC)
	waitFor(t, 10*time.Second, "the deferral", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'pending' AND next_attempt_at = $2`, subID, nextNine) == 1
	})
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts a JOIN relay.deliveries d ON d.id = a.delivery_id WHERE d.subscription_id = $1`, subID); n != 1 {
		t.Fatalf("%d attempt rows after the redelivery, want the one skip", n)
	}

	// The next morning, inside the window, it goes out.
	clock.Store(nextNine.Add(30 * time.Minute).UnixNano())
	db.Exec(t, `UPDATE relay.deliveries SET next_attempt_at = now() WHERE subscription_id = $1`, subID)
	waitFor(t, 10*time.Second, "the redelivered delivery", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'succeeded'`, subID) == 1
	})
	reqs := rc.requests()
	if len(reqs) != 1 || reqs[0].Header.Get("X-Relay-Attempt") != "2" {
		t.Fatalf("receiver got %d requests, want 1 with X-Relay-Attempt 2 (the skip was attempt 1)", len(reqs))
	}
}

// TestOutsideWindowSendAndDefer: with a closed global window, a
// subscription that sends outside it gets its delivery at once, one that
// defers keeps it pending until the window opens.
func TestOutsideWindowSendAndDefer(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	now := time.Now().UTC()
	start := now.Add(time.Hour).Truncate(time.Minute)
	db.Exec(t, `UPDATE relay.settings SET window_start = $1::time, window_end = $2::time, window_time_zone = 'UTC'`,
		start.Format("15:04"), start.Add(time.Hour).Format("15:04"))
	sendID, _ := subscribe(t, db, nil, rc.URL+"/send", []string{"*"}, `outside_window = 'send'`)
	deferID, _ := subscribe(t, db, nil, rc.URL+"/defer", []string{"*"}, ``)
	startCapture(t, db, nil)
	startDispatcher(t, db, loopback, nil)
	db.Exec(t, `SELECT relay.emit('order.paid', '{}')`)
	waitFor(t, 10*time.Second, "the send", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'succeeded'`, sendID) == 1
	})
	waitFor(t, 10*time.Second, "the deferral", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'pending' AND next_attempt_at = $2`, deferID, start) == 1
	})
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("the receiver got %d requests, want only the sending subscription's", n)
	}
}
