// Package record writes what dispatch did: one relay.delivery_attempts row
// per attempt, the delivery moved on (succeeded, pending with its next
// attempt, or failed), the subscription's health, the failing and
// disabled alerts it raises, and deliveries handed back unsent. A batch
// of attempts is one statement in the common case, one transaction
// otherwise.
//
// It touches PostgreSQL (the deliveries this relay holds, attempts,
// subscriptions' health, alert events in the outbox) and nothing of HTTP;
// it imports only the classification policy of the sink.
package record

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/sink/policy/classify"
)

// Attempt is one finished attempt of a delivery this relay holds.
type Attempt struct {
	DeliveryID, SubscriptionID int64
	// Attempt numbers it, 1 for the first attempt of the delivery.
	Attempt   int
	StartedAt time.Time
	Duration  time.Duration
	// StatusCode is the receiver's status, 0 when none was received.
	StatusCode int
	Verdict    classify.Verdict
	// Status is the delivery's status after the attempt: "succeeded",
	// "pending" (with NextAt) or "failed".
	Status string
	NextAt *time.Time
	// Error, Response and RetryAfter are stored as NULL when empty.
	Error      string
	Response   string
	RetryAfter string
}

// Outcome is the attempt's outcome column: "succeeded", "retry" (another
// attempt is scheduled) or "failed".
func (a *Attempt) Outcome() string {
	switch {
	case a.Verdict == classify.VerdictSucceeded:
		return "succeeded"
	case a.Verdict == classify.VerdictRetry && a.Status == "pending":
		return "retry"
	}
	return "failed"
}

// Policy holds the relay-wide settings that health follows.
type Policy struct {
	// FailureAlertThreshold is how many consecutive failed deliveries
	// raise relay.subscription.failing (once per failing streak).
	FailureAlertThreshold int
	// DisableAfter disables a subscription failing continuously for
	// longer; 0 never does.
	DisableAfter time.Duration
}

// Config configures a Recorder.
type Config struct {
	Pool *pgxpool.Pool
	// WorkerID is the locked_by of the deliveries this relay holds: only
	// those are moved on.
	WorkerID string
	Logger   zerolog.Logger
	// Policy gives the current Policy; it is asked only for batches that
	// write health (a failure, or a subscription not written lately).
	Policy func(context.Context) (Policy, error)
	// Now is the clock of disable-after (default time.Now).
	Now func() time.Time
}

// Recorder records batches of attempts. It is safe for concurrent use.
type Recorder struct {
	cfg Config
	log zerolog.Logger

	healthMu sync.Mutex
	health   map[int64]healthMark
}

// New returns a Recorder.
func New(cfg Config) *Recorder {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Recorder{cfg: cfg, log: cfg.Logger}
}

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

// Record writes attempts and hands back (to pending, unsent and due) the
// deliveries in handBack, in one go: one statement when the batch holds
// only successes of subscriptions whose health was written lately, one
// transaction otherwise. Deliveries this relay no longer holds (their
// lease expired and another relay took them) are left alone.
func (r *Recorder) Record(ctx context.Context, batch []Attempt, handBack []int64) error {
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
	requeue := handBack
	for i := range batch {
		a := &batch[i]
		ids = append(ids, a.DeliveryID)
		attempts = append(attempts, int32(a.Attempt))
		started = append(started, a.StartedAt)
		durations = append(durations, int32(a.Duration.Milliseconds()))
		if a.StatusCode != 0 {
			c := int32(a.StatusCode)
			codes = append(codes, &c)
		} else {
			codes = append(codes, nil)
		}
		outcome := a.Outcome()
		outcomes = append(outcomes, outcome)
		errs = append(errs, nilIfEmpty(a.Error))
		responses = append(responses, nilIfEmpty(a.Response))
		retryAfters = append(retryAfters, nilIfEmpty(a.RetryAfter))
		statuses = append(statuses, a.Status)
		nexts = append(nexts, a.NextAt)

		h := deltas[a.SubscriptionID]
		if h == nil {
			h = &healthDelta{}
			deltas[a.SubscriptionID] = h
			order = append(order, a.SubscriptionID)
		}
		at := a.StartedAt
		if outcome == "succeeded" {
			*h = healthDelta{reset: true, lastSuccessAt: &at, lastFailureAt: h.lastFailureAt, lastError: h.lastError, gone: h.gone, goneError: h.goneError}
		} else {
			if h.failingFrom == nil {
				h.failingFrom = &at
			}
			h.lastFailureAt = &at
			e := a.Error
			h.lastError = &e
			if outcome == "failed" {
				h.fails++
			}
			if a.Verdict == classify.VerdictGone {
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
	order = r.healthToWrite(order, deltas, time.Now())
	if len(requeue) == 0 && len(order) == 0 {
		// Only successes, on subscriptions known healthy whose health was
		// written less than a second ago: one statement, its own
		// transaction, one round trip.
		if _, err := r.cfg.Pool.Exec(ctx, recordAttemptsSQL, ids, attempts, started, durations, codes, outcomes, errs, responses,
			retryAfters, statuses, nexts, r.cfg.WorkerID); err != nil {
			return fmt.Errorf("recording attempts: %w", err)
		}
		return nil
	}
	var policy Policy
	if len(order) > 0 {
		var err error
		if policy, err = r.cfg.Policy(ctx); err != nil {
			return err
		}
	}
	err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
		if len(requeue) > 0 {
			// Held too long to start: back to pending, unsent and due, for
			// whichever relay claims it next.
			if _, err := tx.Exec(ctx, `
				UPDATE relay.deliveries SET status = 'pending', locked_until = NULL, locked_by = NULL
				WHERE id = ANY($1) AND locked_by = $2`, requeue, r.cfg.WorkerID); err != nil {
				return fmt.Errorf("handing back deliveries held too long: %w", err)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, recordAttemptsSQL, ids, attempts, started, durations, codes, outcomes, errs, responses,
			retryAfters, statuses, nexts, r.cfg.WorkerID); err != nil {
			return fmt.Errorf("recording attempts: %w", err)
		}
		return r.updateHealth(ctx, tx, order, deltas, policy)
	})
	if err != nil {
		return err
	}
	if len(requeue) > 0 {
		r.log.Debug().Int("num_deliveries", len(requeue)).Msg("handed back deliveries held too long to start")
	}
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
func (r *Recorder) healthToWrite(order []int64, deltas map[int64]*healthDelta, now time.Time) []int64 {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	kept := order[:0]
	for _, id := range order {
		h := deltas[id]
		successOnly := h.reset && h.fails == 0 && h.failingFrom == nil && h.lastFailureAt == nil && !h.gone
		if m, ok := r.health[id]; successOnly && ok && m.healthy && now.Sub(m.written) < healthWriteEvery {
			continue
		}
		kept = append(kept, id)
	}
	return kept
}

func (r *Recorder) noteHealth(id int64, healthy bool, now time.Time) {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	if r.health == nil {
		r.health = map[int64]healthMark{}
	}
	r.health[id] = healthMark{healthy: healthy, written: now}
	if len(r.health) > 1024 {
		for k, m := range r.health {
			if now.Sub(m.written) > time.Minute {
				delete(r.health, k)
			}
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
// have failed continuously for longer than policy.DisableAfter.
func (r *Recorder) updateHealth(ctx context.Context, tx pgx.Tx, order []int64, deltas map[int64]*healthDelta, policy Policy) error {
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
	now := r.cfg.Now()
	wrote := time.Now()
	for _, h := range hs {
		r.noteHealth(h.id, h.consecutive == 0 && h.failingSince == nil && !h.alerted, wrote)
		lastError := ""
		if h.lastError != nil {
			lastError = *h.lastError
		}
		if h.consecutive >= policy.FailureAlertThreshold && !h.alerted {
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
			r.log.Warn().Int64("subscription_id", h.id).Int("consecutive_failures", h.consecutive).Msg("subscription is failing; alert emitted")
		}
		reason := ""
		switch {
		case deltas[h.id].gone:
			reason = "endpoint answered 410 Gone: " + deltas[h.id].goneError
		case h.failingSince != nil && policy.DisableAfter > 0 && now.Sub(*h.failingSince) > policy.DisableAfter:
			reason = fmt.Sprintf("failing continuously since %s (longer than %s): %s",
				h.failingSince.UTC().Format(time.RFC3339), policy.DisableAfter, lastError)
		}
		if reason != "" && h.enabled {
			if _, err := tx.Exec(ctx, `UPDATE relay.subscriptions SET enabled = false, disabled_reason = $2 WHERE id = $1`, h.id, reason); err != nil {
				return err
			}
			payload := map[string]any{"subscription_id": h.id, "subscription_name": h.name, "reason": reason}
			if err := emitAlert(ctx, tx, "relay.subscription.disabled", h.owner, h.id, payload); err != nil {
				return err
			}
			r.log.Warn().Int64("subscription_id", h.id).Str("reason", reason).Msg("subscription disabled")
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
