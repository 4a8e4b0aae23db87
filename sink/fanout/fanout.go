// Package fanout turns committed outbox events into delivery rows: one per
// matching subscription (patterns and owner scoping matched in SQL), in
// one statement per chunk, ON CONFLICT DO NOTHING so a replayed WAL range
// is absorbed. It is the outbox.Handler of a relay: the stream
// acknowledges WAL only after HandleEvents returns.
//
// It touches PostgreSQL (it inserts deliveries, reads subscriptions) and
// nothing of HTTP. Downstream, it may hand fresh deliveries to this
// relay's dispatcher (dispatch.Handoff); it never sends anything itself.
package fanout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgoutbox/relay/internal/telemetry/eventtrace"
	"github.com/pgoutbox/relay/outbox"
	"github.com/pgoutbox/relay/sink/dispatch"
)

// Config configures a Fanout.
type Config struct {
	Logger zerolog.Logger
	// OnDeliveries, when set, is called after each commit that created
	// deliveries left pending for a dispatcher to claim, with how many; the
	// dispatcher uses it to wake at once.
	OnDeliveries func(n int)
	// Dispatcher, when set, is this relay's dispatcher: while it has room,
	// and no pause, absence day or global window holds deliveries, new
	// deliveries are inserted already claimed by it ('delivering', with its
	// lease) and handed over in memory once committed, which saves the
	// claim's round trip and re-reading the event. Deliveries of
	// subscriptions with their own window, and any beyond its room, are
	// left pending as without it.
	Dispatcher *dispatch.Dispatcher
	// Spans, when set, records for each event a capture span (from its
	// commit to its arrival here) and a fan-out span (the statement that
	// wrote its deliveries), children of the event's trace (see package
	// eventtrace). Nil means no tracing, at no cost.
	Spans trace.Tracer
	// WriteBehind is how long the statement of events all sent ahead
	// (dispatch.Presend) waits, gathering the next such events, before it
	// writes them (see behind.go). Nothing waits on it but the slot's
	// acknowledgement. Zero means DefaultWriteBehind; negative, each
	// chunk is written at once.
	WriteBehind time.Duration
}

// DefaultWriteBehind gathers about twenty events per statement at 1,000
// events/s, and covers the answer of most receivers (the benchmark's
// median from hand-over to answer is about 0.3 ms), so that their
// deliveries are written finished. Against 5 ms, relay's own statements
// took half as much of PostgreSQL's CPU at 1,000 events/s (0.07 committed
// transactions per event instead of 0.21), which left the walsender and
// the producers more of the machine: relay's CPU per event 10-17 % lower,
// the p90 a little lower ("Writing behind for 20 ms" in BENCHMARKS.md).
// What it costs: the delivery log shows an attempt up to 20 ms later, and
// a crash re-sends what was sent in the last 20 ms or so (the events sent
// ahead whose rows were not yet committed; at-least-once allows it).
// outbox.MaxOverlapped must leave room for the hand-overs of a window.
const DefaultWriteBehind = 20 * time.Millisecond

// Fanout turns committed outbox events into delivery rows: one per matching
// subscription, in one transaction per batch. It is the outbox.Handler of a
// relay: the stream acknowledges WAL only after HandleEvents returns.
type Fanout struct {
	pool *pgxpool.Pool
	cfg  Config
	log  zerolog.Logger
	// perEvent is the deliveries an event made lately (×1000), which
	// sizes the chunks of a batch.
	perEvent atomic.Int64

	mu sync.Mutex
	// gathering is the group written behind that chunks may still join,
	// last the latest group whose statement has not run (see behind.go).
	gathering, last *behindGroup
}

// chunkDeliveries is about how many deliveries one fan-out statement
// writes. A batch that would make more (many subscriptions per event) is
// written in several statements, so the first deliveries can be sent while
// the rest are written; each statement commits on its own, and the stream
// acknowledges the batch only once all have (a replay is absorbed).
const chunkDeliveries = 2000

// New returns a fan-out writer on pool.
func New(pool *pgxpool.Pool, cfg Config) *Fanout {
	if cfg.WriteBehind == 0 {
		cfg.WriteBehind = DefaultWriteBehind
	}
	return &Fanout{pool: pool, cfg: cfg, log: cfg.Logger.With().Str("component", "fanout").Logger()}
}

// fanoutSQL matches events to subscriptions and inserts deliveries.
//
// Matching happens in SQL, in the same transaction as the insert, so it sees
// the subscriptions as they are now: for an event a.b.c the candidate
// patterns are {*, a.*, a.b.*, a.b.c} and `event_types && candidates` uses
// the GIN index. The candidates come computed, space-separated, in $2 (see
// eventTypeCandidates; relay.event_type_candidates gives the same in SQL). Owner scoping: an event of owner X reaches subscriptions of
// X and operator subscriptions (owner NULL); an event without owner reaches
// operator subscriptions only. A targeted event (the test button) reaches its
// one subscription, enabled or not. A replayed WAL range is absorbed by
// ON CONFLICT DO NOTHING.
//
// Payload filters (relay.subscriptions.filter) are evaluated here too, by
// relay.payload_matches, on the payloads as the WAL carried them ($6, text):
// reading them back from relay.outbox would cost a lookup per event and,
// for a row not yet visible to this session (see handleChunk), would find
// nothing and silently match nothing. The payloads are parsed as jsonb
// only when some enabled subscription has a filter (one probe of a partial
// index), once per event. A targeted event is not filtered: the test button
// reaches its subscription whatever its filter says.
const fanoutSQL = `
WITH f AS (
    SELECT EXISTS (SELECT 1 FROM relay.subscriptions WHERE enabled AND filter IS NOT NULL) AS any
), e AS MATERIALIZED (
    SELECT u.event_id, u.candidates, u.owner, u.target, u.skip,
           CASE WHEN f.any THEN u.payload::jsonb END AS payload
    FROM f, unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[])
        AS u(event_id, candidates, owner, target, skip, payload)
), matched AS (
    SELECT e.event_id, s.id AS subscription_id,
           CASE WHEN s.ordering = 'key' THEN (SELECT o.key FROM relay.outbox AS o WHERE o.event_id = e.event_id) END AS ordering_key
    FROM e
    JOIN relay.subscriptions AS s
      ON s.enabled
     AND s.event_types && string_to_array(e.candidates, ' ')
     AND (s.owner IS NULL OR s.owner = e.owner)
     AND s.id IS DISTINCT FROM e.skip
     AND (s.filter IS NULL OR relay.payload_matches(e.payload, s.filter, s.filter_is_predicate))
    WHERE e.target IS NULL
    UNION ALL
    SELECT e.event_id, s.id, NULL
    FROM e JOIN relay.subscriptions AS s ON s.id = e.target
), ins AS (
    INSERT INTO relay.deliveries (event_id, subscription_id, ordering_key)
    SELECT event_id, subscription_id, ordering_key FROM matched
    ON CONFLICT (event_id, subscription_id) DO NOTHING
    RETURNING 1
), n AS (
    SELECT count(*) AS inserted FROM ins
), note AS (
    -- Other relays dispatching from the same database wake on this.
    SELECT pg_notify('relay_deliveries', '') FROM n WHERE n.inserted > 0
)
SELECT n.inserted, (SELECT count(*) FROM note) FROM n`

// fanoutClaimHead and fanoutClaimTail make fanoutClaimSQL: fanoutSQL that
// also claims, for the dispatcher $10,
// the deliveries it has room for: per subscription the room it gives ($6,
// $7; max_in_flight × $8 for those it does not know), and $9 in all, in
// event order. The deliveries the dispatcher already sent (dispatch.Presend:
// the event's place in $1, subscription and id in $13, $14, $15) are
// written claimed with their ids, whatever the subscription has become
// (what was sent is what the log shows), and matched no further; those
// whose success is back ($16-$19: started_at, duration, status and answer
// body, NULL for the others; see dispatch.Presend.TakeAnswered) are
// written succeeded with their attempt instead of claimed. It returns
// how many deliveries were inserted and left pending, the ids sent ahead it
// did not write (their delivery existed), and one row per other claimed
// delivery with its subscription's updated_at.
const fanoutClaimHead = `
WITH f AS (
    SELECT EXISTS (SELECT 1 FROM relay.subscriptions WHERE enabled AND filter IS NOT NULL) AS any
), e AS MATERIALIZED (
    SELECT u.event_id, u.candidates, u.owner, u.target, u.skip, u.ord,
           CASE WHEN f.any THEN u.payload::jsonb END AS payload
    FROM f, unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $12::text[]) WITH ORDINALITY
        AS u(event_id, candidates, owner, target, skip, payload, ord)
), pre AS (
    SELECT * FROM unnest($13::bigint[], $14::bigint[], $15::bigint[], $16::timestamptz[], $17::int[], $18::int[], $19::text[])
        AS p(ord, subscription_id, id, started_at, duration_ms, status_code, response)
), seq AS (
    -- Named once, not looked up for every row.
    SELECT pg_get_serial_sequence('relay.deliveries', 'id')::regclass AS id
), matched AS (
    SELECT e.ord, e.event_id, s.id AS subscription_id,
           -- Held here are neither deliveries outside a window nor those
           -- flow control must order (claimed only after their key's
           -- earlier ones) or hold (throttle window, open circuit).
           s.window_start IS NULL AND s.ordering = 'none' AND s.circuit_opened_at IS NULL
               AND (s.held_until IS NULL OR s.held_until <= now()) AS may_take,
           s.max_in_flight, s.timeout_ms,
           CASE WHEN s.ordering = 'key' THEN (SELECT o.key FROM relay.outbox AS o WHERE o.event_id = e.event_id) END AS ordering_key
    FROM e
    JOIN relay.subscriptions AS s
      ON s.enabled
     AND s.event_types && string_to_array(e.candidates, ' ')
     AND (s.owner IS NULL OR s.owner = e.owner)
     AND s.id IS DISTINCT FROM e.skip
     AND (s.filter IS NULL OR relay.payload_matches(e.payload, s.filter, s.filter_is_predicate))
    WHERE e.target IS NULL
      -- NOT IN, not NOT EXISTS: the planner takes unnest's arrays for 10
      -- rows and would run NOT EXISTS as a nested loop (2,000 matched
      -- rows × 1,024 sent ahead: 1.5 million comparisons, half of a
      -- 350-ms statement); NOT IN over a subquery is a hashed subplan,
      -- built once. Neither side is ever NULL, so the two mean the same.
      AND (e.ord, s.id) NOT IN (SELECT pre.ord, pre.subscription_id FROM pre)
    UNION ALL
    SELECT e.ord, e.event_id, s.id, false, s.max_in_flight, s.timeout_ms, NULL
    FROM e JOIN relay.subscriptions AS s ON s.id = e.target
), busy AS (
    SELECT * FROM unnest($6::bigint[], $7::int[]) AS b(subscription_id, room)
), capped AS (
    SELECT m.*, m.may_take AND row_number() OVER (PARTITION BY m.subscription_id ORDER BY m.ord)
                               <= coalesce(b.room, m.max_in_flight * $8) AS within
    FROM matched AS m LEFT JOIN busy AS b USING (subscription_id)
), chosen AS (
    SELECT c.ord, c.event_id, c.subscription_id, c.ordering_key, c.timeout_ms, NULL::bigint AS id,
           c.within AND count(*) FILTER (WHERE c.within)
                            OVER (ORDER BY c.ord, c.subscription_id ROWS UNBOUNDED PRECEDING) <= $9 AS take,
           false AS done, NULL::int AS status_code, NULL::int AS duration_ms, NULL::text AS response
    FROM capped AS c
    UNION ALL
    SELECT e.ord, e.event_id, p.subscription_id, NULL, s.timeout_ms, p.id, true,
           p.started_at IS NOT NULL, p.status_code, p.duration_ms, p.response
    FROM pre AS p JOIN e USING (ord) JOIN relay.subscriptions AS s ON s.id = p.subscription_id
), ins AS (
    -- A delivery sent ahead whose success is back (done) is written
    -- finished, as the recorder would have left it.
    INSERT INTO relay.deliveries (id, event_id, subscription_id, ordering_key, status, locked_by, locked_until,
                                  attempts, cycle_attempts, last_status_code, last_response, last_duration_ms, completed_at)
    OVERRIDING SYSTEM VALUE
    SELECT coalesce(chosen.id, nextval(seq.id)), event_id, subscription_id, ordering_key,
           CASE WHEN done THEN 'succeeded' WHEN take THEN 'delivering' ELSE 'pending' END,
           CASE WHEN take AND NOT done THEN $10::text END,
           CASE WHEN take AND NOT done THEN now() + make_interval(secs => timeout_ms / 1000.0) + $11::interval END,
           CASE WHEN done THEN 1 ELSE 0 END, CASE WHEN done THEN 1 ELSE 0 END,
           status_code, response, duration_ms, CASE WHEN done THEN now() END
    FROM chosen, seq
    ORDER BY ord, subscription_id
    ON CONFLICT (event_id, subscription_id) DO NOTHING
    RETURNING id, event_id, subscription_id, status
`

// writtenAttemptsCTE, between fanoutClaimHead and fanoutClaimTail, writes
// the attempts of the deliveries sent ahead whose success is back. It is
// left out when there are none: even with nothing to insert, it made a
// statement of 2,000 events 9 % slower (107 against 98 ms, idle server).
const writtenAttemptsCTE = `
), att AS (
    -- Their attempts, for the deliveries written (not those that existed).
    -- No ON CONFLICT: the delivery is new, its id never used before, so
    -- no attempt of it can exist (a speculative insert costs a WAL record).
    INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, response_body)
    SELECT p.id, 1, p.started_at, p.duration_ms, p.status_code, 'succeeded', p.response
    FROM pre AS p JOIN ins USING (id)
    WHERE p.started_at IS NOT NULL
`

const fanoutClaimTail = `
), n AS (
    SELECT count(*) AS inserted, count(*) FILTER (WHERE status = 'pending') AS pending,
           ARRAY(SELECT id FROM pre EXCEPT SELECT id FROM ins) AS absent
    FROM ins
), note AS (
    -- Deliveries left pending are for any relay to claim: wake them.
    SELECT pg_notify('relay_deliveries', '') FROM n WHERE n.pending > 0
)
SELECT n.inserted, n.pending, (SELECT count(*) FROM note), n.absent, c.*
FROM n
LEFT JOIN (
    SELECT i.id, i.subscription_id, i.event_id::text, s.updated_at
    FROM ins AS i JOIN relay.subscriptions AS s ON s.id = i.subscription_id
    WHERE i.status = 'delivering' AND i.id NOT IN (SELECT pre.id FROM pre) -- hashed, as in matched
) AS c ON true`

// fanoutClaimSQL and fanoutClaimWritingSQL are the statement without and
// with writtenAttemptsCTE.
const (
	fanoutClaimSQL        = fanoutClaimHead + fanoutClaimTail
	fanoutClaimWritingSQL = fanoutClaimHead + writtenAttemptsCTE + fanoutClaimTail
)

// SubscriptionsMessage is the prefix of the logical decoding message every
// change of relay.subscriptions that decides who gets an event writes with
// its transaction (migration 000009); its content is the transaction's
// id (xid8).
const SubscriptionsMessage = "relay.subscriptions"

var _ outbox.MessageHandler = (*Fanout)(nil)

// MessagePrefixes asks the stream for the subscription changes.
func (f *Fanout) MessagePrefixes() []string { return []string{SubscriptionsMessage} }

// HandleMessage tells the dispatcher that subscriptions changed, in the
// WAL's order: the events decoded after the change are not matched by the
// snapshot from before it (see dispatch.Presend).
func (f *Fanout) HandleMessage(m outbox.Message) {
	if m.Prefix == SubscriptionsMessage && f.cfg.Dispatcher != nil {
		f.cfg.Dispatcher.SubscriptionsChanged(string(m.Content))
	}
}

// HandleEvents writes the deliveries of events and commits before returning.
func (f *Fanout) HandleEvents(ctx context.Context, events []outbox.Event) error {
	durable, err := f.StartEvents(ctx, events)
	if err != nil {
		return err
	}
	if durable != nil {
		return <-durable
	}
	return nil
}

// StartEvents writes the deliveries of events and returns as soon as the
// next events may be handed over, which can be before the last statement's
// commit is confirmed: durable then receives its outcome (see
// outbox.PipelinedHandler). It overlaps that commit's WAL flush with the
// next batch's statement only when the statement left no delivery pending
// and handed all it claimed to this relay's dispatcher. Pending deliveries
// are claimed from the table, where deliveries ordered by key must appear
// in commit order; a batch that leaves some is committed before this
// returns, so no later batch can commit ahead of it.
func (f *Fanout) StartEvents(ctx context.Context, events []outbox.Event) (durable <-chan error, err error) {
	for len(events) > 0 {
		n := len(events)
		if per := f.perEvent.Load(); per > 0 {
			n = min(n, max(1, int(chunkDeliveries*1000/per)))
		}
		last := n == len(events)
		var spans []trace.Span
		if f.cfg.Spans != nil {
			spans = f.startSpans(ctx, events[:n])
		}
		created, commit, err := f.handleChunk(ctx, events[:n], last)
		if spans != nil {
			// The span ends at the statement; an overlapped commit's
			// outcome is the stream's to report.
			endSpans(spans, n, created, err)
		}
		if err != nil {
			return nil, err
		}
		f.perEvent.Store(max(1, created*1000/int64(n)))
		events = events[n:]
		if commit != nil {
			return commit, nil // last is true: nothing follows
		}
	}
	return nil, nil
}

// chunkColumns are a chunk's events as the fan-out statement's arrays.
type chunkColumns struct {
	// ids are the event ids as 16-byte values, which encode in binary;
	// strings would make pgx try binary, build an error message quoting
	// the whole array, then fall back to text, for every statement.
	// Strings only when one does not parse.
	ids             any
	cands, payloads []string
	// Owners, targets and skips stay nil (SQL NULL, which unnest pads
	// with NULLs) unless an event has one: encoding arrays of pointers is
	// the dearest part of building the statement.
	owners         []*string
	targets, skips []*int64
}

// candidatesOf gives each event the patterns its type matches
// (eventTypeCandidates), once per type.
func candidatesOf(events []outbox.Event) []string {
	cands := make([]string, len(events))
	byType := map[string]string{}
	for i := range events {
		t := events[i].Type
		cand, ok := byType[t]
		if !ok {
			cand = eventTypeCandidates(t)
			byType[t] = cand
		}
		cands[i] = cand
	}
	return cands
}

// columnsOf builds the statement's arrays of events, whose candidates
// (candidatesOf) are cands.
func columnsOf(events []outbox.Event, cands []string) chunkColumns {
	ids := make([]string, len(events))
	uuids := make([][16]byte, len(events))
	allParsed := true
	c := chunkColumns{cands: cands, payloads: make([]string, len(events))}
	for i := range events {
		ev := &events[i]
		ids[i], c.payloads[i] = ev.EventID, string(ev.Payload)
		if allParsed {
			uuids[i], allParsed = parseUUID(ev.EventID)
		}
		if len(ev.Payload) == 0 {
			// The column is NOT NULL, so the WAL always carries one; an
			// empty one must not make the jsonb cast fail the batch.
			c.payloads[i] = "{}"
		}
		if ev.Owner != nil {
			if c.owners == nil {
				c.owners = make([]*string, len(events))
			}
			c.owners[i] = ev.Owner
		}
		if ev.TargetSubscriptionID != nil {
			if c.targets == nil {
				c.targets = make([]*int64, len(events))
			}
			c.targets[i] = ev.TargetSubscriptionID
		}
		if ev.SkipSubscriptionID != nil {
			if c.skips == nil {
				c.skips = make([]*int64, len(events))
			}
			c.skips[i] = ev.SkipSubscriptionID
		}
	}
	c.ids = uuids
	if !allParsed {
		c.ids = ids
	}
	return c
}

// handleChunk writes the deliveries of events in one statement and returns
// how many it created. With mayOverlap, when the statement has handed all
// its deliveries over, it may return before the commit is confirmed, with
// the channel that receives its outcome (nil when it has committed).
//
// When every event of the chunk was sent ahead to every subscription it
// can match (dispatch.Presend), nothing waits for the statement but the
// slot's acknowledgement: it is written behind (see writeBehind), and
// the count returned is of the deliveries sent ahead.
func (f *Fanout) handleChunk(ctx context.Context, events []outbox.Event, mayOverlap bool) (int64, <-chan error, error) {
	cands := candidatesOf(events)
	var h *dispatch.Handoff
	var pre *dispatch.Presend
	if d := f.cfg.Dispatcher; d != nil {
		h = d.ReserveHandoff(ctx)
		if h != nil {
			fresh := freshEvents(events, cands)
			pre = h.Presend(ctx, fresh)
			if mayOverlap && f.cfg.WriteBehind > 0 && pre != nil && pre.Complete && len(fresh) == len(events) {
				// The group builds the statement's arrays, once for all.
				return int64(pre.Len()), f.writeBehind(ctx, events, cands, h, pre), nil
			}
		}
	}
	// Statements run in the order of their events: a chunk written behind
	// goes first.
	f.awaitBehind()
	return f.write(ctx, events, columnsOf(events, cands), h, pre, mayOverlap)
}

// write runs the fan-out statement of a chunk (see handleChunk): claiming
// under h, writing what pre sent ahead, when they are not nil.
func (f *Fanout) write(ctx context.Context, events []outbox.Event, cols chunkColumns, h *dispatch.Handoff, pre *dispatch.Presend, mayOverlap bool) (int64, <-chan error, error) {
	idArg, cands, payloads, owners, targets, skips := cols.ids, cols.cands, cols.payloads, cols.owners, cols.targets, cols.skips
	answers := pre.TakeAnswered()
	var fanoutStart time.Time
	if h != nil && f.cfg.Dispatcher.Tracing() {
		fanoutStart = time.Now()
		pre.Started(fanoutStart)
	}
	var created, pending int64
	handed, accepted := 0, false
	var commit func() error
	insert := func() error {
		if h == nil {
			// One statement, so one round trip: it is its own transaction,
			// and has committed (notification included) when it returns.
			var notified int64
			err := f.pool.QueryRow(ctx, fanoutSQL, idArg, cands, owners, targets, skips, payloads).Scan(&created, &notified)
			pending = created
			return err
		}
		var err error
		created, pending, handed, accepted, commit, err = f.insertClaiming(ctx, h, pre, answers, fanoutStart, events, idArg, cands, payloads, owners, targets, skips)
		return err
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
		if accepted || !errors.As(err, &pgErr) || pgErr.Code != "23503" || delay > time.Second {
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(delay):
		}
		if ctx.Err() != nil {
			break
		}
		delay *= 2
	}
	if err != nil {
		if h != nil && !accepted {
			h.Cancel()
		}
		// What was sent ahead has no delivery row: the stream replays the
		// events (not fresh then), and they are written and sent again.
		pre.Resolve(err, nil)
		return 0, nil, fmt.Errorf("inserting deliveries: %w", err)
	}
	done := func() error {
		if commit != nil {
			if err := commit(); err != nil {
				return fmt.Errorf("inserting deliveries: %w", err)
			}
		}
		f.log.Debug().Int("num_events", len(events)).Int64("num_deliveries", created).Int("num_handed_over", handed).Msg("fanned out")
		if pending > 0 && f.cfg.OnDeliveries != nil {
			f.cfg.OnDeliveries(int(pending))
		}
		return nil
	}
	if commit == nil || !mayOverlap || pending > 0 {
		return created, nil, done()
	}
	durable := make(chan error, 1) // never blocks the sender
	go func() { durable <- done() }()
	return created, durable, nil
}

// insertClaiming runs fanoutClaimSQL and hands the deliveries it claimed
// to the dispatcher (ending h: accepted reports it) as soon as their rows
// are back, before the commit is confirmed: the statement goes in
// pipeline mode with a Flush before its Sync, so the server sends the
// rows before it flushes the commit to the WAL, and the requests overlap
// that flush instead of waiting for it. The dispatcher records their
// attempts only once the commit is confirmed (dispatch.Commit); the
// stream acknowledges the WAL only once it is. Still one round trip and
// one statement. When the statement succeeded, commit reads the Sync's
// outcome and lets go of the connection; it must be called exactly once.
func (f *Fanout) insertClaiming(ctx context.Context, h *dispatch.Handoff, pre *dispatch.Presend, answers dispatch.Answers, fanoutStart time.Time, events []outbox.Event,
	ids any, cands, payloads []string, owners []*string, targets, skips []*int64) (created, pending int64, handed int, accepted bool, commit func() error, err error) {
	// Not cancelled with ctx, for the same reason as the dispatcher's claim:
	// rows claimed by a statement that commits after Stop would wait for
	// their lease to end.
	ctx = context.WithoutCancel(ctx)
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		return 0, 0, 0, false, nil, err
	}
	released := false
	defer func() {
		if !released {
			conn.Release()
		}
	}()
	c := conn.Conn()
	var preOrds, preSubs, preIDs []int64
	if pre != nil {
		preOrds, preSubs, preIDs = pre.Ords, pre.SubIDs, pre.IDs
	}
	q := fanoutClaimSQL
	if answers.N > 0 {
		q = fanoutClaimWritingSQL
	}
	sd, err := c.Prepare(ctx, q, q)
	if err != nil {
		return 0, 0, 0, false, nil, err
	}
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(c.TypeMap(), sd, []any{ids, cands, owners, targets, skips, h.RoomIDs, h.RoomN, h.HoldPerSlot, h.Free,
		h.WorkerID, h.Lease.String(), payloads, preOrds, preSubs, preIDs,
		answers.Started, answers.Durations, answers.Codes, answers.Responses}); err != nil {
		return 0, 0, 0, false, nil, fmt.Errorf("encoding the fan-out: %w", err)
	}
	p := c.PgConn().StartPipeline(ctx)
	p.SendQueryStatement(sd, eqb.ParamValues, eqb.ParamFormats, eqb.ResultFormats)
	p.SendFlushRequest()
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		_ = p.Close()
		return 0, 0, 0, false, nil, err
	}
	var absent []int64
	claimed, err := f.readClaimed(p, c.TypeMap(), events, &created, &pending, &absent)
	if err != nil {
		// The statement failed: its transaction is rolled back at the
		// Sync. Read up to it so the connection can be used again.
		_ = p.Close()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code != "23503" {
			// Prepared here by name, so pgx's statement cache does not
			// renew it: a plan a schema change made stale ("cached plan
			// must not change result type") would fail every retry.
			_ = c.Deallocate(ctx, q)
		}
		return 0, 0, 0, false, nil, err
	}
	var confirm *dispatch.Commit
	if len(claimed) > 0 {
		confirm = dispatch.NewCommit()
	}
	if !fanoutStart.IsZero() {
		for i := range claimed {
			claimed[i].Stages.FanoutStart = fanoutStart
		}
	}
	if err := h.Accept(ctx, claimed, confirm); err != nil {
		// The deliveries are claimed: their lease runs out and they are
		// sent then. Fan-out itself goes on.
		f.log.Warn().Err(err).Msg("handing deliveries to the dispatcher")
	}
	released = true
	commit = func() error {
		defer conn.Release()
		_, err := p.GetResults() // the Sync: the commit
		if cerr := p.Close(); err == nil {
			err = cerr
		}
		if err == nil && !fanoutStart.IsZero() {
			committed := time.Now()
			for i := range claimed {
				claimed[i].Stages.FanoutCommit = committed
			}
		}
		if confirm != nil {
			confirm.Resolve(err)
		}
		pre.Resolve(err, absent)
		if err != nil {
			return fmt.Errorf("committing: %w", err)
		}
		return nil
	}
	return created, pending, len(claimed), true, commit, nil
}

// readClaimed reads the fan-out statement's rows: the counts, and one row
// per delivery it claimed, described from the events in memory.
func (f *Fanout) readClaimed(p *pgconn.Pipeline, m *pgtype.Map, events []outbox.Event, created, pending *int64, absent *[]int64) ([]dispatch.Claimed, error) {
	res, err := p.GetResults()
	if err != nil {
		return nil, err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		return nil, fmt.Errorf("fan-out: unexpected pipeline result %T", res)
	}
	tracing := f.cfg.Dispatcher.Tracing()
	byID := make(map[string]*outbox.Event, len(events))
	for i := range events {
		byID[events[i].EventID] = &events[i]
	}
	fields := rr.FieldDescriptions()
	var claimed []dispatch.Claimed
	var scanErr error
	for rr.NextRow() && scanErr == nil {
		var deliveryID, subID *int64
		var eventID *string
		var updated *time.Time
		var notified int64
		// The LEFT JOIN gives one row of NULLs when nothing was claimed.
		dst := []any{created, pending, &notified, absent, &deliveryID, &subID, &eventID, &updated}
		vals := rr.Values()
		if len(vals) != len(dst) {
			scanErr = fmt.Errorf("fan-out returned %d columns, want %d", len(vals), len(dst))
			break
		}
		for i := range dst {
			if err := m.Scan(fields[i].DataTypeOID, fields[i].Format, vals[i], dst[i]); err != nil {
				scanErr = fmt.Errorf("reading claimed delivery: %w", err)
				break
			}
		}
		if scanErr != nil || deliveryID == nil {
			continue
		}
		ev := byID[*eventID]
		if ev == nil {
			scanErr = fmt.Errorf("claimed delivery %d for event %s not in the batch", *deliveryID, *eventID)
			break
		}
		claimed = append(claimed, dispatch.Claimed{
			DeliveryID: *deliveryID, SubscriptionID: *subID, SubscriptionUpdatedAt: *updated,
			EventID: ev.EventID, EventType: ev.Type, Owner: ev.Owner, Key: ev.Key,
			Payload: ev.Payload, Headers: ev.Headers, CreatedAt: ev.CreatedAt,
		})
		if tracing {
			claimed[len(claimed)-1].Stages = &dispatch.Stages{Decoded: ev.DecodedAt}
		}
	}
	if _, err := rr.Close(); err != nil {
		return nil, err
	}
	return claimed, scanErr
}

// freshEvents describes, for the dispatcher to send at once, the events of
// a batch no earlier session can have handed over (outbox.Event.Fresh);
// a targeted event (the test button) is not among them.
func freshEvents(events []outbox.Event, cands []string) []dispatch.FreshEvent {
	var fresh []dispatch.FreshEvent
	for i := range events {
		ev := &events[i]
		if !ev.Fresh || ev.TargetSubscriptionID != nil {
			continue
		}
		if fresh == nil {
			fresh = make([]dispatch.FreshEvent, 0, len(events)-i)
		}
		fresh = append(fresh, dispatch.FreshEvent{
			Ord: int64(i + 1), Candidates: cands[i], EventID: ev.EventID, EventType: ev.Type,
			Owner: ev.Owner, Key: ev.Key, Skip: ev.SkipSubscriptionID,
			Payload: ev.Payload, Headers: ev.Headers, CreatedAt: ev.CreatedAt, Decoded: ev.DecodedAt,
		})
	}
	return fresh
}

// startSpans ends each event's capture span (it ran from the commit to
// now) and starts its fan-out span.
func (f *Fanout) startSpans(ctx context.Context, events []outbox.Event) []trace.Span {
	now := time.Now()
	spans := make([]trace.Span, len(events))
	for i := range events {
		ev := &events[i]
		attrs := trace.WithAttributes(attribute.String("relay.event_id", ev.EventID), attribute.String("relay.event_type", ev.Type))
		start := ev.CommitTime
		if start.IsZero() || start.After(now) {
			start = now
		}
		cctx := eventtrace.EventContext(ctx, ev.EventID, ev.Headers, eventtrace.StageCapture)
		_, capture := f.cfg.Spans.Start(cctx, "relay.capture", trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindConsumer), attrs,
			trace.WithAttributes(attribute.String("relay.commit_lsn", ev.CommitLSN.String())))
		capture.End(trace.WithTimestamp(now))
		fctx := eventtrace.EventContext(ctx, ev.EventID, ev.Headers, eventtrace.StageFanout)
		_, spans[i] = f.cfg.Spans.Start(fctx, "relay.fanout", trace.WithTimestamp(now), attrs)
	}
	return spans
}

// endSpans ends the fan-out spans of a chunk of n events that made
// created deliveries (or failed with err; the stream will hand the events
// again).
func endSpans(spans []trace.Span, n int, created int64, err error) {
	now := time.Now()
	for _, s := range spans {
		s.SetAttributes(attribute.Int("relay.fanout.num_events", n), attribute.Int64("relay.fanout.num_deliveries", created))
		if err != nil {
			s.SetStatus(codes.Error, err.Error())
		}
		s.End(trace.WithTimestamp(now))
	}
}

// eventTypeCandidates lists the patterns matching an event type, separated
// by spaces (patterns never hold one), as relay.event_type_candidates does
// in SQL: for a.b.c, "* a.* a.b.* a.b.c". Computing them here saves a SQL
// function call per event in fan-out.
func eventTypeCandidates(t string) string {
	var b strings.Builder
	b.Grow(2 + 2*len(t) + 8)
	b.WriteString("*")
	for i := 0; i < len(t); i++ {
		if t[i] == '.' {
			b.WriteByte(' ')
			b.WriteString(t[:i])
			b.WriteString(".*")
		}
	}
	b.WriteByte(' ')
	b.WriteString(t)
	return b.String()
}

// parseUUID reads a UUID in its canonical text form
// (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, any case), as the stream decodes
// outbox.event_id. It reports false for anything else.
func parseUUID(s string) (u [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		i += 2
		j++
	}
	return u, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
