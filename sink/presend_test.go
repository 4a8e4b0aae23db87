package sink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// A change of subscriptions reaches the relay that holds the slot through
// the WAL, in commit order with the events (migration 000009): an event
// committed right after a subscription is disabled, or given to another
// owner, is not sent to it by the snapshot from before, even when no
// notification arrives at all. The change here is made with triggers off
// (session_replication_role = replica), so the listener hears nothing,
// and the test writes the WAL message the trigger would have; without it,
// the snapshot from before would be used until its TTL (5 s).
func TestSubscriptionChangesAreHeardInCommitOrder(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	plain, _ := subscribe(t, db, nil, rc.URL+"/plain", []string{"order.*"}, "")
	owned, _ := subscribe(t, db, "alice", rc.URL+"/alice", []string{"*"}, "")
	// Filtered, so never in the snapshot: it shows each event was handled.
	witness, _ := subscribe(t, db, nil, rc.URL+"/witness", []string{"*"}, `filter = '$.n ? (@ > 0)'`)
	d := startHandoff(t, db, nil)

	emit := func(i int) {
		db.Exec(t, `INSERT INTO relay.outbox (event_type, owner, payload) VALUES ('order.paid', 'alice', jsonb_build_object('n', $1::int))`, i)
	}
	i := 0
	waitFor(t, 15*time.Second, "deliveries sent ahead to both", func() bool {
		i++
		emit(i)
		time.Sleep(20 * time.Millisecond)
		return d.SentAhead() >= 2
	})
	waitFor(t, 15*time.Second, "the warm-up delivered", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'succeeded'`, witness) == i
	})
	sentBefore := d.SentAhead()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		for _, q := range []string{
			`SET LOCAL session_replication_role = replica`,
			`UPDATE relay.subscriptions SET enabled = false WHERE id = ` + strconv.FormatInt(plain, 10),
			`UPDATE relay.subscriptions SET owner = 'bob' WHERE id = ` + strconv.FormatInt(owned, 10),
			`SELECT pg_logical_emit_message(true, '` + fanout.SubscriptionsMessage + `', pg_current_xact_id()::text)`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// At once, and a few more while the snapshot is read again.
	for k := 0; k < 5; k++ {
		i++
		emit(i)
	}
	waitFor(t, 15*time.Second, "the last events delivered to the witness", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'succeeded'`, witness) == i
	})
	time.Sleep(200 * time.Millisecond)
	for _, sub := range []int64{plain, owned} {
		if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1`, sub); n != i-5 {
			t.Errorf("subscription %d has %d deliveries, want the %d of the events before its change", sub, n, i-5)
		}
	}
	paths := map[string]int{}
	for _, r := range rc.requests() {
		paths[r.Path]++
	}
	if paths["/plain"] != i-5 || paths["/alice"] != i-5 || paths["/witness"] != i {
		t.Errorf("receiver got %v, want %d on /plain and /alice and %d on /witness", paths, i-5, i)
	}
	if n := d.SentAhead() - sentBefore; n != 0 {
		t.Errorf("%d deliveries sent ahead after the change, want 0 (no subscription left to send to ahead)", n)
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

// Events sent ahead are written behind (fanout.Config.WriteBehind): the
// deliveries whose success is back by the statement are inserted
// finished, with their attempt, and the recorder only counts them; those
// still waiting for their answer (slow) or that failed are written claimed
// and recorded as before. Either way the log is what the receivers saw,
// one attempt each.
func TestWrittenBehindWithTheirAnswers(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	fast := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("thanks")) })
	slow := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		time.Sleep(time.Second)
		w.WriteHeader(http.StatusNoContent)
	})
	failing := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("no"))
	})
	fastID, _ := subscribe(t, db, nil, fast.URL+"/fast", []string{"order.*"}, "")
	slowID, _ := subscribe(t, db, nil, slow.URL+"/slow", []string{"*"}, "max_in_flight = 64")
	failingID, _ := subscribe(t, db, nil, failing.URL+"/failing", []string{"order.refused"}, "")
	// Senders enough that the slow receiver's requests leave some free.
	d := startDispatcher(t, db, loopback, func(c *dispatch.Config) { c.Concurrency = 128 })
	startCapture(t, db, func(outbox.Handler) outbox.Handler {
		return fanout.New(db.Pool, fanout.Config{
			Logger: zerolog.New(zerolog.NewTestWriter(t)), Dispatcher: d, OnDeliveries: func(int) { d.Wake() },
			// Long enough for the fast receiver's answers to be back
			// whatever the machine's load, far shorter than the slow one.
			WriteBehind: 300 * time.Millisecond,
		})
	})
	// The first refused of each emit go to the failing subscription too:
	// 3 in all, fewer than opens its circuit.
	refusedIn := 0
	emit := func(n, refused int) {
		db.Exec(t, `INSERT INTO relay.outbox (event_type, payload)
			SELECT CASE WHEN g <= $2 THEN 'order.refused' ELSE 'order.paid' END, jsonb_build_object('n', g)
			FROM generate_series(1, $1) AS g`, n, refused)
		refusedIn += refused
	}
	// The snapshot is read once the listener is connected.
	events := 0
	waitFor(t, 15*time.Second, "a delivery sent ahead", func() bool {
		emit(1, 0)
		events++
		time.Sleep(20 * time.Millisecond)
		return d.SentAhead() > 0
	})
	done := func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE status <> 'delivering' AND attempts = 1`) == 2*events+refusedIn
	}
	waitFor(t, 15*time.Second, "the first events answered", done)
	sent, written := d.SentAhead(), d.WrittenWithDelivery()

	// One transaction: one hand-over, one statement 300 ms later.
	emit(20, 2)
	events += 20
	waitFor(t, 30*time.Second, "20 events answered", done)
	if n := d.SentAhead() - sent; n != 42 {
		t.Fatalf("%d deliveries sent ahead, want 42", n)
	}
	if n := d.WrittenWithDelivery() - written; n != 20 {
		t.Errorf("fan-out wrote %d attempts with their delivery, want the fast receiver's 20", n)
	}
	// Separate transactions, some joining one statement.
	for k := 0; k < 10; k++ {
		emit(1, k%10/9)
		events++
	}
	waitFor(t, 30*time.Second, "every event answered", done)
	assertExactlyOnce(t, db, events)

	type row struct {
		status                   string
		attempts, cycle          int
		code, duration           *int
		response, lockedBy       *string
		completed                bool
		logged, loggedCode       int
		outcome, attemptResponse *string
	}
	rows, err := db.Pool.Query(context.Background(), `
		SELECT d.subscription_id, d.status, d.attempts, d.cycle_attempts, d.last_status_code, d.last_duration_ms,
		       d.last_response, d.locked_by, d.completed_at IS NOT NULL,
		       (SELECT count(*) FROM relay.delivery_attempts a WHERE a.delivery_id = d.id),
		       (SELECT min(a.status_code) FROM relay.delivery_attempts a WHERE a.delivery_id = d.id),
		       (SELECT min(a.outcome) FROM relay.delivery_attempts a WHERE a.delivery_id = d.id),
		       (SELECT min(a.response_body) FROM relay.delivery_attempts a WHERE a.delivery_id = d.id)
		FROM relay.deliveries AS d`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]int{}
	for rows.Next() {
		var sub int64
		var r row
		var loggedCode *int
		if err := rows.Scan(&sub, &r.status, &r.attempts, &r.cycle, &r.code, &r.duration, &r.response, &r.lockedBy, &r.completed,
			&r.logged, &loggedCode, &r.outcome, &r.attemptResponse); err != nil {
			t.Fatal(err)
		}
		got[sub]++
		if loggedCode != nil {
			r.loggedCode = *loggedCode
		}
		wantStatus, wantCode, wantOutcome, wantResponse := "succeeded", 200, "succeeded", "thanks"
		switch sub {
		case slowID:
			wantCode, wantResponse = 204, ""
		case failingID:
			wantStatus, wantCode, wantOutcome, wantResponse = "pending", 500, "retry", "no"
		}
		str := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		if r.status != wantStatus || r.attempts != 1 || r.cycle != 1 || r.code == nil || *r.code != wantCode || r.duration == nil ||
			str(r.response) != wantResponse || r.lockedBy != nil || r.completed != (wantStatus == "succeeded") {
			t.Errorf("delivery of subscription %d: %+v, want %s after one attempt answered %d", sub, r, wantStatus, wantCode)
		}
		if r.logged != 1 || r.loggedCode != wantCode || str(r.outcome) != wantOutcome || str(r.attemptResponse) != wantResponse {
			t.Errorf("attempts of a delivery of subscription %d: %d, status %d, outcome %s, response %q; want one, %d, %s, %q",
				sub, r.logged, r.loggedCode, str(r.outcome), str(r.attemptResponse), wantCode, wantOutcome, wantResponse)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got[fastID] != events || got[slowID] != events || got[failingID] != refusedIn {
		t.Errorf("deliveries per subscription %v, want %d, %d and %d", got, events, events, refusedIn)
	}
	// Health follows the attempts fan-out wrote as those the recorder did.
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.subscriptions WHERE id = $1 AND last_success_at IS NOT NULL AND consecutive_failures = 0`, fastID); n != 1 {
		t.Errorf("the fast subscription's health does not show its successes")
	}
	if n := len(fast.requests()); n != events {
		t.Errorf("the fast receiver got %d requests, want %d", n, events)
	}
}

// fanoutStatements keeps the event counts of fan-out's "fanned out" log
// lines: one per statement.
type fanoutStatements struct {
	mu     sync.Mutex
	events []int
}

func (s *fanoutStatements) Write(p []byte) (int, error) {
	var line struct {
		Message string `json:"message"`
		Events  int    `json:"num_events"`
	}
	if json.Unmarshal(p, &line) == nil && line.Message == "fanned out" {
		s.mu.Lock()
		s.events = append(s.events, line.Events)
		s.mu.Unlock()
	}
	return len(p), nil
}

// counts are the event counts of every statement so far.
func (s *fanoutStatements) counts() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// len is how many statements were logged so far.
func (s *fanoutStatements) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

// largestSince is the most events one statement wrote among those logged
// after the first from.
func (s *fanoutStatements) largestSince(from int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	most := 0
	for _, n := range s.events[from:] {
		most = max(most, n)
	}
	return most
}

// Fresh events that no subscription matches are written behind like those
// sent ahead: the events of a window share one statement instead of one
// each, whether there is no enabled subscription at all or none of the
// event's type. The statement still matches them, so a subscription the
// snapshot could not know of, created in the event's own transaction after
// it, gets the event.
func TestEventsNoSubscriptionMatchesAreWrittenBehindTogether(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	stmts := &fanoutStatements{}
	d := startDispatcher(t, db, loopback, nil)
	startCapture(t, db, func(outbox.Handler) outbox.Handler {
		return fanout.New(db.Pool, fanout.Config{
			Logger: zerolog.New(stmts).Level(zerolog.DebugLevel), Dispatcher: d, OnDeliveries: func(int) { d.Wake() },
			// Long enough for four events 60 ms apart whatever the
			// machine's load.
			WriteBehind: time.Second,
		})
	})
	// Four one-event transactions 60 ms apart, so that the stream hands
	// each over alone, all within one window (1 s). Once the snapshot is read
	// they share a statement; three rounds in a row must, which one
	// statement per hand-over does not do by chance.
	round := func() bool {
		from := stmts.len()
		for range 4 {
			db.Exec(t, `SELECT relay.emit('user.created', '{}')`)
			time.Sleep(60 * time.Millisecond)
		}
		time.Sleep(2 * time.Second) // the window, and the statement
		return stmts.largestSince(from) >= 4
	}
	grouped := func(what string) {
		t.Helper()
		waitFor(t, 30*time.Second, what, round)
		for i := range 3 {
			if !round() {
				t.Fatalf("%s: round %d after the first was not written in one statement (events per statement: %v)", what, i+1, stmts.counts())
			}
		}
	}
	grouped("four events that go nowhere in one statement, with no subscription")

	rc := newReceiver(t, nil)
	subscribe(t, db, nil, rc.URL+"/orders", []string{"order.*"}, "")
	grouped("four events that go nowhere in one statement, with a subscription of another type")

	// The event first, then, in the same transaction, a subscription it
	// matches: the snapshot cannot have it, the statement behind does.
	tx, err := db.Pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), `SELECT relay.emit('user.created', '{"same": "transaction"}')`); err != nil {
		t.Fatal(err)
	}
	var users int64
	if err := tx.QueryRow(context.Background(), `INSERT INTO relay.subscriptions (name, url, event_types)
		VALUES ('users', $1, '{user.*}') RETURNING id`, rc.URL+"/users").Scan(&users); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the event delivered to the subscription created after it", func() bool {
		for _, c := range rc.requests() {
			if c.Path == "/users" && strings.Contains(string(c.Body), `"same"`) {
				return true
			}
		}
		return false
	})
	// Its row may follow the request by a window.
	waitFor(t, 20*time.Second, "the delivery of that event written", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1`, users) > 0
	})
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1`, users); n != 1 {
		t.Errorf("%d deliveries to the new subscription, want the one event of its transaction", n)
	}
}
