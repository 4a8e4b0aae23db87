// Package partitions keeps the daily partitions of relay.delivery_attempts:
// it creates them ahead of time (Job) and drops whole partitions that
// retention no longer needs (DropBefore, called by internal/retention).
//
// The attempt history is partitioned by RANGE (started_at), one partition
// per UTC day (migration 000006). A row whose day has no partition cannot
// be recorded, so every relay creates today's partition and the next
// DaysAhead days at start, before it dispatches anything, and again every
// Interval. The SQL lives in the database (relay.prepare_attempt_partitions),
// so a deployment that records attempts by other means can call it too; no
// extension such as pg_partman is needed.
//
// Creating and dropping take short locks that conflict with writers: ATTACH
// takes SHARE UPDATE EXCLUSIVE on the parent and, for the foreign key to
// relay.deliveries, a brief SHARE ROW EXCLUSIVE there (fan-out, claims and
// the recorder wait for it); DROP TABLE of a partition takes ACCESS
// EXCLUSIVE on the parent for an instant (the recorder and readers of the
// log wait). DETACH ... CONCURRENTLY is not used: for the foreign key it
// needs the same lock on relay.deliveries, twice (detach, then drop), where
// a plain DROP needs none there. Each statement runs under LockTimeout, so a
// busy moment makes a run fail and the next one try again instead of
// queueing writers behind it for long; partitions are made days ahead for
// that reason.
//
// This package touches only the partitions of relay.delivery_attempts, never
// their rows.
package partitions

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
)

// Defaults of Config.
const (
	DefaultDaysAhead   = 3
	DefaultInterval    = time.Hour
	DefaultLockTimeout = 2 * time.Second
)

// Partition is one partition of relay.delivery_attempts and the range of
// started_at it holds, [From, To). From is the zero time for the first
// partition of an upgraded install (FROM MINVALUE).
type Partition struct {
	Name string
	From time.Time
	To   time.Time
	// DetachPending is true when a DETACH ... CONCURRENTLY (run by hand)
	// was interrupted; DropBefore finishes it.
	DetachPending bool
}

// Querier is what List needs: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// List returns the partitions, oldest first.
func List(ctx context.Context, q Querier) ([]Partition, error) {
	rows, err := q.Query(ctx, `SELECT partition::text,
			CASE WHEN from_at = '-infinity' THEN NULL ELSE from_at END, to_at, detach_pending
		FROM relay.attempt_partitions()`)
	if err != nil {
		return nil, fmt.Errorf("listing attempt partitions: %w", err)
	}
	var out []Partition
	for rows.Next() {
		var p Partition
		var from *time.Time
		if err := rows.Scan(&p.Name, &from, &p.To, &p.DetachPending); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing attempt partitions: %w", err)
		}
		if from != nil {
			p.From = *from
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing attempt partitions: %w", err)
	}
	return out, nil
}

// Prepare makes sure today (UTC) and the next daysAhead days have a
// partition, and returns how many it created.
func Prepare(ctx context.Context, conn *pgxpool.Conn, daysAhead int, lockTimeout time.Duration) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := setLockTimeout(ctx, tx, lockTimeout, true); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT relay.prepare_attempt_partitions($1)`, daysAhead).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("creating attempt partitions: %w", err)
	}
	return n, nil
}

// DropBefore drops every partition whose whole range ends at or before
// cutoff, and returns their names, one statement (one short transaction)
// each on conn; a detach left pending by an interrupted DETACH ...
// CONCURRENTLY is finished first (that needs no transaction block, hence a
// connection). Dropping a partition removes attempt rows only: deliveries
// and events stay, whatever their status.
func DropBefore(ctx context.Context, conn *pgxpool.Conn, cutoff time.Time, lockTimeout time.Duration) ([]string, error) {
	parts, err := List(ctx, conn)
	if err != nil {
		return nil, err
	}
	if err := setLockTimeout(ctx, conn, lockTimeout, false); err != nil {
		return nil, err
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `RESET lock_timeout`) }()
	var dropped []string
	for _, p := range parts {
		if p.To.After(cutoff) {
			continue
		}
		// Names come from the catalog as regclass text, already quoted.
		if p.DetachPending {
			if _, err := conn.Exec(ctx, `ALTER TABLE relay.delivery_attempts DETACH PARTITION `+p.Name+` FINALIZE`); err != nil {
				return dropped, fmt.Errorf("finishing the detach of %s: %w", p.Name, err)
			}
		}
		if _, err := conn.Exec(ctx, `DROP TABLE `+p.Name); err != nil {
			return dropped, fmt.Errorf("dropping %s: %w", p.Name, err)
		}
		dropped = append(dropped, p.Name)
	}
	return dropped, nil
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// setLockTimeout sets lock_timeout for the transaction (local) or the
// session.
func setLockTimeout(ctx context.Context, e execer, d time.Duration, local bool) error {
	if d <= 0 {
		d = DefaultLockTimeout
	}
	_, err := e.Exec(ctx, `SELECT set_config('lock_timeout', $1, $2)`, fmt.Sprintf("%dms", d.Milliseconds()), local)
	return err
}

// IsLockTimeout reports whether err is PostgreSQL's lock_timeout: a busy
// moment, to be retried at the next run.
func IsLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

// Config configures a Job.
type Config struct {
	Pool   *pgxpool.Pool
	Logger zerolog.Logger
	// DaysAhead is how many days after today get a partition (default
	// DefaultDaysAhead): the margin for a relay that cannot create one for
	// a while (its database too busy, or every relay stopped).
	DaysAhead int
	// Interval is the time between runs (default DefaultInterval).
	Interval time.Duration
	// LockTimeout bounds each wait for a lock (default DefaultLockTimeout).
	LockTimeout time.Duration
}

// Job creates partitions ahead. Use New, then Start (which runs once before
// returning) and Stop.
type Job struct {
	cfg Config
	log zerolog.Logger

	lifeMu  sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	stopped bool
}

// New returns a job; zero fields of cfg take their defaults.
func New(cfg Config) *Job {
	if cfg.DaysAhead <= 0 {
		cfg.DaysAhead = DefaultDaysAhead
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	return &Job{cfg: cfg, log: cfg.Logger.With().Str("component", "partitions").Logger()}
}

// RunOnce creates the missing partitions and returns how many it created.
func (j *Job) RunOnce(ctx context.Context) (int, error) {
	conn, err := j.cfg.Pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("partitions: acquiring a connection: %w", err)
	}
	defer conn.Release()
	return Prepare(ctx, conn, j.cfg.DaysAhead, j.cfg.LockTimeout)
}

// Start makes sure today's partition exists, then keeps creating them
// ahead every Interval in the background until ctx ends or Stop is called.
// It returns an error only when no partition covers the current time after
// the first run: the relay could not record any attempt. A first run that
// only failed to create future days is logged and retried.
func (j *Job) Start(ctx context.Context) error {
	j.lifeMu.Lock()
	defer j.lifeMu.Unlock()
	if j.done != nil || j.stopped {
		return nil
	}
	n, err := j.RunOnce(ctx)
	if err != nil {
		if cerr := j.coversNow(ctx); cerr != nil {
			return fmt.Errorf("%w (and %v)", err, cerr)
		}
		j.log.Warn().Err(err).Msg("could not create attempt partitions ahead; retrying later")
	} else if n > 0 {
		j.log.Info().Int("num_partitions", n).Msg("created attempt partitions")
	}
	ctx, j.cancel = context.WithCancel(ctx)
	j.done = make(chan struct{})
	go j.loop(ctx, j.done)
	return nil
}

// coversNow checks that a partition holds the current time.
func (j *Job) coversNow(ctx context.Context) error {
	var ok bool
	err := j.cfg.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM relay.attempt_partitions()
		WHERE from_at <= now() AND to_at > now() AND NOT detach_pending)`).Scan(&ok)
	if err != nil {
		return fmt.Errorf("reading attempt partitions: %w", err)
	}
	if !ok {
		return errors.New("no partition of relay.delivery_attempts holds the current time: attempts cannot be recorded")
	}
	return nil
}

// Stop ends the background runs and waits for the current one. It is
// idempotent and safe on a job never started.
func (j *Job) Stop() {
	j.lifeMu.Lock()
	j.stopped = true
	cancel, done := j.cancel, j.done
	j.lifeMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (j *Job) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTimer(j.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := j.RunOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && IsLockTimeout(err):
			j.log.Info().Err(err).Msg("attempt partitions: the tables were busy; retrying at the next run")
		case err != nil:
			j.log.Error().Err(err).Msg("creating attempt partitions failed")
		case n > 0:
			j.log.Info().Int("num_partitions", n).Msg("created attempt partitions")
		}
		t.Reset(j.cfg.Interval)
	}
}
