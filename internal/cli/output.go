package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/relay/subscriptions"
)

// This file holds what the operator commands share: human tables and JSON
// output, the database connection, and the parsing of ids, durations and
// times given on the command line.

// jsonFlag adds --json, which switches a command from human output to JSON
// for scripts.
func jsonFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("json", false, "print JSON instead of human-readable text")
}

// printJSON writes v as indented JSON followed by a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// printJSONLine writes v as one line of JSON (for streams: one object a
// line).
func printJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table writes aligned columns with text/tabwriter. Cells are cleaned of tabs
// and line breaks, which would break the alignment.
type table struct {
	tw *tabwriter.Writer
}

// newTable starts a table with a header row (omitted when header is empty).
func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		cells := make([]any, len(header))
		for i, h := range header {
			cells[i] = h
		}
		t.row(cells...)
	}
	return t
}

// row adds one row; each cell is formatted with %v.
func (t *table) row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(t.tw, "\t")
		}
		io.WriteString(t.tw, cellText(fmt.Sprint(c)))
	}
	io.WriteString(t.tw, "\n")
}

// flush writes the table out.
func (t *table) flush() error { return t.tw.Flush() }

var spaceRun = regexp.MustCompile(`[\t\r\n\v\f]+`)

// cellText makes s safe to print in a table cell: runs of tabs and line
// breaks (which would break the alignment) become one space, and every
// other character a terminal could act on is written as an escape (see
// safeText).
func cellText(s string) string { return safeText(spaceRun.ReplaceAllString(s, " ")) }

// safeText makes text written by other people (subscription names, owners,
// reasons, errors, URLs) safe to print on an operator's terminal. C0 and C1
// control characters and DEL (ESC, BEL, CSI… could move the cursor,
// rewrite the screen or the window title) become visible escapes (\x1b,
// \u009b), and so do the Unicode bidirectional controls that make text
// read differently from what it is (\u202e); bytes that are not UTF-8 become
// \xff. Line breaks and tabs are kept as escapes too: callers that want a
// space use cellText.
func safeText(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || needsEscape(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && needsEscape(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case needsEscape(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// needsEscape reports the runes safeText escapes.
func needsEscape(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true // bidirectional controls
	}
	return false
}

// truncate cuts s to at most n characters, marking the cut with "…".
func truncate(s string, n int) string {
	s = cellText(s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// orDash returns *s made safe to print (safeText), or "-" when s is nil
// or empty.
func orDash(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return safeText(*s)
}

// ownerText shows an owner made safe to print, "(operator)" for nil.
func ownerText(owner *string) string {
	if owner == nil {
		return "(operator)"
	}
	return safeText(*owner)
}

// timeText formats a time for people: local time to the second.
func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func timePtrText(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return timeText(*t)
}

// intPtrText formats an optional number, "-" for nil.
func intPtrText(n *int) string {
	if n == nil {
		return "-"
	}
	return strconv.Itoa(*n)
}

// durationText formats a duration for people: 7d, 36h, 1h30m, 2m5s, 45s,
// 120ms (rounded to the second from a second up).
func durationText(d time.Duration) string {
	if d < 0 {
		return "-" + durationText(-d)
	}
	if d < time.Second {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	d = d.Round(time.Second)
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	h, m, sec := int64(d/time.Hour), int64(d%time.Hour/time.Minute), int64(d%time.Minute/time.Second)
	var b strings.Builder
	if h > 0 {
		fmt.Fprintf(&b, "%dh", h)
	}
	if m > 0 {
		fmt.Fprintf(&b, "%dm", m)
	}
	if sec > 0 && h == 0 {
		fmt.Fprintf(&b, "%ds", sec)
	}
	if b.Len() == 0 {
		// Only seconds dropped from a duration of hours: at least say the hour.
		fmt.Fprintf(&b, "%dh", h)
	}
	return b.String()
}

// bytesText formats a byte count: 512 B, 1.5 MiB.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// connectDB opens a pool on dbURL and checks it answers, so a bad URL or an
// unreachable server fails at once with a clear message (exit 1).
func (c *CLI) connectDB(ctx context.Context, dbURL string) (*pgxpool.Pool, error) {
	dbURL, err := c.databaseURL(dbURL)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, usageError("invalid database URL: %v", err)
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return pool, nil
}

// parseIDArg reads a positive integer id given on the command line; what
// names it in the message ("subscription id").
func parseIDArg(what, s string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || id <= 0 {
		return 0, usageError("invalid %s %q: want a positive integer", what, s)
	}
	return id, nil
}

var daysRE = regexp.MustCompile(`^(\d+)d$`)

// parseDurationArg reads a duration as Go writes them (90m, 2h, 1h30m) or a
// number of days (7d). Negative durations are refused.
func parseDurationArg(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if m := daysRE.FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil || n > 100000 {
			return 0, fmt.Errorf("%q is too many days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: want e.g. 90m, 2h or 7d", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// timeArg is a point in time given on the command line: either a duration
// before now (Ago) or an absolute time (At).
type timeArg struct {
	Ago time.Duration
	At  time.Time
}

// time returns the point in time relative to now.
func (t timeArg) time(now time.Time) time.Time {
	if !t.At.IsZero() {
		return t.At
	}
	return now.Add(-t.Ago)
}

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"}

// parseTimeArg reads a duration before now (90m, 2h, 7d) or a time: RFC 3339
// (2024-05-01T12:00:00Z), or a date or date and time without zone, read in
// local time (2024-05-01, 2024-05-01 12:00).
func parseTimeArg(s string) (timeArg, error) {
	s = strings.TrimSpace(s)
	if d, err := parseDurationArg(s); err == nil {
		return timeArg{Ago: d}, nil
	}
	for _, layout := range timeLayouts {
		var t time.Time
		var err error
		if layout == time.RFC3339Nano {
			t, err = time.Parse(layout, s)
		} else {
			t, err = time.ParseInLocation(layout, s, time.Local)
		}
		if err == nil {
			return timeArg{At: t}, nil
		}
	}
	return timeArg{}, fmt.Errorf("%q is neither a duration (90m, 2h, 7d) nor a time (2024-05-01, 2024-05-01T12:00:00Z)", s)
}

// stringsFlag is a repeatable string flag (--header a=b --header c=d).
type stringsFlag []string

func (f *stringsFlag) String() string { return strings.Join(*f, ",") }
func (f *stringsFlag) Set(v string) error {
	*f = append(*f, v)
	return nil
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// flagsSet returns the names of the flags given on the command line.
func flagsSet(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// storeError turns an error of the subscriptions store into a command error
// (exit 1): "subscription 42 not found" for ErrNotFound (what names the row),
// and a message naming the field for a *ValidationError.
func storeError(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, subscriptions.ErrNotFound) && what != "" {
		return &ExitError{Code: 1, Err: fmt.Errorf("%s not found", what)}
	}
	var ve *subscriptions.ValidationError
	if errors.As(err, &ve) {
		return &ExitError{Code: 1, Err: errors.New(validationText(ve))}
	}
	return err
}

// validationText is a ValidationError's message, prefixed with the field
// when the message does not already name it, and followed by the database's
// hint.
func validationText(ve *subscriptions.ValidationError) string {
	msg := ve.Message
	if ve.Field != "" && !strings.HasPrefix(msg, ve.Field) {
		msg = ve.Field + ": " + msg
	}
	if ve.Hint != "" {
		msg += " (" + ve.Hint + ")"
	}
	return msg
}
