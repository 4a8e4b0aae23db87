package sink_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/sink/dispatch"
	"github.com/pgoutbox/relay/sink/send"
)

// Flow control (issue 17), end to end: real PostgreSQL, real HTTPS
// receivers on 127.0.0.1, the dispatcher as relay runs it.

// arrival is one request an HTTPS test receiver got.
type arrival struct {
	at   time.Time
	seq  int    // the event's "seq" payload field
	key  string // the event's outbox key
	code int    // what the receiver answered
}

// tlsReceiver is an HTTPS server on 127.0.0.1. respond decides the answer
// of each request (200 when nil) while it is in flight; the receiver keeps
// every arrival and the peak of concurrent requests.
type tlsReceiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	got     []arrival
	now     int
	peak    int
	respond func(a *arrival, w http.ResponseWriter) int
	delay   time.Duration
}

func newTLSReceiver(t *testing.T, delay time.Duration, respond func(a *arrival, w http.ResponseWriter) int) *tlsReceiver {
	rc := &tlsReceiver{respond: respond, delay: delay}
	rc.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var env struct {
			Key  *string `json:"key"`
			Data struct {
				Seq int `json:"seq"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &env)
		a := arrival{at: time.Now(), seq: env.Data.Seq}
		if env.Key != nil {
			a.key = *env.Key
		}
		rc.mu.Lock()
		rc.now++
		rc.peak = max(rc.peak, rc.now)
		a.code = 200
		if rc.respond != nil {
			a.code = rc.respond(&a, w)
		}
		rc.got = append(rc.got, a)
		rc.mu.Unlock()
		if rc.delay > 0 {
			time.Sleep(rc.delay) // the receiver's own work time
		}
		rc.mu.Lock()
		rc.now--
		rc.mu.Unlock()
		w.WriteHeader(a.code)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *tlsReceiver) arrivals() []arrival {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]arrival(nil), rc.got...)
}

func (rc *tlsReceiver) peakConcurrency() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.peak
}

// startTLSDispatcher runs a dispatcher that trusts the receivers' test
// certificates (verification stays on).
func startTLSDispatcher(t *testing.T, db *pgtest.DB, receivers []*tlsReceiver, mod func(*dispatch.Config)) *dispatch.Dispatcher {
	t.Helper()
	roots := x509.NewCertPool()
	for _, rc := range receivers {
		roots.AddCert(rc.srv.Certificate())
	}
	guard, err := send.NewAddressGuard(loopback)
	if err != nil {
		t.Fatal(err)
	}
	return startDispatcher(t, db, loopback, func(c *dispatch.Config) {
		c.Sender = send.New(send.Config{Guard: guard, UserAgent: "relay/test", RootCAs: roots})
		c.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
		if mod != nil {
			mod(c)
		}
	})
}

func emitSeq(t *testing.T, db *pgtest.DB, eventType string, n int, key func(i int) any) {
	t.Helper()
	for i := 0; i < n; i++ {
		var k any
		if key != nil {
			k = key(i)
		}
		db.Exec(t, `SELECT relay.emit($1, jsonb_build_object('seq', $2::int), NULL, $3)`, eventType, i, k)
	}
}

func statusCounts(t *testing.T, db *pgtest.DB, subID int64) (succeeded, failed int) {
	t.Helper()
	err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed')
		FROM relay.deliveries WHERE subscription_id = $1`, subID).Scan(&succeeded, &failed)
	if err != nil {
		t.Fatal(err)
	}
	return succeeded, failed
}

// onePerSecond answers 429 + Retry-After: 1 to a request that comes less
// than a second after the last one it accepted, and records the window it
// announced; inWindow counts requests that arrived inside one.
type onePerSecond struct {
	mu       sync.Mutex
	accepted time.Time
	windows  [][2]time.Time
	inWindow int
}

func (l *onePerSecond) respond(a *arrival, w http.ResponseWriter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, win := range l.windows {
		if a.at.After(win[0]) && a.at.Before(win[1]) {
			l.inWindow++
		}
	}
	if a.at.Sub(l.accepted) >= time.Second {
		l.accepted = a.at
		return 200
	}
	w.Header().Set("Retry-After", "1")
	now := time.Now()
	l.windows = append(l.windows, [2]time.Time{now, now.Add(time.Second)})
	return 429
}

// The Slack scenario: a receiver that takes one request a second
// and answers 429 + Retry-After: 1 above it. A burst of 20 events all
// succeed, none fails, and no request arrives inside an announced window —
// paced by the Slack default (1/s), and without pacing (json, one at a
// time), where the 429s hold the subscription instead and spend no retry.
func TestThrottledBurstAllSucceed(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	var slackLimit, jsonLimit onePerSecond
	slackRC := newTLSReceiver(t, 0, slackLimit.respond)
	jsonRC := newTLSReceiver(t, 0, jsonLimit.respond)
	// Three quick retries: before flow control, 15 of the 20 ended failed.
	schedule := `retry_schedule = '{2 seconds, 2 seconds, 2 seconds}'`
	slackID, _ := subscribe(t, db, nil, slackRC.srv.URL, []string{"thread.created"}, `format = 'slack', `+schedule)
	jsonID, _ := subscribe(t, db, nil, jsonRC.srv.URL, []string{"thread.created"}, `max_in_flight = 1, `+schedule)
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.subscriptions WHERE id = $1 AND rate_limit = 1`, slackID); n != 1 {
		t.Fatal("a Slack subscription should be paced at 1/s by default")
	}
	startCapture(t, db, nil)
	startTLSDispatcher(t, db, []*tlsReceiver{slackRC, jsonRC}, nil)
	emitSeq(t, db, "thread.created", 20, nil)

	for _, sub := range []int64{slackID, jsonID} {
		waitFor(t, 90*time.Second, "20 deliveries settled", func() bool {
			s, f := statusCounts(t, db, sub)
			return s+f == 20
		})
		if s, f := statusCounts(t, db, sub); s != 20 || f != 0 {
			t.Errorf("subscription %d: %d succeeded, %d failed; want 20 and 0", sub, s, f)
		}
	}
	for name, l := range map[string]*onePerSecond{"slack": &slackLimit, "json": &jsonLimit} {
		l.mu.Lock()
		if l.inWindow != 0 {
			t.Errorf("%s: %d requests arrived inside an announced Retry-After window (%d windows)", name, l.inWindow, len(l.windows))
		}
		l.mu.Unlock()
	}
	// Without pacing the receiver did throttle: recorded as such, with its
	// Retry-After, and the deliveries spent no retry on it.
	throttled := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts a JOIN relay.deliveries d ON d.id = a.delivery_id
		WHERE d.subscription_id = $1 AND a.outcome = 'throttled' AND a.retry_after = '1' AND a.status_code = 429`, jsonID)
	if throttled == 0 {
		t.Fatal("the unpaced subscription recorded no throttled attempt")
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND cycle_attempts > 1`, jsonID); n != 0 {
		t.Errorf("%d deliveries spent retries on 429s", n)
	}
	if n := count(t, db.Pool, `SELECT consecutive_failures + failed_attempts_in_row FROM relay.subscriptions WHERE id = $1`, jsonID); n != 0 {
		t.Errorf("throttled attempts counted as failures (%d)", n)
	}
	t.Logf("unpaced: %d throttled attempts; paced: %d 429s", throttled, len(slackLimit.windows))
}

// Two relays on one database share a subscription's max_in_flight: the
// receiver never sees more than 2 requests at once; and a rate_limit of 5
// holds across both, never more than 5 + the burst (5) in any second.
func TestTwoRelaysShareMaxInFlightAndRate(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	slow := newTLSReceiver(t, 200*time.Millisecond, nil)
	paced := newTLSReceiver(t, 0, nil)
	slowID, _ := subscribe(t, db, nil, slow.srv.URL, []string{"work.slow"}, `max_in_flight = 2`)
	pacedID, _ := subscribe(t, db, nil, paced.srv.URL, []string{"work.paced"}, `rate_limit = 5, max_in_flight = 16`)
	startCapture(t, db, nil)
	rcs := []*tlsReceiver{slow, paced}
	startTLSDispatcher(t, db, rcs, func(c *dispatch.Config) { c.WorkerID = "relay-one" })
	startTLSDispatcher(t, db, rcs, func(c *dispatch.Config) { c.WorkerID = "relay-two" })
	emitSeq(t, db, "work.slow", 30, nil)
	emitSeq(t, db, "work.paced", 40, nil)

	for _, sub := range []int64{slowID, pacedID} {
		waitFor(t, 60*time.Second, "all delivered", func() bool {
			s, _ := statusCounts(t, db, sub)
			return s == map[int64]int{slowID: 30, pacedID: 40}[sub]
		})
	}
	if p := slow.peakConcurrency(); p > 2 || p < 1 {
		t.Errorf("peak concurrent requests = %d, want at most max_in_flight = 2", p)
	}
	// Both relays sent (the shares went to whichever had work).
	var relays int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(DISTINCT locked_by) FROM relay.deliveries WHERE subscription_id = $1`, slowID).Scan(&relays); err != nil {
		t.Fatal(err)
	}
	got := paced.arrivals()
	sort.Slice(got, func(i, j int) bool { return got[i].at.Before(got[j].at) })
	// The bucket grants at most rate + burst tokens in any second; the
	// window is 50 ms short of one to allow for the time from a grant to
	// its request's arrival, which varies on a loaded machine.
	most := 0
	for i := range got {
		n := 0
		for j := i; j < len(got) && got[j].at.Sub(got[i].at) < 950*time.Millisecond; j++ {
			n++
		}
		most = max(most, n)
	}
	if most > 5+5 {
		t.Errorf("%d requests within one second, want at most rate 5 + burst 5", most)
	}
	t.Logf("peak concurrency %d; most requests in a second at rate 5: %d", slow.peakConcurrency(), most)
}

// ordering = key: the deliveries of a key go one at a time, in commit
// order; a failing key holds back only itself; with ordering = none
// nothing is held.
func TestOrderingByKey(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	db.Exec(t, `UPDATE relay.settings SET circuit_probe_interval = '50 milliseconds', circuit_probe_max = '200 milliseconds'`)
	var bDown atomic.Bool
	bDown.Store(true)
	failB := func(a *arrival, w http.ResponseWriter) int {
		if a.key == "B" && bDown.Load() {
			return 503
		}
		return 200
	}
	ordered := newTLSReceiver(t, 2*time.Millisecond, failB)
	unordered := newTLSReceiver(t, 2*time.Millisecond, failB)
	schedule := "retry_schedule = '{" + strings.TrimSuffix(strings.Repeat("0.5 seconds,", 20), ",") + "}'"
	orderedID, _ := subscribe(t, db, nil, ordered.srv.URL, []string{"doc.*"}, `ordering = 'key', `+schedule)
	unorderedID, _ := subscribe(t, db, nil, unordered.srv.URL, []string{"doc.*"}, schedule)
	startCapture(t, db, nil)
	startTLSDispatcher(t, db, []*tlsReceiver{ordered, unordered}, nil)
	keys := []string{"A", "B", "C"}
	emitSeq(t, db, "doc.changed", 150, func(i int) any { return keys[i%3] })

	okOf := func(rc *tlsReceiver, key string) []int {
		var seqs []int
		for _, a := range rc.arrivals() {
			if a.key == key && a.code == 200 {
				seqs = append(seqs, a.seq)
			}
		}
		return seqs
	}
	waitFor(t, 60*time.Second, "keys A and C delivered while B fails", func() bool {
		return len(okOf(ordered, "A")) >= 50 && len(okOf(ordered, "C")) >= 50
	})
	if !bDown.Load() {
		t.Fatal("B recovered before A and C were through")
	}
	// Meanwhile B was held at its head: only its first delivery was tried.
	var bTried []int
	for _, a := range ordered.arrivals() {
		if a.key == "B" {
			bTried = append(bTried, a.seq)
		}
	}
	for _, s := range bTried {
		if s != bTried[0] {
			t.Fatalf("while B's head failed, later B deliveries were sent: %v", bTried)
		}
	}
	// ordering = none holds nothing back: many B deliveries were tried.
	waitFor(t, 30*time.Second, "unordered subscription tries all of B", func() bool {
		seen := map[int]bool{}
		for _, a := range unordered.arrivals() {
			if a.key == "B" {
				seen[a.seq] = true
			}
		}
		return len(seen) == 50
	})
	bDown.Store(false)
	for _, sub := range []int64{orderedID, unorderedID} {
		waitFor(t, 60*time.Second, "all 150 succeeded", func() bool {
			s, _ := statusCounts(t, db, sub)
			return s == 150
		})
	}
	for _, k := range keys {
		seqs := okOf(ordered, k)
		if len(seqs) != 50 || !sort.IntsAreSorted(seqs) {
			t.Errorf("key %s reached the ordered subscription as %v, want 50 in commit order", k, seqs)
		}
	}
	// One at a time per key: a key's requests never overlapped.
	last := map[string]int{}
	for _, a := range ordered.arrivals() {
		if p, ok := last[a.key]; ok && a.seq < p {
			t.Fatalf("key %s went back from %d to %d", a.key, p, a.seq)
		}
		last[a.key] = a.seq
	}
}

// A key whose delivery ends failed moves on to its next delivery, and the
// log says so.
func TestOrderedKeyMovesOnAfterFailure(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newTLSReceiver(t, 0, func(a *arrival, w http.ResponseWriter) int {
		if a.seq == 0 {
			return 400 // permanent: the first delivery of the key fails
		}
		return 200
	})
	sub, _ := subscribe(t, db, nil, rc.srv.URL, []string{"doc.*"}, `ordering = 'key'`)
	startCapture(t, db, nil)
	startTLSDispatcher(t, db, []*tlsReceiver{rc}, nil)
	emitSeq(t, db, "doc.changed", 5, func(int) any { return "K" })
	waitFor(t, 30*time.Second, "the key moved on", func() bool {
		s, f := statusCounts(t, db, sub)
		return s == 4 && f == 1
	})
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_log WHERE subscription_id = $1 AND outcome = 'failed'
		AND error LIKE '%key moves on%'`, sub); n != 1 {
		t.Fatalf("the failed delivery's attempt does not record that its key moved on (%d)", n)
	}
}

// An endpoint down for a while gets probes, not its backlog; when it comes
// back, relay.subscription.recovered is emitted once and everything held
// is delivered.
func TestCircuitProbesThenRecovers(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	db.Exec(t, `UPDATE relay.settings SET circuit_probe_interval = '100 milliseconds', circuit_probe_max = '400 milliseconds'`)
	var down atomic.Bool
	down.Store(true)
	var whileDown atomic.Int64
	rc := newTLSReceiver(t, 0, func(a *arrival, w http.ResponseWriter) int {
		if down.Load() {
			whileDown.Add(1)
			return 502
		}
		return 200
	})
	watcher := newTLSReceiver(t, 0, nil)
	sub, _ := subscribe(t, db, "team-a", rc.srv.URL, []string{"job.*"},
		`max_in_flight = 1, retry_schedule = '{0.2 seconds,0.2 seconds,0.2 seconds,0.2 seconds,0.2 seconds}'`)
	watchID, _ := subscribe(t, db, "team-a", watcher.srv.URL, []string{"relay.*"}, "")
	startCapture(t, db, nil)
	startTLSDispatcher(t, db, []*tlsReceiver{rc, watcher}, nil)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, owner, payload) SELECT 'job.done', 'team-a', jsonb_build_object('seq', g) FROM generate_series(1, 40) g`)

	waitFor(t, 30*time.Second, "the circuit open with a few probes sent", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.subscriptions WHERE id = $1 AND circuit_opened_at IS NOT NULL`, sub) == 1 &&
			count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts a JOIN relay.deliveries d ON d.id = a.delivery_id
				JOIN relay.subscriptions s ON s.id = d.subscription_id WHERE s.id = $1 AND a.started_at > s.circuit_opened_at`, sub) >= 3
	})
	sent := whileDown.Load()
	// Before it opened: failure_alert_threshold (5) failed attempts; then
	// probes, one per growing interval — far fewer than the 40 held.
	if sent < 5 || sent > 25 {
		t.Errorf("%d requests reached the endpoint while it was down, want the 5 that opened the circuit plus a few probes", sent)
	}
	var since time.Time
	if err := db.Pool.QueryRow(context.Background(), `SELECT circuit_opened_at FROM relay.subscriptions WHERE id = $1`, sub).Scan(&since); err != nil {
		t.Fatal(err)
	}
	down.Store(false)
	waitFor(t, 60*time.Second, "everything held delivered", func() bool {
		s, _ := statusCounts(t, db, sub)
		return s == 40
	})
	if _, f := statusCounts(t, db, sub); f != 0 {
		t.Errorf("%d deliveries failed", f)
	}
	// Held deliveries spent nothing: most were never attempted before it closed.
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND attempts = 1`, sub); n < 30 {
		t.Errorf("only %d of 40 deliveries went through on their first attempt", n)
	}
	waitFor(t, 30*time.Second, "recovered alert delivered", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries d JOIN relay.outbox o USING (event_id)
			WHERE d.subscription_id = $1 AND o.event_type = 'relay.subscription.recovered' AND d.status = 'succeeded'`, watchID) == 1
	})
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.outbox WHERE event_type = 'relay.subscription.recovered'`); n != 1 {
		t.Fatalf("recovered emitted %d times, want once", n)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.subscriptions WHERE id = $1 AND circuit_opened_at IS NULL AND failed_attempts_in_row = 0`, sub); n != 1 {
		t.Fatal("the circuit did not close")
	}
}

// Throttled attempts don't fail deliveries, even with no retry at all;
// 24 hours of continuous throttling (on the test clock) does, with the
// reason.
func TestThrottlingCapFailsAfter24Hours(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newTLSReceiver(t, 0, func(a *arrival, w http.ResponseWriter) int {
		w.Header().Set("Retry-After", "1")
		return 429
	})
	sub, _ := subscribe(t, db, "team-a", rc.srv.URL, []string{"job.*"}, `retry_schedule = '{}'`)
	var offset atomic.Int64
	startCapture(t, db, nil)
	startTLSDispatcher(t, db, []*tlsReceiver{rc}, func(c *dispatch.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	db.Exec(t, `SELECT relay.emit('job.done', '{}', 'team-a')`)
	waitFor(t, 30*time.Second, "three throttled attempts", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts a JOIN relay.deliveries d ON d.id = a.delivery_id
			WHERE d.subscription_id = $1 AND a.outcome = 'throttled'`, sub) >= 3
	})
	d := delivery(t, db, sub)
	if d.Status == "failed" {
		t.Fatalf("a throttled delivery with no retries failed: %+v", d)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.subscriptions WHERE id = $1 AND consecutive_failures = 0 AND failed_attempts_in_row = 0
		AND circuit_opened_at IS NULL AND throttled_since IS NOT NULL`, sub); n != 1 {
		t.Fatal("throttled attempts counted as failures, or the throttle was not recorded")
	}
	offset.Store(int64(25 * time.Hour))
	waitFor(t, 30*time.Second, "the delivery failed past the cap", func() bool {
		return delivery(t, db, sub).Status == "failed"
	})
	d = delivery(t, db, sub)
	if d.LastError == nil || !strings.Contains(*d.LastError, "throttled continuously since") || !strings.Contains(*d.LastError, "24h0m0s") {
		t.Fatalf("last_error = %v, want the throttle cap's reason", d.LastError)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.outbox WHERE event_type = 'relay.subscription.failing'`); n != 0 {
		t.Fatalf("throttling raised %d failing alerts", n)
	}
}

// A subscription that sends steadily keeps its share of max_in_flight
// between requests: having none in flight at one instant is not being
// idle. Giving the share back there made the next request wait for the
// share to be asked again, up to flowRetry (which showed as a 100 ms tail
// at 1,000 events/s). Shares go back only after a second with no request.
func TestSteadySenderKeepsItsShare(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newTLSReceiver(t, 0, nil)
	sub, _ := subscribe(t, db, nil, rc.srv.URL, []string{"steady.tick"}, "")
	startCapture(t, db, nil)
	startTLSDispatcher(t, db, []*tlsReceiver{rc}, func(c *dispatch.Config) { c.WorkerID = "relay-steady" })

	ctx := context.Background()
	const events = 60
	stop := make(chan struct{})
	emitted := make(chan error, 1)
	go func() {
		defer close(stop)
		for i := 0; i < events; i++ {
			if _, err := db.Pool.Exec(ctx, `SELECT relay.emit('steady.tick', jsonb_build_object('seq', $1::int))`, i); err != nil {
				emitted <- err
				return
			}
			time.Sleep(40 * time.Millisecond)
		}
		emitted <- nil
	}()
	waitFor(t, 20*time.Second, "the first delivery", func() bool { return len(rc.arrivals()) > 0 })
	// Sample the lease: a sample with no share while a request arrived
	// less than half a second before is a share given back mid-stream.
	var samples, gaps int
	for done := false; !done; {
		select {
		case <-stop:
			done = true
		case <-time.After(10 * time.Millisecond):
		}
		var slots int
		err := db.Pool.QueryRow(ctx, `SELECT coalesce(sum(slots), 0) FROM relay.flow_leases WHERE subscription_id = $1 AND worker_id = 'relay-steady'`, sub).Scan(&slots)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		samples++
		if slots > 0 {
			continue
		}
		got := rc.arrivals()
		if len(got) > 0 && at.Sub(got[len(got)-1].at) < 500*time.Millisecond {
			gaps++
		}
	}
	if err := <-emitted; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "all delivered", func() bool {
		s, _ := statusCounts(t, db, sub)
		return s == events
	})
	if gaps > 0 {
		t.Errorf("the share was given back mid-stream in %d of %d samples", gaps, samples)
	}
}
