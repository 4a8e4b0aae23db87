package record

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/relay/sink/policy/backpressure"
	"github.com/pgoutbox/relay/sink/policy/classify"
)

// hold is a subscription held until a time (zero: released).
type hold struct {
	subID   int64
	until   time.Time
	circuit bool // the circuit is open: only probes may go
}

// KeyMovesOn ends the error of an ordered delivery that failed: its key's
// next delivery goes next (the delivery log shows that it did).
const KeyMovesOn = " (ordering: its key moves on to the next delivery)"

// needsFlow reports whether a batch holds throttled attempts or announced
// pauses, which are written before the attempts.
func needsFlow(batch []Attempt) bool {
	for i := range batch {
		if batch[i].Verdict == classify.VerdictThrottled || batch[i].Hold > 0 {
			return true
		}
	}
	return false
}

// throttleSQL holds each subscription for its throttle window or announced
// pause (held_until only moves later), starts its throttle streak and
// counts it, and returns what the deliveries need: the hold's end, and
// when the continuous throttling began.
const throttleSQL = `
UPDATE relay.subscriptions AS s
SET hold_reason = CASE WHEN s.held_until IS NULL OR s.held_until < now() + u.hold_ms * interval '1 millisecond'
                       THEN CASE WHEN u.throttled THEN 'throttled' ELSE 'rate limit headers' END
                       ELSE s.hold_reason END,
    held_until = greatest(s.held_until, now() + u.hold_ms * interval '1 millisecond'),
    throttled_since = CASE WHEN u.throttled THEN coalesce(s.throttled_since, u.at) ELSE s.throttled_since END,
    throttle_streak = s.throttle_streak + CASE WHEN u.throttled THEN 1 ELSE 0 END
FROM unnest($1::bigint[], $2::bool[], $3::float8[], $4::timestamptz[]) AS u(id, throttled, hold_ms, at)
WHERE s.id = u.id
RETURNING s.id, s.held_until, s.throttled_since`

// applyThrottles holds the subscriptions of throttled attempts and
// announced pauses, across every relay, and sets each throttled delivery
// to wait for its hold without spending a retry — or fails it when its
// subscription has been throttled for longer than policy.ThrottleCap.
// A throttled answer that named no time holds for backpressure.Backoff of
// the subscription's throttle streak.
func (r *Recorder) applyThrottles(ctx context.Context, tx pgx.Tx, batch []Attempt, policy Policy) ([]hold, error) {
	type agg struct {
		throttled, backoff bool
		hold               time.Duration
		at                 time.Time
	}
	subs := map[int64]*agg{}
	var ids []int64
	for i := range batch {
		a := &batch[i]
		if a.Verdict != classify.VerdictThrottled && a.Hold <= 0 {
			continue
		}
		g := subs[a.SubscriptionID]
		if g == nil {
			g = &agg{at: a.StartedAt}
			subs[a.SubscriptionID] = g
			ids = append(ids, a.SubscriptionID)
		}
		if a.Verdict == classify.VerdictThrottled {
			g.throttled = true
			if a.Hold <= 0 {
				g.backoff = true
			}
		}
		g.hold = max(g.hold, a.Hold)
		if a.StartedAt.Before(g.at) {
			g.at = a.StartedAt
		}
	}
	if g := len(ids); g == 0 {
		return nil, nil
	}
	streaks := map[int64]int{}
	if err := func() error {
		rows, err := tx.Query(ctx, `SELECT id, throttle_streak FROM relay.subscriptions WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, ids)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var n int
			if err := rows.Scan(&id, &n); err != nil {
				return err
			}
			streaks[id] = n
		}
		return rows.Err()
	}(); err != nil {
		return nil, fmt.Errorf("reading throttle streaks: %w", err)
	}
	throttled := make([]bool, len(ids))
	holdMS := make([]float64, len(ids))
	at := make([]time.Time, len(ids))
	for i, id := range ids {
		g := subs[id]
		if g.backoff {
			g.hold = max(g.hold, backpressure.Backoff(streaks[id]))
		}
		throttled[i], holdMS[i], at[i] = g.throttled, float64(g.hold)/float64(time.Millisecond), g.at
	}
	rows, err := tx.Query(ctx, throttleSQL, ids, throttled, holdMS, at)
	if err != nil {
		return nil, fmt.Errorf("holding throttled subscriptions: %w", err)
	}
	until := map[int64]time.Time{}
	since := map[int64]*time.Time{}
	var holds []hold
	for rows.Next() {
		var id int64
		var u time.Time
		var s *time.Time
		if err := rows.Scan(&id, &u, &s); err != nil {
			rows.Close()
			return nil, err
		}
		until[id], since[id] = u, s
		holds = append(holds, hold{subID: id, until: u})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("holding throttled subscriptions: %w", err)
	}
	capAt := policy.ThrottleCap
	if capAt <= 0 {
		capAt = 24 * time.Hour
	}
	for i := range batch {
		a := &batch[i]
		if a.Verdict != classify.VerdictThrottled {
			continue
		}
		u, ok := until[a.SubscriptionID]
		if !ok { // subscription deleted meanwhile
			a.Status = "failed"
			continue
		}
		if s := since[a.SubscriptionID]; s != nil && a.StartedAt.Sub(*s) > capAt {
			a.Status, a.NextAt = "failed", nil
			a.Error = fmt.Sprintf("throttled continuously since %s (longer than the throttle cap of %s): %s",
				s.UTC().Format(time.RFC3339), capAt, a.Error)
			if a.OrderingKey != nil {
				a.Error += KeyMovesOn
			}
			continue
		}
		a.Status, a.NextAt, a.NoSpend = "pending", &u, true
	}
	return holds, nil
}

// pushOrderedKeysSQL moves the later pending deliveries of a retried
// ordered delivery's key to its next attempt: they could not be claimed
// before it anyway, and leaving them due would let a long blocked key fill
// the claim's candidates ahead of other subscriptions' work.
const pushOrderedKeysSQL = `
UPDATE relay.deliveries AS d
SET next_attempt_at = u.at
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::timestamptz[]) AS u(subscription_id, key, id, at)
WHERE d.subscription_id = u.subscription_id AND d.ordering_key = u.key AND d.id > u.id
  AND d.ordering_key IS NOT NULL AND d.status = 'pending' AND d.next_attempt_at < u.at`

func pushOrderedKeys(ctx context.Context, tx pgx.Tx, batch []Attempt) error {
	var subs, ids []int64
	var keys []string
	var ats []time.Time
	for i := range batch {
		a := &batch[i]
		if a.OrderingKey != nil && a.Status == "pending" && a.NextAt != nil {
			subs, keys, ids, ats = append(subs, a.SubscriptionID), append(keys, *a.OrderingKey), append(ids, a.DeliveryID), append(ats, *a.NextAt)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, pushOrderedKeysSQL, subs, keys, ids, ats); err != nil {
		return fmt.Errorf("holding back the keys of retried ordered deliveries: %w", err)
	}
	return nil
}

// circuit opens a subscription's circuit after policy.FailureAlertThreshold
// failed attempts in a row (throttled ones are not failures): from then on
// the claim gives it one probe per interval and nothing else, the interval
// doubling after each failed probe up to policy.ProbeMax. The first
// success closes it, releases the hold and emits
// relay.subscription.recovered to the owner's other subscriptions, once:
// the row lock healthSQL took makes this relay the only one to close it.
func (r *Recorder) circuit(ctx context.Context, tx pgx.Tx, h subHealth, delta *healthDelta, policy Policy) ([]hold, error) {
	switch {
	case h.circuitOpen && delta.reset:
		var u *time.Time
		err := tx.QueryRow(ctx, `
			UPDATE relay.subscriptions
			SET circuit_opened_at = NULL, circuit_probe_interval = NULL,
			    held_until = CASE WHEN hold_reason = 'circuit open' THEN NULL ELSE held_until END,
			    hold_reason = CASE WHEN hold_reason = 'circuit open' THEN NULL ELSE hold_reason END
			WHERE id = $1 AND circuit_opened_at IS NOT NULL
			RETURNING held_until`, h.id).Scan(&u)
		if err != nil {
			return nil, fmt.Errorf("closing the circuit: %w", err)
		}
		payload := map[string]any{"subscription_id": h.id, "subscription_name": h.name}
		if err := emitAlert(ctx, tx, "relay.subscription.recovered", h.owner, h.id, payload); err != nil {
			return nil, err
		}
		// Its held backlog is due: wake the relays.
		if _, err := tx.Exec(ctx, `SELECT pg_notify('relay_deliveries', '')`); err != nil {
			return nil, err
		}
		r.log.Info().Int64("subscription_id", h.id).Msg("subscription recovered; circuit closed")
		hd := hold{subID: h.id}
		if u != nil {
			hd.until = *u
		}
		return []hold{hd}, nil
	case !h.circuitOpen && policy.FailureAlertThreshold > 0 && h.failedAttempts >= policy.FailureAlertThreshold:
		iv := backpressure.NextProbeInterval(0, policy.ProbeInterval, policy.ProbeMax)
		var u time.Time
		err := tx.QueryRow(ctx, `
			UPDATE relay.subscriptions
			SET circuit_opened_at = now(), circuit_probe_interval = $2 * interval '1 millisecond',
			    held_until = greatest(held_until, now() + $2 * interval '1 millisecond'), hold_reason = 'circuit open'
			WHERE id = $1 RETURNING held_until`, h.id, float64(iv)/float64(time.Millisecond)).Scan(&u)
		if err != nil {
			return nil, fmt.Errorf("opening the circuit: %w", err)
		}
		r.log.Warn().Int64("subscription_id", h.id).Int("failed_attempts", h.failedAttempts).Dur("probe_interval", iv).
			Msg("circuit open: one probe per interval until the endpoint answers")
		return []hold{{subID: h.id, until: u, circuit: true}}, nil
	case h.circuitOpen && delta.probeFailed:
		iv := backpressure.NextProbeInterval(h.probeInterval, policy.ProbeInterval, policy.ProbeMax)
		var u time.Time
		err := tx.QueryRow(ctx, `
			UPDATE relay.subscriptions
			SET circuit_probe_interval = $2 * interval '1 millisecond',
			    held_until = greatest(held_until, now() + $2 * interval '1 millisecond'), hold_reason = 'circuit open'
			WHERE id = $1 RETURNING held_until`, h.id, float64(iv)/float64(time.Millisecond)).Scan(&u)
		if err != nil {
			return nil, fmt.Errorf("widening the probe interval: %w", err)
		}
		return []hold{{subID: h.id, until: u, circuit: true}}, nil
	}
	return nil, nil
}
