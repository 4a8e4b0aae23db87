package sink_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
)

// restartableReceiver is an HTTP receiver on a fixed 127.0.0.1 port that can
// be stopped and started again on the same address, as a deployed receiver
// restarts: every connection it had is closed.
type restartableReceiver struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	srv  *http.Server
	seen map[string]int // webhook-id → requests
}

func newRestartableReceiver(t *testing.T) *restartableReceiver {
	rr := &restartableReceiver{t: t, seen: map[string]int{}}
	rr.start("127.0.0.1:0")
	t.Cleanup(rr.stop)
	return rr
}

func (rr *restartableReceiver) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		rr.t.Fatal(err)
	}
	rr.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		rr.mu.Lock()
		rr.seen[r.Header.Get("Webhook-Id")]++
		rr.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	rr.mu.Lock()
	rr.srv = srv
	rr.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			rr.t.Errorf("receiver: %v", err)
		}
	}()
}

// stop closes the listener and every connection, idle or not.
func (rr *restartableReceiver) stop() {
	rr.mu.Lock()
	srv := rr.srv
	rr.mu.Unlock()
	_ = srv.Close()
}

func (rr *restartableReceiver) restart() {
	rr.stop()
	rr.start(rr.addr)
}

// A receiver that restarts between two bursts closes every keep-alive
// connection relay holds to it. Every event of the second burst is still
// delivered at its first attempt, within 2 s: none waits for a retry (the
// schedule's first retry is a minute away).
func TestReceiverRestartCostsNoRetry(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rr := newRestartableReceiver(t)
	subID, _ := subscribe(t, db, nil, "http://"+rr.addr+"/hook", []string{"burst.*"}, "")
	startHandoff(t, db, nil)
	const burst = 100
	emit := func(typ string) {
		db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT $1, jsonb_build_object('i', i) FROM generate_series(1, $2) AS i`, typ, burst)
	}
	succeeded := func(typ string) int {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries d JOIN relay.outbox o USING (event_id)
			WHERE d.subscription_id = $1 AND o.event_type = $2 AND d.status = 'succeeded'`, subID, typ)
	}
	emit("burst.one")
	waitFor(t, 30*time.Second, "the first burst delivered", func() bool { return succeeded("burst.one") == burst })

	rr.restart()
	began := time.Now()
	emit("burst.two")
	// A correctness bound, not a benchmark: a delivery that waited for a
	// retry would arrive a minute later.
	waitFor(t, 2*time.Second, "the second burst delivered within 2 s", func() bool { return succeeded("burst.two") == burst })
	t.Logf("second burst delivered %s after the restart", time.Since(began).Round(time.Millisecond))

	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts a JOIN relay.deliveries d ON d.id = a.delivery_id
		WHERE d.subscription_id = $1 AND a.outcome <> 'succeeded'`, subID); n != 0 {
		t.Errorf("%d attempts failed or were retried", n)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND attempts <> 1`, subID); n != 0 {
		t.Errorf("%d deliveries needed more than one attempt", n)
	}
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if len(rr.seen) != 2*burst {
		t.Errorf("the receiver saw %d distinct events, want %d", len(rr.seen), 2*burst)
	}
}
