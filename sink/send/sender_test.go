package send

import (
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
	"github.com/pgoutbox/relay/sink/policy/retry"
)

// loopbackSender can reach receivers on 127.0.0.1, as tests need.
func loopbackSender(t *testing.T, cfg Config) *Sender {
	t.Helper()
	g, err := NewAddressGuard([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Guard = g
	s := New(cfg)
	t.Cleanup(s.CloseIdleConnections)
	return s
}

// strictSender has no allow list: loopback is refused.
func strictSender(t *testing.T) *Sender {
	t.Helper()
	g, err := NewAddressGuard(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Guard: g})
	t.Cleanup(s.CloseIdleConnections)
	return s
}

// countingServer answers with handler and counts requests.
func countingServer(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestSendDelivers(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, path, query string
		header              http.Header
		body                string
	}
	got := make(chan seen, 1)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)}
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"received":true}`)
	})
	s := loopbackSender(t, Config{UserAgent: "relay/test"})
	h := http.Header{}
	h.Set("webhook-id", "evt_1")
	h["x-lower-case"] = []string{"kept"}
	h["content-type"] = []string{"application/json; charset=utf-8"}
	res := s.Send(context.Background(), Request{
		URL:       srv.URL + "/hooks/abc?token=s",
		Body:      []byte(`{"id":"evt_1"}`),
		Header:    h,
		Timeout:   5 * time.Second,
		AllowHTTP: true,
	})
	if res.Err != nil || res.StatusCode != 200 {
		t.Fatalf("Send = %+v", res)
	}
	if res.ResponseBody != `{"received":true}` || res.Duration <= 0 || res.RetryAfter != "" {
		t.Errorf("result = %+v", res)
	}
	if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictSucceeded {
		t.Errorf("verdict = %v", v)
	}
	r := <-got
	if r.method != http.MethodPost || r.path != "/hooks/abc" || r.query != "token=s" || r.body != `{"id":"evt_1"}` {
		t.Errorf("receiver saw %+v", r)
	}
	if ct := r.header.Values("Content-Type"); len(ct) != 1 || ct[0] != "application/json; charset=utf-8" {
		t.Errorf("content-type = %q", ct)
	}
	if ua := r.header.Get("User-Agent"); ua != "relay/test" {
		t.Errorf("user-agent = %q", ua)
	}
	if r.header.Get("Webhook-Id") != "evt_1" || r.header.Get("X-Lower-Case") != "kept" {
		t.Errorf("headers = %v", r.header)
	}
}

func TestSendDefaultHeaders(t *testing.T) {
	t.Parallel()
	got := make(chan http.Header, 1)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	})
	res := loopbackSender(t, Config{}).Send(context.Background(), Request{URL: srv.URL, Body: []byte(`{}`), AllowHTTP: true})
	if res.Err != nil || res.StatusCode != 200 {
		t.Fatalf("Send = %+v", res)
	}
	h := <-got
	if h.Get("Content-Type") != "application/json" || h.Get("User-Agent") != DefaultUserAgent || h.Get("Accept-Encoding") != "" {
		t.Errorf("headers = %v", h)
	}
}

func TestSendStatusVerdicts(t *testing.T) {
	t.Parallel()
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		var code int
		_, _ = fmt.Sscanf(r.URL.Path, "/%d", &code)
		w.WriteHeader(code)
	})
	s := loopbackSender(t, Config{})
	for code, want := range map[int]classify.Verdict{
		200: classify.VerdictSucceeded, 202: classify.VerdictSucceeded, 204: classify.VerdictSucceeded,
		301: classify.VerdictFail, 400: classify.VerdictFail, 404: classify.VerdictFail, 410: classify.VerdictGone,
		408: classify.VerdictRetry, 425: classify.VerdictRetry, 429: classify.VerdictRetry, 500: classify.VerdictRetry, 503: classify.VerdictRetry,
	} {
		res := s.Send(context.Background(), Request{URL: fmt.Sprintf("%s/%d", srv.URL, code), AllowHTTP: true})
		if res.StatusCode != code || res.Err != nil {
			t.Errorf("%d: Send = %+v", code, res)
		}
		if v := classify.Classify(res.StatusCode, res.Err); v != want {
			t.Errorf("%d: verdict %v, want %v", code, v, want)
		}
	}
}

func TestSendRefusesLoopbackAtDial(t *testing.T) {
	t.Parallel()
	srv, hits := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	s := strictSender(t)
	for _, u := range []string{
		srv.URL + "/x?token=secret",
		strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/x?token=secret", // a name resolving to loopback
	} {
		res := s.Send(context.Background(), Request{URL: u, AllowHTTP: true})
		var fe *ForbiddenAddressError
		if !errors.As(res.Err, &fe) || !errors.Is(res.Err, ErrForbiddenAddress) {
			t.Fatalf("%s: Send err = %v, want *ForbiddenAddressError", u, res.Err)
		}
		if fe.Class != ClassLoopback || res.StatusCode != 0 {
			t.Errorf("%s: result %+v", u, res)
		}
		msg := res.Err.Error()
		if !strings.HasPrefix(msg, "address 127.0.0.1 is loopback; refused") || strings.Contains(msg, "secret") {
			t.Errorf("%s: message %q", u, msg)
		}
		if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictFail {
			t.Errorf("%s: verdict %v, want failed", u, v)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("receiver got %d requests, want 0", n)
	}
}

func TestSendDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	target, targetHits := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	origin, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/x", http.StatusMovedPermanently)
	})
	res := loopbackSender(t, Config{}).Send(context.Background(), Request{URL: origin.URL, Body: []byte(`{}`), AllowHTTP: true})
	if res.Err != nil || res.StatusCode != http.StatusMovedPermanently {
		t.Fatalf("Send = %+v, want 301", res)
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("redirect target got %d requests, want 0", n)
	}
	if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictFail {
		t.Errorf("verdict %v, want failed", v)
	}
}

func TestSendTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	res := loopbackSender(t, Config{}).Send(context.Background(), Request{
		URL: srv.URL + "/slow?token=secret", Timeout: 100 * time.Millisecond, AllowHTTP: true,
	})
	if res.Err == nil || res.Err.Error() != "timeout after 100ms" {
		t.Fatalf("Send = %+v, want timeout after 100ms", res)
	}
	if !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Errorf("err %v does not wrap context.DeadlineExceeded", res.Err)
	}
	if res.StatusCode != 0 || res.Duration < 50*time.Millisecond {
		t.Errorf("result %+v", res)
	}
	if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictRetry {
		t.Errorf("verdict %v, want retry", v)
	}
}

func TestSendParentCanceled(t *testing.T) {
	t.Parallel()
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := loopbackSender(t, Config{}).Send(ctx, Request{URL: srv.URL, AllowHTTP: true})
	if res.Err == nil || res.Err.Error() != "canceled" || !errors.Is(res.Err, context.Canceled) {
		t.Errorf("Send = %+v, want canceled", res)
	}
}

func TestSendConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res := loopbackSender(t, Config{}).Send(context.Background(), Request{URL: "http://" + addr + "/x?token=secret", AllowHTTP: true})
	if res.Err == nil || res.Err.Error() != "connection refused" {
		t.Fatalf("Send = %+v, want connection refused", res)
	}
	if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictRetry {
		t.Errorf("verdict %v, want retry", v)
	}
}

func TestSendConnectionClosedWithoutResponse(t *testing.T) {
	t.Parallel()
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	res := loopbackSender(t, Config{}).Send(context.Background(), Request{URL: srv.URL + "/?token=secret", AllowHTTP: true})
	if res.Err == nil || res.StatusCode != 0 || strings.Contains(res.Err.Error(), "secret") {
		t.Fatalf("Send = %+v", res)
	}
	t.Logf("error recorded: %v", res.Err)
	if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictRetry {
		t.Errorf("verdict %v, want retry", v)
	}
}

func TestSendTruncatesResponse(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body, want string
	}{
		{"multibyte", strings.Repeat("é", 3000), strings.Repeat("é", ResponseKeepChars)},
		{"ascii over 64KiB", strings.Repeat("a", 200<<10), strings.Repeat("a", ResponseKeepChars)},
		{"short", "ok", "ok"},
		{"empty", "", ""},
		{"NUL and invalid UTF-8", "a\x00b\xffc", "a\uFFFDb\uFFFDc"},
	}
	for _, tc := range cases {
		srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, tc.body)
		})
		res := loopbackSender(t, Config{}).Send(context.Background(), Request{URL: srv.URL, AllowHTTP: true})
		if res.Err != nil || res.StatusCode != 400 {
			t.Fatalf("%s: Send = %+v", tc.name, res)
		}
		if res.ResponseBody != tc.want {
			t.Errorf("%s: kept %d characters (%d bytes), want %d", tc.name, utf8.RuneCountInString(res.ResponseBody), len(res.ResponseBody), utf8.RuneCountInString(tc.want))
		}
		if !utf8.ValidString(res.ResponseBody) {
			t.Errorf("%s: response body is not valid UTF-8", tc.name)
		}
	}
}

func TestSendReusesConnections(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	newConns := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("z", 10<<10)) // more than is kept, less than the read limit
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			mu.Lock()
			newConns++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	s := loopbackSender(t, Config{})
	for range 20 {
		if res := s.Send(context.Background(), Request{URL: srv.URL, Body: []byte(`{}`), AllowHTTP: true}); res.Err != nil || res.StatusCode != 200 {
			t.Fatalf("Send = %+v", res)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if newConns != 1 {
		t.Errorf("20 sequential sends opened %d connections, want 1", newConns)
	}
}

func TestSendRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Now()
	date := now.Add(90 * time.Second).UTC().Format(http.TimeFormat)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/date" {
			w.Header().Set("Retry-After", date)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	s := loopbackSender(t, Config{})

	res := s.Send(context.Background(), Request{URL: srv.URL, AllowHTTP: true})
	if res.StatusCode != 429 || res.RetryAfter != "120" {
		t.Fatalf("Send = %+v", res)
	}
	if d, ok := retry.ParseRetryAfter(res.RetryAfter, now); !ok || d != 2*time.Minute {
		t.Errorf("retry.ParseRetryAfter(%q) = %v, %v", res.RetryAfter, d, ok)
	}
	if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictRetry {
		t.Errorf("verdict %v", v)
	}

	res = s.Send(context.Background(), Request{URL: srv.URL + "/date", AllowHTTP: true})
	if res.StatusCode != 503 || res.RetryAfter != date {
		t.Fatalf("Send = %+v", res)
	}
	if d, ok := retry.ParseRetryAfter(res.RetryAfter, now); !ok || d < 89*time.Second || d > 90*time.Second {
		t.Errorf("retry.ParseRetryAfter(%q) = %v, %v", res.RetryAfter, d, ok)
	}
}

func TestSendRequiresHTTPS(t *testing.T) {
	t.Parallel()
	srv, hits := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	s := loopbackSender(t, Config{})
	for _, u := range []string{srv.URL + "/hook?token=secret", "ftp://files.example.com/hook?token=secret", "//example.com/x"} {
		res := s.Send(context.Background(), Request{URL: u})
		if !errors.Is(res.Err, ErrHTTPSRequired) {
			t.Errorf("%s: err = %v, want ErrHTTPSRequired", u, res.Err)
			continue
		}
		if strings.Contains(res.Err.Error(), "secret") || !strings.Contains(res.Err.Error(), "https required") {
			t.Errorf("%s: message %q", u, res.Err)
		}
		if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictFail {
			t.Errorf("%s: verdict %v, want failed", u, v)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("receiver got %d requests, want 0", n)
	}
}

func TestSendInvalidURL(t *testing.T) {
	t.Parallel()
	s := loopbackSender(t, Config{})
	for _, u := range []string{"https://exa mple.com/x?token=secret", "https:///no-host?token=secret", "https://:443/x", "%zz"} {
		res := s.Send(context.Background(), Request{URL: u})
		if !errors.Is(res.Err, ErrInvalidURL) || strings.Contains(res.Err.Error(), "secret") {
			t.Errorf("%q: err = %v, want ErrInvalidURL without the secret", u, res.Err)
		}
		if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictFail {
			t.Errorf("%q: verdict %v, want failed", u, v)
		}
	}
}

func TestSendTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "secure")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())

	res := loopbackSender(t, Config{RootCAs: pool}).Send(context.Background(), Request{URL: srv.URL})
	if res.Err != nil || res.StatusCode != 200 || res.ResponseBody != "secure" {
		t.Fatalf("trusted TLS: Send = %+v", res)
	}

	// Without the test CA the certificate does not verify: verification is on.
	res = loopbackSender(t, Config{}).Send(context.Background(), Request{URL: srv.URL})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "tls: failed to verify certificate") {
		t.Fatalf("untrusted TLS: Send = %+v", res)
	}
	if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictRetry {
		t.Errorf("verdict %v, want retry", v)
	}

	// Plain HTTP where TLS is expected.
	plain, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	res = loopbackSender(t, Config{}).Send(context.Background(), Request{URL: strings.Replace(plain.URL, "http://", "https://", 1)})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "HTTP response to HTTPS client") {
		t.Errorf("TLS to a plain server: Send = %+v", res)
	}
	if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictRetry {
		t.Errorf("verdict %v, want retry", v)
	}
}

// Discord announces its per-webhook limit in headers; the dispatcher holds
// the subscription when none is left.
func TestSendRateLimitHeaders(t *testing.T) {
	t.Parallel()
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset-After", "1.25")
		w.WriteHeader(http.StatusNoContent)
	})
	s := loopbackSender(t, Config{})
	res := s.Send(context.Background(), Request{URL: srv.URL, AllowHTTP: true})
	if res.StatusCode != 204 || res.RateLimitRemaining != "0" || res.RateLimitResetAfter != "1.25" {
		t.Fatalf("Send = %+v", res)
	}
}

// writeCounter counts the Write calls made on a connection.
type writeCounter struct {
	net.Conn
	writes *atomic.Int64
}

func (c writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A request whose headers and body fit net/http's write buffer leaves in
// one write: a second one (headers flushed ahead of the body, which net/http
// does for body types it does not know to be in memory) doubles the system
// calls of the send path and the segments a receiver reads.
func TestSendWritesHeadersAndBodyTogether(t *testing.T) {
	t.Parallel()
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	s := loopbackSender(t, Config{})
	var writes atomic.Int64
	dial := s.transport.DialContext
	s.transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return writeCounter{c, &writes}, nil
	}
	const requests = 5
	for i := range requests {
		res := s.Send(context.Background(), Request{
			URL:       srv.URL,
			Body:      []byte(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("x", 500))),
			Header:    http.Header{"Webhook-Id": {fmt.Sprint("evt_", i)}},
			Timeout:   5 * time.Second,
			AllowHTTP: true,
		})
		if res.Err != nil || res.StatusCode != http.StatusNoContent {
			t.Fatalf("Send %d = %+v", i, res)
		}
	}
	if n := writes.Load(); n != requests {
		t.Errorf("%d requests took %d writes, want one each", requests, n)
	}
}
