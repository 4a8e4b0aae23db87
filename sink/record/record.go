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
	"strings"
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

	// Flow control (see flow.go). With Verdict VerdictThrottled the whole
	// subscription is held for Hold (zero: back off by its throttle
	// streak) and the delivery waits for the hold's end; otherwise a
	// non-zero Hold is a pause the receiver announced ahead.
	Hold time.Duration
	// NoSpend: the attempt does not spend a retry of the schedule (a
	// throttled attempt). An open circuit's probe is an attempt like any
	// other; the deliveries held meanwhile spend nothing.
	NoSpend bool
	// Probe: the attempt was the probe of an open circuit.
	Probe bool
	// GoneReason, with VerdictGone, is why the subscription is disabled
	// when the answer was not a plain 410.
	GoneReason string
	// OrderingKey is the delivery's key when its subscription orders by
	// key: a retry pushes the key's later deliveries back with it.
	OrderingKey *string
	// Written: the attempt row and the delivery's final state were
	// written already, with the delivery itself (fan-out writes a
	// delivery sent ahead whose answer came back before its statement;
	// see dispatch.Presend). It counts towards the subscription's health
	// and nothing else is written for it.
	Written bool
}

// Outcome is the attempt's outcome column: "succeeded", "retry" (another
// attempt is scheduled), "throttled" (the receiver asked to slow down; the
// delivery waits for the subscription's hold, spending no retry) or
// "failed".
func (a *Attempt) Outcome() string {
	switch {
	case a.Verdict == classify.VerdictSucceeded:
		return "succeeded"
	case a.Verdict == classify.VerdictRetry && a.Status == "pending":
		return "retry"
	case a.Verdict == classify.VerdictThrottled && a.Status == "pending":
		return "throttled"
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
	// ThrottleCap fails a delivery whose subscription has been throttled
	// continuously for longer (default 24 hours).
	ThrottleCap time.Duration
	// ProbeInterval and ProbeMax bound the interval between the probes
	// of an open circuit (it starts at ProbeInterval and doubles).
	ProbeInterval, ProbeMax time.Duration
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
	// OnHold, if set, is told after a commit that a subscription is held
	// until a time (a throttle window, an announced pause, an open
	// circuit: then circuit is true), or released (zero time: its circuit
	// closed).
	OnHold func(subscriptionID int64, until time.Time, circuit bool)
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

// recordAttemptsSQL moves the batch's deliveries on and inserts their
// attempts, in one statement for the whole batch. The update only touches
// deliveries this relay still holds, so a delivery whose lease expired and
// was claimed by another relay is not overwritten, and an attempt row is
// written only for the deliveries the update moved: the relay that holds the
// lease writes the attempt, once. That is what keeps (delivery_id, attempt)
// unique now that relay.delivery_attempts is partitioned by started_at,
// where a unique index over all partitions would have to contain started_at
// (each partition still has its own UNIQUE (delivery_id, attempt), and ON
// CONFLICT DO NOTHING keeps a replayed batch from failing on it). locked_by
// is set only with status 'delivering' and cleared whenever the status moves
// on, so it is the whole test: spelling out the status as well would let the
// planner scan every delivery in flight (the deliveries_leased index, dead
// entries included) instead of looking each one up by id.
const recordAttemptsSQL = `
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[], $13::bool[])
        AS r(delivery_id, attempt, started_at, duration_ms, status_code, outcome, error, response, retry_after, new_status, next_at, spend)
), moved AS (
    UPDATE relay.deliveries AS d
    SET status = r.new_status,
        attempts = greatest(d.attempts, r.attempt),
        cycle_attempts = d.cycle_attempts + CASE WHEN coalesce(r.spend, true) THEN 1 ELSE 0 END,
        next_attempt_at = coalesce(r.next_at, d.next_attempt_at),
        locked_until = NULL, locked_by = NULL,
        last_status_code = r.status_code, last_error = r.error, last_response = r.response,
        last_duration_ms = r.duration_ms,
        completed_at = CASE WHEN r.new_status IN ('succeeded', 'failed') THEN now() END
    FROM r
    WHERE d.id = r.delivery_id AND d.locked_by = $12
    RETURNING d.id
)
INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, error, response_body, retry_after)
SELECT r.delivery_id, r.attempt, r.started_at, r.duration_ms, r.status_code, r.outcome, r.error, r.response, r.retry_after
FROM r JOIN moved ON moved.id = r.delivery_id
ON CONFLICT DO NOTHING`

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
    failed_attempts_in_row = CASE WHEN u.reset THEN u.attempt_fails ELSE s.failed_attempts_in_row + u.attempt_fails END,
    throttled_since = CASE WHEN u.reset THEN NULL ELSE s.throttled_since END,
    throttle_streak = CASE WHEN u.reset THEN 0 ELSE s.throttle_streak END,
    last_success_at = coalesce(u.last_success_at, s.last_success_at),
    last_failure_at = coalesce(u.last_failure_at, s.last_failure_at),
    last_error = coalesce(u.last_error, s.last_error)
FROM unnest($1::bigint[], $2::bool[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[], $7::text[], $8::int[])
    AS u(id, reset, fails, failing_from, last_success_at, last_failure_at, last_error, attempt_fails)
WHERE s.id = u.id
RETURNING s.id, s.owner, s.name, s.enabled, s.consecutive_failures, s.failing_since, s.alerted_at IS NOT NULL, s.last_error,
          s.failed_attempts_in_row, s.circuit_opened_at IS NOT NULL, s.throttle_streak,
          coalesce(extract(epoch FROM s.circuit_probe_interval), 0)::float8`

type healthDelta struct {
	reset         bool
	fails         int
	attemptFails  int  // failed attempts (throttled aside) after the last success
	probeFailed   bool // an open circuit's probe failed
	probed        bool // an open circuit's probe answered
	flow          bool // throttled: health is written so a success clears it
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
	if len(batch) == 0 && len(handBack) == 0 {
		return nil
	}
	flow := needsFlow(batch)
	var cols *attemptColumns
	var order []int64
	if !flow {
		cols = r.columns(batch)
		order = r.healthToWrite(cols.order, cols.deltas, time.Now())
		if len(handBack) == 0 && len(order) == 0 {
			// Only successes, on subscriptions known healthy whose health was
			// written less than a second ago: one statement, its own
			// transaction, one round trip; none when fan-out wrote them all.
			if len(cols.ids) == 0 {
				return nil
			}
			if _, err := r.cfg.Pool.Exec(ctx, recordAttemptsSQL, cols.args(r.cfg.WorkerID)...); err != nil {
				return fmt.Errorf("recording attempts: %w", err)
			}
			return nil
		}
	}
	var policy Policy
	if flow || len(order) > 0 {
		var err error
		if policy, err = r.cfg.Policy(ctx); err != nil {
			return err
		}
	}
	var holds []hold
	err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
		holds = holds[:0]
		if len(handBack) > 0 {
			// Held too long to start: back to pending, unsent and due, for
			// whichever relay claims it next.
			if _, err := tx.Exec(ctx, `
				UPDATE relay.deliveries SET status = 'pending', locked_until = NULL, locked_by = NULL
				WHERE id = ANY($1) AND locked_by = $2`, handBack, r.cfg.WorkerID); err != nil {
				return fmt.Errorf("handing back deliveries held too long: %w", err)
			}
		}
		if len(batch) == 0 {
			return nil
		}
		order := order
		if flow {
			// Throttles and announced pauses decide when their deliveries
			// are next due, and the throttle cap may fail some: before the
			// attempts are written.
			h, err := r.applyThrottles(ctx, tx, batch, policy)
			if err != nil {
				return err
			}
			holds = append(holds, h...)
			cols = r.columns(batch)
			order = cols.order
		}
		if len(cols.ids) > 0 {
			if _, err := tx.Exec(ctx, recordAttemptsSQL, cols.args(r.cfg.WorkerID)...); err != nil {
				return fmt.Errorf("recording attempts: %w", err)
			}
		}
		if err := pushOrderedKeys(ctx, tx, batch); err != nil {
			return err
		}
		h, err := r.updateHealth(ctx, tx, order, cols.deltas, policy)
		holds = append(holds, h...)
		if err == nil && len(holds) > 0 {
			// Other relays hold or release these subscriptions at once.
			_, err = tx.Exec(ctx, `SELECT pg_notify('relay_flow', '')`)
		}
		return err
	})
	if err != nil {
		return err
	}
	if len(handBack) > 0 {
		r.log.Debug().Int("num_deliveries", len(handBack)).Msg("handed back deliveries held too long to start")
	}
	if r.cfg.OnHold != nil {
		for _, h := range holds {
			r.cfg.OnHold(h.subID, h.until, h.circuit)
		}
	}
	return nil
}

// attemptColumns is a batch of attempts as the columns of recordAttemptsSQL,
// with each subscription's health delta.
type attemptColumns struct {
	ids                          []int64
	attempts, durations          []int32
	started                      []time.Time
	codes                        []*int32
	outcomes, statuses           []string
	errs, responses, retryAfters []*string
	nexts                        []*time.Time
	spend                        []*bool
	deltas                       map[int64]*healthDelta
	order                        []int64
}

var spendNone = false

func (r *Recorder) columns(batch []Attempt) *attemptColumns {
	n := len(batch)
	c := &attemptColumns{
		ids: make([]int64, 0, n), attempts: make([]int32, 0, n), started: make([]time.Time, 0, n),
		durations: make([]int32, 0, n), codes: make([]*int32, 0, n), outcomes: make([]string, 0, n),
		errs: make([]*string, 0, n), responses: make([]*string, 0, n), retryAfters: make([]*string, 0, n),
		statuses: make([]string, 0, n), nexts: make([]*time.Time, 0, n), spend: make([]*bool, 0, n),
		deltas: map[int64]*healthDelta{},
	}
	for i := range batch {
		a := &batch[i]
		outcome := a.Outcome()
		c.delta(a, outcome)
		if a.Written {
			continue
		}
		c.ids = append(c.ids, a.DeliveryID)
		c.attempts = append(c.attempts, int32(a.Attempt))
		c.started = append(c.started, a.StartedAt)
		c.durations = append(c.durations, int32(a.Duration.Milliseconds()))
		if a.StatusCode != 0 {
			code := int32(a.StatusCode)
			c.codes = append(c.codes, &code)
		} else {
			c.codes = append(c.codes, nil)
		}
		c.outcomes = append(c.outcomes, outcome)
		c.errs = append(c.errs, nilIfEmpty(a.Error))
		c.responses = append(c.responses, nilIfEmpty(a.Response))
		c.retryAfters = append(c.retryAfters, nilIfEmpty(a.RetryAfter))
		c.statuses = append(c.statuses, a.Status)
		c.nexts = append(c.nexts, a.NextAt)
		if a.NoSpend {
			c.spend = append(c.spend, &spendNone)
		} else {
			c.spend = append(c.spend, nil)
		}
	}
	// Columns NULL for every attempt of the batch (no error, no answer
	// body, no retry: the common case) go as a NULL array, which unnest
	// pads with NULLs, instead of an array of NULL pointers to encode.
	c.errs, c.responses, c.retryAfters, c.nexts = noneIfAllNil(c.errs), noneIfAllNil(c.responses), noneIfAllNil(c.retryAfters), noneIfAllNil(c.nexts)
	c.spend = noneIfAllNil(c.spend)
	return c
}

// delta folds attempt a, of outcome, into its subscription's health delta.
func (c *attemptColumns) delta(a *Attempt, outcome string) {
	h := c.deltas[a.SubscriptionID]
	if h == nil {
		h = &healthDelta{}
		c.deltas[a.SubscriptionID] = h
		c.order = append(c.order, a.SubscriptionID)
	}
	at := a.StartedAt
	if a.Probe {
		h.probed = true
	}
	switch {
	case outcome == "succeeded":
		*h = healthDelta{reset: true, lastSuccessAt: &at, lastFailureAt: h.lastFailureAt, lastError: h.lastError,
			gone: h.gone, goneError: h.goneError, probed: h.probed, flow: h.flow}
	case outcome == "throttled":
		// Not a failure: the receiver is alive and asked for time.
		// Writing health lets the next success clear the streak.
		h.flow = true
	default:
		if h.failingFrom == nil {
			h.failingFrom = &at
		}
		h.lastFailureAt = &at
		e := a.Error
		h.lastError = &e
		h.attemptFails++
		if a.Probe {
			h.probeFailed = true
		}
		if outcome == "failed" {
			h.fails++
		}
		if a.Verdict == classify.VerdictGone {
			h.gone, h.goneError = true, e
			if a.GoneReason != "" {
				h.goneError = a.GoneReason
			}
		}
	}
}

func (c *attemptColumns) args(workerID string) []any {
	return []any{c.ids, c.attempts, c.started, c.durations, c.codes, c.outcomes, c.errs, c.responses,
		c.retryAfters, c.statuses, c.nexts, workerID, c.spend}
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
		successOnly := h.reset && h.fails == 0 && h.failingFrom == nil && h.lastFailureAt == nil && !h.gone && !h.flow && !h.probed
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
// once per failing streak, disables subscriptions whose endpoint is gone
// (410, or the chat platforms' own answers) or that have failed
// continuously for longer than policy.DisableAfter, and opens, widens and
// closes circuits (see circuit in flow.go). It returns the holds it set
// or lifted.
func (r *Recorder) updateHealth(ctx context.Context, tx pgx.Tx, order []int64, deltas map[int64]*healthDelta, policy Policy) ([]hold, error) {
	n := len(order)
	if n == 0 {
		return nil, nil
	}
	ids := make([]int64, n)
	resets := make([]bool, n)
	fails := make([]int32, n)
	attemptFails := make([]int32, n)
	failingFrom := make([]*time.Time, n)
	lastSuccess := make([]*time.Time, n)
	lastFailure := make([]*time.Time, n)
	lastErr := make([]*string, n)
	for i, id := range order {
		h := deltas[id]
		ids[i], resets[i], fails[i], attemptFails[i] = id, h.reset, int32(h.fails), int32(h.attemptFails)
		failingFrom[i], lastSuccess[i], lastFailure[i], lastErr[i] = h.failingFrom, h.lastSuccessAt, h.lastFailureAt, h.lastError
	}
	rows, err := tx.Query(ctx, healthSQL, ids, resets, fails, failingFrom, lastSuccess, lastFailure, lastErr, attemptFails)
	if err != nil {
		return nil, fmt.Errorf("updating subscription health: %w", err)
	}
	var hs []subHealth
	for rows.Next() {
		var h subHealth
		var probeSecs float64
		if err := rows.Scan(&h.id, &h.owner, &h.name, &h.enabled, &h.consecutive, &h.failingSince, &h.alerted, &h.lastError,
			&h.failedAttempts, &h.circuitOpen, &h.throttleStreak, &probeSecs); err != nil {
			rows.Close()
			return nil, err
		}
		h.probeInterval = time.Duration(probeSecs * float64(time.Second))
		hs = append(hs, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	now := r.cfg.Now()
	wrote := time.Now()
	var holds []hold
	for _, h := range hs {
		delta := deltas[h.id]
		r.noteHealth(h.id, h.consecutive == 0 && h.failingSince == nil && !h.alerted && h.throttleStreak == 0 && !h.circuitOpen, wrote)
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
				return nil, err
			}
			if _, err := tx.Exec(ctx, `UPDATE relay.subscriptions SET alerted_at = now() WHERE id = $1`, h.id); err != nil {
				return nil, err
			}
			r.log.Warn().Int64("subscription_id", h.id).Int("consecutive_failures", h.consecutive).Msg("subscription is failing; alert emitted")
		}
		reason := ""
		switch {
		case delta.gone && strings.HasPrefix(delta.goneError, "Slack answered"), delta.gone && strings.HasPrefix(delta.goneError, "Discord answered"):
			reason = delta.goneError
		case delta.gone:
			reason = "endpoint answered 410 Gone: " + delta.goneError
		case h.failingSince != nil && policy.DisableAfter > 0 && now.Sub(*h.failingSince) > policy.DisableAfter:
			reason = fmt.Sprintf("failing continuously since %s (longer than %s): %s",
				h.failingSince.UTC().Format(time.RFC3339), policy.DisableAfter, lastError)
		}
		if reason != "" && h.enabled {
			if _, err := tx.Exec(ctx, `UPDATE relay.subscriptions SET enabled = false, disabled_reason = $2 WHERE id = $1`, h.id, reason); err != nil {
				return nil, err
			}
			payload := map[string]any{"subscription_id": h.id, "subscription_name": h.name, "reason": reason}
			if err := emitAlert(ctx, tx, "relay.subscription.disabled", h.owner, h.id, payload); err != nil {
				return nil, err
			}
			r.log.Warn().Int64("subscription_id", h.id).Str("reason", reason).Msg("subscription disabled")
			continue
		}
		hd, err := r.circuit(ctx, tx, h, delta, policy)
		if err != nil {
			return nil, err
		}
		holds = append(holds, hd...)
	}
	return holds, nil
}

// subHealth is a subscription's health as healthSQL left it.
type subHealth struct {
	id             int64
	owner          *string
	name           string
	enabled        bool
	consecutive    int
	failingSince   *time.Time
	alerted        bool
	lastError      *string
	failedAttempts int
	circuitOpen    bool
	throttleStreak int
	probeInterval  time.Duration
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
