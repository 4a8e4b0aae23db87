package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/relay/subscriptions"
)

func init() {
	register("redeliver", "send finished deliveries again, by delivery id", (*CLI).cmdRedeliver)
	register("replay", "re-queue a subscription's failed deliveries of a time range", (*CLI).cmdReplay)
	register("pause", "stop all sending; deliveries wait until resume", (*CLI).cmdPause)
	register("resume", "resume sending after pause", (*CLI).cmdResume)
	register("status", "show the slot's lag, the backlog and unhealthy subscriptions", (*CLI).cmdStatus)
}

// redeliverResult is one delivery's outcome in redeliver --json.
type redeliverResult struct {
	DeliveryID int64  `json:"delivery_id"`
	Queued     bool   `json:"queued"`
	Error      string `json:"error,omitempty"`
}

func (c *CLI) cmdRedeliver(ctx context.Context, args []string) error {
	fs := c.newFlagSet("redeliver", "redeliver DELIVERY_ID... [--json]")
	dbURL := c.databaseURLFlag(fs)
	asJSON := jsonFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return usageError("redeliver needs at least one delivery id")
	}
	ids := make([]int64, fs.NArg())
	for i, a := range fs.Args() {
		id, err := parseIDArg("delivery id", a)
		if err != nil {
			return err
		}
		ids[i] = id
	}
	pool, err := c.connectDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := subscriptions.NewStore(pool)
	results := make([]redeliverResult, 0, len(ids))
	failed := 0
	for _, id := range ids {
		r := redeliverResult{DeliveryID: id, Queued: true}
		if err := st.Redeliver(ctx, id, nil); err != nil {
			r.Queued = false
			failed++
			switch {
			case errors.Is(err, subscriptions.ErrNotFound):
				r.Error = fmt.Sprintf("delivery %d not found", id)
			case errors.Is(err, subscriptions.ErrConflict):
				// "redelivering 4: conflict: delivery 4 is already pending"
				msg := err.Error()
				if i := strings.LastIndex(msg, ": "); i >= 0 {
					msg = msg[i+2:]
				}
				r.Error = msg + " (nothing to do)"
			default:
				if ctx.Err() != nil {
					return err
				}
				r.Error = err.Error()
			}
		}
		results = append(results, r)
	}
	if *asJSON {
		if err := printJSON(c.Stdout, results); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			if r.Queued {
				fmt.Fprintf(c.Stdout, "delivery %d queued for redelivery\n", r.DeliveryID)
			} else {
				fmt.Fprintf(c.Stdout, "delivery %d: %s\n", r.DeliveryID, safeText(r.Error))
			}
		}
	}
	if failed > 0 {
		return &ExitError{Code: 1, Err: fmt.Errorf("%d of %d deliveries not queued", failed, len(ids))}
	}
	return nil
}

func (c *CLI) cmdReplay(ctx context.Context, args []string) error {
	fs := c.newFlagSet("replay", "replay --sub ID --since DURATION|TIME [--until DURATION|TIME] [--json]")
	dbURL := c.databaseURLFlag(fs)
	asJSON := jsonFlag(fs)
	subID := fs.Int64("sub", 0, "the subscription whose failed deliveries to re-queue (required)")
	sinceArg := fs.String("since", "", "deliveries created since a duration ago (2h, 7d) or a time (2024-05-01T12:00:00Z) (required)")
	untilArg := fs.String("until", "", "and before this duration ago or time (default now)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("replay takes no arguments (got %q); use --sub and --since", fs.Arg(0))
	}
	if *subID <= 0 {
		fs.Usage()
		return usageError("replay needs --sub ID")
	}
	if strings.TrimSpace(*sinceArg) == "" {
		fs.Usage()
		return usageError("replay needs --since")
	}
	since, err := parseTimeArg(*sinceArg)
	if err != nil {
		return usageError("invalid --since: %v", err)
	}
	until := timeArg{}
	if *untilArg != "" {
		if until, err = parseTimeArg(*untilArg); err != nil {
			return usageError("invalid --until: %v", err)
		}
	}
	now := time.Now()
	from, to := since.time(now), until.time(now)
	if !from.Before(to) {
		return usageError("--since (%s) must be before --until (%s)", timeText(from), timeText(to))
	}
	pool, err := c.connectDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	n, err := subscriptions.NewStore(pool).Replay(ctx, *subID, nil, from, to)
	if err != nil {
		return storeError(err, subName(*subID))
	}
	if *asJSON {
		return printJSON(c.Stdout, map[string]any{"subscription_id": *subID, "since": from, "until": to, "queued": n})
	}
	fmt.Fprintf(c.Stdout, "queued %d failed deliveries of subscription %d created between %s and %s\n", n, *subID, timeText(from), timeText(to))
	return nil
}

// pauseView is the JSON of pause and resume.
type pauseView struct {
	Paused       bool       `json:"paused"`
	PausedReason *string    `json:"paused_reason"`
	PausedAt     *time.Time `json:"paused_at"`
}

func (c *CLI) cmdPause(ctx context.Context, args []string) error {
	fs := c.newFlagSet("pause", "pause [--reason R] [--json]")
	dbURL := c.databaseURLFlag(fs)
	asJSON := jsonFlag(fs)
	reason := fs.String("reason", "", "why, shown by status")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("pause takes no arguments (got %q); use --reason", fs.Arg(0))
	}
	var r *string
	if strings.TrimSpace(*reason) != "" {
		r = reason
	}
	return c.setPaused(ctx, *dbURL, *asJSON, `SELECT relay.pause($1)`, r)
}

func (c *CLI) cmdResume(ctx context.Context, args []string) error {
	fs := c.newFlagSet("resume", "resume [--json]")
	dbURL := c.databaseURLFlag(fs)
	asJSON := jsonFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("resume takes no arguments (got %q)", fs.Arg(0))
	}
	return c.setPaused(ctx, *dbURL, *asJSON, `SELECT relay.resume()`)
}

// setPaused runs relay.pause or relay.resume and prints the state after.
func (c *CLI) setPaused(ctx context.Context, dbURL string, asJSON bool, sql string, args ...any) error {
	pool, err := c.connectDB(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	var v pauseView
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT paused, paused_reason, paused_at FROM relay.settings`).Scan(&v.Paused, &v.PausedReason, &v.PausedAt)
	})
	if err != nil {
		return fmt.Errorf("updating relay.settings: %w", err)
	}
	if asJSON {
		return printJSON(c.Stdout, v)
	}
	if v.Paused {
		msg := "relay paused"
		if v.PausedReason != nil {
			msg += " (" + *v.PausedReason + ")"
		}
		fmt.Fprintln(c.Stdout, msg+": deliveries wait until 'relay resume'")
	} else {
		fmt.Fprintln(c.Stdout, "relay resumed: waiting deliveries go out now")
	}
	return nil
}

// statusView is the JSON of status.
type statusView struct {
	Paused       bool       `json:"paused"`
	PausedReason *string    `json:"paused_reason"`
	PausedAt     *time.Time `json:"paused_at"`
	Slot         slotView   `json:"slot"`
	// Deliveries counts deliveries by status (every status present).
	Deliveries           map[string]int64 `json:"deliveries"`
	Due                  int64            `json:"due"`
	OldestPendingSeconds *float64         `json:"oldest_pending_seconds"`
	Subscriptions        subCounts        `json:"subscriptions"`
	Unhealthy            []unhealthySub   `json:"unhealthy"`
}

type slotView struct {
	Name              string  `json:"name"`
	Exists            bool    `json:"exists"`
	Active            bool    `json:"active"`
	ActivePID         *int32  `json:"active_pid"`
	WALStatus         *string `json:"wal_status"`
	LagBytes          *int64  `json:"lag_bytes"`
	ConfirmedFlushLSN *string `json:"confirmed_flush_lsn"`
	CurrentLSN        string  `json:"current_lsn"`
}

type subCounts struct {
	Total    int64 `json:"total"`
	Enabled  int64 `json:"enabled"`
	Disabled int64 `json:"disabled"`
	Failing  int64 `json:"failing"`
}

// unhealthySub is a subscription failing or disabled.
type unhealthySub struct {
	ID                  int64      `json:"id"`
	Owner               *string    `json:"owner"`
	Name                string     `json:"name"`
	URL                 string     `json:"url"`
	Enabled             bool       `json:"enabled"`
	DisabledReason      *string    `json:"disabled_reason"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	FailingSince        *time.Time `json:"failing_since"`
	LastSuccessAt       *time.Time `json:"last_success_at"`
	LastError           *string    `json:"last_error"`
	Backlog             int64      `json:"backlog"`
}

func (c *CLI) cmdStatus(ctx context.Context, args []string) error {
	fs := c.newFlagSet("status", "status [--slot NAME] [--json]")
	dbURL := c.databaseURLFlag(fs)
	asJSON := jsonFlag(fs)
	defSlot := c.getenv("RELAY_SLOT")
	if defSlot == "" {
		defSlot = "relay"
	}
	slot := fs.String("slot", defSlot, "the replication slot relay streams from (env RELAY_SLOT)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("status takes no arguments (got %q)", fs.Arg(0))
	}
	pool, err := c.connectDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	v := statusView{Slot: slotView{Name: *slot}, Deliveries: map[string]int64{}, Unhealthy: []unhealthySub{}}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// One snapshot for the whole report.
		if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT paused, paused_reason, paused_at FROM relay.settings`).
			Scan(&v.Paused, &v.PausedReason, &v.PausedAt); err != nil {
			return fmt.Errorf("reading relay.settings: %w", err)
		}
		s := &v.Slot
		err := tx.QueryRow(ctx, `
			SELECT pg_current_wal_lsn()::text, s.slot_name IS NOT NULL, coalesce(s.active, false), s.active_pid,
			       s.wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,
			       s.confirmed_flush_lsn::text
			FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots AS s ON s.slot_name = $1`, *slot).
			Scan(&s.CurrentLSN, &s.Exists, &s.Active, &s.ActivePID, &s.WALStatus, &s.LagBytes, &s.ConfirmedFlushLSN)
		if err != nil {
			return fmt.Errorf("reading the replication slot: %w", err)
		}
		for _, st := range []string{"pending", "delivering", "succeeded", "failed"} {
			v.Deliveries[st] = 0
		}
		rows, _ := tx.Query(ctx, `SELECT status, count(*) FROM relay.deliveries GROUP BY status`)
		var st string
		var n int64
		if _, err := pgx.ForEachRow(rows, []any{&st, &n}, func() error { v.Deliveries[st] = n; return nil }); err != nil {
			return fmt.Errorf("counting deliveries: %w", err)
		}
		err = tx.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()),
			       extract(epoch FROM now() - min(created_at))::float8
			FROM relay.deliveries WHERE status IN ('pending', 'delivering')`).Scan(&v.Due, &v.OldestPendingSeconds)
		if err != nil {
			return fmt.Errorf("reading the backlog: %w", err)
		}
		err = tx.QueryRow(ctx, `
			SELECT count(*), count(*) FILTER (WHERE enabled), count(*) FILTER (WHERE NOT enabled),
			       count(*) FILTER (WHERE enabled AND consecutive_failures > 0)
			FROM relay.subscriptions`).Scan(&v.Subscriptions.Total, &v.Subscriptions.Enabled, &v.Subscriptions.Disabled, &v.Subscriptions.Failing)
		if err != nil {
			return fmt.Errorf("counting subscriptions: %w", err)
		}
		rows, _ = tx.Query(ctx, `
			SELECT subscription_id, owner, name, url, enabled, disabled_reason, consecutive_failures,
			       failing_since, last_success_at, last_error, backlog
			FROM relay.subscription_health
			WHERE NOT enabled OR consecutive_failures > 0
			ORDER BY enabled, consecutive_failures DESC, subscription_id
			LIMIT 100`)
		v.Unhealthy, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (unhealthySub, error) {
			var u unhealthySub
			err := row.Scan(&u.ID, &u.Owner, &u.Name, &u.URL, &u.Enabled, &u.DisabledReason, &u.ConsecutiveFailures,
				&u.FailingSince, &u.LastSuccessAt, &u.LastError, &u.Backlog)
			return u, err
		})
		if err != nil {
			return fmt.Errorf("reading subscription health: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if v.Unhealthy == nil {
		v.Unhealthy = []unhealthySub{}
	}
	if *asJSON {
		return printJSON(c.Stdout, v)
	}
	c.printStatus(&v)
	return nil
}

func (c *CLI) printStatus(v *statusView) {
	w := c.Stdout
	if v.Paused {
		line := "sending:        PAUSED"
		if v.PausedAt != nil {
			line += " since " + timeText(*v.PausedAt)
		}
		if v.PausedReason != nil {
			line += " (" + safeText(*v.PausedReason) + ")"
		}
		fmt.Fprintln(w, line+"; 'relay resume' resumes")
	} else {
		fmt.Fprintln(w, "sending:        running")
	}
	s := v.Slot
	label := fmt.Sprintf("%-16s", "slot "+s.Name+":")
	if !s.Exists {
		fmt.Fprintf(w, "%sdoes not exist (no relay has streamed from this database yet, or the slot has another name: --slot)\n", label)
	} else {
		state := "inactive (no relay is streaming)"
		if s.Active {
			state = "active"
		}
		lag := "unknown"
		if s.LagBytes != nil {
			lag = bytesText(*s.LagBytes)
		}
		wal := "-"
		if s.WALStatus != nil {
			wal = *s.WALStatus
		}
		fmt.Fprintf(w, "%s%s, lag %s, wal_status %s\n", label, state, lag, wal)
		if wal == "lost" {
			fmt.Fprintf(w, "%sWARNING: the slot lost WAL it needed; events may be missing: recreate the slot\n", strings.Repeat(" ", 16))
		}
	}
	d := v.Deliveries
	fmt.Fprintf(w, "deliveries:     %d pending (%d due), %d delivering, %d succeeded, %d failed\n",
		d["pending"], v.Due, d["delivering"], d["succeeded"], d["failed"])
	oldest := "none"
	if v.OldestPendingSeconds != nil {
		oldest = durationText(time.Duration(*v.OldestPendingSeconds * float64(time.Second)))
	}
	fmt.Fprintf(w, "oldest pending: %s\n", oldest)
	sc := v.Subscriptions
	fmt.Fprintf(w, "subscriptions:  %d (%d enabled, %d disabled, %d failing)\n", sc.Total, sc.Enabled, sc.Disabled, sc.Failing)
	if len(v.Unhealthy) == 0 {
		return
	}
	fmt.Fprintln(w, "\nfailing or disabled:")
	t := newTable(w, "ID", "OWNER", "NAME", "URL", "STATE", "FAILURES", "SINCE", "BACKLOG", "REASON / LAST ERROR")
	for _, u := range v.Unhealthy {
		state, reason := "failing", orDash(u.LastError)
		if !u.Enabled {
			state, reason = "disabled", orDash(u.DisabledReason)
		}
		t.row(u.ID, ownerText(u.Owner), truncate(u.Name, 30), u.URL, state, u.ConsecutiveFailures,
			timePtrText(u.FailingSince), u.Backlog, truncate(reason, 60))
	}
	t.flush()
}
