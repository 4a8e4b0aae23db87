// Package classify decides what one delivery attempt means for its
// delivery: succeeded, retried, failed, or failed with the subscription
// disabled (DESIGN.md §4). It is a pure policy: it imports nothing of
// PostgreSQL or HTTP and touches no state, so it is tested with tables of
// cases and shared by every stage that needs a verdict.
package classify

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
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
	// VerdictThrottled: the receiver asked relay to slow down (429, or 503
	// with Retry-After). The whole subscription is held; the attempt
	// spends no retry and is not a failure. Classify never returns it:
	// the caller decides with package backpressure, which reads headers.
	VerdictThrottled
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
	case VerdictThrottled:
		return "throttled"
	}
	return "Verdict(" + strconv.Itoa(int(v)) + ")"
}

// Classify turns the outcome of one HTTP attempt into a Verdict, following
// DESIGN §4. statusCode is the response status (0 when no response was
// received) and err the transport error, if any.
//
//   - An err that is permanent (see IsPermanent: a refused address, a
//     refused scheme, an unusable URL, a body that cannot be rendered) is
//     VerdictFail whatever statusCode says: the same request would be
//     refused again, so retrying is pointless.
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
	if IsPermanent(err) {
		return VerdictFail
	}
	if statusCode <= 0 {
		return VerdictRetry
	}
	switch {
	case statusCode >= 200 && statusCode <= 299:
		return VerdictSucceeded
	case statusCode == 410: // Gone
		return VerdictGone
	case statusCode == 408, // Request Timeout
		statusCode == 425, // Too Early
		statusCode == 429: // Too Many Requests
		return VerdictRetry
	case statusCode >= 300 && statusCode <= 399:
		return VerdictFail
	case statusCode >= 400 && statusCode <= 499:
		return VerdictFail
	}
	// 1xx, 5xx and non-standard codes.
	return VerdictRetry
}

// permanent is the method an error has when the request that met it would
// meet it again on every retry.
type permanent interface{ Permanent() bool }

// IsPermanent reports whether err, or an error it wraps, has a method
// Permanent() bool that returns true. The packages that refuse a request
// before it is sent (the sender's address guard, scheme and URL checks,
// the body formats) mark their errors so, which lets this policy know them
// without importing them.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var p permanent
	return errors.As(err, &p) && p.Permanent()
}

// DisablingAnswer reports whether an answer means the webhook itself is
// gone although its status is not 410, with the reason to record: Slack
// answers 404 no_service for a removed webhook and 410 channel_is_archived
// for an archived channel; Discord answers 404 with code 10015 (Unknown
// Webhook). body is the start of the response body.
func DisablingAnswer(statusCode int, body string) (reason string, ok bool) {
	switch {
	case statusCode == 404 && strings.TrimSpace(body) == "no_service":
		return "Slack answered 404 no_service: the webhook was removed or its app uninstalled", true
	case statusCode == 410 && strings.TrimSpace(body) == "channel_is_archived":
		return "Slack answered 410 channel_is_archived: the channel was archived", true
	case statusCode == 404 && discordUnknownWebhook(body):
		return "Discord answered 404 code 10015: unknown webhook (it was deleted)", true
	}
	return "", false
}

func discordUnknownWebhook(body string) bool {
	var v struct {
		Code *int `json:"code"`
	}
	return json.Unmarshal([]byte(body), &v) == nil && v.Code != nil && *v.Code == 10015
}
