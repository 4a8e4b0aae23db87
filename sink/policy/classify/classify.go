package sink

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Verdict is what one delivery attempt means for the delivery.
//
// The zero Verdict is deliberately not a valid verdict, so a forgotten
// assignment is never mistaken for a success.
type Verdict int

const (
	// VerdictSucceeded: the receiver accepted the event (2xx).
	VerdictSucceeded Verdict = iota + 1
	// VerdictRetry: a transient failure; try again on the retry schedule.
	VerdictRetry
	// VerdictFail: a permanent failure; the delivery fails without retry.
	VerdictFail
	// VerdictGone: the receiver answered 410 Gone; the delivery fails and the
	// subscription is disabled.
	VerdictGone
)

// String returns "succeeded", "retry", "failed" or "gone".
func (v Verdict) String() string {
	switch v {
	case VerdictSucceeded:
		return "succeeded"
	case VerdictRetry:
		return "retry"
	case VerdictFail:
		return "failed"
	case VerdictGone:
		return "gone"
	}
	return "Verdict(" + strconv.Itoa(int(v)) + ")"
}

// Classify turns the outcome of one HTTP attempt into a Verdict, following
// DESIGN §4. statusCode is the response status (0 when no response was
// received) and err the transport error, if any.
//
//   - An err that is a refused address (ErrForbiddenAddress), a refused
//     scheme (ErrHTTPSRequired), an unusable URL (ErrInvalidURL) or a body
//     that cannot be rendered (ErrUnknownFormat) is VerdictFail whatever
//     statusCode says: the same request would be refused again, so retrying
//     is pointless.
//   - Otherwise, when a status was received it decides (a body read error
//     after the status does not change what the receiver answered):
//     2xx succeeded; 408, 425, 429 and 5xx retry; 410 gone; 3xx fail
//     (redirects are never followed); every other 4xx fail.
//   - 1xx as a final status, and codes outside 100–599, are retried: the
//     receiver neither accepted nor rejected the event, and a bounded
//     schedule caps the cost of being wrong.
//   - With no status, every other err (timeout, connection refused or reset,
//     DNS failure, TLS failure, cancellation) is VerdictRetry. A status of 0
//     with a nil err is treated the same way.
//
// A context cancelled by the relay's own shutdown also yields VerdictRetry;
// callers that can tell it apart should not count such an attempt.
func Classify(statusCode int, err error) Verdict {
	if err != nil && (errors.Is(err, ErrForbiddenAddress) ||
		errors.Is(err, ErrHTTPSRequired) ||
		errors.Is(err, ErrInvalidURL) ||
		errors.Is(err, ErrUnknownFormat)) {
		return VerdictFail
	}
	if statusCode <= 0 {
		return VerdictRetry
	}
	switch {
	case statusCode >= 200 && statusCode <= 299:
		return VerdictSucceeded
	case statusCode == http.StatusGone:
		return VerdictGone
	case statusCode == http.StatusRequestTimeout,
		statusCode == http.StatusTooEarly,
		statusCode == http.StatusTooManyRequests:
		return VerdictRetry
	case statusCode >= 300 && statusCode <= 399:
		return VerdictFail
	case statusCode >= 400 && statusCode <= 499:
		return VerdictFail
	}
	// 1xx, 5xx and non-standard codes.
	return VerdictRetry
}

// ParseRetryAfter reads a Retry-After header value: delta-seconds ("120") or
// an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT", or the obsolete RFC 850 and
// asctime forms). A date in the past, or now, gives 0. It reports false for
// an empty or unparsable value, which callers then ignore. Very large
// delta-seconds saturate at the largest time.Duration; callers cap the result
// (see NextAttemptAt).
func ParseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(value)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > uint64(math.MaxInt64/int64(time.Second)) {
			// Only a range error is possible here: all digits.
			return time.Duration(math.MaxInt64), true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return d, true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
