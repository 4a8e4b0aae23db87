package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// recordAttemptsSQL inserts the attempts and moves their deliveries on, in
// one statement for the whole batch. The update only touches deliveries this
// relay still holds, so a delivery whose lease expired and was claimed by
// another relay is not overwritten. locked_by is set only with status
// 'delivering' and cleared whenever the status moves on, so it is the whole
// test: spelling out the status as well would let the planner scan every
// delivery in flight (the deliveries_leased index, dead entries included)
// instead of looking each one up by id.
const recordAttemptsSQL = `
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])
        AS r(delivery_id, attempt, started_at, duration_ms, status_code, outcome, error, response, retry_after, new_status, next_at)
), ins AS (
    INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, error, response_body, retry_after)
    SELECT delivery_id, attempt, started_at, duration_ms, status_code, outcome, error, response, retry_after FROM r
    ON CONFLICT (delivery_id, attempt) DO NOTHING
)
UPDATE relay.deliveries AS d
SET status = r.new_status,
    attempts = greatest(d.attempts, r.attempt),
    cycle_attempts = d.cycle_attempts + 1,
    next_attempt_at = coalesce(r.next_at, d.next_attempt_at),
    locked_until = NULL, locked_by = NULL,
    last_status_code = r.status_code, last_error = r.error, last_response = r.response,
    last_duration_ms = r.duration_ms,
    completed_at = CASE WHEN r.new_status IN ('succeeded', 'failed') THEN now() END
FROM r
WHERE d.id = r.delivery_id AND d.locked_by = $12`

// healthSQL folds the batch's outcomes into each subscription's health and
// returns what alerting needs. consecutive_failures counts deliveries that
// ended failed since the last success; failing_since is the first failed
// attempt since the last success (auto-disable measures from it).
const healthSQL = `
UPDATE relay.subscriptions AS s
SET consecutive_failures = CASE WHEN u.reset THEN u.fails ELSE s.consecutive_failures + u.fails END,
    failing_since = CASE
        WHEN u.failing_from IS NULL THEN CASE WHEN u.reset THEN NULL ELSE s.failing_since END
        WHEN u.reset THEN u.failing_from
        ELSE coalesce(s.failing_since, u.failing_from) END,
    alerted_at = CASE WHEN u.reset THEN NULL ELSE s.alerted_at END,
    last_success_at = coalesce(u.last_success_at, s.last_success_at),
    last_failure_at = coalesce(u.last_failure_at, s.last_failure_at),
    last_error = coalesce(u.last_error, s.last_error)
FROM unnest($1::bigint[], $2::bool[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[], $7::text[])
    AS u(id, reset, fails, failing_from, last_success_at, last_failure_at, last_error)
WHERE s.id = u.id
RETURNING s.id, s.owner, s.name, s.enabled, s.consecutive_failures, s.failing_since, s.alerted_at IS NOT NULL, s.last_error`

type healthDelta struct {
	reset         bool
	fails         int
	failingFrom   *time.Time
	lastSuccessAt *time.Time
	lastFailureAt *time.Time
	lastError     *string
	gone          bool
	goneError     string
}

func (d *Dispatcher) record(ctx context.Context, batch []*result) error {
	n := len(batch)
	ids := make([]int64, 0, n)
	attempts := make([]int32, 0, n)
	started := make([]time.Time, 0, n)
	durations := make([]int32, 0, n)
	codes := make([]*int32, 0, n)
	outcomes := make([]string, 0, n)
	errs := make([]*string, 0, n)
	responses := make([]*string, 0, n)
	retryAfters := make([]*string, 0, n)
	statuses := make([]string, 0, n)
	nexts := make([]*time.Time, 0, n)
	deltas := map[int64]*healthDelta{}
	var order []int64
	var requeue []int64
	for _, r := range batch {
		if r.released {
			continue
		}
		if r.requeue {
			requeue = append(requeue, r.job.deliveryID)
			continue
		}
		ids = append(ids, r.job.deliveryID)
		attempts = append(attempts, int32(r.attempt))
		started = append(started, r.startedAt)
		durations = append(durations, int32(r.send.Duration.Milliseconds()))
		if r.send.StatusCode != 0 {
			c := int32(r.send.StatusCode)
			codes = append(codes, &c)
		} else {
			codes = append(codes, nil)
		}
		outcome := "failed"
		switch r.verdict {
		case VerdictSucceeded:
			outcome = "succeeded"
		case VerdictRetry:
			if r.status == "pending" {
				outcome = "retry"
			}
		}
		outcomes = append(outcomes, outcome)
		errs = append(errs, nilIfEmpty(r.errText))
		responses = append(responses, nilIfEmpty(r.send.ResponseBody))
		retryAfters = append(retryAfters, nilIfEmpty(r.retryAfter))
		statuses = append(statuses, r.status)
		nexts = append(nexts, r.nextAt)

		h := deltas[r.job.subID]
		if h == nil {
			h = &healthDelta{}
			deltas[r.job.subID] = h
			order = append(order, r.job.subID)
		}
		at := r.startedAt
		if outcome == "succeeded" {
			*h = healthDelta{reset: true, lastSuccessAt: &at, lastFailureAt: h.lastFailureAt, lastError: h.lastError, gone: h.gone, goneError: h.goneError}
		} else {
			if h.failingFrom == nil {
				h.failingFrom = &at
			}
			h.lastFailureAt = &at
			e := r.errText
			h.lastError = &e
			if outcome == "failed" {
				h.fails++
			}
			if r.verdict == VerdictGone {
				h.gone, h.goneError = true, e
			}
		}
	}
	if len(ids) == 0 && len(requeue) == 0 {
		return nil
	}
	// Columns NULL for every attempt of the batch (no error, no answer
	// body, no retry: the common case) go as a NULL array, which unnest
	// pads with NULLs, instead of an array of NULL pointers to encode.
	errs, responses, retryAfters, nexts = noneIfAllNil(errs), noneIfAllNil(responses), noneIfAllNil(retryAfters), noneIfAllNil(nexts)
	order = d.healthToWrite(order, deltas, time.Now())
	if len(requeue) == 0 && len(order) == 0 {
		// Only successes, on subscriptions known healthy whose health was
		// written less than a second ago: one statement, its own
		// transaction, one round trip.
		if _, err := d.cfg.Pool.Exec(ctx, recordAttemptsSQL, ids, attempts, started, durations, codes, outcomes, errs, responses,
			retryAfters, statuses, nexts, d.cfg.WorkerID); err != nil {
			return fmt.Errorf("recording attempts: %w", err)
		}
		d.recorded(batch, len(ids))
		return nil
	}
	settings, err := d.currentSettings(ctx, false)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, d.cfg.Pool, func(tx pgx.Tx) error {
		if len(requeue) > 0 {
			// Held too long to start: back to pending, unsent and due, for
			// whichever relay claims it next.
			if _, err := tx.Exec(ctx, `
				UPDATE relay.deliveries SET status = 'pending', locked_until = NULL, locked_by = NULL
				WHERE id = ANY($1) AND locked_by = $2`, requeue, d.cfg.WorkerID); err != nil {
				return fmt.Errorf("handing back deliveries held too long: %w", err)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, recordAttemptsSQL, ids, attempts, started, durations, codes, outcomes, errs, responses,
			retryAfters, statuses, nexts, d.cfg.WorkerID); err != nil {
			return fmt.Errorf("recording attempts: %w", err)
		}
		return d.updateHealth(ctx, tx, order, deltas, settings)
	})
	if err != nil {
		return err
	}
	if len(requeue) > 0 {
		d.log.Debug().Int("num_deliveries", len(requeue)).Msg("handed back deliveries held too long to start")
	}
	d.recorded(batch, len(ids))
	return nil
}

// healthWriteEvery is how often a healthy subscription's last_success_at
// is written while it keeps succeeding: writing it with every batch would
// update the subscription's row hundreds of times a second.
const healthWriteEvery = time.Second

// healthMark is what this relay last wrote of a subscription's health.
type healthMark struct {
	healthy bool // no failure streak, no alert raised
	written time.Time
}

// healthToWrite drops from order the subscriptions whose batch holds only
// successes and whose health, written less than healthWriteEvery ago, was
// healthy: their row would not change but for last_success_at.
func (d *Dispatcher) healthToWrite(order []int64, deltas map[int64]*healthDelta, now time.Time) []int64 {
	d.healthMu.Lock()
	defer d.healthMu.Unlock()
	kept := order[:0]
	for _, id := range order {
		h := deltas[id]
		successOnly := h.reset && h.fails == 0 && h.failingFrom == nil && h.lastFailureAt == nil && !h.gone
		if m, ok := d.health[id]; successOnly && ok && m.healthy && now.Sub(m.written) < healthWriteEvery {
			continue
		}
		kept = append(kept, id)
	}
	return kept
}

func (d *Dispatcher) noteHealth(id int64, healthy bool, now time.Time) {
	d.healthMu.Lock()
	defer d.healthMu.Unlock()
	if d.health == nil {
		d.health = map[int64]healthMark{}
	}
	d.health[id] = healthMark{healthy: healthy, written: now}
	if len(d.health) > 1024 {
		for k, m := range d.health {
			if now.Sub(m.written) > time.Minute {
				delete(d.health, k)
			}
		}
	}
}

// recorded counts a committed batch and tells the observer.
func (d *Dispatcher) recorded(batch []*result, attempts int) {
	d.attempts.Add(int64(attempts))
	if d.cfg.Observer != nil {
		for _, r := range batch {
			if r.released || r.requeue {
				continue
			}
			oc := "failed"
			if r.verdict == VerdictSucceeded {
				oc = "succeeded"
				d.cfg.Observer.Delivered(time.Since(r.job.eventCreatedAt))
			} else if r.status == "pending" {
				oc = "retry"
			}
			d.cfg.Observer.AttemptDone(oc, r.send.Duration)
		}
	}
}

func noneIfAllNil[T any](s []*T) []*T {
	for _, p := range s {
		if p != nil {
			return s
		}
	}
	return nil
}

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// updateHealth records per-subscription health, raises the failing alert
// once per failing streak, and disables subscriptions that answered 410 or
// have failed continuously for longer than settings.DisableAfter.
func (d *Dispatcher) updateHealth(ctx context.Context, tx pgx.Tx, order []int64, deltas map[int64]*healthDelta, settings Settings) error {
	n := len(order)
	if n == 0 {
		return nil
	}
	ids := make([]int64, n)
	resets := make([]bool, n)
	fails := make([]int32, n)
	failingFrom := make([]*time.Time, n)
	lastSuccess := make([]*time.Time, n)
	lastFailure := make([]*time.Time, n)
	lastErr := make([]*string, n)
	for i, id := range order {
		h := deltas[id]
		ids[i], resets[i], fails[i] = id, h.reset, int32(h.fails)
		failingFrom[i], lastSuccess[i], lastFailure[i], lastErr[i] = h.failingFrom, h.lastSuccessAt, h.lastFailureAt, h.lastError
	}
	rows, err := tx.Query(ctx, healthSQL, ids, resets, fails, failingFrom, lastSuccess, lastFailure, lastErr)
	if err != nil {
		return fmt.Errorf("updating subscription health: %w", err)
	}
	type health struct {
		id           int64
		owner        *string
		name         string
		enabled      bool
		consecutive  int
		failingSince *time.Time
		alerted      bool
		lastError    *string
	}
	var hs []health
	for rows.Next() {
		var h health
		if err := rows.Scan(&h.id, &h.owner, &h.name, &h.enabled, &h.consecutive, &h.failingSince, &h.alerted, &h.lastError); err != nil {
			rows.Close()
			return err
		}
		hs = append(hs, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	now := d.cfg.Now()
	wrote := time.Now()
	for _, h := range hs {
		d.noteHealth(h.id, h.consecutive == 0 && h.failingSince == nil && !h.alerted, wrote)
		lastError := ""
		if h.lastError != nil {
			lastError = *h.lastError
		}
		if h.consecutive >= settings.FailureAlertThreshold && !h.alerted {
			payload := map[string]any{
				"subscription_id": h.id, "subscription_name": h.name,
				"consecutive_failures": h.consecutive, "last_error": lastError,
			}
			if err := emitAlert(ctx, tx, "relay.subscription.failing", h.owner, h.id, payload); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE relay.subscriptions SET alerted_at = now() WHERE id = $1`, h.id); err != nil {
				return err
			}
			d.log.Warn().Int64("subscription_id", h.id).Int("consecutive_failures", h.consecutive).Msg("subscription is failing; alert emitted")
		}
		reason := ""
		switch {
		case deltas[h.id].gone:
			reason = "endpoint answered 410 Gone: " + deltas[h.id].goneError
		case h.failingSince != nil && settings.DisableAfter > 0 && now.Sub(*h.failingSince) > settings.DisableAfter:
			reason = fmt.Sprintf("failing continuously since %s (longer than %s): %s",
				h.failingSince.UTC().Format(time.RFC3339), settings.DisableAfter, lastError)
		}
		if reason != "" && h.enabled {
			if _, err := tx.Exec(ctx, `UPDATE relay.subscriptions SET enabled = false, disabled_reason = $2 WHERE id = $1`, h.id, reason); err != nil {
				return err
			}
			payload := map[string]any{"subscription_id": h.id, "subscription_name": h.name, "reason": reason}
			if err := emitAlert(ctx, tx, "relay.subscription.disabled", h.owner, h.id, payload); err != nil {
				return err
			}
			d.log.Warn().Int64("subscription_id", h.id).Str("reason", reason).Msg("subscription disabled")
		}
	}
	return nil
}

// emitAlert writes an alert event into the outbox for the subscription's
// owner, never to be delivered to the subscription it is about, and tells
// LISTENers on relay_alerts.
func emitAlert(ctx context.Context, tx pgx.Tx, eventType string, owner *string, subID int64, payload map[string]any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO relay.outbox (event_type, owner, payload, skip_subscription_id) VALUES ($1, $2, $3, $4)`,
		eventType, owner, body, subID); err != nil {
		return fmt.Errorf("emitting %s: %w", eventType, err)
	}
	note, _ := json.Marshal(map[string]any{"type": eventType, "subscription_id": subID, "owner": owner})
	_, err = tx.Exec(ctx, `SELECT pg_notify('relay_alerts', $1)`, string(note))
	return err
}
