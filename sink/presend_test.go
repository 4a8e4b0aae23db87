package sink_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
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
