package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseDurationArg(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90m": 90 * time.Minute, "2h": 2 * time.Hour, "1h30m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, "0d": 0, " 3d ": 72 * time.Hour,
	} {
		if got, err := parseDurationArg(in); err != nil || got != want {
			t.Errorf("parseDurationArg(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "7", "d", "-2h", "2 days", "1.5d", "99999999d"} {
		if _, err := parseDurationArg(in); err == nil {
			t.Errorf("parseDurationArg(%q) accepted", in)
		}
	}
}

func TestParseTimeArg(t *testing.T) {
	now := time.Date(2024, 5, 10, 12, 0, 0, 0, time.UTC)
	cases := map[string]time.Time{
		"2h":                   now.Add(-2 * time.Hour),
		"1d":                   now.Add(-24 * time.Hour),
		"2024-05-01T08:00:00Z": time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC),
		"2024-05-01":           time.Date(2024, 5, 1, 0, 0, 0, 0, time.Local),
		"2024-05-01 08:30":     time.Date(2024, 5, 1, 8, 30, 0, 0, time.Local),
	}
	for in, want := range cases {
		ta, err := parseTimeArg(in)
		if err != nil || !ta.time(now).Equal(want) {
			t.Errorf("parseTimeArg(%q) = %v, %v; want %v", in, ta.time(now), err, want)
		}
	}
	for _, in := range []string{"yesterday", "2024-13-01", "12:00"} {
		if _, err := parseTimeArg(in); err == nil {
			t.Errorf("parseTimeArg(%q) accepted", in)
		}
	}
}

func TestDurationAndBytesText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		120 * time.Millisecond: "120ms", 45 * time.Second: "45s", 125 * time.Second: "2m5s", 10 * time.Minute: "10m",
		90 * time.Minute: "1h30m", 2 * time.Hour: "2h", 36 * time.Hour: "36h", 48 * time.Hour: "2d",
		2*time.Hour + 3*time.Second: "2h", -time.Minute: "-1m",
	} {
		if got := durationText(d); got != want {
			t.Errorf("durationText(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 20: "5.0 MiB"} {
		if got := bytesText(n); got != want {
			t.Errorf("bytesText(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestTableCleansCells(t *testing.T) {
	var b bytes.Buffer
	tb := newTable(&b, "A", "B")
	tb.row("x\ty", "line1\nline2")
	tb.flush()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "x y") || !strings.Contains(lines[1], "line1 line2") {
		t.Fatalf("table:\n%s", b.String())
	}
	if got := truncate("abcdef", 4); got != "abc…" {
		t.Fatalf("truncate: %q", got)
	}
}

func TestSafeText(t *testing.T) {
	for in, want := range map[string]string{
		"plain Équipe ✓":          "plain Équipe ✓",
		"bell\aesc\x1b[31mred":    `bell\x07esc\x1b[31mred`,
		"nul\x00 del\x7f":         `nul\x00 del\x7f`,
		"csi\u009b2J":             `csi\u009b2J`,
		"rtl\u202egnp.exe":        `rtl\u202egnp.exe`,
		"isolate\u2066x\u2069":    `isolate\u2066x\u2069`,
		"bad\xffbyte":             `bad\xffbyte`,
		"two\nlines\ttab":         `two\x0alines\x09tab`,
		"replacement \ufffd kept": "replacement \ufffd kept",
	} {
		if got := safeText(in); got != want {
			t.Errorf("safeText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cellText("a\tb\nc\x1bd"); got != `a b c\x1bd` {
		t.Errorf("cellText = %q", got)
	}
}

func TestFollowerGaps(t *testing.T) {
	now := time.Unix(1000, 0)
	f := newFollower(10)
	f.now = func() time.Time { return now }
	if f.see(9) || f.see(10) {
		t.Fatal("ids at or below the floor are not new")
	}
	// 11 and 13 visible, 12 still in flight.
	if !f.see(11) || !f.see(13) || f.see(13) {
		t.Fatal("see")
	}
	f.advance()
	if f.floor != 11 {
		t.Fatalf("floor %d, want 11 (waiting for 12)", f.floor)
	}
	// 12 commits: the floor moves past 13.
	if !f.see(12) {
		t.Fatal("12 is new")
	}
	f.advance()
	if f.floor != 13 || len(f.seen) != 0 || len(f.gaps) != 0 {
		t.Fatalf("floor %d seen %v gaps %v", f.floor, f.seen, f.gaps)
	}
	// 14 never appears (a rolled-back insert): given up after followGapWait.
	f.see(15)
	f.advance()
	if f.floor != 13 {
		t.Fatalf("floor %d, want 13", f.floor)
	}
	now = now.Add(followGapWait)
	f.advance()
	if f.floor != 15 {
		t.Fatalf("floor %d, want 15 after the gap expired", f.floor)
	}
}
