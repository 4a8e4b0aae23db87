package window

import (
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Paris on hosts without zoneinfo
)

func mustTOD(t *testing.T, s string) TimeOfDay {
	t.Helper()
	v, err := ParseTimeOfDay(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestParseTimeOfDay(t *testing.T) {
	t.Parallel()
	good := map[string]TimeOfDay{
		"00:00":       0,
		"9:30":        9*60 + 30,
		"09:30":       9*60 + 30,
		"22:00":       22 * 60,
		"23:59":       23*60 + 59,
		" 06:00 ":     6 * 60,
		"22:00:00":    22 * 60,
		"22:00:59":    22 * 60,
		"22:00:00.25": 22 * 60,
	}
	for in, want := range good {
		got, err := ParseTimeOfDay(in)
		if err != nil || got != want {
			t.Errorf("ParseTimeOfDay(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"24:00":    "hour must be 00 to 23",
		"12:60":    "minute must be 00 to 59",
		"12:5":     "minute must be 00 to 59",
		"123:00":   "hour must be 00 to 23",
		"-1:00":    "hour must be 00 to 23",
		"+1:00":    "hour must be 00 to 23",
		"ab:cd":    "hour must be 00 to 23",
		"12:00:61": "second must be 00 to 59",
		"12":       "want HH:MM",
		"":         "want HH:MM",
		"1:2:3:4":  "want HH:MM",
		"10h30":    "want HH:MM",
	}
	for in, want := range bad {
		_, err := ParseTimeOfDay(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `"`+in+`"`) {
			t.Errorf("ParseTimeOfDay(%q) error = %v, want one naming the value and saying %q", in, err, want)
		}
	}
	if s := TimeOfDay(22*60 + 5).String(); s != "22:05" {
		t.Errorf("String() = %q", s)
	}
}

func TestParseWindow(t *testing.T) {
	t.Parallel()
	w, err := ParseWindow("22:00", "06:00", "Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	if got := w.String(); got != "22:00-06:00 Europe/Paris" {
		t.Errorf("String() = %q", got)
	}
	if w, err := ParseWindow("09:00", "18:00", ""); err != nil || w.location() != time.UTC {
		t.Errorf("empty zone: %v, %v; want UTC", w, err)
	}
	for _, tc := range [][3]string{{"25:00", "06:00", ""}, {"22:00", "x", ""}, {"22:00", "06:00", "Mars/Olympus"}} {
		if _, err := ParseWindow(tc[0], tc[1], tc[2]); err == nil {
			t.Errorf("ParseWindow(%q) succeeded, want error", tc)
		}
	}
}

func TestWindowNextOpen(t *testing.T) {
	t.Parallel()
	paris := mustLoc(t, "Europe/Paris")
	utc := func(s string) time.Time {
		v, err := time.Parse("2006-01-02 15:04:05", s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	day := Window{Start: mustTOD(t, "09:00"), End: mustTOD(t, "18:00")}
	night := Window{Start: mustTOD(t, "22:00"), End: mustTOD(t, "06:00")}
	dayParis := Window{Start: mustTOD(t, "09:00"), End: mustTOD(t, "18:00"), Location: paris}
	dstGap := Window{Start: mustTOD(t, "02:00"), End: mustTOD(t, "02:30"), Location: paris}
	cases := []struct {
		name string
		w    Window
		now  string
		open bool
		next string
	}{
		{"day: before opening", day, "2026-02-04 08:59:00", false, "2026-02-04 09:00:00"},
		{"day: at opening", day, "2026-02-04 09:00:00", true, "2026-02-04 09:00:00"},
		{"day: last second", day, "2026-02-04 17:59:59", true, "2026-02-04 17:59:59"},
		{"day: end is exclusive", day, "2026-02-04 18:00:00", false, "2026-02-05 09:00:00"},
		{"day: evening", day, "2026-02-04 23:00:00", false, "2026-02-05 09:00:00"},
		{"day: month end", day, "2026-02-28 20:00:00", false, "2026-03-01 09:00:00"},
		{"night: 23:00 open", night, "2026-02-04 23:00:00", true, "2026-02-04 23:00:00"},
		{"night: 03:00 open", night, "2026-02-04 03:00:00", true, "2026-02-04 03:00:00"},
		{"night: 12:00 closed", night, "2026-02-04 12:00:00", false, "2026-02-04 22:00:00"},
		{"night: at end", night, "2026-02-04 06:00:00", false, "2026-02-04 22:00:00"},
		{"night: 05:59", night, "2026-02-04 05:59:00", true, "2026-02-04 05:59:00"},
		{"night: at start", night, "2026-02-04 22:00:00", true, "2026-02-04 22:00:00"},
		{"always open 00:00-00:00", Window{}, "2026-02-04 12:34:00", true, "2026-02-04 12:34:00"},
		{"always open 10:00-10:00", Window{Start: 600, End: 600}, "2026-02-04 03:00:00", true, "2026-02-04 03:00:00"},
		// Paris is UTC+1 in February and UTC+2 in July.
		{"paris winter: 07:30 UTC is 08:30 there", dayParis, "2026-02-04 07:30:00", false, "2026-02-04 08:00:00"},
		{"paris winter: 08:00 UTC opens", dayParis, "2026-02-04 08:00:00", true, "2026-02-04 08:00:00"},
		{"paris winter: 16:59 UTC still open", dayParis, "2026-02-04 16:59:00", true, "2026-02-04 16:59:00"},
		{"paris winter: 17:00 UTC is 18:00 there", dayParis, "2026-02-04 17:00:00", false, "2026-02-05 08:00:00"},
		{"utc window same instant", day, "2026-02-04 17:00:00", true, "2026-02-04 17:00:00"},
		{"paris summer: 07:30 UTC is 09:30 there", dayParis, "2026-07-01 07:30:00", true, "2026-07-01 07:30:00"},
		{"paris summer: 06:30 UTC", dayParis, "2026-07-01 06:30:00", false, "2026-07-01 07:00:00"},
		// 2026-03-29 02:00 CET does not exist in Paris: that day is skipped.
		{"dst gap skips the day", dstGap, "2026-03-29 00:00:00", false, "2026-03-30 00:00:00"},
	}
	for _, tc := range cases {
		now := utc(tc.now)
		if got := tc.w.IsOpen(now); got != tc.open {
			t.Errorf("%s: IsOpen(%s) = %v, want %v", tc.name, tc.now, got, tc.open)
		}
		want := utc(tc.next)
		if got := tc.w.NextOpen(now); !got.Equal(want) {
			t.Errorf("%s: NextOpen(%s) = %s, want %s", tc.name, tc.now, got.UTC(), want)
		}
		// The same instant seen from another zone gives the same answer.
		if got := tc.w.NextOpen(now.In(paris)); !got.Equal(want) {
			t.Errorf("%s: NextOpen in Paris time = %s, want %s", tc.name, got.UTC(), want)
		}
	}
}

func TestGateNextSendTime(t *testing.T) {
	t.Parallel()
	paris := mustLoc(t, "Europe/Paris")
	utc := func(s string) time.Time {
		v, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	win := func(s, e string) *Window {
		return &Window{Start: mustTOD(t, s), End: mustTOD(t, e)}
	}
	weekend := []time.Weekday{time.Saturday, time.Sunday}
	allWeek := []time.Weekday{0, 1, 2, 3, 4, 5, 6}
	// 2026-02-06 is a Friday.
	cases := []struct {
		name         string
		gate         Gate
		sub          *Window
		ignoreGlobal bool
		now          string
		want         string
	}{
		{"zero gate sends now", Gate{}, nil, false, "2026-02-06 12:00", "2026-02-06 12:00"},
		{"weekday not absent", Gate{AbsenceDays: weekend}, nil, false, "2026-02-06 23:59", "2026-02-06 23:59"},
		{"saturday skips to monday midnight", Gate{AbsenceDays: weekend}, nil, false, "2026-02-07 10:00", "2026-02-09 00:00"},
		{"saturday skips to monday opening", Gate{AbsenceDays: weekend, Global: win("09:00", "18:00")}, nil, false, "2026-02-07 10:00", "2026-02-09 09:00"},
		{"friday evening to monday opening", Gate{AbsenceDays: weekend, Global: win("09:00", "18:00")}, nil, false, "2026-02-06 19:00", "2026-02-09 09:00"},
		{"friday inside window", Gate{AbsenceDays: weekend, Global: win("09:00", "18:00")}, nil, false, "2026-02-06 17:00", "2026-02-06 17:00"},
		{"absence next day in window", Gate{AbsenceDays: []time.Weekday{time.Tuesday}, Global: win("09:00", "18:00")}, nil, false, "2026-02-09 19:00", "2026-02-11 09:00"},
		{"night window on friday", Gate{AbsenceDays: []time.Weekday{time.Saturday}, Global: win("22:00", "06:00")}, nil, false, "2026-02-06 23:00", "2026-02-06 23:00"},
		{"night window, saturday absent", Gate{AbsenceDays: []time.Weekday{time.Saturday}, Global: win("22:00", "06:00")}, nil, false, "2026-02-07 03:00", "2026-02-08 00:00"},
		// Monday 00:30 in Paris is still Sunday 23:30 in UTC.
		{"absence read in paris", Gate{AbsenceDays: []time.Weekday{time.Monday}, AbsenceLocation: paris}, nil, false, "2026-02-08 23:30", "2026-02-09 23:00"},
		{"absence read in utc", Gate{AbsenceDays: []time.Weekday{time.Monday}}, nil, false, "2026-02-08 23:30", "2026-02-08 23:30"},
		{"global closed", Gate{Global: win("09:00", "18:00")}, nil, false, "2026-02-06 07:00", "2026-02-06 09:00"},
		{"global closed but ignored", Gate{Global: win("09:00", "18:00")}, nil, true, "2026-02-06 07:00", "2026-02-06 07:00"},
		{"subscription window still applies when global ignored", Gate{Global: win("09:00", "18:00")}, win("08:00", "10:00"), true, "2026-02-06 07:00", "2026-02-06 08:00"},
		{"both windows: later opening wins", Gate{Global: win("08:00", "20:00")}, win("09:00", "18:00"), false, "2026-02-06 07:00", "2026-02-06 09:00"},
		{"sub window only", Gate{}, win("22:00", "06:00"), false, "2026-02-06 12:00", "2026-02-06 22:00"},
		{"overlap across midnight", Gate{Global: win("20:00", "02:00")}, win("23:00", "04:00"), false, "2026-02-06 12:00", "2026-02-06 23:00"},
		{"windows never overlap: recheck in 24h", Gate{Global: win("09:00", "12:00")}, win("14:00", "18:00"), false, "2026-02-06 10:00", "2026-02-07 10:00"},
		{"every day absent: recheck in 24h", Gate{AbsenceDays: allWeek}, nil, false, "2026-02-06 10:00", "2026-02-07 10:00"},
		{"absence ignores ignoreGlobal", Gate{AbsenceDays: weekend}, nil, true, "2026-02-08 10:00", "2026-02-09 00:00"},
	}
	for _, tc := range cases {
		got, paused := tc.gate.NextSendTime(utc(tc.now), tc.sub, tc.ignoreGlobal)
		if paused {
			t.Errorf("%s: paused = true", tc.name)
		}
		if want := utc(tc.want); !got.Equal(want) {
			t.Errorf("%s: NextSendTime(%s) = %s, want %s", tc.name, tc.now, got.UTC().Format("2006-01-02 15:04 Mon"), want.Format("2006-01-02 15:04 Mon"))
		}
	}
}

func TestGatePaused(t *testing.T) {
	t.Parallel()
	g := Gate{Paused: true, Global: &Window{Start: 0, End: 60}}
	got, paused := g.NextSendTime(time.Date(2026, 2, 6, 12, 0, 0, 0, time.UTC), nil, true)
	if !paused || !got.IsZero() {
		t.Errorf("NextSendTime while paused = %v, %v; want zero time, true", got, paused)
	}
}

func TestParseWeekday(t *testing.T) {
	t.Parallel()
	good := map[string]time.Weekday{
		"monday": time.Monday, "Mon": time.Monday, "MONDAY": time.Monday,
		"tuesday": time.Tuesday, "tue": time.Tuesday,
		"Wednesday": time.Wednesday, "wed": time.Wednesday,
		"thursday": time.Thursday, "THU": time.Thursday,
		"friday": time.Friday, "fri": time.Friday,
		"saturday": time.Saturday, " Sat ": time.Saturday,
		"sunday": time.Sunday, "sun": time.Sunday,
	}
	for in, want := range good {
		if got, err := ParseWeekday(in); err != nil || got != want {
			t.Errorf("ParseWeekday(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "mo", "thurs", "lundi", "funday", "7"} {
		if _, err := ParseWeekday(in); err == nil || !strings.Contains(err.Error(), `"`+in+`"`) {
			t.Errorf("ParseWeekday(%q) error = %v, want one naming the value", in, err)
		}
	}
	days, err := ParseWeekdays([]string{"sat", "Sunday", "saturday"})
	if err != nil || len(days) != 2 || days[0] != time.Saturday || days[1] != time.Sunday {
		t.Errorf("ParseWeekdays = %v, %v", days, err)
	}
	if _, err := ParseWeekdays([]string{"sat", "nope"}); err == nil {
		t.Error("ParseWeekdays accepted a bad name")
	}
}
