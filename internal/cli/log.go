package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/relay/subscriptions"
)

func init() {
	register("log", "show delivery attempts (relay.delivery_log), or follow them as they happen", (*CLI).cmdLog)
}

// followInterval is how often log --follow looks for new attempts.
var followInterval = 500 * time.Millisecond

// followGapWait is how long log --follow waits for a missing attempt id
// (a transaction still in flight, or a number that was never used) before
// moving past it.
const followGapWait = 30 * time.Second

// logEntry is one row of relay.delivery_log (one HTTP attempt).
type logEntry struct {
	AttemptID        int64     `json:"attempt_id"`
	DeliveryID       int64     `json:"delivery_id"`
	EventID          string    `json:"event_id"`
	SubscriptionID   int64     `json:"subscription_id"`
	SubscriptionName string    `json:"subscription_name"`
	URL              string    `json:"url"`
	EventType        string    `json:"event_type"`
	Owner            *string   `json:"owner"`
	Attempt          int       `json:"attempt"`
	Outcome          string    `json:"outcome"`
	DeliveryStatus   string    `json:"delivery_status"`
	StatusCode       *int      `json:"status_code"`
	DurationMS       *int      `json:"duration_ms"`
	Error            *string   `json:"error"`
	ResponseBody     *string   `json:"response_body"`
	RetryAfter       *string   `json:"retry_after"`
	StartedAt        time.Time `json:"started_at"`
}

const logColumns = `attempt_id, delivery_id, event_id::text, subscription_id, subscription_name, url,
	event_type, owner, attempt, outcome, delivery_status, status_code, duration_ms, error,
	response_body, retry_after, started_at`

func scanLogEntries(rows pgx.Rows) ([]logEntry, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (logEntry, error) {
		var e logEntry
		err := row.Scan(&e.AttemptID, &e.DeliveryID, &e.EventID, &e.SubscriptionID, &e.SubscriptionName, &e.URL,
			&e.EventType, &e.Owner, &e.Attempt, &e.Outcome, &e.DeliveryStatus, &e.StatusCode, &e.DurationMS,
			&e.Error, &e.ResponseBody, &e.RetryAfter, &e.StartedAt)
		return e, err
	})
}

// logFilter selects rows of relay.delivery_log.
type logFilter struct {
	status    string // the delivery's status
	outcome   string // the attempt's outcome
	since     *timeArg
	subID     int64
	owner     string
	eventType string
}

// where returns the SQL condition for f, appending its arguments to args.
func (f *logFilter) where(args *[]any) string {
	conds := []string{"true"}
	arg := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	if f.status != "" {
		conds = append(conds, "delivery_status = "+arg(f.status))
	}
	if f.outcome != "" {
		conds = append(conds, "outcome = "+arg(f.outcome))
	}
	if f.since != nil {
		if f.since.At.IsZero() {
			conds = append(conds, "started_at >= now() - "+arg(f.since.Ago)+"::interval")
		} else {
			conds = append(conds, "started_at >= "+arg(f.since.At))
		}
	}
	if f.subID != 0 {
		conds = append(conds, "subscription_id = "+arg(f.subID))
	}
	if f.owner != "" {
		conds = append(conds, "owner = "+arg(f.owner))
	}
	if f.eventType != "" {
		if strings.HasSuffix(f.eventType, "*") {
			conds = append(conds, arg(f.eventType)+" = ANY (relay.event_type_candidates(event_type))")
		} else {
			conds = append(conds, "event_type = "+arg(f.eventType))
		}
	}
	return strings.Join(conds, " AND ")
}

func (c *CLI) cmdLog(ctx context.Context, args []string) error {
	fs := c.newFlagSet("log", "log [--status S] [--outcome O] [--days N | --since DURATION|TIME] [--sub ID] [--owner O] [--event-type T] [--limit N] [--follow] [--json]")
	dbURL := c.databaseURLFlag(fs)
	asJSON := jsonFlag(fs)
	status := fs.String("status", "", "only attempts of deliveries in this status: pending, delivering, succeeded, failed or skipped")
	outcome := fs.String("outcome", "", "only attempts with this outcome: succeeded, retry, failed or skipped")
	days := fs.Int("days", 0, "only attempts of the last N days")
	sinceArg := fs.String("since", "", "only attempts since a duration ago (90m, 2h, 7d) or a time (2024-05-01T12:00:00Z)")
	subID := fs.Int64("sub", 0, "only this subscription's attempts")
	owner := fs.String("owner", "", "only attempts of this owner's events")
	eventType := fs.String("event-type", "", "only this event type or pattern (thread.created, thread.*)")
	limit := fs.Int("limit", 50, "show at most the N latest attempts (1 to 10000); with --follow, before following")
	follow := fs.Bool("follow", false, "keep printing new attempts as they are recorded, until interrupted (with --json: one object a line)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("log takes no arguments (got %q)", fs.Arg(0))
	}
	f := logFilter{status: *status, outcome: *outcome, subID: *subID, owner: *owner, eventType: *eventType}
	if f.status != "" && !subscriptions.ValidStatus(f.status) {
		return usageError("invalid --status %q: want pending, delivering, succeeded, failed or skipped", f.status)
	}
	switch f.outcome {
	case "", "succeeded", "retry", "failed", "skipped":
	default:
		return usageError("invalid --outcome %q: want succeeded, retry, failed or skipped", f.outcome)
	}
	set := flagsSet(fs)
	if set["days"] && set["since"] {
		return usageError("--days and --since exclude each other")
	}
	if set["days"] {
		if *days <= 0 || *days > 100000 {
			return usageError("invalid --days %d: want a positive number of days", *days)
		}
		f.since = &timeArg{Ago: time.Duration(*days) * 24 * time.Hour}
	}
	if set["since"] {
		t, err := parseTimeArg(*sinceArg)
		if err != nil {
			return usageError("invalid --since: %v", err)
		}
		f.since = &t
	}
	if set["sub"] && f.subID <= 0 {
		return usageError("invalid --sub %d: want a subscription id", f.subID)
	}
	if f.eventType != "" && !subscriptions.ValidEventPattern(f.eventType) {
		return usageError("invalid --event-type %q: want an event type (thread.created) or a pattern (thread.*)", f.eventType)
	}
	if *limit < 1 || *limit > 10000 {
		return usageError("invalid --limit %d: want 1 to 10000", *limit)
	}

	pool, err := c.connectDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if f.subID != 0 {
		var exists bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM relay.subscriptions WHERE id = $1)`, f.subID).Scan(&exists); err != nil {
			return fmt.Errorf("reading subscriptions: %w", err)
		}
		if !exists {
			return &ExitError{Code: 1, Err: fmt.Errorf("%s not found", subName(f.subID))}
		}
	}

	// Where following starts, read before the latest rows so that nothing
	// recorded in between is missed.
	var floor int64
	if *follow {
		if err := pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM relay.delivery_attempts`).Scan(&floor); err != nil {
			return fmt.Errorf("reading the delivery log: %w", err)
		}
	}
	var qargs []any
	where := f.where(&qargs)
	rows, _ := pool.Query(ctx, latestLogSQL(where, *limit), qargs...)
	entries, err := scanLogEntries(rows)
	if err != nil {
		return fmt.Errorf("reading the delivery log: %w", err)
	}
	slices.Reverse(entries)

	out := &logPrinter{w: c.Stdout, json: *asJSON}
	if !*follow {
		if *asJSON {
			if entries == nil {
				entries = []logEntry{}
			}
			return printJSON(c.Stdout, entries)
		}
		if len(entries) == 0 {
			fmt.Fprintln(c.Stdout, "no delivery attempts match")
			return nil
		}
		out.print(entries)
		return nil
	}
	out.print(entries)
	fl := newFollower(floor)
	for _, e := range entries {
		fl.see(e.AttemptID)
	}
	return fl.run(ctx, pool, &f, out)
}

// latestLogSQL selects the newest limit rows of relay.delivery_log that
// match where. It orders by started_at, the partition key of
// relay.delivery_attempts, so that PostgreSQL reads the daily partitions
// newest first and stops at the first that completes the page, instead of
// merging the id index of every partition.
func latestLogSQL(where string, limit int) string {
	return `SELECT ` + logColumns + ` FROM relay.delivery_log WHERE ` + where +
		` ORDER BY started_at DESC, attempt_id DESC LIMIT ` + strconv.Itoa(limit)
}

// followWindow bounds the attempts the follower looks at to those started
// in the last day: an attempt is recorded within its subscription's timeout
// (at most a minute) after it starts, so nothing new is older, and the bound
// keeps each poll to the newest partitions of relay.delivery_attempts.
const followWindow = `started_at > now() - interval '1 day'`

// logPrinter prints entries as fixed-width lines (so that lines printed
// later line up) or as JSON lines.
type logPrinter struct {
	w       io.Writer
	json    bool
	started bool
}

const logLineFormat = "%-19s  %-8s  %3s  %-24s  %-24s  %-12s  %-9s  %4s  %8s  %s\n"

func (p *logPrinter) print(entries []logEntry) {
	if p.json {
		for _, e := range entries {
			printJSONLine(p.w, e)
		}
		return
	}
	if !p.started {
		p.started = true
		fmt.Fprintf(p.w, logLineFormat, "TIME", "DELIVERY", "ATT", "SUBSCRIPTION", "EVENT", "OWNER", "OUTCOME", "CODE", "DURATION", "ERROR")
	}
	for _, e := range entries {
		dur := "-"
		if e.DurationMS != nil {
			dur = strconv.Itoa(*e.DurationMS) + "ms"
		}
		errText := ""
		if e.Error != nil {
			errText = truncate(*e.Error, 80)
		}
		owner := "-"
		if e.Owner != nil {
			owner = truncate(*e.Owner, 12)
		}
		fmt.Fprintf(p.w, logLineFormat, timeText(e.StartedAt), strconv.FormatInt(e.DeliveryID, 10), strconv.Itoa(e.Attempt),
			truncate(strconv.FormatInt(e.SubscriptionID, 10)+" "+e.SubscriptionName, 24), truncate(e.EventType, 24), owner,
			e.Outcome, intPtrText(e.StatusCode), dur, errText)
	}
}

// follower finds attempts recorded since it started. Attempt ids grow, but
// transactions commit out of order: an attempt may become visible after one
// with a larger id. So the follower keeps the ids it has seen above a floor
// below which every id has been seen or given up on, and waits for a missing
// id up to followGapWait before moving the floor past it (ids of rolled-back
// inserts never appear).
type follower struct {
	floor    int64
	maxKnown int64
	seen     map[int64]bool
	gaps     map[int64]time.Time
	now      func() time.Time
}

func newFollower(floor int64) *follower {
	return &follower{floor: floor, maxKnown: floor, seen: map[int64]bool{}, gaps: map[int64]time.Time{}, now: time.Now}
}

// see records id as seen and reports whether it is new.
func (f *follower) see(id int64) bool {
	if id <= f.floor || f.seen[id] {
		return false
	}
	f.seen[id] = true
	delete(f.gaps, id)
	now := f.now()
	for x := f.maxKnown + 1; x < id; x++ {
		if !f.seen[x] {
			f.gaps[x] = now
		}
	}
	f.maxKnown = max(f.maxKnown, id)
	return true
}

// advance moves the floor over seen ids and expired gaps.
func (f *follower) advance() {
	now := f.now()
	for f.floor < f.maxKnown {
		next := f.floor + 1
		if t, gap := f.gaps[next]; gap && now.Sub(t) < followGapWait {
			return
		}
		f.floor = next
		delete(f.seen, next)
		delete(f.gaps, next)
	}
}

const followBatch = 5000

func (f *follower) run(ctx context.Context, pool *pgxpool.Pool, filter *logFilter, out *logPrinter) error {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	for {
		full, err := f.poll(ctx, pool, filter, out)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("following the delivery log: %w", err)
		}
		if full {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// poll prints the attempts that became visible since the last poll and
// reports whether there may be more right away.
func (f *follower) poll(ctx context.Context, pool *pgxpool.Pool, filter *logFilter, out *logPrinter) (bool, error) {
	rows, _ := pool.Query(ctx, `SELECT id FROM relay.delivery_attempts WHERE id > $1 AND `+followWindow+` ORDER BY id LIMIT `+strconv.Itoa(followBatch), f.floor)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return false, err
	}
	var fresh []int64
	for _, id := range ids {
		if f.see(id) {
			fresh = append(fresh, id)
		}
	}
	f.advance()
	if len(fresh) == 0 {
		return false, nil
	}
	qargs := []any{fresh}
	where := filter.where(&qargs)
	rows, _ = pool.Query(ctx, `SELECT `+logColumns+` FROM relay.delivery_log WHERE attempt_id = ANY($1) AND `+followWindow+` AND `+where+
		` ORDER BY attempt_id`, qargs...)
	entries, err := scanLogEntries(rows)
	if err != nil {
		return false, err
	}
	out.print(entries)
	return len(ids) == followBatch, nil
}
