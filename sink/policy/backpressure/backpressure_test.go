package backpressure

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 2, 4, 10, 0, 0, 0, time.UTC)
	hour := time.Hour
	cases := []struct {
		name string
		a    Answer
		want Decision
	}{
		{"429 with Retry-After seconds", Answer{StatusCode: 429, RetryAfter: "1"}, Decision{Throttled: true, Hold: time.Second}},
		{"429 with Retry-After date", Answer{StatusCode: 429, RetryAfter: "Wed, 04 Feb 2026 10:00:30 GMT"}, Decision{Throttled: true, Hold: 30 * time.Second}},
		{"429 Retry-After 0 gets the minimum", Answer{StatusCode: 429, RetryAfter: "0"}, Decision{Throttled: true, Hold: MinHold}},
		{"429 Retry-After capped", Answer{StatusCode: 429, RetryAfter: "999999"}, Decision{Throttled: true, Hold: hour}},
		{"429 Discord body", Answer{StatusCode: 429, Body: `{"message": "You are being rate limited.", "retry_after": 0.64, "global": false}`}, Decision{Throttled: true, Hold: 640 * time.Millisecond}},
		{"429 header wins over body", Answer{StatusCode: 429, RetryAfter: "2", Body: `{"retry_after": 9}`}, Decision{Throttled: true, Hold: 2 * time.Second}},
		{"429 reset-after header", Answer{StatusCode: 429, RateLimitResetAfter: "1.5"}, Decision{Throttled: true, Hold: 1500 * time.Millisecond}},
		{"429 unreadable hints: back off", Answer{StatusCode: 429, RetryAfter: "soon", Body: `{"retry_after": "x"}`}, Decision{Throttled: true}},
		{"429 nothing named: back off", Answer{StatusCode: 429}, Decision{Throttled: true}},
		{"503 with Retry-After", Answer{StatusCode: 503, RetryAfter: "5"}, Decision{Throttled: true, Hold: 5 * time.Second}},
		{"503 without Retry-After is a failure", Answer{StatusCode: 503}, Decision{}},
		{"500 with Retry-After is a failure", Answer{StatusCode: 500, RetryAfter: "5"}, Decision{}},
		{"200 with no request left: pause", Answer{StatusCode: 200, RateLimitRemaining: "0", RateLimitResetAfter: "0.25"}, Decision{Hold: 250 * time.Millisecond}},
		{"200 with requests left", Answer{StatusCode: 200, RateLimitRemaining: "3", RateLimitResetAfter: "0.25"}, Decision{}},
		{"204 remaining 0 without reset", Answer{StatusCode: 204, RateLimitRemaining: "0"}, Decision{}},
		{"200 negative reset ignored", Answer{StatusCode: 200, RateLimitRemaining: "0", RateLimitResetAfter: "-1"}, Decision{}},
		{"no status", Answer{}, Decision{}},
	}
	for _, c := range cases {
		if got := Decide(c.a, now, hour); got != c.want {
			t.Errorf("%s: Decide = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		streak int
		want   time.Duration
	}{{-1, time.Second}, {0, time.Second}, {1, 2 * time.Second}, {3, 8 * time.Second}, {8, 256 * time.Second}, {9, 5 * time.Minute}, {60, 5 * time.Minute}} {
		if got := Backoff(c.streak); got != c.want {
			t.Errorf("Backoff(%d) = %s, want %s", c.streak, got, c.want)
		}
	}
}

func TestNextProbeInterval(t *testing.T) {
	first, most := 10*time.Second, time.Minute
	for _, c := range []struct{ prev, want time.Duration }{
		{0, first}, {first, 20 * time.Second}, {20 * time.Second, 40 * time.Second}, {40 * time.Second, most}, {most, most}, {time.Hour, most},
	} {
		if got := NextProbeInterval(c.prev, first, most); got != c.want {
			t.Errorf("NextProbeInterval(%s) = %s, want %s", c.prev, got, c.want)
		}
	}
	if got := NextProbeInterval(0, 0, 0); got != time.Millisecond {
		t.Errorf("NextProbeInterval with no bounds = %s", got)
	}
}
