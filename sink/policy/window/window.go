// Package window is the policy of when deliveries may go out: daily
// delivery windows (which may cross midnight, on a time zone's wall
// clock), absence days, the relay-wide pause, and the Gate that combines
// them with a subscription's own window. It is a pure policy: the caller
// gives the time; nothing of PostgreSQL or HTTP.
package window

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// minutesPerDay is the number of distinct TimeOfDay values.
const minutesPerDay = 24 * 60

// TimeOfDay is a wall-clock time as minutes since midnight, 0 (00:00) to
// 1439 (23:59). Delivery windows have minute granularity.
type TimeOfDay int

// ParseTimeOfDay reads "HH:MM" (24-hour clock, one-digit hours allowed, as in
// "9:30") or "HH:MM:SS" as Postgres prints a time column; seconds are
// dropped. "24:00" is refused: a window that runs to the end of the day ends
// at "00:00" (22:00–00:00 crosses midnight).
func ParseTimeOfDay(s string) (TimeOfDay, error) {
	v := strings.TrimSpace(s)
	parts := strings.Split(v, ":")
	if len(parts) != 2 && len(parts) != 3 {
		return 0, fmt.Errorf("invalid time of day %q: want HH:MM, e.g. 22:00", s)
	}
	h, err := parseClockField(parts[0], 1, 2)
	if err != nil || h > 23 {
		return 0, fmt.Errorf("invalid time of day %q: hour must be 00 to 23", s)
	}
	m, err := parseClockField(parts[1], 2, 2)
	if err != nil || m > 59 {
		return 0, fmt.Errorf("invalid time of day %q: minute must be 00 to 59", s)
	}
	if len(parts) == 3 {
		// Postgres time may carry fractional seconds ("22:00:00.5").
		sec, _, _ := strings.Cut(parts[2], ".")
		if n, err := parseClockField(sec, 2, 2); err != nil || n > 59 {
			return 0, fmt.Errorf("invalid time of day %q: second must be 00 to 59", s)
		}
	}
	return TimeOfDay(h*60 + m), nil
}

func parseClockField(s string, minLen, maxLen int) (int, error) {
	if len(s) < minLen || len(s) > maxLen || !isDigits(s) {
		return 0, strconv.ErrSyntax
	}
	return strconv.Atoi(s)
}

// String formats t as "HH:MM".
func (t TimeOfDay) String() string {
	if t < 0 || t >= minutesPerDay {
		return "TimeOfDay(" + strconv.Itoa(int(t)) + ")"
	}
	return fmt.Sprintf("%02d:%02d", int(t)/60, int(t)%60)
}

// Window is a daily delivery window: deliveries go out from Start
// (inclusive) to End (exclusive), on the clock of Location.
//
//   - Start < End is a daytime window (09:00–18:00 is open from 09:00:00
//     through 17:59:59).
//   - Start > End crosses midnight (22:00–06:00 is open from 22:00 until
//     05:59:59 the next morning).
//   - Start == End means always open: a window of zero length would never
//     deliver, which no one asks for, and so the zero Window is "no window".
//
// A nil Location means UTC. Across a daylight-saving change the window
// follows the wall clock of Location.
type Window struct {
	Start, End TimeOfDay
	Location   *time.Location
}

// ParseWindow builds a Window from "HH:MM" start and end strings and an IANA
// time zone name ("Europe/Paris"); an empty zone means UTC.
func ParseWindow(start, end, zone string) (Window, error) {
	s, err := ParseTimeOfDay(start)
	if err != nil {
		return Window{}, fmt.Errorf("window start: %w", err)
	}
	e, err := ParseTimeOfDay(end)
	if err != nil {
		return Window{}, fmt.Errorf("window end: %w", err)
	}
	loc := time.UTC
	if z := strings.TrimSpace(zone); z != "" {
		loc, err = LoadLocation(z)
		if err != nil {
			return Window{}, fmt.Errorf("window time zone %q: unknown zone (want an IANA name such as Europe/Paris)", zone)
		}
	}
	return Window{Start: s, End: e, Location: loc}, nil
}

// String formats w as "HH:MM-HH:MM Zone".
func (w Window) String() string {
	return w.Start.String() + "-" + w.End.String() + " " + w.location().String()
}

func (w Window) location() *time.Location {
	if w.Location == nil {
		return time.UTC
	}
	return w.Location
}

// AlwaysOpen reports whether w places no restriction (Start == End).
func (w Window) AlwaysOpen() bool { return w.Start == w.End }

// IsOpen reports whether deliveries may go out at t.
func (w Window) IsOpen(t time.Time) bool {
	if w.AlwaysOpen() {
		return true
	}
	local := t.In(w.location())
	m := TimeOfDay(local.Hour()*60 + local.Minute())
	if w.Start < w.End {
		return m >= w.Start && m < w.End
	}
	return m >= w.Start || m < w.End
}

// NextOpen returns now itself when the window is open, and otherwise the
// next time it opens (the next Start on the wall clock of Location).
//
// When a daylight-saving jump skips over the whole opening minute on some
// day, that day is skipped. If no opening is found within a week (which no
// real zone produces), NextOpen returns now+24h so the caller checks again.
func (w Window) NextOpen(now time.Time) time.Time {
	if w.IsOpen(now) {
		return now
	}
	loc := w.location()
	local := now.In(loc)
	y, mo, d := local.Date()
	h, m := int(w.Start)/60, int(w.Start)%60
	for i := 0; i <= 7; i++ {
		c := time.Date(y, mo, d+i, h, m, 0, 0, loc)
		if c.After(now) && w.IsOpen(c) {
			return c
		}
	}
	return now.Add(24 * time.Hour)
}

// Gate decides when a pending delivery may be sent, from the relay-wide
// settings (pause, absence days, global window) and the subscription's own
// window. The zero Gate lets everything through at once.
type Gate struct {
	// Paused holds every delivery until the relay is resumed.
	Paused bool
	// AbsenceDays are whole days (midnight to midnight in AbsenceLocation)
	// on which nothing is sent, whatever the windows say.
	AbsenceDays []time.Weekday
	// AbsenceLocation is the clock absence days are read on; nil means UTC.
	AbsenceLocation *time.Location
	// Global is the relay-wide window; nil means no window.
	Global *Window
}

// gateMaxSteps bounds the search in NextSendTime: each step moves to the
// next opening of one constraint, so a handful of steps suffice whenever
// the constraints ever agree; 16 steps and 8 days cover a full week of
// absence days plus the windows.
const (
	gateMaxSteps   = 16
	gateMaxHorizon = 8 * 24 * time.Hour
)

// NextSendTime returns the earliest time at or after now when a delivery may
// go out: not on an absence day, inside the global window (unless
// ignoreGlobal) and inside sub when it is not nil. When that is now itself,
// the delivery is due immediately.
//
// When g.Paused it returns the zero time and paused = true: the caller keeps
// the delivery pending until the relay is resumed.
//
// When the constraints never agree (every weekday is an absence day, or the
// global and subscription windows do not overlap) it returns now+24h, so the
// caller parks the delivery and checks again a day later, by which time the
// settings may have changed. Nothing is dropped.
func (g Gate) NextSendTime(now time.Time, sub *Window, ignoreGlobal bool) (t time.Time, paused bool) {
	if g.Paused {
		return time.Time{}, true
	}
	t = now
	for range gateMaxSteps {
		if t.Sub(now) > gateMaxHorizon {
			break
		}
		if g.isAbsent(t) {
			t = g.nextDay(t)
			continue
		}
		if !ignoreGlobal && g.Global != nil && !g.Global.IsOpen(t) {
			t = g.Global.NextOpen(t)
			continue
		}
		if sub != nil && !sub.IsOpen(t) {
			t = sub.NextOpen(t)
			continue
		}
		return t, false
	}
	return now.Add(24 * time.Hour), false
}

func (g Gate) absenceLocation() *time.Location {
	if g.AbsenceLocation == nil {
		return time.UTC
	}
	return g.AbsenceLocation
}

func (g Gate) isAbsent(t time.Time) bool {
	if len(g.AbsenceDays) == 0 {
		return false
	}
	wd := t.In(g.absenceLocation()).Weekday()
	for _, d := range g.AbsenceDays {
		if d == wd {
			return true
		}
	}
	return false
}

// nextDay returns the next midnight after t in AbsenceLocation.
func (g Gate) nextDay(t time.Time) time.Time {
	loc := g.absenceLocation()
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
}

var weekdayNames = map[string]time.Weekday{
	"sunday": time.Sunday, "sun": time.Sunday,
	"monday": time.Monday, "mon": time.Monday,
	"tuesday": time.Tuesday, "tue": time.Tuesday,
	"wednesday": time.Wednesday, "wed": time.Wednesday,
	"thursday": time.Thursday, "thu": time.Thursday,
	"friday": time.Friday, "fri": time.Friday,
	"saturday": time.Saturday, "sat": time.Saturday,
}

// ParseWeekday reads an English day name, full ("Monday") or three-letter
// ("mon"), in any case, surrounding spaces ignored.
func ParseWeekday(s string) (time.Weekday, error) {
	if d, ok := weekdayNames[strings.ToLower(strings.TrimSpace(s))]; ok {
		return d, nil
	}
	return 0, fmt.Errorf("invalid weekday %q: want a day name such as monday or mon", s)
}

// ParseWeekdays parses a list of day names with ParseWeekday, dropping
// duplicates and keeping the first-seen order.
func ParseWeekdays(names []string) ([]time.Weekday, error) {
	var out []time.Weekday
	var seen [7]bool
	for _, n := range names {
		d, err := ParseWeekday(n)
		if err != nil {
			return nil, err
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out, nil
}

var locations sync.Map // zone name → *time.Location

// LoadLocation is time.LoadLocation with a cache: the standard one reads
// the zone database from disk on every call, and windows are parsed for
// every subscription read.
func LoadLocation(name string) (*time.Location, error) {
	if v, ok := locations.Load(name); ok {
		return v.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	locations.Store(name, loc)
	return loc, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
