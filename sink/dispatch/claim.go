package dispatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/pgoutbox/relay/sink/policy/window"
	"github.com/pgoutbox/relay/sink/record"
)

func (d *Dispatcher) claimLoop(ctx context.Context) {
	defer close(d.claimDone)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		}
		sleep, err := d.claimOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.log.Warn().Err(err).Msg("claiming deliveries")
			sleep = jitter(time.Second)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(sleep)
	}
}

// claimOnce claims what may be sent now and returns how long to sleep
// before looking again (unless woken earlier).
func (d *Dispatcher) claimOnce(ctx context.Context) (time.Duration, error) {
	settings, err := d.currentSettings(ctx, false)
	if err != nil {
		return 0, err
	}
	if settings.Gate.Paused {
		// Nothing is claimed; relay.resume() notifies and wakes us.
		return d.cfg.PollInterval, nil
	}
	d.mu.Lock()
	free := d.cfg.MaxHeld - d.held
	roomIDs, roomN := d.roomLocked()
	d.mu.Unlock()
	if free <= 0 {
		return d.cfg.PollInterval, nil // recording a batch wakes us
	}
	limit := min(free, d.cfg.ClaimBatch)
	claimedAt := time.Now()
	// Not cancelled with ctx: a claim cancelled in flight could still commit
	// on the server after Stop's release, leaving rows claimed by no one
	// until their lease ends. The statement is short; let it finish.
	jobs, err := d.claim(context.WithoutCancel(ctx), limit, roomIDs, roomN)
	if err != nil {
		return 0, err
	}
	if err := d.admit(ctx, jobs, settings, claimedAt, nil); err != nil {
		return 0, err
	}
	if len(jobs) == limit {
		d.setMore(true)
		return 0, nil // there may be more due right now
	}
	sleep, dueNow, err := d.untilNextDue(ctx)
	// Something due that could not be claimed (its subscription is at its
	// limit, for one) is looked for again when this relay lets go of some.
	d.setMore(dueNow)
	return sleep, err
}

// admit takes claimed jobs into this relay's hands: those the global
// switches or their subscription's window allow now are queued; the others
// go back to pending until their window opens, or, for a subscription that
// skips outside its window (outside_window = skip) and a delivery never
// attempted, end skipped with the reason. claimedAt is a moment before the
// claim was made: a job not started within LeaseMargin/2 of it is handed
// back unsent.
// commit, for deliveries fan-out handed over before their commit was
// confirmed, is that commit (nil otherwise): rows not yet committed cannot
// be updated, so deferring or skipping them waits for it.
func (d *Dispatcher) admit(ctx context.Context, jobs []*job, settings Settings, claimedAt time.Time, commit *Commit) error {
	if len(jobs) == 0 {
		return nil
	}
	now := d.cfg.Now()
	sendBy := claimedAt.Add(d.cfg.LeaseMargin / 2)
	var deferIDs []int64
	var deferUntil []time.Time
	var skipped []record.Skipped
	d.mu.Lock()
	for _, j := range jobs {
		outside := j.outside
		if j.targeted {
			outside = window.Defer // a test is never skipped
		}
		dec := settings.Gate.Decide(now, j.window, j.ignoreGlobal, outside, j.attempts == 0)
		switch {
		case dec.Skip:
			skipped = append(skipped, record.Skipped{DeliveryID: j.deliveryID, Attempt: j.attempts + 1, At: now, Reason: dec.Reason})
			continue
		case dec.Paused:
			dec.At = now.Add(d.cfg.PollInterval)
		}
		if dec.At.After(now) {
			deferIDs = append(deferIDs, j.deliveryID)
			deferUntil = append(deferUntil, dec.At)
			continue
		}
		j.sendBy = sendBy
		if d.cfg.Tracer != nil {
			if j.stages == nil {
				j.stages = &Stages{}
			}
			j.stages.HandedOver = time.Now()
		}
		d.enqueueLocked(j)
	}
	d.mu.Unlock()
	if len(deferIDs) == 0 && len(skipped) == 0 {
		return nil
	}
	if commit == nil {
		return d.settleUnsent(ctx, deferIDs, deferUntil, skipped)
	}
	// The fan-out confirms its commit after this returns: settle them once
	// it has (Stop waits for this as for the hand-over itself).
	d.handoffs.Add(1)
	go func() {
		defer d.handoffs.Done()
		if commit.wait() != nil {
			return // not inserted: the event is replayed
		}
		if err := d.settleUnsent(context.WithoutCancel(ctx), deferIDs, deferUntil, skipped); err != nil {
			d.log.Warn().Err(err).Msg("deferring or skipping handed-over deliveries; their leases will expire and they are decided again then")
		}
	}()
	return nil
}

// settleUnsent writes what admit decided for deliveries it does not send
// now: deferred ones back to pending until their window opens (nothing is
// attempted, nothing is dropped), skipped ones ended with the reason.
func (d *Dispatcher) settleUnsent(ctx context.Context, deferIDs []int64, deferUntil []time.Time, skipped []record.Skipped) error {
	if len(deferIDs) > 0 {
		_, err := d.cfg.Pool.Exec(ctx, `
			UPDATE relay.deliveries AS d SET status = 'pending', next_attempt_at = u.at, locked_until = NULL, locked_by = NULL
			FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, at)
			WHERE d.id = u.id AND d.locked_by = $3`, deferIDs, deferUntil, d.cfg.WorkerID)
		if err != nil {
			return fmt.Errorf("deferring deliveries to their window: %w", err)
		}
		d.log.Debug().Int("num_deliveries", len(deferIDs)).Msg("deferred deliveries to their delivery window")
	}
	if len(skipped) > 0 {
		if err := d.recorder.Skip(ctx, skipped); err != nil {
			// Still claimed by this relay: the lease runs out and they are
			// decided again then.
			return fmt.Errorf("recording skipped deliveries: %w", err)
		}
		d.log.Debug().Int("num_deliveries", len(skipped)).Msg("skipped deliveries outside their delivery window")
	}
	return nil
}

// untilNextDue is how long until the earliest pending delivery or lease
// expiry (this relay's own leases included: they end LeaseMargin after
// their timeout, far beyond the poll interval, and reading the first entry
// of the index is cheaper than skipping them), bounded by the poll interval. dueNow reports that something is
// due already although the claim just made did not take it (its
// subscription is at its limit or disabled, or another relay is on it):
// freed capacity or a notification wakes us for it, the poll interval
// otherwise.
func (d *Dispatcher) untilNextDue(ctx context.Context) (sleep time.Duration, dueNow bool, err error) {
	var next *time.Time
	err = d.cfg.Pool.QueryRow(ctx, `
		SELECT least(
			(SELECT min(next_attempt_at) FROM relay.deliveries WHERE status = 'pending'),
			(SELECT min(locked_until) FROM relay.deliveries WHERE status = 'delivering'))`).Scan(&next)
	if err != nil {
		return 0, false, err
	}
	sleep = d.cfg.PollInterval
	if next != nil {
		until := time.Until(*next)
		dueNow = until <= 0
		if until > 0 && until < sleep {
			sleep = max(until, time.Millisecond)
		}
	}
	return sleep, dueNow, nil
}

// claimSQL claims due deliveries in one statement. Candidates are pending
// deliveries that are due and deliveries whose lease expired (their relay
// died), each found through its partial index; each subscription gets at
// most the room this relay has for it.
// FOR UPDATE SKIP LOCKED lets several relays claim side by side without
// waiting on or double-sending each other's rows; the outer WHERE
// re-checks the status after the lock.
//
// Flow control (issue 17) adds three filters that cost nothing to
// subscriptions that use none of it: a subscription held (throttle window,
// open circuit) gives nothing; an open circuit whose probe is due gives
// one delivery, its probe, and the same statement moves held_until on so
// that no other relay probes too; an ordered delivery (ordering_key set)
// is taken only when no earlier delivery of its key is still pending or
// in flight, which makes a key's deliveries go one at a time, in commit
// order, while the other keys flow.
const claimSQL = `
WITH busy AS (
    SELECT * FROM unnest($3::bigint[], $4::int[]) AS b(subscription_id, room)
), due AS (
    (SELECT d.id, d.subscription_id, d.next_attempt_at, d.ordering_key
     FROM relay.deliveries AS d
     WHERE $6::bigint IS NULL AND d.status = 'pending' AND d.next_attempt_at <= now()
     ORDER BY d.next_attempt_at
     LIMIT $2 * 4)
    UNION ALL
    (SELECT d.id, d.subscription_id, d.next_attempt_at, d.ordering_key
     FROM relay.deliveries AS d
     WHERE $6::bigint IS NULL AND d.status = 'delivering' AND d.locked_until < now()
     ORDER BY d.locked_until
     LIMIT $2 * 4)
    UNION ALL
    SELECT d.id, d.subscription_id, d.next_attempt_at, d.ordering_key
    FROM relay.deliveries AS d
    WHERE d.id = $6 AND d.status = 'pending'
), ranked AS (
    SELECT due.id, due.subscription_id, due.next_attempt_at,
           row_number() OVER (PARTITION BY due.subscription_id ORDER BY due.next_attempt_at, due.id) AS rn,
           CASE WHEN s.circuit_opened_at IS NOT NULL AND $6::bigint IS NULL THEN 1
                ELSE coalesce(busy.room, s.max_in_flight * $7) END AS free,
           s.circuit_opened_at IS NOT NULL AND $6::bigint IS NULL AS probe
    FROM due
    JOIN relay.subscriptions AS s ON s.id = due.subscription_id
    LEFT JOIN busy ON busy.subscription_id = due.subscription_id
    WHERE (s.enabled OR EXISTS (
        SELECT 1 FROM relay.deliveries AS dd JOIN relay.outbox AS o ON o.event_id = dd.event_id
        WHERE dd.id = due.id AND o.target_subscription_id = s.id))
      AND (s.held_until IS NULL OR s.held_until <= now() OR $6::bigint IS NOT NULL)
      AND (due.ordering_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM relay.deliveries AS k
        WHERE k.subscription_id = due.subscription_id AND k.ordering_key = due.ordering_key AND k.id < due.id
          AND k.ordering_key IS NOT NULL AND k.status IN ('pending', 'delivering')))
), probing AS (
    UPDATE relay.subscriptions AS s
    SET held_until = now() + coalesce(s.circuit_probe_interval, interval '10 seconds'), hold_reason = 'circuit open'
    WHERE s.id IN (SELECT subscription_id FROM ranked WHERE probe AND rn = 1)
      AND s.circuit_opened_at IS NOT NULL AND (s.held_until IS NULL OR s.held_until <= now())
    RETURNING s.id
), picked AS (
    -- = ANY(ARRAY(...)), not IN (...): the planner takes ranked for a row
    -- or two and ran IN as a nested-loop semi join that re-read the chosen
    -- ids for every candidate row (1,084 candidates × 391 ids, 104 of a
    -- 120-ms claim of 512 keyed deliveries); the array is built once and
    -- its ids are looked up through the primary key.
    SELECT d.id FROM relay.deliveries AS d
    WHERE d.id = ANY (ARRAY(SELECT id FROM ranked
                            WHERE rn <= free AND (NOT probe OR subscription_id IN (SELECT id FROM probing))
                            ORDER BY next_attempt_at LIMIT $2))
      AND ((d.status = 'pending' AND (d.next_attempt_at <= now() OR d.id = $6))
        OR (d.status = 'delivering' AND d.locked_until < now()))
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE relay.deliveries AS d
    SET status = 'delivering', locked_by = $1,
        locked_until = now() + make_interval(secs => s.timeout_ms / 1000.0) + $5::interval
    FROM picked, relay.subscriptions AS s
    WHERE d.id = picked.id AND s.id = d.subscription_id
    RETURNING d.id, d.event_id, d.subscription_id, d.attempts, d.cycle_attempts, d.ordering_key
)
SELECT c.id, c.subscription_id, c.event_id::text, o.event_type, o.owner, o.key, o.payload::text, o.headers::text,
       o.created_at, c.attempts, c.cycle_attempts, o.target_subscription_id IS NOT NULL, s.updated_at,
       c.ordering_key, c.subscription_id IN (SELECT id FROM probing)
FROM claimed AS c
JOIN relay.outbox AS o ON o.event_id = c.event_id
JOIN relay.subscriptions AS s ON s.id = c.subscription_id`

// claim claims up to limit due deliveries; with only set, it claims that one
// pending delivery whatever its due time (the test button).
func (d *Dispatcher) claim(ctx context.Context, limit int, roomIDs []int64, roomN []int32, only ...int64) ([]*job, error) {
	var onlyID *int64
	if len(only) == 1 {
		onlyID = &only[0]
	}
	rows, err := d.cfg.Pool.Query(ctx, claimSQL, d.cfg.WorkerID, limit, roomIDs, roomN, d.cfg.LeaseMargin.String(), onlyID, d.cfg.HoldPerSlot)
	if err != nil {
		return nil, fmt.Errorf("claiming: %w", err)
	}
	defer rows.Close()
	var jobs []*job
	want := map[int64]time.Time{}
	for rows.Next() {
		j := &job{}
		var payload string
		var headers *string
		var updated time.Time
		if err := rows.Scan(&j.deliveryID, &j.subID, &j.eventID, &j.eventType, &j.owner, &j.key, &payload, &headers,
			&j.eventCreatedAt, &j.attempts, &j.cycleAttempts, &j.targeted, &updated, &j.orderingKey, &j.probe); err != nil {
			return nil, fmt.Errorf("reading claimed delivery: %w", err)
		}
		j.payload = []byte(payload)
		if headers != nil {
			j.eventHeaders = []byte(*headers)
		}
		want[j.subID] = updated
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claiming: %w", err)
	}
	rows.Close()
	// On error the claimed deliveries stay leased to this relay: release
	// at stop, or the lease's end, hands them on.
	return d.fillJobs(ctx, d.cfg.Pool, jobs, want)
}

// fillJobs gives jobs their subscriptions' settings and returns them,
// less those whose subscription is gone. want maps each subscription to
// the updated_at the claim saw.
func (d *Dispatcher) fillJobs(ctx context.Context, q querier, jobs []*job, want map[int64]time.Time) ([]*job, error) {
	if len(jobs) == 0 {
		return jobs, nil
	}
	infos, err := d.info.get(ctx, q, want)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	kept := jobs[:0]
	for _, j := range jobs {
		// A subscription deleted meanwhile took its deliveries with it.
		if s := infos[j.subID]; s != nil {
			s.fill(j, now)
			kept = append(kept, j)
		}
	}
	clear(jobs[len(kept):])
	return kept, nil
}

// release hands back deliveries claimed by this relay that were not sent
// (their requests were cancelled by a hard stop), so another relay or the
// next start sends them without waiting for the lease.
func (d *Dispatcher) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tag, err := d.cfg.Pool.Exec(ctx, `
		UPDATE relay.deliveries SET status = 'pending', locked_until = NULL, locked_by = NULL
		WHERE status = 'delivering' AND locked_by = $1`, d.cfg.WorkerID)
	if err != nil {
		d.log.Warn().Err(err).Msg("releasing claimed deliveries; their leases will expire instead")
		return
	}
	if n := tag.RowsAffected(); n > 0 {
		d.log.Info().Int64("num_deliveries", n).Msg("released deliveries not sent before shutdown")
	}
	// This relay's shares of max_in_flight go to the others at once.
	if _, err := d.cfg.Pool.Exec(ctx, `DELETE FROM relay.flow_leases WHERE worker_id = $1`, d.cfg.WorkerID); err != nil {
		d.log.Warn().Err(err).Msg("giving back flow control shares; their leases will expire instead")
	}
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.75 + rand.Float64()*0.5))
}
