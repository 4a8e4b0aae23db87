package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/pgoutbox/relay/sink/policy/classify"
)

// ErrSubscriptionNotFound is returned by Test for an unknown subscription.
var ErrSubscriptionNotFound = errors.New("subscription not found")

// TestResult is the outcome of a test delivery.
type TestResult struct {
	Delivered  bool
	StatusCode int
	DurationMS int64
	Error      string
	EventID    string
	DeliveryID int64
}

// Test sends a webhook.test event to one subscription (enabled or not) and
// returns once the attempt is over. The event goes through the outbox like
// any other, targeted at that subscription only, so it appears in the
// delivery log; this relay sends it at once rather than waiting for the
// stream, so Test works even when no relay is running. A test delivery is
// not retried.
func (d *Dispatcher) Test(ctx context.Context, subscriptionID int64) (TestResult, error) {
	var res TestResult
	err := pgx.BeginFunc(ctx, d.cfg.Pool, func(tx pgx.Tx) error {
		var owner *string
		var name string
		err := tx.QueryRow(ctx, `SELECT owner, name FROM relay.subscriptions WHERE id = $1`, subscriptionID).Scan(&owner, &name)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrSubscriptionNotFound
		}
		if err != nil {
			return err
		}
		payload, _ := json.Marshal(map[string]any{
			"message":           "Test event from relay",
			"subscription_id":   subscriptionID,
			"subscription_name": name,
		})
		if err := tx.QueryRow(ctx, `
			INSERT INTO relay.outbox (event_type, owner, payload, target_subscription_id)
			VALUES ('webhook.test', $1, $2, $3) RETURNING event_id::text`, owner, payload, subscriptionID).Scan(&res.EventID); err != nil {
			return err
		}
		// Due far ahead, so that no dispatcher claims it before this one does.
		return tx.QueryRow(ctx, `
			INSERT INTO relay.deliveries (event_id, subscription_id, next_attempt_at)
			VALUES ($1, $2, now() + interval '1 hour') RETURNING id`, res.EventID, subscriptionID).Scan(&res.DeliveryID)
	})
	if err != nil {
		if errors.Is(err, ErrSubscriptionNotFound) {
			return res, err
		}
		return res, fmt.Errorf("queueing test event: %w", err)
	}
	jobs, err := d.claim(ctx, 1, nil, nil, res.DeliveryID)
	if err != nil {
		return res, err
	}
	if len(jobs) != 1 {
		return res, fmt.Errorf("test delivery %d could not be claimed", res.DeliveryID)
	}
	r := d.attempt(ctx, jobs[0])
	if r.released {
		return res, ctx.Err()
	}
	if err := d.record(ctx, []*result{r}); err != nil {
		return res, err
	}
	res.Delivered = r.rec.Verdict == classify.VerdictSucceeded
	res.StatusCode = r.rec.StatusCode
	res.DurationMS = r.rec.Duration.Milliseconds()
	res.Error = r.rec.Error
	return res, nil
}
