package send

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pgoutbox/relay/sink/policy/classify"
)

// testSender returns a sender with loopback allowed unless strict, closed
// when the test ends.
func testSender(t *testing.T, cfg Config, strict bool) *Sender {
	t.Helper()
	var allow []string
	if !strict {
		allow = []string{"127.0.0.0/8"}
	}
	g, err := NewAddressGuard(allow)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Guard = g
	s := New(cfg)
	t.Cleanup(s.CloseIdleConnections)
	return s
}

func TestSenderContract(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, uri, body string
		header            http.Header
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case r.URL.Path == "/seen":
			got <- seen{r.Method, r.RequestURI, string(b), r.Header.Clone()}
			_, _ = io.WriteString(w, `{"received":true}`)
		case strings.HasPrefix(r.URL.Path, "/code/"):
			var code int
			_, _ = fmt.Sscanf(r.URL.Path, "/code/%d", &code)
			w.WriteHeader(code)
		case r.URL.Path == "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
		case r.URL.Path == "/retry-after":
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusTooManyRequests)
		case r.URL.Path == "/big":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, strings.Repeat("é", 3000))
		case r.URL.Path == "/huge":
			_, _ = io.WriteString(w, strings.Repeat("a", 200<<10))
		case r.URL.Path == "/chunked":
			for i := 0; i < 3; i++ {
				_, _ = io.WriteString(w, "part ")
				w.(http.Flusher).Flush()
			}
		case r.URL.Path == "/hangup":
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		case r.URL.Path == "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		case r.URL.Path == "/nul":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, "a\x00b\xffc")
		}
	}))
	t.Cleanup(srv.Close)

	s := testSender(t, Config{UserAgent: "relay/test"}, false)
	h := http.Header{}
	h.Set("webhook-id", "evt_1")
	h["x-lower-case"] = []string{"kept"}
	res := s.Send(context.Background(), Request{URL: srv.URL + "/seen?token=s", Body: []byte(`{"id":"evt_1"}`), Header: h, AllowHTTP: true})
	if res.Err != nil || res.StatusCode != 200 || res.ResponseBody != `{"received":true}` || res.Duration <= 0 {
		t.Fatalf("Send = %+v", res)
	}
	r := <-got
	if r.method != "POST" || r.uri != "/seen?token=s" || r.body != `{"id":"evt_1"}` || r.header.Get("Webhook-Id") != "evt_1" ||
		r.header.Get("X-Lower-Case") != "kept" || r.header.Get("Content-Type") != "application/json" ||
		r.header.Get("User-Agent") != "relay/test" || r.header.Get("Accept-Encoding") != "" {
		t.Errorf("receiver saw %+v", r)
	}

	for _, code := range []int{200, 202, 204, 301, 400, 404, 410, 429, 500, 503} {
		res := s.Send(context.Background(), Request{URL: fmt.Sprintf("%s/code/%d", srv.URL, code), AllowHTTP: true})
		if res.StatusCode != code || res.Err != nil {
			t.Errorf("%d: Send = %+v", code, res)
		}
	}
	if res := s.Send(context.Background(), Request{URL: srv.URL + "/redirect", AllowHTTP: true}); res.StatusCode != 301 || res.Err != nil {
		t.Errorf("redirect: Send = %+v", res)
	}
	if res := s.Send(context.Background(), Request{URL: srv.URL + "/retry-after", AllowHTTP: true}); res.StatusCode != 429 || res.RetryAfter != "120" {
		t.Errorf("retry-after: Send = %+v", res)
	}
	for path, want := range map[string]string{
		"/big": strings.Repeat("é", ResponseKeepChars), "/huge": strings.Repeat("a", ResponseKeepChars),
		"/chunked": "part part part ", "/nul": "a\uFFFDb\uFFFDc",
	} {
		res := s.Send(context.Background(), Request{URL: srv.URL + path, AllowHTTP: true})
		if res.Err != nil || res.ResponseBody != want || !utf8.ValidString(res.ResponseBody) {
			t.Errorf("%s: kept %d characters, err %v", path, utf8.RuneCountInString(res.ResponseBody), res.Err)
		}
	}
	res = s.Send(context.Background(), Request{URL: srv.URL + "/hangup?token=secret", AllowHTTP: true})
	if res.Err == nil || res.StatusCode != 0 || strings.Contains(res.Err.Error(), "secret") || classify.Classify(res.StatusCode, res.Err) != classify.VerdictRetry {
		t.Errorf("hangup: Send = %+v", res)
	}
	res = s.Send(context.Background(), Request{URL: srv.URL + "/slow", Timeout: 100 * time.Millisecond, AllowHTTP: true})
	if res.Err == nil || res.Err.Error() != "timeout after 100ms" || !errors.Is(res.Err, context.DeadlineExceeded) || res.Duration < 50*time.Millisecond {
		t.Errorf("timeout: Send = %+v", res)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res := s.Send(ctx, Request{URL: srv.URL + "/seen", AllowHTTP: true}); res.Err == nil || res.Err.Error() != "canceled" || !errors.Is(res.Err, context.Canceled) {
		t.Errorf("canceled: Send = %+v", res)
	}
	for _, u := range []string{srv.URL + "/x?token=secret", "ftp://files.example.com/x"} {
		if res := s.Send(context.Background(), Request{URL: u}); !errors.Is(res.Err, ErrHTTPSRequired) || strings.Contains(res.Err.Error(), "secret") {
			t.Errorf("%s: err %v, want ErrHTTPSRequired", u, res.Err)
		}
	}
	for _, u := range []string{"https://exa mple.com/x?token=secret", "https:///no-host?token=secret", "https://:443/x", "%zz"} {
		if res := s.Send(context.Background(), Request{URL: u}); !errors.Is(res.Err, ErrInvalidURL) || strings.Contains(res.Err.Error(), "secret") {
			t.Errorf("%q: err %v, want ErrInvalidURL", u, res.Err)
		}
	}
}

func TestSenderRefusals(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	s := testSender(t, Config{}, true)
	for _, u := range []string{srv.URL + "/x?token=secret", strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/x"} {
		res := s.Send(context.Background(), Request{URL: u, AllowHTTP: true})
		var fe *ForbiddenAddressError
		if !errors.As(res.Err, &fe) || fe.Class != ClassLoopback || !strings.HasPrefix(res.Err.Error(), "address 127.0.0.1 is loopback; refused") {
			t.Errorf("%s: err %v, want a loopback refusal", u, res.Err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s = testSender(t, Config{}, false)
	if res := s.Send(context.Background(), Request{URL: "http://" + addr + "/x", AllowHTTP: true}); res.Err == nil || res.Err.Error() != "connection refused" {
		t.Errorf("Send = %+v, want connection refused", res)
	}
	// A header that would smuggle in another is refused, not sent.
	h := http.Header{"X-Evil": {"a\r\nX-Injected: 1"}}
	if res := s.Send(context.Background(), Request{URL: srv.URL, Header: h, AllowHTTP: true}); res.Err == nil || res.StatusCode != 0 {
		t.Errorf("header injection sent: %+v", res)
	}
}

func TestSenderTLSAndPlainMismatch(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "secure")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plain.Close)
	s := testSender(t, Config{RootCAs: pool}, false)
	for range 3 {
		if res := s.Send(context.Background(), Request{URL: srv.URL}); res.Err != nil || res.StatusCode != 200 || res.ResponseBody != "secure" {
			t.Fatalf("trusted: Send = %+v", res)
		}
	}
	res := s.Send(context.Background(), Request{URL: strings.Replace(plain.URL, "http://", "https://", 1)})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "HTTP response to HTTPS client") {
		t.Errorf("plain: Send = %+v", res)
	}
	untrusting := testSender(t, Config{}, false)
	if res := untrusting.Send(context.Background(), Request{URL: srv.URL}); res.Err == nil || !strings.Contains(res.Err.Error(), "tls: failed to verify certificate") {
		t.Errorf("untrusted: Send = %+v", res)
	}
}

func TestSenderReusesAndRecovers(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		if r.URL.Path == "/chunked-trailer" {
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-Sum", "1")
			return
		}
		_, _ = io.WriteString(w, strings.Repeat("z", 10<<10))
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		if st == http.StateNew {
			conns[c] = true
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }
	s := New(Config{Guard: mustGuard(t)})
	t.Cleanup(s.CloseIdleConnections)
	for range 20 {
		if res := s.Send(context.Background(), Request{URL: srv.URL, Body: []byte(`{}`), AllowHTTP: true}); res.Err != nil || res.StatusCode != 200 {
			t.Fatalf("Send = %+v", res)
		}
	}
	for range 3 {
		if res := s.Send(context.Background(), Request{URL: srv.URL + "/chunked-trailer", AllowHTTP: true}); res.Err != nil || res.ResponseBody != "body" {
			t.Fatalf("trailer: Send = %+v", res)
		}
	}
	if n := count(); n != 1 {
		t.Errorf("sequential sends opened %d connections, want 1", n)
	}
	// The server closes its idle connections: the next send notices on the
	// reused one and goes again on a new one.
	srv.CloseClientConnections()
	if res := s.Send(context.Background(), Request{URL: srv.URL, AllowHTTP: true}); res.Err != nil || res.StatusCode != 200 {
		t.Fatalf("after the server closed idle connections: Send = %+v", res)
	}
	if res := s.Send(context.Background(), Request{URL: srv.URL + "/close", AllowHTTP: true}); res.Err != nil {
		t.Fatalf("Connection: close: Send = %+v", res)
	}
	before := count()
	if res := s.Send(context.Background(), Request{URL: srv.URL, AllowHTTP: true}); res.Err != nil {
		t.Fatalf("Send = %+v", res)
	}
	if count() != before+1 {
		t.Errorf("a connection the server asked to close was reused")
	}
}

func TestSenderInterimAndHTTP10(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				if req.URL.Path == "/interim" {
					_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nRetry-After: 5\r\n\r\nclose-delimited")
			}()
		}
	}()
	s := New(Config{Guard: mustGuard(t)})
	t.Cleanup(s.CloseIdleConnections)
	base := "http://" + ln.Addr().String()
	if res := s.Send(context.Background(), Request{URL: base + "/interim", AllowHTTP: true}); res.Err != nil || res.StatusCode != 202 || res.ResponseBody != "ok" {
		t.Errorf("interim: Send = %+v", res)
	}
	if res := s.Send(context.Background(), Request{URL: base + "/old", AllowHTTP: true}); res.Err != nil || res.StatusCode != 200 || res.ResponseBody != "close-delimited" || res.RetryAfter != "5" {
		t.Errorf("HTTP/1.0: Send = %+v", res)
	}
}

func mustGuard(t *testing.T) *AddressGuard {
	t.Helper()
	g, err := NewAddressGuard([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// BenchmarkSender measures one request on a kept-alive loopback
// connection (the receiver answers 204 at once).
func BenchmarkSender(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	g, _ := NewAddressGuard([]string{"127.0.0.0/8"})
	body := []byte(strings.Repeat("x", 700))
	s := New(Config{Guard: g})
	defer s.CloseIdleConnections()
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h := http.Header{"Webhook-Id": {"evt"}, "Webhook-Signature": {"v1,abc"}}
			if res := s.Send(context.Background(), Request{URL: srv.URL + "/hook", Body: body, Header: h, AllowHTTP: true}); res.StatusCode != 204 {
				b.Fatalf("Send = %+v", res)
			}
		}
	})
}

// A receiver that offers HTTP/2 over TLS gets it; the answer is read as
// with HTTP/1.1.
func TestSenderSpeaksHTTP2WhenOffered(t *testing.T) {
	t.Parallel()
	protos := make(chan int, 10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos <- r.ProtoMajor
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "over h2")
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	s := testSender(t, Config{RootCAs: pool}, false)
	for range 3 {
		res := s.Send(context.Background(), Request{URL: srv.URL + "/hook", Body: []byte(`{}`), Header: http.Header{"Webhook-Id": {"evt"}}})
		if res.Err != nil || res.StatusCode != 503 || res.ResponseBody != "over h2" || res.RetryAfter != "7" {
			t.Fatalf("Send = %+v", res)
		}
		if p := <-protos; p != 2 {
			t.Fatalf("receiver saw HTTP/%d, want HTTP/2", p)
		}
	}
}

// staleServer answers the first request of each connection and keeps the
// connection open; a later request on it is read and the connection
// closed without an answer, as a receiver does that closed a keep-alive
// connection just as the request arrived, or restarted. The client cannot
// see it coming: the connection looked alive while idle.
func staleServer(t *testing.T) (url string, requests, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	requests, conns = new(atomic.Int64), new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					requests.Add(1)
					if n > 0 {
						return // gone before answering
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/hook", requests, conns
}

// A request that fails on a reused keep-alive connection before any answer
// arrived is sent again at once, ending on a fresh connection: the attempt
// succeeds, with no retry interval.
func TestSenderResendsAtOnceAfterStaleConnection(t *testing.T) {
	t.Parallel()
	url, requests, conns := staleServer(t)
	s := testSender(t, Config{}, false)
	const parallel = 4
	// Open four keep-alive connections, each answered once.
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range parallel {
		wg.Go(func() {
			<-start
			if res := s.Send(context.Background(), Request{URL: url, Body: []byte(`{}`), AllowHTTP: true}); res.Err != nil || res.StatusCode != 200 {
				t.Errorf("first send: %+v", res)
			}
		})
	}
	close(start)
	wg.Wait()
	opened := conns.Load()
	// Every idle connection is now stale: each send meets one (or more),
	// then succeeds on a fresh connection.
	for i := range parallel {
		res := s.Send(context.Background(), Request{URL: url, Body: []byte(`{}`), Header: http.Header{"Webhook-Id": {fmt.Sprint(i)}}, AllowHTTP: true})
		if res.Err != nil || res.StatusCode != 200 || res.ResponseBody != "ok" {
			t.Fatalf("send %d after the connections went stale: %+v", i, res)
		}
	}
	if conns.Load() <= opened {
		t.Errorf("no fresh connection was opened (%d before, %d after)", opened, conns.Load())
	}
	if requests.Load() <= int64(2*parallel) {
		t.Errorf("the receiver saw %d requests; the stale connections should have carried some", requests.Load())
	}
}

// Credentials in the URL go as basic auth, as http.Client sends them, and
// never in the request line; a header set by the subscription wins.
func TestSenderURLCredentials(t *testing.T) {
	t.Parallel()
	auth := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth <- r.Header.Get("Authorization") + " " + r.RequestURI
	}))
	t.Cleanup(srv.Close)
	s := testSender(t, Config{}, false)
	u := strings.Replace(srv.URL, "http://", "http://hook:s3cret@", 1) + "/x"
	if res := s.Send(context.Background(), Request{URL: u, AllowHTTP: true}); res.Err != nil || res.StatusCode != 200 {
		t.Fatalf("Send = %+v", res)
	}
	if got := <-auth; got != "Basic aG9vazpzM2NyZXQ= /x" {
		t.Errorf("receiver saw %q", got)
	}
	h := http.Header{"Authorization": {"Bearer tok"}}
	if res := s.Send(context.Background(), Request{URL: u, Header: h, AllowHTTP: true}); res.Err != nil {
		t.Fatalf("Send = %+v", res)
	}
	if got := <-auth; got != "Bearer tok /x" {
		t.Errorf("receiver saw %q", got)
	}
}
