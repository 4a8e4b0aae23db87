// Package backpressure decides how long a receiver wants relay to stay
// away: the throttle window a 429 (or a 503 with Retry-After) announces,
// Discord's rate-limit headers and body, the exponential back-off when the
// receiver names no time, and how the probe interval of an open circuit
// grows. It is a pure policy: no clock, nothing of PostgreSQL or HTTP; the
// dispatcher applies its decisions to the whole subscription, in the
// database, so that every relay obeys them.
package backpressure

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pgoutbox/relay/sink/policy/retry"
)

// Answer is what the policy reads of a receiver's answer.
type Answer struct {
	StatusCode int
	// RetryAfter is the Retry-After header (seconds or an HTTP date).
	RetryAfter string
	// RateLimitRemaining and RateLimitResetAfter are Discord's
	// X-RateLimit-Remaining and X-RateLimit-Reset-After (seconds, possibly
	// fractional).
	RateLimitRemaining  string
	RateLimitResetAfter string
	// Body is the start of the response body; Discord's 429 carries
	// {"retry_after": seconds}.
	Body string
}

// Decision is what an answer asks of the subscription.
type Decision struct {
	// Throttled means the attempt was refused for pace: the delivery is
	// tried again after the hold, spending no retry, and the attempt is not
	// a failure.
	Throttled bool
	// Hold is how long no request may go to the subscription. Zero with
	// Throttled means the receiver named no time: back off with Backoff.
	// Non-zero without Throttled is a pause the receiver announced ahead
	// (its rate-limit headers say no request is left).
	Hold time.Duration
}

// MinHold is the shortest hold: a receiver answering "Retry-After: 0" to
// a 429 still gets a breath rather than a tight loop.
const MinHold = 100 * time.Millisecond

// Decide reads an answer. maxHold caps any hold the receiver asks for
// (<= 0 means retry.DefaultMaxRetryAfter), so a receiver cannot park a
// subscription for days.
//
//   - 429: throttled, for Retry-After, else the body's retry_after, else
//     X-RateLimit-Reset-After, else no named time (Hold 0).
//   - 503 with a readable Retry-After: throttled for that long; a 503
//     without one is an ordinary failure (retry schedule), not this policy's.
//   - Any other answer whose X-RateLimit-Remaining is 0 with a readable
//     X-RateLimit-Reset-After: not throttled, but hold for the reset.
func Decide(a Answer, now time.Time, maxHold time.Duration) Decision {
	if maxHold <= 0 {
		maxHold = retry.DefaultMaxRetryAfter
	}
	clamp := func(d time.Duration) time.Duration { return min(max(d, MinHold), maxHold) }
	switch {
	case a.StatusCode == 429:
		if d, ok := retry.ParseRetryAfter(a.RetryAfter, now); ok {
			return Decision{Throttled: true, Hold: clamp(d)}
		}
		if d, ok := bodyRetryAfter(a.Body); ok {
			return Decision{Throttled: true, Hold: clamp(d)}
		}
		if d, ok := seconds(a.RateLimitResetAfter); ok {
			return Decision{Throttled: true, Hold: clamp(d)}
		}
		return Decision{Throttled: true}
	case a.StatusCode == 503:
		if d, ok := retry.ParseRetryAfter(a.RetryAfter, now); ok {
			return Decision{Throttled: true, Hold: clamp(d)}
		}
		return Decision{}
	}
	if strings.TrimSpace(a.RateLimitRemaining) == "0" {
		if d, ok := seconds(a.RateLimitResetAfter); ok && d > 0 {
			return Decision{Hold: min(d, maxHold)}
		}
	}
	return Decision{}
}

// Backoff is the hold after a throttled answer that named no time:
// one second doubled for each throttled answer in a row before it
// (streak), at most five minutes.
func Backoff(streak int) time.Duration {
	const base, most = time.Second, 5 * time.Minute
	if streak < 0 {
		streak = 0
	}
	if streak >= 20 {
		return most
	}
	return min(base<<streak, most)
}

// NextProbeInterval is how long an open circuit waits before its next
// probe: first (at least a millisecond) when it has just opened (prev is
// 0), then twice the previous interval, at most most.
func NextProbeInterval(prev, first, most time.Duration) time.Duration {
	first = max(first, time.Millisecond)
	most = max(most, first)
	if prev <= 0 {
		return first
	}
	if prev > most/2 {
		return most
	}
	return prev * 2
}

// bodyRetryAfter reads {"retry_after": seconds} (Discord's 429 body).
func bodyRetryAfter(body string) (time.Duration, bool) {
	if !strings.Contains(body, "retry_after") {
		return 0, false
	}
	var v struct {
		RetryAfter *float64 `json:"retry_after"`
	}
	if json.Unmarshal([]byte(body), &v) != nil || v.RetryAfter == nil {
		return 0, false
	}
	return fromSeconds(*v.RetryAfter)
}

// seconds reads a possibly fractional number of seconds ("1.5").
func seconds(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false
	}
	return fromSeconds(f)
}

func fromSeconds(f float64) (time.Duration, bool) {
	if math.IsNaN(f) || f < 0 {
		return 0, false
	}
	if f > float64(math.MaxInt64/int64(time.Second)) {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(f * float64(time.Second)), true
}
