// Package retry is the retry policy: when the next attempt of a failed
// delivery is due, from the subscription's schedule, the receiver's
// Retry-After and a random draw the caller supplies. It is a pure policy:
// no clock, no randomness, nothing of PostgreSQL or HTTP.
package retry

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// DefaultRetrySchedule is the delay before each retry after a failed attempt:
// the first attempt plus three retries, one, five and fifteen minutes apart.
// It matches the SQL default of relay.subscriptions.retry_schedule.
var DefaultRetrySchedule = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute}

// DefaultMaxRetryAfter caps how long a receiver's Retry-After may push the
// next attempt back, so a receiver cannot park a delivery for days.
const DefaultMaxRetryAfter = time.Hour

// DefaultJitter is the jitter fraction the dispatcher is expected to draw
// from: NextAttemptAt's jitter argument is DefaultJitter*(2*rand.Float64()-1),
// a value in [-0.1, 0.1], so deliveries that failed together spread out
// instead of retrying as a herd.
const DefaultJitter = 0.1

// NextAttemptAt returns when the next attempt of a delivery is due after a
// failed attempt, and false when the schedule is exhausted (the delivery is
// then failed). It is a pure function: the caller supplies the clock and the
// random draw.
//
//   - attemptsMade counts the attempts already made, including the one that
//     just failed (1 after the first attempt). The delay is
//     schedule[attemptsMade-1]; an empty schedule therefore means "no retry".
//     attemptsMade < 1 means nothing has been tried yet: the answer is now.
//   - jitter is a fraction applied to the scheduled delay
//     (delay × (1 + jitter)); it is clamped to [-1, 1] so the delay never
//     goes negative (NaN counts as 0). Negative schedule entries count as
//     zero.
//   - retryAfter is what the receiver asked for (0 if nothing). When it is
//     longer than the jittered delay it is used instead, capped at
//     maxRetryAfter, but it never shortens the schedule. Retry-After is not
//     jittered: the receiver named a time. maxRetryAfter <= 0 means
//     DefaultMaxRetryAfter.
func NextAttemptAt(schedule []time.Duration, attemptsMade int, now time.Time, retryAfter time.Duration, maxRetryAfter time.Duration, jitter float64) (time.Time, bool) {
	if attemptsMade < 1 {
		return now, true
	}
	if attemptsMade > len(schedule) {
		return time.Time{}, false
	}
	base := max(schedule[attemptsMade-1], 0)
	if math.IsNaN(jitter) {
		jitter = 0
	}
	jitter = min(max(jitter, -1), 1)
	delay := base + time.Duration(float64(base)*jitter)
	if delay < 0 { // float rounding at jitter = -1
		delay = 0
	}
	if maxRetryAfter <= 0 {
		maxRetryAfter = DefaultMaxRetryAfter
	}
	if retryAfter > delay {
		delay = max(delay, min(retryAfter, maxRetryAfter))
	}
	return now.Add(delay), true
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
	t, ok := parseHTTPDate(v)
	if !ok {
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

// httpDateLayouts are the three forms of an HTTP-date (RFC 9110 §5.6.7):
// IMF-fixdate, then the obsolete RFC 850 and asctime forms.
var httpDateLayouts = []string{"Mon, 02 Jan 2006 15:04:05 GMT", time.RFC850, time.ANSIC}

func parseHTTPDate(v string) (time.Time, bool) {
	for _, layout := range httpDateLayouts {
		if t, err := time.Parse(layout, v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
