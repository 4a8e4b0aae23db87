package sink_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/outbox"
	"github.com/pgoutbox/relay/sink/dispatch"
	"github.com/pgoutbox/relay/sink/fanout"
)

// Fresh events are sent before their delivery rows are written
// (dispatch.Presend): what the receiver got is still exactly what the log
// holds, under the ids it was sent with, one attempt each; subscriptions a
// snapshot cannot decide (a payload filter) go through the table; and a
// subscription disabled is sent nothing more once the change is heard.
func TestFreshEventsSentAheadMatchTheLog(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	plain, _ := subscribe(t, db, nil, rc.URL+"/plain", []string{"order.*"}, "")
	filtered, _ := subscribe(t, db, nil, rc.URL+"/filtered", []string{"*"}, `filter = '$.n ? (@ > 0)'`)
	owned, _ := subscribe(t, db, "alice", rc.URL+"/alice", []string{"*"}, "")
	d := startHandoff(t, db, nil)

	emit := func(i int, owner any) {
		db.Exec(t, `INSERT INTO relay.outbox (event_type, owner, payload) VALUES ('order.paid', $1, jsonb_build_object('n', $2::int))`, owner, i)
	}
	// The snapshot is read once the listener is connected: events sent
	// before that go through the table.
	i := 0
	waitFor(t, 15*time.Second, "a delivery sent ahead", func() bool {
		i++
		emit(i, nil)
		time.Sleep(20 * time.Millisecond)
		return d.SentAhead() > 0
	})
	before := d.SentAhead()
	for k := 0; k < 40; k++ {
		i++
		owner := any(nil)
		if k%2 == 0 {
			owner = "alice"
		}
		emit(i, owner)
	}
	events := i
	// plain gets every event, filtered those with n > 0 (all), alice hers.
	want := events + events + 20
	waitFor(t, 30*time.Second, "every delivery succeeded", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`) == want
	})
	assertExactlyOnce(t, db, events)
	if ahead := d.SentAhead() - before; ahead < 40 {
		t.Errorf("%d of the 40 fresh events' deliveries to plain and alice were sent ahead, want all (60)", ahead)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts`); n != want {
		t.Errorf("%d attempts recorded, want %d", n, want)
	}
	// Each request names the delivery the log holds for its event and
	// subscription.
	reqs := rc.requests()
	if len(reqs) != want {
		t.Fatalf("receiver got %d requests, want %d", len(reqs), want)
	}
	for _, r := range reqs {
		id, err := strconv.ParseInt(r.Header.Get("X-Relay-Delivery"), 10, 64)
		if err != nil {
			t.Fatalf("X-Relay-Delivery %q: %v", r.Header.Get("X-Relay-Delivery"), err)
		}
		var sub int64
		var eventID string
		if err := db.Pool.QueryRow(context.Background(), `SELECT subscription_id, event_id::text FROM relay.deliveries WHERE id = $1`, id).Scan(&sub, &eventID); err != nil {
			t.Fatalf("delivery %d named by a request: %v", id, err)
		}
		if eventID != r.Header.Get("Webhook-Id") {
			t.Errorf("delivery %d is of event %s, the request carried %s", id, eventID, r.Header.Get("Webhook-Id"))
		}
		if sub != plain && sub != filtered && sub != owned {
			t.Errorf("delivery %d is of subscription %d", id, sub)
		}
	}

	// Disabled: the notification drops the snapshot before the next event.
	db.Exec(t, `UPDATE relay.subscriptions SET enabled = false WHERE id = $1`, plain)
	time.Sleep(100 * time.Millisecond)
	emit(1, nil)
	waitFor(t, 15*time.Second, "the last event delivered to filtered", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'succeeded'`, filtered) == events+1
	})
	time.Sleep(200 * time.Millisecond)
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1`, plain); n != events {
		t.Errorf("the disabled subscription has %d deliveries, want %d", n, events)
	}
	if n := len(rc.requests()); n != want+1 {
		t.Errorf("receiver got %d requests after the disable, want %d", n, want+1)
	}
}

// presendCrashHandler is the child side of
// TestCrashAfterSendingAheadBeforeTheLogIsWritten: the stream hands events
// to the fan-out, which sends fresh ones ahead through a dispatcher. It
// prints AHEAD once the first delivery has been sent ahead, so the parent
// knows the snapshot of subscriptions is loaded.
func presendCrashHandler(ctx context.Context, pool *pgxpool.Pool) outbox.Handler {
	cfg, err := testDispatchConfig(pool, loopback, zerolog.New(os.Stderr).Level(zerolog.WarnLevel))
	var d *dispatch.Dispatcher
	if err == nil {
		d, err = dispatch.New(cfg)
	}
	if err == nil {
		err = d.Start(ctx)
	}
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fan := fanout.New(pool, fanout.Config{Dispatcher: d, OnDeliveries: func(int) { d.Wake() }})
	ahead := false
	return outbox.HandlerFunc(func(ctx context.Context, evs []outbox.Event) error {
		err := fan.HandleEvents(ctx, evs)
		if !ahead && d.SentAhead() > 0 {
			ahead = true
			fmt.Println("AHEAD")
		}
		return err
	})
}

// A relay killed after it sent fresh events ahead but before their delivery
// rows were committed loses none of them: the slot was not acknowledged, so
// the next relay replays the transaction through the table, writes one
// delivery per event and subscription and sends each again under the same
// Webhook-Id (at least once; the receiver deduplicates on it). The ids the
// dead relay sent with were never written.
func TestCrashAfterSendingAheadBeforeTheLogIsWritten(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	subscribe(t, db, nil, rc.URL+"/plain", []string{"*"}, "")
	ctx := context.Background()
	const batch = 10
	warm := 0
	var held pgx.Tx
	var aheadIDs map[string]string // Webhook-Id → X-Relay-Delivery sent before the crash
	runCrashChild(t, db, "presend", 0, func(expect func(string)) {
		// Events until one is sent ahead: the child's snapshot is loaded.
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := db.Pool.Exec(ctx, `INSERT INTO relay.outbox (event_type, payload) VALUES ('crash.warm', '{}')`); err == nil {
					warm++
				}
			}
		}()
		expect("AHEAD")
		close(stop)
		<-stopped
		waitFor(t, 15*time.Second, "the warm-up events delivered", func() bool {
			return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`) == warm
		})
		// Hold the log: the child can send, but can write no delivery row.
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = tx
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		if _, err := tx.Exec(ctx, `LOCK TABLE relay.deliveries IN EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'crash.ahead', '{}' FROM generate_series(1, $1::int)`, batch)
		waitFor(t, 15*time.Second, "the fan-out statement waiting for the log", func() bool {
			return count(t, db.Pool, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'
				AND query LIKE '%FROM relay.subscriptions WHERE enabled AND filter IS NOT NULL%'`, crashAppName) == 1
		})
		// The statement runs after the sends ahead were handed to senders:
		// give them time to reach the receiver. How many go ahead depends on
		// the hand-over's room at that moment; the rest wait for the table.
		waitFor(t, 15*time.Second, "part of the batch sent ahead", func() bool { return len(rc.requests()) > warm })
		time.Sleep(300 * time.Millisecond)
		aheadIDs = map[string]string{}
		for _, r := range rc.requests()[warm:] {
			aheadIDs[r.Header.Get("Webhook-Id")] = r.Header.Get("X-Relay-Delivery")
		}
	})
	// The child is dead; end its statements before the lock goes, so none of
	// them commits after all.
	if _, err := held.Exec(ctx, `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()`, crashAppName); err != nil {
		t.Fatal(err)
	}
	if err := held.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if len(aheadIDs) == 0 || len(aheadIDs) != len(rc.requests())-warm {
		t.Fatalf("%d distinct events in %d requests sent ahead, want at least one, each once", len(aheadIDs), len(rc.requests())-warm)
	}
	t.Logf("%d of the %d events were sent ahead before the crash", len(aheadIDs), batch)
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries d JOIN relay.outbox o ON o.event_id = d.event_id WHERE o.event_type = 'crash.ahead'`); n != 0 {
		t.Fatalf("%d deliveries of the batch written before the restart, want 0", n)
	}

	startHandoff(t, db, nil)
	waitFor(t, 30*time.Second, "every event delivered", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`) == warm+batch
	})
	assertExactlyOnce(t, db, warm+batch)
	after := rc.requests()[warm+len(aheadIDs):]
	if len(after) != batch {
		t.Fatalf("receiver got %d requests after the restart, want %d", len(after), batch)
	}
	for _, r := range after {
		hook, delivery := r.Header.Get("Webhook-Id"), r.Header.Get("X-Relay-Delivery")
		if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries d JOIN relay.outbox o USING (event_id)
			WHERE d.id = $1::bigint AND d.event_id = $2::uuid AND o.event_type = 'crash.ahead'`, delivery, hook); n != 1 {
			t.Errorf("event %s: delivery %s named after the restart is not the batch's in the log", hook, delivery)
		}
		first, ok := aheadIDs[hook]
		if !ok {
			continue // it waited for the table before the crash
		}
		delete(aheadIDs, hook)
		if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE id = $1::bigint`, first); n != 0 {
			t.Errorf("event %s: delivery %s, sent before the crash, is in the log", hook, first)
		}
	}
	for hook := range aheadIDs {
		t.Errorf("event %s, sent ahead before the crash, was not sent again", hook)
	}
}
