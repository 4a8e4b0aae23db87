// Package retention removes old history: whole days of attempts, response
// bodies of succeeded deliveries, and old events with their deliveries,
// once all their work is over.
//
// Each run does three things, in this order:
//
//  1. Attempt partitions. relay.delivery_attempts is partitioned by day
//     (internal/partitions); every partition whose whole day is older than
//     the retention (relay.settings.retention, 7 days by default, or
//     Config.Retention) is dropped. That costs a few catalog
//     rows of WAL whatever the partition holds, where deleting its rows
//     would write WAL for each of them and leave the table to vacuum.
//     Dropping attempts never loses work: the delivery rows (status,
//     attempt count, next_attempt_at, last answer) are in relay.deliveries,
//     which is not partitioned, so a delivery still retrying after the
//     retention keeps going and only its oldest attempt rows are gone.
//  2. Payloads. When relay.settings.payload_retention (or
//     Config.PayloadRetention) is set, the response bodies of succeeded
//     attempts older than it are cleared (delivery_attempts.response_body
//     and the same delivery's deliveries.last_response), in batches of
//     about BatchSize attempts; the metadata stays for the whole retention.
//     Progress is kept in relay.maintenance_state, so a restart does not
//     read the history again. Event payloads are kept: redeliver needs them.
//  3. Events. An event is removed when it is older than the retention and
//     none of its deliveries is pending or delivering; an old event without
//     any delivery (it matched no subscription) goes too. Its deliveries
//     (and any attempt rows younger than the dropped days) go with it by ON
//     DELETE CASCADE. Pending work is never removed. These rows go in
//     batches: relay.outbox and relay.deliveries are not partitioned (see
//     docs/scaling.md for why).
//
// Only one relay runs the job at a time: each run takes a session advisory
// lock (LockKey) with pg_try_advisory_lock and does nothing when another
// relay holds it. Rows go in small batches, one short transaction each, so
// the job never holds many locks for long.
//
// The job also never removes an event the capture stream may not have fanned
// out yet: if it did, the stream would later try to insert deliveries that
// reference a removed row and stop on the foreign key. When the replication
// slot (Config.Slot) exists, the job remembers the WAL position at each run
// and removes only events created, with an hour's margin for long
// transactions, before a run whose position the slot has confirmed. The
// first run after start therefore removes nothing while the slot exists
// (it has no confirmed sample yet); the next one catches up. Attempts need
// no such guard: an attempt exists only for a delivery already fanned out.
package retention

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/partitions"
)

// LockKey is the advisory lock key a retention run holds (the first 8 bytes
// of "relay.re" as a big-endian integer: a fixed, recognisable number).
const LockKey int64 = 0x72656c61792e7265

// Defaults of Config.
const (
	DefaultInterval  = 10 * time.Minute
	DefaultBatchSize = 1000
	DefaultSlot      = "relay"
)

// commitMargin is how long an application transaction may stay open between
// inserting an event (created_at is its start time) and committing it, for
// the slot guard to stay exact.
const commitMargin = time.Hour

// maxSamples bounds the WAL positions remembered for the slot guard. When a
// slot lags longer than maxSamples runs, the oldest samples are forgotten,
// which only makes the job more careful.
const maxSamples = 2000

// Config configures a Job.
type Config struct {
	Pool   *pgxpool.Pool
	Logger zerolog.Logger
	// Retention is how old an event must be to be removed. 0 means reading
	// relay.settings.retention at each run, so a change there applies
	// without a restart.
	Retention time.Duration
	// PayloadRetention is how old the response body of a succeeded attempt
	// must be to be cleared. 0 means reading relay.settings
	// .payload_retention at each run (NULL there: bodies are kept as long
	// as the rest); a negative value keeps them.
	PayloadRetention time.Duration
	// LockTimeout bounds the waits for the locks that dropping a
	// partition takes (default partitions.DefaultLockTimeout); a run that
	// times out logs it and the next run tries again.
	LockTimeout time.Duration
	// Interval is the time between runs (default DefaultInterval).
	Interval time.Duration
	// BatchSize is how many events one transaction removes at most (default
	// DefaultBatchSize).
	BatchSize int
	// Slot is the replication slot of the capture stream, for the guard
	// described in the package documentation (default DefaultSlot). When it
	// does not exist, no event can still be waiting for fan-out (a new slot
	// starts at the current WAL position) and the guard is off.
	Slot string
}

// Job is the retention job. Use New, then RunOnce or Start and Stop.
type Job struct {
	cfg Config
	log zerolog.Logger

	mu      sync.Mutex // serialises runs of this Job and guards samples
	samples []sample

	lifeMu  sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	stopped bool
}

// sample is the WAL position at a moment, as the database saw it.
type sample struct {
	at  time.Time
	lsn pglogrepl.LSN
}

// New returns a job; zero fields of cfg take their defaults.
func New(cfg Config) *Job {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Slot == "" {
		cfg.Slot = DefaultSlot
	}
	return &Job{cfg: cfg, log: cfg.Logger.With().Str("component", "retention").Logger()}
}

// Start runs the job now and then every Interval, in the background, until
// ctx ends or Stop is called. Errors of a run are logged; the next run tries
// again. Calling Start on a started or stopped job does nothing.
func (j *Job) Start(ctx context.Context) {
	j.lifeMu.Lock()
	defer j.lifeMu.Unlock()
	if j.done != nil || j.stopped {
		return
	}
	ctx, j.cancel = context.WithCancel(ctx)
	j.done = make(chan struct{})
	go j.loop(ctx, j.done)
}

// Stop ends the background runs and waits for the current one to finish
// (it is cancelled). It is idempotent and safe on a job never started.
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
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		res, err := j.Run(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && partitions.IsLockTimeout(err):
			j.log.Info().Err(err).Msg("retention: the tables were busy; retrying at the next run")
		case err != nil:
			j.log.Error().Err(err).Msg("retention run failed")
		}
		if len(res.Partitions) > 0 || res.Events > 0 || res.Payloads > 0 {
			j.log.Info().Strs("partitions", res.Partitions).Int("num_events", res.Events).Int("num_payloads", res.Payloads).
				Dur("elapsed", time.Since(start)).Msg("removed old history")
		}
		t.Reset(j.cfg.Interval)
	}
}

// Result is what one run removed.
type Result struct {
	// Partitions are the attempt partitions dropped.
	Partitions []string
	// Payloads counts the attempts whose response body was cleared.
	Payloads int
	// Events counts the events removed (with their deliveries).
	Events int
}

// RunOnce runs the job once (see Run) and returns how many events it
// removed.
func (j *Job) RunOnce(ctx context.Context) (removed int, err error) {
	res, err := j.Run(ctx)
	return res.Events, err
}

// Run drops the attempt partitions, clears the payloads and removes the
// events due for it, in that order (see the package documentation). When
// another relay holds the retention lock it returns a zero Result at once.
// The lock is held on a connection of its own for the whole run.
func (j *Job) Run(ctx context.Context) (res Result, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()

	conn, err := j.cfg.Pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("retention: acquiring a connection: %w", err)
	}
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, LockKey).Scan(&locked); err != nil {
		conn.Release()
		return res, fmt.Errorf("retention: taking the lock: %w", err)
	}
	if !locked {
		conn.Release()
		j.log.Debug().Msg("another relay runs retention")
		return res, nil
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var ok bool
		if err := conn.QueryRow(uctx, `SELECT pg_advisory_unlock($1)`, LockKey).Scan(&ok); err != nil || !ok {
			// Closing the session is the sure way to drop its lock.
			_ = conn.Hijack().Close(uctx)
			return
		}
		conn.Release()
	}()

	retention, err := j.retention(ctx, conn)
	if err != nil {
		return res, err
	}
	var cutoff time.Time
	if err := conn.QueryRow(ctx, `SELECT now() - $1::interval`, retention).Scan(&cutoff); err != nil {
		return res, fmt.Errorf("retention: reading the time: %w", err)
	}
	res.Partitions, err = partitions.DropBefore(ctx, conn, cutoff, j.cfg.LockTimeout)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	if res.Payloads, err = j.clearPayloads(ctx, conn, retention); err != nil {
		return res, err
	}

	horizon, err := j.slotHorizon(ctx, conn)
	if err != nil {
		return res, err
	}
	var after int64
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		n, more, err := j.deleteBatch(ctx, conn, retention, horizon, &after)
		res.Events += n
		if err != nil {
			return res, fmt.Errorf("retention: removing events: %w", err)
		}
		if !more {
			return res, nil
		}
	}
}

// retention returns Config.Retention or, when it is 0, the setting.
func (j *Job) retention(ctx context.Context, conn *pgxpool.Conn) (time.Duration, error) {
	if j.cfg.Retention > 0 {
		return j.cfg.Retention, nil
	}
	var d time.Duration
	if err := conn.QueryRow(ctx, `SELECT retention FROM relay.settings`).Scan(&d); err != nil {
		return 0, fmt.Errorf("retention: reading relay.settings: %w", err)
	}
	return d, nil
}

// slotHorizon records the current WAL position and returns the time before
// which every event has certainly been seen by the capture stream: the zero
// time when there is no slot (no limit), and otherwise the time of the latest
// sample the slot has confirmed, less commitMargin. Without such a sample it
// returns a time so early that nothing is removed.
func (j *Job) slotHorizon(ctx context.Context, conn *pgxpool.Conn) (time.Time, error) {
	var (
		now       time.Time
		current   string
		confirmed *string
		exists    bool
	)
	err := conn.QueryRow(ctx, `
		SELECT now(), pg_current_wal_insert_lsn()::text, s.confirmed_flush_lsn::text, s.slot_name IS NOT NULL
		FROM (SELECT 1) AS one
		LEFT JOIN pg_replication_slots AS s ON s.slot_name = $1`, j.cfg.Slot).Scan(&now, &current, &confirmed, &exists)
	if err != nil {
		return time.Time{}, fmt.Errorf("retention: reading the slot: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(current)
	if err != nil {
		return time.Time{}, fmt.Errorf("retention: reading the WAL position: %w", err)
	}
	j.samples = append(j.samples, sample{at: now, lsn: lsn})
	if len(j.samples) > maxSamples {
		j.samples = append(j.samples[:0], j.samples[len(j.samples)-maxSamples:]...)
	}
	if !exists {
		return time.Time{}, nil
	}
	var flushed pglogrepl.LSN
	if confirmed != nil {
		if flushed, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return time.Time{}, fmt.Errorf("retention: reading the slot position: %w", err)
		}
	}
	// The latest sample the slot has passed; older ones are no longer needed.
	best := -1
	for i, s := range j.samples {
		if s.lsn <= flushed {
			best = i
		}
	}
	if best < 0 {
		j.log.Debug().Str("slot", j.cfg.Slot).Str("confirmed_flush_lsn", flushed.String()).Str("lsn", lsn.String()).
			Msg("slot has not passed a remembered WAL position yet; removing nothing")
		return time.Unix(0, 0), nil
	}
	horizon := j.samples[best].at.Add(-commitMargin)
	j.log.Debug().Str("slot", j.cfg.Slot).Str("confirmed_flush_lsn", flushed.String()).Str("lsn", lsn.String()).
		Time("horizon", horizon).Msg("slot guard")
	j.samples = append(j.samples[:0], j.samples[best:]...)
	return horizon, nil
}

// candidatesSQL picks old events with no delivery still to do, locking
// them; $3 is the slot horizon (NULL: none), $4 the last id the run's
// previous batch looked at. Starting after it, each batch reads the id
// index from where the previous one stopped: from the start, every batch
// would step over the index entries of all the rows the run has deleted
// so far, which vacuum has not removed yet, and a day of a busy outbox
// is hundreds of batches. An event passed over (it had a delivery to do)
// is looked at again by the next run.
const candidatesSQL = `
SELECT o.id, o.event_id::text
FROM relay.outbox AS o
WHERE o.created_at < now() - $1::interval
  AND ($3::timestamptz IS NULL OR o.created_at < $3::timestamptz)
  AND o.id > $4
  AND NOT EXISTS (
      SELECT 1 FROM relay.deliveries AS d
      WHERE d.event_id = o.event_id AND d.status IN ('pending', 'delivering'))
ORDER BY o.id
LIMIT $2
FOR UPDATE OF o SKIP LOCKED`

// deleteBatch removes at most BatchSize events with an id above *after in
// one transaction, moves *after to the last one it looked at, and reports
// whether there may be more.
//
// The candidates' deliveries are locked and their status read again before
// the delete: a delivery redelivered or replayed since the candidates were
// chosen is pending again and keeps its event. While the locks are held no
// one can re-queue them, so the cascade removes only finished work.
func (j *Job) deleteBatch(ctx context.Context, conn *pgxpool.Conn, retention time.Duration, horizon time.Time, after *int64) (removed int, more bool, err error) {
	var horizonArg *time.Time
	if !horizon.IsZero() {
		horizonArg = &horizon
	}
	type candidate struct {
		ID      int64
		EventID string
	}
	var last int64
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, candidatesSQL, retention, j.cfg.BatchSize, horizonArg, *after)
		cands, err := pgx.CollectRows(rows, pgx.RowToStructByPos[candidate])
		if err != nil {
			return err
		}
		more = len(cands) == j.cfg.BatchSize
		if len(cands) == 0 {
			return nil
		}
		last = cands[len(cands)-1].ID // ORDER BY o.id
		eventIDs := make([]string, len(cands))
		for i, c := range cands {
			eventIDs[i] = c.EventID
		}
		// FOR UPDATE waits for concurrent changes and returns the rows as
		// they are once committed.
		rows, _ = tx.Query(ctx, `SELECT d.event_id::text, d.status FROM relay.deliveries AS d
			WHERE d.event_id = ANY($1::uuid[]) FOR UPDATE`, eventIDs)
		busy := map[string]bool{}
		var eventID, status string
		_, err = pgx.ForEachRow(rows, []any{&eventID, &status}, func() error {
			if status == "pending" || status == "delivering" {
				busy[eventID] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		ids := make([]int64, 0, len(cands))
		for _, c := range cands {
			if !busy[c.EventID] {
				ids = append(ids, c.ID)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		tag, err := tx.Exec(ctx, `DELETE FROM relay.outbox WHERE id = ANY($1::bigint[])`, ids)
		if err != nil {
			return err
		}
		removed = int(tag.RowsAffected())
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	*after = max(*after, last)
	return removed, more, nil
}
