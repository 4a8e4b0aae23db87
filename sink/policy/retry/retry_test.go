package retry

import (
	"math"
	"testing"
	"time"
)

func TestNextAttemptAt(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 2, 4, 10, 0, 0, 0, time.UTC)
	def := DefaultRetrySchedule
	cases := []struct {
		name          string
		schedule      []time.Duration
		attemptsMade  int
		retryAfter    time.Duration
		maxRetryAfter time.Duration
		jitter        float64
		want          time.Duration // offset from now
		wantOK        bool
	}{
		{"after first attempt", def, 1, 0, 0, 0, time.Minute, true},
		{"after second attempt", def, 2, 0, 0, 0, 5 * time.Minute, true},
		{"after third attempt", def, 3, 0, 0, 0, 15 * time.Minute, true},
		{"exhausted after fourth attempt", def, 4, 0, 0, 0, 0, false},
		{"far past the end", def, 10, 0, 0, 0, 0, false},
		{"empty schedule: no retry", []time.Duration{}, 1, 0, 0, 0, 0, false},
		{"nil schedule: no retry", nil, 1, 0, 0, 0, 0, false},
		{"nothing tried yet", def, 0, 0, 0, 0, 0, true},
		{"jitter +10%", def, 2, 0, 0, 0.1, 5*time.Minute + 30*time.Second, true},
		{"jitter -10%", def, 2, 0, 0, -0.1, 5*time.Minute - 30*time.Second, true},
		{"jitter clamped at +1", def, 1, 0, 0, 3, 2 * time.Minute, true},
		{"jitter clamped at -1", def, 1, 0, 0, -3, 0, true},
		{"NaN jitter ignored", def, 1, 0, 0, math.NaN(), time.Minute, true},
		{"negative step counts as zero", []time.Duration{-time.Minute}, 1, 0, 0, 0, 0, true},
		{"retry-after shorter than delay ignored", def, 1, 30 * time.Second, time.Hour, 0, time.Minute, true},
		{"retry-after larger wins", def, 1, 10 * time.Minute, time.Hour, 0, 10 * time.Minute, true},
		{"retry-after not jittered", def, 1, 10 * time.Minute, time.Hour, 0.1, 10 * time.Minute, true},
		{"retry-after capped", def, 1, 3 * time.Hour, time.Hour, 0, time.Hour, true},
		{"retry-after capped by default cap", def, 1, 48 * time.Hour, 0, 0, DefaultMaxRetryAfter, true},
		{"cap never shortens the schedule", []time.Duration{2 * time.Hour}, 1, 3 * time.Hour, time.Hour, 0, 2 * time.Hour, true},
		{"retry-after does not extend an exhausted schedule", def, 4, time.Minute, time.Hour, 0, 0, false},
	}
	for _, tc := range cases {
		got, ok := NextAttemptAt(tc.schedule, tc.attemptsMade, now, tc.retryAfter, tc.maxRetryAfter, tc.jitter)
		if ok != tc.wantOK {
			t.Errorf("%s: ok = %v, want %v", tc.name, ok, tc.wantOK)
			continue
		}
		if !ok {
			if !got.IsZero() {
				t.Errorf("%s: time = %v, want zero when exhausted", tc.name, got)
			}
			continue
		}
		if d := got.Sub(now); d != tc.want {
			t.Errorf("%s: delay = %v, want %v", tc.name, d, tc.want)
		}
	}
}

func TestNextAttemptAtJitterBounds(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 2, 4, 10, 0, 0, 0, time.UTC)
	for step, base := range DefaultRetrySchedule {
		lo, hi := time.Duration(float64(base)*(1-DefaultJitter)), time.Duration(float64(base)*(1+DefaultJitter))
		for i := 0; i <= 100; i++ {
			j := DefaultJitter * (2*float64(i)/100 - 1) // -0.1 … +0.1
			got, ok := NextAttemptAt(DefaultRetrySchedule, step+1, now, 0, 0, j)
			if !ok {
				t.Fatalf("step %d: exhausted", step+1)
			}
			if d := got.Sub(now); d < lo || d > hi {
				t.Errorf("step %d jitter %.3f: delay %v outside [%v, %v]", step+1, j, d, lo, hi)
			}
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
