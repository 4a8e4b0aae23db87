package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/outbox"
)

// FanoutConfig configures a Fanout.
type FanoutConfig struct {
	Logger zerolog.Logger
	// OnDeliveries, when set, is called after each commit that created
	// deliveries, with how many; the dispatcher uses it to wake at once.
	OnDeliveries func(n int)
}

// Fanout turns committed outbox events into delivery rows: one per matching
// subscription, in one transaction per batch. It is the outbox.Handler of a
// relay: the stream acknowledges WAL only after HandleEvents returns.
type Fanout struct {
	pool *pgxpool.Pool
	cfg  FanoutConfig
	log  zerolog.Logger
}

// NewFanout returns a fan-out writer on pool.
func NewFanout(pool *pgxpool.Pool, cfg FanoutConfig) *Fanout {
	return &Fanout{pool: pool, cfg: cfg, log: cfg.Logger.With().Str("component", "fanout").Logger()}
}

// fanoutSQL matches events to subscriptions and inserts deliveries.
//
// Matching happens in SQL, in the same transaction as the insert, so it sees
// the subscriptions as they are now: for an event a.b.c the candidate
// patterns are {*, a.*, a.b.*, a.b.c} and `event_types && candidates` uses
// the GIN index. Owner scoping: an event of owner X reaches subscriptions of
// X and operator subscriptions (owner NULL); an event without owner reaches
// operator subscriptions only. A targeted event (the test button) reaches its
// one subscription, enabled or not. A replayed WAL range is absorbed by
// ON CONFLICT DO NOTHING.
const fanoutSQL = `
WITH e AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
        AS e(event_id, event_type, owner, target, skip)
), matched AS (
    SELECT e.event_id, s.id AS subscription_id
    FROM e
    JOIN relay.subscriptions AS s
      ON s.enabled
     AND s.event_types && relay.event_type_candidates(e.event_type)
     AND (s.owner IS NULL OR s.owner = e.owner)
     AND s.id IS DISTINCT FROM e.skip
    WHERE e.target IS NULL
    UNION ALL
    SELECT e.event_id, s.id
    FROM e JOIN relay.subscriptions AS s ON s.id = e.target
)
INSERT INTO relay.deliveries (event_id, subscription_id)
SELECT event_id, subscription_id FROM matched
ON CONFLICT (event_id, subscription_id) DO NOTHING`

// HandleEvents writes the deliveries of events and commits before returning.
func (f *Fanout) HandleEvents(ctx context.Context, events []outbox.Event) error {
	if len(events) == 0 {
		return nil
	}
	ids := make([]string, len(events))
	types := make([]string, len(events))
	owners := make([]*string, len(events))
	targets := make([]*int64, len(events))
	skips := make([]*int64, len(events))
	for i := range events {
		ev := &events[i]
		ids[i], types[i], owners[i] = ev.EventID, ev.Type, ev.Owner
		targets[i], skips[i] = ev.TargetSubscriptionID, ev.SkipSubscriptionID
	}
	var created int64
	insert := func() error {
		return pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, fanoutSQL, ids, types, owners, targets, skips)
			if err != nil {
				return err
			}
			created = tag.RowsAffected()
			if created > 0 {
				// Other relays dispatching from the same database wake on this.
				_, err = tx.Exec(ctx, `SELECT pg_notify('relay_deliveries', '')`)
			}
			return err
		})
	}
	// Logical decoding may hand over a transaction a moment before its rows
	// are visible to other sessions (the commit record is in the WAL before
	// the committing backend leaves the proc array), so the foreign key to
	// relay.outbox can fail for a freshly committed event. The row appears
	// within milliseconds: retry briefly, then give up and let the stream
	// reconnect and replay.
	delay := time.Millisecond
	var err error
	for {
		err = insert()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23503" || delay > time.Second {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
	if err != nil {
		return fmt.Errorf("inserting deliveries: %w", err)
	}
	f.log.Debug().Int("num_events", len(events)).Int64("num_deliveries", created).Msg("fanned out")
	if created > 0 && f.cfg.OnDeliveries != nil {
		f.cfg.OnDeliveries(int(created))
	}
	return nil
}
