// Package send is the HTTP client of the sink: it POSTs one webhook
// attempt and reports the answer (status, kept body, Retry-After) or the
// transport failure, in words fit for the error column. It is built on
// net/http's Transport, with the AddressGuard in its dialer so every
// address dialed is checked after name resolution.
//
// It may touch the network (and only through the guard); it knows nothing
// of PostgreSQL, deliveries or retries, and imports no other sink package.
package send

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/pgoutbox/relay/internal/hostaddr"
)

// Sender defaults.
const (
	// DefaultTimeout is the per-request timeout when Request.Timeout is
	// zero; it matches the SQL default timeout_ms of 10000.
	DefaultTimeout = 10 * time.Second
	// DefaultDialTimeout bounds the TCP connect, within the request timeout.
	DefaultDialTimeout = 5 * time.Second
	// DefaultMaxResponseBytes is how much of a response body is read
	// (and drained, so the connection can be reused) at most.
	DefaultMaxResponseBytes = 64 << 10
	// MaxResponseHeaderBytes bounds an answer's status line and headers:
	// a hostile receiver cannot make the relay buffer megabytes of them.
	MaxResponseHeaderBytes = 64 << 10
	// ResponseKeepChars is how many characters of a response body are kept
	// in Result.ResponseBody (the response_body column).
	ResponseKeepChars = 1000
	// DefaultMaxIdleConnsPerHost is the idle keep-alive pool per host: a few
	// busy endpoints receive most of the traffic.
	DefaultMaxIdleConnsPerHost = 64
	// DefaultUserAgent is sent when Config.UserAgent is empty.
	DefaultUserAgent = "relay"

	maxRetryAfterHeader = 256
)

// refusal is the error of a request refused before it is sent. It is
// permanent (classify.IsPermanent): the same request would be refused
// again, so the attempt fails at once instead of being retried.
type refusal string

func (e refusal) Error() string { return string(e) }

// Permanent reports true: no retry can cure a refusal.
func (refusal) Permanent() bool { return true }

var (
	// ErrHTTPSRequired is returned (wrapped, with the URL masked) for a
	// URL whose scheme is not https when the request does not allow http.
	ErrHTTPSRequired error = refusal("https required")
	// ErrInvalidURL is returned (wrapped, with the URL masked) for a URL that
	// cannot be sent to at all.
	ErrInvalidURL error = refusal("invalid URL")
)

// Config configures a Sender. The zero value is usable.
type Config struct {
	// Guard checks every address dialed. Nil means a guard with no allow
	// list: loopback, private and other internal addresses are all refused.
	Guard *AddressGuard
	// UserAgent is sent in the user-agent header unless the request sets
	// one; empty means DefaultUserAgent. The relay passes "relay/<version>".
	UserAgent string
	// MaxResponseBytes is how much of a response body is read at most,
	// including what is discarded after the kept ResponseKeepChars
	// characters; reading to the end lets the connection be reused, while
	// a larger body is abandoned and its connection closed. 0 means
	// DefaultMaxResponseBytes.
	MaxResponseBytes int
	// DialTimeout bounds each TCP connect; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// MaxIdleConnsPerHost sizes the keep-alive pool per host; 0 means
	// DefaultMaxIdleConnsPerHost.
	MaxIdleConnsPerHost int
	// RootCAs, when not nil, replaces the system roots for verifying
	// servers (tests, or a private CA). Verification is always on.
	RootCAs *x509.CertPool
}

// Sender POSTs webhook bodies. It is safe for concurrent use and should
// be shared: it owns a pool of keep-alive connections.
type Sender struct {
	transport  *http.Transport
	urls       sync.Map // raw URL → *url.URL, see parseURL
	numURLs    atomic.Int64
	userAgent  []string
	maxRead    int64
	defaultTTL time.Duration
}

// New returns a sender that:
//
//   - checks every dialed address with cfg.Guard (as net.Dialer.Control, so
//     after DNS resolution, for each address tried);
//   - never uses a proxy from the environment (a proxy would dial for us and
//     bypass the guard);
//   - never follows redirects (a 3xx is returned as the answer);
//   - verifies TLS certificates, TLS 1.2 at least;
//   - speaks HTTP/2 with a receiver that offers it over TLS (ALPN), and
//     HTTP/1.1 otherwise, with a keep-alive pool of MaxIdleConnsPerHost
//     connections per host, and no compression (bodies are read as sent);
//   - sends a request that failed on a reused keep-alive connection before
//     any answer arrived (the receiver closed it, or restarted) again at
//     once on another connection, ending on a fresh one, so a receiver's
//     restart costs no delivery a retry interval (see Send).
func New(cfg Config) *Sender {
	guard := cfg.Guard
	if guard == nil {
		guard = &AddressGuard{}
	}
	dialTimeout := cfg.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	maxRead := cfg.MaxResponseBytes
	if maxRead <= 0 {
		maxRead = DefaultMaxResponseBytes
	}
	idle := cfg.MaxIdleConnsPerHost
	if idle <= 0 {
		idle = DefaultMaxIdleConnsPerHost
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	dialer := &net.Dialer{
		Timeout:   dialTimeout,
		KeepAlive: 30 * time.Second,
		Control:   guard.Control,
	}
	// HTTP/1.1 always, HTTP/2 where the receiver offers it in the TLS
	// handshake. Setting the protocols is needed: with our own dialer and
	// TLS configuration the Transport would otherwise stay on HTTP/1.1.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs},
		TLSHandshakeTimeout:    10 * time.Second,
		MaxIdleConns:           idle * 16,
		MaxIdleConnsPerHost:    idle,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		Protocols:              &protocols,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
	}
	return &Sender{
		transport:  transport,
		userAgent:  []string{ua},
		maxRead:    int64(maxRead),
		defaultTTL: DefaultTimeout,
	}
}

// CloseIdleConnections closes the idle keep-alive connections, for shutdown.
func (s *Sender) CloseIdleConnections() { s.transport.CloseIdleConnections() }

// Request is one delivery attempt.
type Request struct {
	// URL is the subscription's endpoint.
	URL string
	// Body is sent as is.
	Body []byte
	// Header holds the webhook headers (signatures, ids, custom headers).
	// content-type defaults to application/json and
	// user-agent to the sender's when absent. Send takes the map over and
	// may add to it: the caller must not use it again.
	Header http.Header
	// Timeout bounds the whole attempt: connect, TLS, request, response
	// headers and reading the body. 0 means DefaultTimeout.
	Timeout time.Duration
	// AllowHTTP permits an http:// URL (development and tests only).
	AllowHTTP bool
}

// Result is the outcome of one attempt, ready to be recorded.
type Result struct {
	// StatusCode is the response status, 0 when none was received.
	StatusCode int
	// Duration is measured from just before the request is sent until the
	// response body has been read (or the attempt failed).
	Duration time.Duration
	// ResponseBody is the first ResponseKeepChars characters of the body,
	// made valid UTF-8 and free of NUL bytes so it fits a Postgres text
	// column.
	ResponseBody string
	// RetryAfter is the raw Retry-After header, if any (see
	// retry.ParseRetryAfter), cut at 256 characters.
	RetryAfter string
	// RateLimitRemaining and RateLimitResetAfter are the raw
	// X-RateLimit-Remaining and X-RateLimit-Reset-After headers (Discord's
	// per-webhook limit), if any, cut at 256 characters.
	RateLimitRemaining  string
	RateLimitResetAfter string
	// Err is set only when no status was received: a refused URL or
	// address, a timeout, a connection or TLS failure. Its message is meant
	// for the error column and never contains the full URL.
	Err error
}

// ErrorText is what the error column records of r: Err's message, or for
// an answer other than 2xx its status ("HTTP 503 Service Unavailable");
// empty for a success.
func (r Result) ErrorText() string {
	if r.Err != nil {
		return r.Err.Error()
	}
	if r.StatusCode >= 200 && r.StatusCode <= 299 {
		return ""
	}
	text := "HTTP " + strconv.Itoa(r.StatusCode)
	if t := http.StatusText(r.StatusCode); t != "" {
		text += " " + t
	}
	return text
}

// idempotent marks a request as safe to send again: a key present with no
// value, which net/http reads as "idempotent" and never writes on the wire.
// Webhook deliveries are at-least-once by design (receivers de-duplicate
// on webhook-id), so a request that failed on a reused keep-alive
// connection before any byte of an answer came back (the receiver had
// closed it, or restarted) is sent again at once on another connection;
// the Transport stops after a failure on a fresh connection, which is
// then the attempt's error.
const idempotencyKey = "Idempotency-Key"

// Send POSTs r.Body to r.URL and reports what happened. A result has either
// a status or an error, never both: once a status was received, a failure
// to read the body only shortens ResponseBody.
func (s *Sender) Send(ctx context.Context, r Request) Result {
	u, err := s.parseURL(r.URL)
	if err != nil {
		return Result{Err: err}
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !r.AllowHTTP {
			return Result{Err: fmt.Errorf("%w: refusing %s (http is allowed only with allow_http)", ErrHTTPSRequired, MaskURL(r.URL))}
		}
	default:
		return Result{Err: fmt.Errorf("%w: refusing %s", ErrHTTPSRequired, MaskURL(r.URL))}
	}
	if u.Host == "" || u.Hostname() == "" {
		return Result{Err: fmt.Errorf("%w %s: no host", ErrInvalidURL, MaskURL(r.URL))}
	}

	timeout := r.Timeout
	if timeout <= 0 {
		timeout = s.defaultTTL
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	h := r.Header
	if h == nil {
		h = make(http.Header, 4)
	}
	for k, vs := range h {
		// Keys the caller spelt otherwise join their canonical form, as
		// Header.Add would have put them (a key added while ranging is
		// canonical already, so seeing it is harmless).
		if ck := http.CanonicalHeaderKey(k); ck != k {
			delete(h, k)
			h[ck] = append(h[ck], vs...)
		}
	}
	if len(h["Content-Type"]) == 0 {
		h["Content-Type"] = contentTypeJSON
	}
	if len(h["User-Agent"]) == 0 {
		h["User-Agent"] = s.userAgent
	}
	if _, ok := h[idempotencyKey]; !ok {
		h[idempotencyKey] = nil
	}
	if u.User != nil && len(h["Authorization"]) == 0 {
		// Credentials in the URL, as http.Client would send them.
		pw, _ := u.User.Password()
		h["Authorization"] = []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw))}
	}
	body := r.Body
	req := (&http.Request{
		Method:     http.MethodPost,
		URL:        u, // shared with other requests to this URL: net/http only reads it
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       u.Host,
		Body:       http.NoBody,
		GetBody:    noBody,
	}).WithContext(ctx)
	if len(body) > 0 {
		req.Body, req.GetBody, req.ContentLength = memoryBody(body), bodyAgain(body), int64(len(body))
	}

	// The Transport itself, not an http.Client: redirects are never
	// followed and there is no cookie jar, so the client would only copy
	// the headers of every request in case of a redirect.
	start := time.Now()
	resp, err := s.transport.RoundTrip(req)
	if err != nil {
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) && string(rh.RecordHeader[:]) == "HTTP/" {
			// As http.Client says it: a plain HTTP server on an https URL.
			err = http.ErrSchemeMismatch
		}
		return Result{Duration: time.Since(start), Err: describeTransportError(ctx, err, timeout)}
	}
	kept := s.readBody(resp.Body)
	res := Result{
		StatusCode:   resp.StatusCode,
		Duration:     time.Since(start),
		ResponseBody: kept,
	}
	if ra := resp.Header["Retry-After"]; len(ra) > 0 {
		res.RetryAfter = truncateKeep(cleanText(ra[0]), maxRetryAfterHeader)
	}
	if v := resp.Header["X-Ratelimit-Remaining"]; len(v) > 0 {
		res.RateLimitRemaining = truncateKeep(cleanText(v[0]), maxRetryAfterHeader)
	}
	if v := resp.Header["X-Ratelimit-Reset-After"]; len(v) > 0 {
		res.RateLimitResetAfter = truncateKeep(cleanText(v[0]), maxRetryAfterHeader)
	}
	return res
}

var contentTypeJSON = []string{"application/json"}

// memoryBody is the request body as net/http recognises an in-memory one
// (a *bytes.Reader, bare or in io.NopCloser): for those it writes the
// headers and a body that fits its buffer in one write. Any other reader
// type makes it flush the headers first, just in case the body blocks:
// two system calls and two TCP segments per request for the receiver to
// read, which cost more than the allocation saved by a custom type.
func memoryBody(body []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(body)) }

// bodyAgain is GetBody: a fresh reader of the same bytes, for a request
// sent again on another connection.
func bodyAgain(body []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return memoryBody(body), nil }
}

func noBody() (io.ReadCloser, error) { return http.NoBody, nil }

// maxParsedURLs bounds the cache of parsed URLs: about one per subscription
// in use, dropped all at once when full.
const maxParsedURLs = 4096

// parseURL parses a webhook URL (numeric IPv4 shorthands rewritten, see
// numericHost) once per URL: a parsed URL is cached and shared by every
// request to it (net/http never modifies a request's URL). The error, fit
// for the error column, masks the URL.
func (s *Sender) parseURL(raw string) (*url.URL, error) {
	if v, ok := s.urls.Load(raw); ok {
		return v.(*url.URL), nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w %s: %v", ErrInvalidURL, MaskURL(raw), err)
	}
	if u.Hostname() != "" {
		if err := numericHost(u); err != nil {
			return nil, fmt.Errorf("%w %s: %v", ErrInvalidURL, MaskURL(raw), err)
		}
	}
	if s.numURLs.Add(1) > maxParsedURLs {
		s.urls.Clear()
		s.numURLs.Store(1)
	}
	s.urls.Store(raw, u)
	return u, nil
}

// readBufs holds the buffers answers are read into.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// readBody keeps the first ResponseKeepChars characters of the body and
// drains the rest up to maxRead bytes in all, then closes it. A body read
// to its end returns its connection to the pool.
func (s *Sender) readBody(rc io.ReadCloser) string {
	defer rc.Close()
	if rc == http.NoBody {
		return ""
	}
	keepBytes := int64(ResponseKeepChars * utf8.UTFMax)
	if keepBytes > s.maxRead {
		keepBytes = s.maxRead
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf, err := appendRead((*bp)[:0], io.LimitReader(rc, keepBytes))
	if cap(buf) <= int(keepBytes) {
		*bp = buf[:0]
	}
	if err == nil && int64(len(buf)) == keepBytes {
		// Drain what is left within the limit (one byte over tells us the
		// body is larger still; the connection is then dropped on close).
		_, _ = io.Copy(io.Discard, io.LimitReader(rc, s.maxRead-keepBytes+1))
	}
	if len(buf) == 0 {
		return ""
	}
	return truncateKeep(cleanText(string(buf)), ResponseKeepChars)
}

// appendRead reads r to EOF into buf, growing it as needed.
func appendRead(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// truncateKeep cuts s to n characters with no marker: it is a record of
// what the receiver said.
func truncateKeep(s string, n int) string {
	count := 0
	for i := range s {
		if count == n {
			return s[:i]
		}
		count++
	}
	return s
}

// cleanText makes s storable in a Postgres text column: valid UTF-8, no NUL.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	return s
}

// transportError carries a short readable message for a transport failure
// while keeping the cause for errors.Is / errors.As.
type transportError struct {
	msg string
	err error
}

func (e *transportError) Error() string { return e.msg }
func (e *transportError) Unwrap() error { return e.err }

// describeTransportError turns an error from http.Client.Do into a message
// fit for the error column. It drops the *url.Error wrapper, whose message
// repeats the full URL (and any secret in it).
func describeTransportError(ctx context.Context, err error, timeout time.Duration) error {
	var fe *ForbiddenAddressError
	if errors.As(err, &fe) {
		return fe
	}
	inner := err
	var ue *url.Error
	if errors.As(err, &ue) {
		inner = ue.Err
	}
	wrap := func(msg string) error { return &transportError{msg: msg, err: inner} }

	if errors.Is(err, context.Canceled) {
		return wrap("canceled")
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return wrap("timeout after " + timeout.String())
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		switch {
		case dnsErr.IsNotFound:
			return wrap("resolving " + dnsErr.Name + ": no such host")
		case dnsErr.IsTimeout:
			return wrap("resolving " + dnsErr.Name + ": timeout")
		}
		return wrap("resolving " + dnsErr.Name + ": " + dnsErr.Err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return wrap("timeout after " + timeout.String())
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return wrap("connection refused")
	case errors.Is(err, syscall.ECONNRESET):
		return wrap("connection reset by peer")
	case errors.Is(err, syscall.EHOSTUNREACH):
		return wrap("host unreachable")
	case errors.Is(err, syscall.ENETUNREACH):
		return wrap("network unreachable")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return wrap("connection closed by the server before a response")
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return wrap(certErr.Error())
	}
	var recErr tls.RecordHeaderError
	if errors.As(err, &recErr) {
		return wrap("tls: the server did not answer with TLS")
	}
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return wrap("tls: the server refused the handshake: " + strings.TrimPrefix(alert.Error(), "tls: "))
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return wrap(opErr.Op + ": " + opErr.Err.Error())
	}
	return wrap(inner.Error())
}

// numericHost rewrites a URL whose host is an IPv4 address in a shorthand
// form (127.1, 2130706433, 0x7f000001, 0177.0.0.1, 0, 127.0.0.1.) to the
// dotted address it names, as browsers and inet_aton read it (package
// hostaddr). The dialer then dials that address, which the guard checks,
// instead of asking the resolver about a "name" that would fail on every
// attempt; the Host header and TLS verification use the address, as a
// browser's would. A host that ends in a number but is no address
// (1.2.3.4.5) is an error: browsers refuse such URLs too.
func numericHost(u *url.URL) error {
	host := u.Hostname()
	a, literal, err := hostaddr.Parse(host)
	if err != nil {
		return err
	}
	if !literal || !a.Is4() || a.String() == host {
		return nil
	}
	if port := u.Port(); port != "" {
		u.Host = net.JoinHostPort(a.String(), port)
	} else {
		u.Host = a.String()
	}
	return nil
}
