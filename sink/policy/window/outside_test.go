package window

import (
	"strings"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	paris, err := LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	office, _ := ParseWindow("09:00", "18:00", "Europe/Paris")
	night, _ := ParseWindow("22:00", "06:00", "UTC")
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, paris)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	// 2025-03-05 is a Wednesday.
	evening := at("2025-03-05 20:00")
	morning := at("2025-03-06 09:00")
	cases := []struct {
		name         string
		gate         Gate
		sub          *Window
		ignoreGlobal bool
		outside      Outside
		first        bool
		now          time.Time
		want         Decision
		reason       string
	}{
		{name: "defer waits for its window", sub: &office, outside: Defer, first: true, now: evening, want: Decision{At: morning}},
		{name: "open window sends", sub: &office, outside: Skip, first: true, now: at("2025-03-05 10:00"), want: Decision{At: at("2025-03-05 10:00")}},
		{name: "skip a new delivery outside its window", sub: &office, outside: Skip, first: true, now: evening,
			want: Decision{Skip: true}, reason: "subscription's delivery window 09:00-18:00 Europe/Paris"},
		{name: "skip defers a retry", sub: &office, outside: Skip, first: false, now: evening, want: Decision{At: morning}},
		{name: "skip follows the global window", gate: Gate{Global: &night}, outside: Skip, first: true, now: at("2025-03-05 12:00"),
			want: Decision{Skip: true}, reason: "global delivery window 22:00-06:00 UTC"},
		{name: "skip ignores the global window when told", gate: Gate{Global: &night}, ignoreGlobal: true, outside: Skip, first: true,
			now: at("2025-03-05 12:00"), want: Decision{At: at("2025-03-05 12:00")}},
		{name: "send ignores the global window", gate: Gate{Global: &night}, outside: Send, first: true, now: at("2025-03-05 12:00"),
			want: Decision{At: at("2025-03-05 12:00")}},
		{name: "send still waits out an absence day", gate: Gate{Global: &night, AbsenceDays: []time.Weekday{time.Wednesday}, AbsenceLocation: paris},
			outside: Send, first: true, now: at("2025-03-05 12:00"), want: Decision{At: at("2025-03-06 00:00")}},
		{name: "skip defers on an absence day", gate: Gate{AbsenceDays: []time.Weekday{time.Wednesday}, AbsenceLocation: paris},
			sub: &office, outside: Skip, first: true, now: evening, want: Decision{At: morning}},
		{name: "a pause holds even send", gate: Gate{Paused: true}, outside: Send, first: true, now: evening, want: Decision{Paused: true}},
	}
	for _, c := range cases {
		got := c.gate.Decide(c.now, c.sub, c.ignoreGlobal, c.outside, c.first)
		if got.Paused != c.want.Paused || got.Skip != c.want.Skip || !got.At.Equal(c.want.At) || !strings.Contains(got.Reason, c.reason) {
			t.Errorf("%s: got %+v, want %+v (reason containing %q)", c.name, got, c.want, c.reason)
		}
	}
	for _, s := range []string{"", "defer", "send", "skip"} {
		o, err := ParseOutside(s)
		if err != nil || (s != "" && o.String() != s) {
			t.Errorf("ParseOutside(%q) = %v, %v", s, o, err)
		}
	}
	if _, err := ParseOutside("later"); err == nil {
		t.Error("ParseOutside accepted later")
	}
}
