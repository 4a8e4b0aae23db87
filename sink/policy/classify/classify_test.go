package sink

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	forbidden := &ForbiddenAddressError{Addr: netip.MustParseAddr("127.0.0.1"), Class: ClassLoopback}
	cases := []struct {
		name   string
		status int
		err    error
		want   Verdict
	}{
		{"200", 200, nil, VerdictSucceeded},
		{"201", 201, nil, VerdictSucceeded},
		{"204", 204, nil, VerdictSucceeded},
		{"299", 299, nil, VerdictSucceeded},
		{"408 request timeout", 408, nil, VerdictRetry},
		{"425 too early", 425, nil, VerdictRetry},
		{"429 too many requests", 429, nil, VerdictRetry},
		{"500", 500, nil, VerdictRetry},
		{"502", 502, nil, VerdictRetry},
		{"503", 503, nil, VerdictRetry},
		{"599", 599, nil, VerdictRetry},
		{"410 gone", 410, nil, VerdictGone},
		{"301", 301, nil, VerdictFail},
		{"302", 302, nil, VerdictFail},
		{"304", 304, nil, VerdictFail},
		{"307", 307, nil, VerdictFail},
		{"308", 308, nil, VerdictFail},
		{"400", 400, nil, VerdictFail},
		{"401", 401, nil, VerdictFail},
		{"403", 403, nil, VerdictFail},
		{"404", 404, nil, VerdictFail},
		{"405", 405, nil, VerdictFail},
		{"413", 413, nil, VerdictFail},
		{"422", 422, nil, VerdictFail},
		{"499", 499, nil, VerdictFail},
		{"100 as final status", 100, nil, VerdictRetry},
		{"101", 101, nil, VerdictRetry},
		{"600 non-standard", 600, nil, VerdictRetry},
		{"999 non-standard", 999, nil, VerdictRetry},
		{"no status, no error", 0, nil, VerdictRetry},
		{"timeout", 0, &transportError{msg: "timeout after 10s", err: context.DeadlineExceeded}, VerdictRetry},
		{"connection refused", 0, &transportError{msg: "connection refused", err: syscall.ECONNREFUSED}, VerdictRetry},
		{"connection reset", 0, &net.OpError{Op: "read", Err: syscall.ECONNRESET}, VerdictRetry},
		{"tls", 0, errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), VerdictRetry},
		{"dns", 0, &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}, VerdictRetry},
		{"canceled", 0, context.Canceled, VerdictRetry},
		{"forbidden address", 0, forbidden, VerdictFail},
		{"forbidden address wrapped in OpError", 0, &net.OpError{Op: "dial", Err: forbidden}, VerdictFail},
		{"forbidden wins over a status", 200, forbidden, VerdictFail},
		{"https required", 0, fmt.Errorf("%w: refusing http://x/abc***", ErrHTTPSRequired), VerdictFail},
		{"invalid URL", 0, fmt.Errorf("%w ***: bad", ErrInvalidURL), VerdictFail},
		{"unknown format", 0, fmt.Errorf("rendering body: %w \"xml\"", ErrUnknownFormat), VerdictFail},
		{"status wins over a body read error", 200, errors.New("unexpected EOF"), VerdictSucceeded},
		{"503 with body read error", 503, errors.New("unexpected EOF"), VerdictRetry},
	}
	for _, tc := range cases {
		if got := Classify(tc.status, tc.err); got != tc.want {
			t.Errorf("%s: Classify(%d, %v) = %v, want %v", tc.name, tc.status, tc.err, got, tc.want)
		}
	}
}

func TestVerdictString(t *testing.T) {
	t.Parallel()
	for v, want := range map[Verdict]string{
		VerdictSucceeded: "succeeded",
		VerdictRetry:     "retry",
		VerdictFail:      "failed",
		VerdictGone:      "gone",
		0:                "Verdict(0)",
		Verdict(42):      "Verdict(42)",
	} {
		if got := v.String(); got != want {
			t.Errorf("Verdict(%d).String() = %q, want %q", int(v), got, want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 2, 4, 10, 30, 0, 0, time.UTC)
	cases := []struct {
		value  string
		want   time.Duration
		wantOK bool
	}{
		{"120", 2 * time.Minute, true},
		{"0", 0, true},
		{" 30 ", 30 * time.Second, true},
		{"3600", time.Hour, true},
		{"99999999999999999999999", time.Duration(math.MaxInt64), true},
		{"9223372036", 9223372036 * time.Second, true},
		{"9223372037", time.Duration(math.MaxInt64), true},
		{"Wed, 04 Feb 2026 10:35:00 GMT", 5 * time.Minute, true}, // IMF-fixdate
		{"Wednesday, 04-Feb-26 10:31:00 GMT", time.Minute, true}, // RFC 850
		{"Wed Feb  4 10:30:30 2026", 30 * time.Second, true},     // asctime
		{"Wed, 04 Feb 2026 10:00:00 GMT", 0, true},               // past
		{"Wed, 04 Feb 2026 10:30:00 GMT", 0, true},               // now
		{"", 0, false},
		{"   ", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"2026-02-04T10:35:00Z", 0, false},
		{"120s", 0, false},
	}
	for _, tc := range cases {
		got, ok := ParseRetryAfter(tc.value, now)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.value, got, ok, tc.want, tc.wantOK)
		}
	}
}
