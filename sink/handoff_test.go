package sink_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/outbox"
	"github.com/pgoutbox/relay/sink/dispatch"
	"github.com/pgoutbox/relay/sink/fanout"
)

// startHandoff runs a dispatcher and the stream with a fan-out that hands
// deliveries straight to it, as relay run does.
func startHandoff(t *testing.T, db *pgtest.DB, mod func(*dispatch.Config)) *dispatch.Dispatcher {
	t.Helper()
	d := startDispatcher(t, db, loopback, mod)
	startCapture(t, db, func(outbox.Handler) outbox.Handler {
		return fanout.New(db.Pool, fanout.Config{
			Logger:       zerolog.New(zerolog.NewTestWriter(t)),
			Dispatcher:   d,
			OnDeliveries: func(int) { d.Wake() },
		})
	})
	return d
}

// countingReceiver counts requests per webhook-id and path.
type countingReceiver struct {
	*receiver
	mu   sync.Mutex
	seen map[string]int
}

func newCountingReceiver(t *testing.T, delay time.Duration) *countingReceiver {
	cr := &countingReceiver{seen: map[string]int{}}
	cr.receiver = newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		cr.mu.Lock()
		cr.seen[r.Header.Get("Webhook-Id")+r.URL.Path]++
		cr.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	return cr
}

func (cr *countingReceiver) check(t *testing.T, want int) {
	t.Helper()
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if len(cr.seen) != want {
		t.Errorf("receiver saw %d distinct deliveries, want %d", len(cr.seen), want)
	}
	for k, n := range cr.seen {
		if n != 1 {
			t.Errorf("%s arrived %d times", k, n)
		}
	}
}

// Deliveries handed over by fan-out and those left pending for the claim
// (a dispatcher that may hold only a few) all arrive once, each with one
// attempt recorded.
func TestHandoffAndClaimDeliverExactlyOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newCountingReceiver(t, 0)
	subscribe(t, db, nil, rc.URL+"/a", []string{"*"}, "")
	subscribe(t, db, nil, rc.URL+"/b", []string{"order.*"}, "max_in_flight = 2")
	startHandoff(t, db, func(c *dispatch.Config) { c.MaxHeld = 5; c.ClaimBatch = 3 })
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'order.paid', jsonb_build_object('i', i) FROM generate_series(1, 150) AS i`)
	db.Exec(t, `SELECT relay.emit('user.created', '{}')`)
	waitFor(t, 30*time.Second, "301 deliveries succeeded", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`) == 301
	})
	assertExactlyOnce(t, db, 151)
	rc.check(t, 301)
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts`); n != 301 {
		t.Errorf("%d attempts recorded, want 301", n)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE locked_by IS NOT NULL OR locked_until IS NOT NULL`); n != 0 {
		t.Errorf("%d deliveries still leased", n)
	}
}

// A paused relay or a subscription with its own window gets nothing handed
// over: those deliveries stay pending, as without a hand-over.
func TestHandoffHoldsBackForPauseAndWindows(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newCountingReceiver(t, 0)
	now := time.Now().UTC()
	start := now.Add(time.Hour).Truncate(time.Minute)
	windowed, _ := subscribe(t, db, nil, rc.URL+"/w", []string{"*"}, "window_start = '"+start.Format("15:04")+"', window_end = '"+start.Add(time.Hour).Format("15:04")+"'")
	open, _ := subscribe(t, db, nil, rc.URL+"/o", []string{"*"}, "")
	db.Exec(t, `SELECT relay.pause('test')`)
	startHandoff(t, db, nil)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'p.x', '{}' FROM generate_series(1, 10)`)
	waitFor(t, 10*time.Second, "20 pending deliveries", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'pending' AND locked_by IS NULL`) == 20
	})
	time.Sleep(300 * time.Millisecond)
	rc.check(t, 0)
	db.Exec(t, `SELECT relay.resume()`)
	waitFor(t, 10*time.Second, "the open subscription's 10 delivered", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'succeeded'`, open) == 10
	})
	// Once resumed, new events are handed over, except to the windowed one.
	db.Exec(t, `SELECT relay.emit('p.y', '{}')`)
	waitFor(t, 10*time.Second, "the new event delivered", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'succeeded'`, open) == 11
	})
	waitFor(t, 10*time.Second, "the windowed subscription's 11 deferred", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'pending' AND next_attempt_at >= $2`, windowed, start) == 11
	})
	rc.check(t, 11)
}

// A delivery held too long before its request could start (a slow
// endpoint, one request at a time) goes back to pending unsent and is
// claimed again: nothing is sent twice, nothing is lost.
func TestHeldTooLongIsHandedBack(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newCountingReceiver(t, 30*time.Millisecond)
	subscribe(t, db, nil, rc.URL+"/slow", []string{"*"}, "max_in_flight = 1")
	// Held jobs must start within LeaseMargin/2 = 40ms of their claim.
	startHandoff(t, db, func(c *dispatch.Config) { c.LeaseMargin = 80 * time.Millisecond })
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 's.x', '{}' FROM generate_series(1, 12)`)
	waitFor(t, 30*time.Second, "12 delivered", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`) == 12
	})
	rc.check(t, 12)
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts`); n != 12 {
		t.Errorf("%d attempts recorded, want 12 (a handed-back delivery is not an attempt)", n)
	}
}

// Stopping hands back what was held but not sent.
func TestStopReleasesHeldDeliveries(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newCountingReceiver(t, 200*time.Millisecond)
	subscribe(t, db, nil, rc.URL+"/slow", []string{"*"}, "max_in_flight = 1")
	d := startHandoff(t, db, nil)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 's.x', '{}' FROM generate_series(1, 5)`)
	waitFor(t, 10*time.Second, "5 deliveries held", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'delivering'`) == 5
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.Stop(ctx)
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'delivering' OR locked_by IS NOT NULL`); n != 0 {
		t.Errorf("%d deliveries still held after stop", n)
	}
	sent := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`)
	pending := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'pending'`)
	if sent+pending != 5 || sent == 5 {
		t.Errorf("after stop: %d succeeded, %d pending; want the unsent back to pending", sent, pending)
	}
}

// eventTypeCandidates (Go) and relay.event_type_candidates (SQL) agree.
func TestCandidatesMatchSQL(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newCountingReceiver(t, 0)
	for _, p := range []string{"*", "a.*", "a.b.*", "a.b.c", "a", "ab.*", "a.bc"} {
		subscribe(t, db, nil, rc.URL+"/"+strings.NewReplacer("*", "star", ".", "_").Replace(p), []string{p}, "")
	}
	startHandoff(t, db, nil)
	for _, typ := range []string{"a", "a.b", "a.b.c", "a.b.c.d", "ab.c", "a.bc", "b"} {
		db.Exec(t, `SELECT relay.emit($1, '{}')`, typ)
	}
	want := count(t, db.Pool, `SELECT count(*) FROM relay.outbox o JOIN relay.subscriptions s ON s.event_types && relay.event_type_candidates(o.event_type)`)
	waitFor(t, 10*time.Second, "every match delivered", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`) == want
	})
	assertExactlyOnce(t, db, 7)
}

// A batch that makes many deliveries per event is written in chunks (each
// its own statement); every delivery is there exactly once.
func TestFanoutInChunks(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	for range 40 {
		addSub(t, db, nil, "*")
	}
	startCapture(t, db, nil)
	for range 3 {
		db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'c.x', '{}' FROM generate_series(1, 150)`)
	}
	waitFor(t, 20*time.Second, "18,000 deliveries", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 18000
	})
	assertExactlyOnce(t, db, 450)
}

// Fan-out hands deliveries over before its commit is confirmed, so the
// request may be sent for a delivery whose insert then fails to commit
// (here a deferred trigger fails the first fan-out at commit, after the
// request had time to go out; in life, the server dies). Its attempt is
// not recorded against a row that does not exist, the stream replays the
// event, and the receiver gets it again with the same webhook-id: one
// delivery row, one attempt in the log, two arrivals.
func TestHandoffBeforeCommitThatFails(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newCountingReceiver(t, 0)
	subscribe(t, db, nil, rc.URL+"/a", []string{"*"}, "")
	db.Exec(t, `CREATE SEQUENCE public.fanout_commits`)
	db.Exec(t, `CREATE FUNCTION public.fail_first_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('public.fanout_commits') = 1 THEN
				PERFORM pg_sleep(0.3);
				RAISE EXCEPTION 'the first fan-out fails at commit';
			END IF;
			RETURN NULL;
		END $$`)
	db.Exec(t, `CREATE CONSTRAINT TRIGGER fail_first_commit AFTER INSERT ON relay.deliveries
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.fail_first_commit()`)
	startHandoff(t, db, nil)
	var eventID string
	if err := db.Pool.QueryRow(context.Background(), `SELECT relay.emit('c.x', '{}')::text`).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the delivery succeeded", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`) == 1
	})
	waitFor(t, 10*time.Second, "two arrivals", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.seen[eventID+"/a"] == 2
	})
	assertExactlyOnce(t, db, 1)
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts`); n != 1 {
		t.Errorf("%d attempts recorded, want 1 (the committed delivery's)", n)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE attempts = 1 AND locked_by IS NULL`); n != 1 {
		t.Errorf("the delivery row is not settled after one attempt")
	}
	if n := count(t, db.Pool, `SELECT last_value FROM public.fanout_commits`); n < 2 {
		t.Errorf("the fan-out committed %d times: the failure was not exercised", n)
	}
}
