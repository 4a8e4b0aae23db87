package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// payloadRetention returns Config.PayloadRetention or, when it is 0, the
// setting; 0 means bodies are kept.
func (j *Job) payloadRetention(ctx context.Context, conn *pgxpool.Conn) (time.Duration, error) {
	switch {
	case j.cfg.PayloadRetention > 0:
		return j.cfg.PayloadRetention, nil
	case j.cfg.PayloadRetention < 0:
		return 0, nil
	}
	var d *time.Duration
	if err := conn.QueryRow(ctx, `SELECT payload_retention FROM relay.settings`).Scan(&d); err != nil {
		return 0, fmt.Errorf("retention: reading relay.settings: %w", err)
	}
	if d == nil {
		return 0, nil
	}
	return *d, nil
}

// clearPayloadsSQL clears the response bodies of the succeeded attempts
// started in [$1, $2), and the last_response of their deliveries when they
// are still succeeded (a redelivered one keeps its newer answer). The range
// prunes the UPDATE to one or two partitions and walks the started_at index.
const clearPayloadsSQL = `
WITH a AS (
    UPDATE relay.delivery_attempts
    SET response_body = NULL
    WHERE started_at >= $1 AND started_at < $2 AND outcome = 'succeeded' AND response_body IS NOT NULL
    RETURNING delivery_id
), d AS (
    UPDATE relay.deliveries AS d
    SET last_response = NULL
    FROM (SELECT DISTINCT delivery_id FROM a) AS a
    WHERE d.id = a.delivery_id AND d.status = 'succeeded' AND d.last_response IS NOT NULL
)
SELECT count(*) FROM a`

// clearPayloads clears the response bodies older than the payload
// retention, from where the last run stopped (relay.maintenance_state
// .payloads_cleared_before) up to now less the payload retention, in
// transactions of about BatchSize attempts each, and returns how many
// bodies it cleared. Nothing happens when the payload retention is not
// shorter than the retention: those rows go whole.
func (j *Job) clearPayloads(ctx context.Context, conn *pgxpool.Conn, retention time.Duration) (int, error) {
	keep, err := j.payloadRetention(ctx, conn)
	if err != nil || keep <= 0 || keep >= retention {
		return 0, err
	}
	var from *time.Time
	var cutoff time.Time
	err = conn.QueryRow(ctx, `SELECT coalesce(s.payloads_cleared_before, (SELECT min(started_at) FROM relay.delivery_attempts)),
			now() - $1::interval
		FROM relay.maintenance_state AS s`, keep).Scan(&from, &cutoff)
	if err != nil {
		return 0, fmt.Errorf("retention: reading relay.maintenance_state: %w", err)
	}
	if from == nil || !from.Before(cutoff) {
		return 0, nil
	}
	lo := *from
	cleared := 0
	for lo.Before(cutoff) {
		if err := ctx.Err(); err != nil {
			return cleared, err
		}
		// The end of this batch: the started_at about BatchSize attempts
		// on, read from the index; the cutoff when fewer are left.
		hi := cutoff
		var next *time.Time
		err := conn.QueryRow(ctx, `SELECT started_at FROM relay.delivery_attempts
			WHERE started_at > $1 AND started_at < $2 ORDER BY started_at OFFSET $3 LIMIT 1`,
			lo, cutoff, j.cfg.BatchSize).Scan(&next)
		switch {
		case err == pgx.ErrNoRows:
		case err != nil:
			return cleared, fmt.Errorf("retention: clearing payloads: %w", err)
		default:
			hi = *next
		}
		var n int
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, clearPayloadsSQL, lo, hi).Scan(&n); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE relay.maintenance_state SET payloads_cleared_before = $1`, hi)
			return err
		})
		if err != nil {
			return cleared, fmt.Errorf("retention: clearing payloads: %w", err)
		}
		cleared += n
		lo = hi
	}
	return cleared, nil
}
