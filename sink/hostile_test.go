package sink_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
)

// Hostile receivers: each test points one subscription at a receiver that
// misbehaves in one way, and checks that the attempt ends as a recorded
// retry or failure within the subscription's timeout, that relay read no
// more of the answer than its limits allow, and that the next delivery,
// to a healthy receiver, goes out as usual. The status, when one arrives,
// decides the verdict (DESIGN.md §4), so the body cases answer with an
// error status: what they show is that a broken body neither holds the
// attempt past its timeout nor is read without bound.

// hostileTimeoutMS is the hostile subscription's timeout.
const hostileTimeoutMS = 1500

// rawReceiver accepts connections on 127.0.0.1 and hands each to serve
// (in its own goroutine). done is closed when the test ends; every
// connection is closed then too.
func rawReceiver(t *testing.T, serve func(c net.Conn, done <-chan struct{})) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(c, done)
			})
		}
	})
	return ln.Addr().String()
}

// readRequest reads one request and its body, so that what follows is
// the answer's turn.
func readRequest(c net.Conn) bool {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, req.Body)
	return true
}

// flood writes chunk until the peer hangs up (or the test ends) and
// counts what the kernel accepted.
func flood(c net.Conn, done <-chan struct{}, chunk []byte, written *atomic.Int64, hungUp *atomic.Bool) {
	for {
		select {
		case <-done:
			return
		default:
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Write(chunk)
		written.Add(int64(n))
		if err != nil {
			hungUp.Store(true)
			return
		}
	}
}

// hangOpen keeps the connection open, sending nothing more, until the
// peer closes it or the test ends.
func hangOpen(c net.Conn, done <-chan struct{}) {
	closed := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, c); close(closed) }()
	select {
	case <-done:
	case <-closed:
	}
}

type attemptRow struct {
	Outcome    string
	DurationMS int
	StatusCode *int
	Error      *string
	Response   *string
}

// deliverToHostile runs a relay (stream, fan-out, dispatcher) with a
// hostile subscription to url and a healthy one, sends one event to the
// hostile one and returns its recorded attempt once it is there, after
// checking it ended within the timeout as one of want. It then checks that
// an event to the healthy receiver is delivered at its first attempt.
func deliverToHostile(t *testing.T, url string, want ...string) attemptRow {
	t.Helper()
	db := pgtest.NewDB(t)
	healthy := newReceiver(t, nil)
	hostileID, _ := subscribe(t, db, nil, url, []string{"hostile.x"},
		fmt.Sprintf(`timeout_ms = %d, retry_schedule = '{1 hour}'`, hostileTimeoutMS))
	healthyID, _ := subscribe(t, db, nil, healthy.URL+"/ok", []string{"healthy.x"}, "")
	startHandoff(t, db, nil)

	db.Exec(t, `SELECT relay.emit('hostile.x', '{"n":1}')`)
	var a attemptRow
	waitFor(t, 20*time.Second, "the hostile attempt recorded", func() bool {
		err := db.Pool.QueryRow(context.Background(), `
			SELECT a.outcome, a.duration_ms, a.status_code, a.error, a.response_body
			FROM relay.delivery_attempts a JOIN relay.deliveries d ON d.id = a.delivery_id
			WHERE d.subscription_id = $1`, hostileID).Scan(&a.Outcome, &a.DurationMS, &a.StatusCode, &a.Error, &a.Response)
		return err == nil
	})
	t.Logf("hostile attempt: outcome %s after %d ms, status %v, error %q", a.Outcome, a.DurationMS, deref(a.StatusCode), derefS(a.Error))
	ok := false
	for _, w := range want {
		ok = ok || a.Outcome == w
	}
	if !ok {
		t.Errorf("hostile attempt outcome %q, want one of %v", a.Outcome, want)
	}
	// A correctness bound: the timeout covers the whole attempt, reading
	// the answer included (the margin is for a loaded machine).
	if a.DurationMS > hostileTimeoutMS+1000 {
		t.Errorf("hostile attempt took %d ms, past its %d ms timeout", a.DurationMS, hostileTimeoutMS)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'delivering'`, hostileID); n != 0 {
		t.Errorf("the hostile delivery is still being delivered")
	}

	db.Exec(t, `SELECT relay.emit('healthy.x', '{"n":2}')`)
	waitFor(t, 10*time.Second, "the healthy delivery", func() bool {
		d := delivery(t, db, healthyID)
		return d.Status == "succeeded" && d.Attempts == 1
	})
	return a
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func derefS(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func TestHostileHeadersOverLimit(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	var hungUp atomic.Bool
	line := []byte("X-Padding: " + strings.Repeat("h", 1000) + "\r\n")
	addr := rawReceiver(t, func(c net.Conn, done <-chan struct{}) {
		if readRequest(c) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			flood(c, done, line, &written, &hungUp)
		}
	})
	a := deliverToHostile(t, "http://"+addr+"/hook", "retry")
	if a.StatusCode != nil || !strings.Contains(derefS(a.Error), "exceeded") {
		t.Errorf("status %v, error %q; want no status and the header limit", deref(a.StatusCode), derefS(a.Error))
	}
	waitFor(t, 10*time.Second, "relay hanging up", hungUp.Load)
	// Relay stops at 64 KiB of headers; the rest is what the two kernels'
	// socket buffers took.
	if n := written.Load(); n > 32<<20 {
		t.Errorf("the receiver wrote %d bytes of headers before relay hung up", n)
	}
}

func TestHostileStatusLineOverLimit(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	var hungUp atomic.Bool
	addr := rawReceiver(t, func(c net.Conn, done <-chan struct{}) {
		if readRequest(c) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 ")
			flood(c, done, []byte(strings.Repeat("O", 4096)), &written, &hungUp)
		}
	})
	a := deliverToHostile(t, "http://"+addr+"/hook", "retry")
	if a.StatusCode != nil {
		t.Errorf("status %v recorded from a status line that never ended", deref(a.StatusCode))
	}
	waitFor(t, 10*time.Second, "relay hanging up", hungUp.Load)
	if n := written.Load(); n > 32<<20 {
		t.Errorf("the receiver wrote %d bytes of status line before relay hung up", n)
	}
}

func TestHostileBodyNeverEnds(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	var hungUp atomic.Bool
	chunk := []byte(fmt.Sprintf("1000\r\n%s\r\n", strings.Repeat("b", 0x1000)))
	addr := rawReceiver(t, func(c net.Conn, done <-chan struct{}) {
		if readRequest(c) {
			_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n")
			flood(c, done, chunk, &written, &hungUp)
		}
	})
	a := deliverToHostile(t, "http://"+addr+"/hook", "retry")
	if deref(a.StatusCode) != 503 || len([]rune(derefS(a.Response))) != 1000 {
		t.Errorf("status %v, %d characters kept; want 503 and the first 1000", deref(a.StatusCode), len([]rune(derefS(a.Response))))
	}
	waitFor(t, 10*time.Second, "relay hanging up", hungUp.Load)
	// Relay reads 64 KiB of a body at most, then drops the connection.
	if n := written.Load(); n > 32<<20 {
		t.Errorf("the receiver wrote %d bytes of body before relay hung up", n)
	}
}

func TestHostileBodyTrickles(t *testing.T) {
	t.Parallel()
	addr := rawReceiver(t, func(c net.Conn, done <-chan struct{}) {
		if !readRequest(c) {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\n")
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for range 100 {
			if _, err := c.Write([]byte("t")); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	a := deliverToHostile(t, "http://"+addr+"/hook", "retry")
	if deref(a.StatusCode) != 503 || !strings.HasPrefix(derefS(a.Response), "t") {
		t.Errorf("status %v, body %q; want 503 and what had trickled in", deref(a.StatusCode), derefS(a.Response))
	}
}

func TestHostileMalformedChunkedEncoding(t *testing.T) {
	t.Parallel()
	addr := rawReceiver(t, func(c net.Conn, done <-chan struct{}) {
		if readRequest(c) {
			_, _ = io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz-not-hex\r\nHTTP/1.1 200 OK\r\n\r\n")
			hangOpen(c, done)
		}
	})
	a := deliverToHostile(t, "http://"+addr+"/hook", "retry")
	if deref(a.StatusCode) != 500 || derefS(a.Response) != "hello" {
		t.Errorf("status %v, body %q; want 500 and the one good chunk", deref(a.StatusCode), derefS(a.Response))
	}
}

func TestHostileContentLengthLies(t *testing.T) {
	t.Parallel()
	addr := rawReceiver(t, func(c net.Conn, done <-chan struct{}) {
		if readRequest(c) {
			_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 1000\r\n\r\nshort")
			hangOpen(c, done)
		}
	})
	a := deliverToHostile(t, "http://"+addr+"/hook", "retry")
	if deref(a.StatusCode) != 502 || derefS(a.Response) != "short" {
		t.Errorf("status %v, body %q; want 502 and what came", deref(a.StatusCode), derefS(a.Response))
	}
}

func TestHostileTLSHandshakeStalls(t *testing.T) {
	t.Parallel()
	var accepted atomic.Int64
	addr := rawReceiver(t, func(c net.Conn, done <-chan struct{}) {
		accepted.Add(1)
		hangOpen(c, done) // reads the ClientHello, never answers
	})
	a := deliverToHostile(t, "https://"+addr+"/hook", "retry")
	if a.StatusCode != nil || !strings.Contains(derefS(a.Error), "timeout") {
		t.Errorf("status %v, error %q; want a timeout", deref(a.StatusCode), derefS(a.Error))
	}
	if accepted.Load() == 0 {
		t.Error("relay never connected")
	}
}

func TestHostileRedirectToLoopback(t *testing.T) {
	t.Parallel()
	internal := newReceiver(t, nil)
	redirector := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:"+strings.TrimPrefix(internal.URL, "http://127.0.0.1:")+"/admin", http.StatusFound)
	})
	a := deliverToHostile(t, redirector.URL+"/hook", "failed")
	if deref(a.StatusCode) != 302 || derefS(a.Error) != "HTTP 302 Found" {
		t.Errorf("status %v, error %q; want 302 recorded as the answer", deref(a.StatusCode), derefS(a.Error))
	}
	if n := len(internal.requests()); n != 0 {
		t.Errorf("the redirect was followed: the internal receiver got %d requests", n)
	}
}
