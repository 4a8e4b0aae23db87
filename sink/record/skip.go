package record

import (
	"context"
	"fmt"
	"time"
)

// Skipped is a delivery this relay holds that its subscription's
// outside_window = skip ends without sending.
type Skipped struct {
	DeliveryID int64
	// Attempt numbers the attempt row that records the skip.
	Attempt int
	At      time.Time
	// Reason is kept as the attempt's error and the delivery's last_error.
	Reason string
}

// skipSQL records each skip as an attempt (outcome skipped, no HTTP
// request, so no duration or status code) and ends the delivery skipped:
// finished, never retried, in the delivery log with its reason, and
// relay.redeliver can queue it again. The subscription's health is not
// touched: nothing was asked of the endpoint. As in recordAttemptsSQL, the
// attempt row is written only for the deliveries the update moved (those
// this relay still held), which keeps (delivery_id, attempt) unique across
// the partitions of relay.delivery_attempts.
const skipSQL = `
WITH s AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::text[]) AS s(delivery_id, attempt, at, reason)
), moved AS (
    UPDATE relay.deliveries AS d
    SET status = 'skipped', attempts = greatest(d.attempts, s.attempt), cycle_attempts = d.cycle_attempts + 1,
        locked_until = NULL, locked_by = NULL, last_status_code = NULL, last_error = s.reason,
        last_response = NULL, last_duration_ms = NULL, completed_at = now()
    FROM s
    WHERE d.id = s.delivery_id AND d.locked_by = $5
    RETURNING d.id
)
INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome, error)
SELECT s.delivery_id, s.attempt, s.at, 'skipped', s.reason
FROM s JOIN moved ON moved.id = s.delivery_id
ON CONFLICT DO NOTHING`

// Skip records skipped deliveries in one statement. Deliveries this relay
// no longer holds are left alone.
func (r *Recorder) Skip(ctx context.Context, skipped []Skipped) error {
	ids := make([]int64, len(skipped))
	attempts := make([]int32, len(skipped))
	ats := make([]time.Time, len(skipped))
	reasons := make([]string, len(skipped))
	for i, s := range skipped {
		ids[i], attempts[i], ats[i], reasons[i] = s.DeliveryID, int32(s.Attempt), s.At, s.Reason
	}
	if _, err := r.cfg.Pool.Exec(ctx, skipSQL, ids, attempts, ats, reasons, r.cfg.WorkerID); err != nil {
		return fmt.Errorf("recording %d skipped deliveries: %w", len(skipped), err)
	}
	return nil
}
