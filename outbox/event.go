// Package outbox streams committed rows of relay.outbox through a logical
// replication slot (pgoutput) and hands them, in commit order, to a Handler.
// It acknowledges to the slot only the end LSN of transactions the handler
// has made durable, so a crash at any point replays, never loses.
//
// The package knows nothing of subscriptions or delivery: it defines the
// Handler interface it calls and imports nothing of sink or subscriptions.
package outbox

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
)

// Event is one committed row of relay.outbox.
type Event struct {
	// ID is the outbox row's bigint identity.
	ID int64
	// EventID is the row's uuid (text form); receivers see it as webhook-id.
	EventID string
	Type    string
	Owner   *string
	Key     *string
	// Payload is the JSON object exactly as PostgreSQL rendered it.
	Payload []byte
	// Headers is the optional JSON object of extra headers, nil when NULL.
	Headers   []byte
	CreatedAt time.Time
	// TargetSubscriptionID sends the event to that subscription only.
	TargetSubscriptionID *int64
	// SkipSubscriptionID keeps the event from that subscription.
	SkipSubscriptionID *int64
	// CommitLSN and CommitTime are those of the event's transaction.
	CommitLSN  pglogrepl.LSN
	CommitTime time.Time
	// Fresh reports that the event committed after this stream's session
	// connected (its commit is at or past the server's flushed WAL then):
	// no earlier run of relay, nor an earlier session of this one, can
	// have handed it to a handler, so it has no deliveries yet. Events
	// replayed from the slot's confirmed position are not fresh. Fan-out
	// sends fresh events before writing their deliveries (see
	// sink/dispatch.Presend); the others may be replays and go through
	// the table.
	Fresh bool
	// DecodedAt is when the stream decoded the event, set only when
	// Config.StampDecode asks for it (relay bench's latency breakdown).
	DecodedAt time.Time
}

// Handler makes events durable, typically by writing deliveries. The stream
// acknowledges a transaction to the slot only after HandleEvents returned nil
// for its last events, so an implementation must not return nil before its
// writes have committed. Events may be handed again after a crash or a
// reconnect; the handler must absorb duplicates.
type Handler interface {
	HandleEvents(ctx context.Context, events []Event) error
}

// PipelinedHandler is a Handler that may return before its last commit is
// confirmed, so that the stream hands the next events over while that
// commit's WAL is flushed (at low rates, waiting for it idled the stream
// for half of each event's way through relay). The stream still
// acknowledges a transaction only once every commit up to its last events
// is confirmed, in order, and it waits for the oldest before starting
// more than MaxOverlapped, or more than MaxOverlappedBytes of events.
type PipelinedHandler interface {
	Handler
	// StartEvents begins handling events. When it returns nil, durable
	// (when not nil) receives exactly one value once the writes have
	// committed (nil) or failed (the stream then reconnects and replays
	// from its acknowledged position); a nil durable means they have
	// committed already. Calls are not concurrent; an implementation
	// decides itself which of its writes may overlap the next call's.
	StartEvents(ctx context.Context, events []Event) (durable <-chan error, err error)
}

// MessageHandler is a Handler that also reads the logical decoding
// messages written with pg_logical_emit_message(true, prefix, content)
// whose prefix is in MessagePrefixes. A transactional message is decoded
// with its transaction, once it has committed, in commit order with the
// events: HandleMessage is called in the stream's goroutine before any
// event of a later transaction is handed over, which is what tells
// relay, in the WAL's own order, that its subscriptions changed (see
// sink/dispatch/presend.go).
type MessageHandler interface {
	Handler
	MessagePrefixes() []string
	// HandleMessage must not block: it runs between two events.
	HandleMessage(m Message)
}

// Message is a logical decoding message of a committed transaction.
type Message struct {
	Prefix string
	// Content is the handler's to keep.
	Content []byte
	// LSN is where the message is in the WAL.
	LSN pglogrepl.LSN
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, events []Event) error

// HandleEvents calls f.
func (f HandlerFunc) HandleEvents(ctx context.Context, events []Event) error { return f(ctx, events) }

// columnIndex maps the outbox columns relay reads to their position in a
// relation message. Columns relay does not know (added by users) are ignored,
// so schema changes to relay.outbox do not break decoding.
type columnIndex struct {
	id, eventID, eventType, owner, key, payload, headers, createdAt, target, skip int
}

func newColumnIndex(rel *pglogrepl.RelationMessage) (columnIndex, error) {
	ci := columnIndex{-1, -1, -1, -1, -1, -1, -1, -1, -1, -1}
	for i, c := range rel.Columns {
		switch c.Name {
		case "id":
			ci.id = i
		case "event_id":
			ci.eventID = i
		case "event_type":
			ci.eventType = i
		case "owner":
			ci.owner = i
		case "key":
			ci.key = i
		case "payload":
			ci.payload = i
		case "headers":
			ci.headers = i
		case "created_at":
			ci.createdAt = i
		case "target_subscription_id":
			ci.target = i
		case "skip_subscription_id":
			ci.skip = i
		}
	}
	if ci.eventID < 0 || ci.eventType < 0 || ci.payload < 0 {
		return ci, fmt.Errorf("relation %s.%s lacks event_id, event_type or payload", rel.Namespace, rel.RelationName)
	}
	return ci, nil
}

// decoder turns pgoutput messages into events. It keeps the relation cache
// (relation messages arrive before the first row of a relation and after any
// change to it) and the transaction being read.
type decoder struct {
	relations map[uint32]relation
	inTx      bool
	commitLSN pglogrepl.LSN
	commitAt  time.Time
}

type relation struct {
	outbox bool
	cols   columnIndex
	name   string
}

func newDecoder() *decoder { return &decoder{relations: map[uint32]relation{}} }

// relation records a relation message. Only relay.outbox is decoded; other
// tables of the publication (there should be none) are skipped.
func (d *decoder) relation(m *pglogrepl.RelationMessage) error {
	r := relation{name: m.Namespace + "." + m.RelationName}
	if m.Namespace == "relay" && m.RelationName == "outbox" {
		cols, err := newColumnIndex(m)
		if err != nil {
			return err
		}
		r.outbox, r.cols = true, cols
	}
	d.relations[m.RelationID] = r
	return nil
}

func (d *decoder) begin(m *pglogrepl.BeginMessage) {
	d.inTx = true
	d.commitLSN = m.FinalLSN
	d.commitAt = m.CommitTime
}

// insert decodes one inserted row. ok is false for rows of other tables.
func (d *decoder) insert(m *pglogrepl.InsertMessage) (ev Event, ok bool, err error) {
	rel, known := d.relations[m.RelationID]
	if !known {
		return Event{}, false, fmt.Errorf("insert for unknown relation id %d (no relation message seen)", m.RelationID)
	}
	if !rel.outbox {
		return Event{}, false, nil
	}
	ev, err = decodeRow(rel.cols, m.Tuple)
	if err != nil {
		return Event{}, false, fmt.Errorf("decoding %s row: %w", rel.name, err)
	}
	ev.CommitLSN, ev.CommitTime = d.commitLSN, d.commitAt
	return ev, true, nil
}

func decodeRow(ci columnIndex, t *pglogrepl.TupleData) (Event, error) {
	if t == nil {
		return Event{}, fmt.Errorf("no tuple data")
	}
	col := func(i int) *pglogrepl.TupleDataColumn {
		if i < 0 || i >= len(t.Columns) {
			return nil
		}
		c := t.Columns[i]
		if c.DataType != pglogrepl.TupleDataTypeText {
			return nil
		}
		return c
	}
	str := func(i int) *string {
		if c := col(i); c != nil {
			s := string(c.Data)
			return &s
		}
		return nil
	}
	i64 := func(i int) (*int64, error) {
		c := col(i)
		if c == nil {
			return nil, nil
		}
		v, err := strconv.ParseInt(string(c.Data), 10, 64)
		if err != nil {
			return nil, err
		}
		return &v, nil
	}
	var ev Event
	if c := col(ci.eventID); c != nil {
		ev.EventID = string(c.Data)
	} else {
		return ev, fmt.Errorf("event_id is null")
	}
	if c := col(ci.eventType); c != nil {
		ev.Type = string(c.Data)
	} else {
		return ev, fmt.Errorf("event_type is null")
	}
	if c := col(ci.payload); c != nil {
		ev.Payload = bytes.Clone(c.Data)
	} else {
		return ev, fmt.Errorf("payload is null")
	}
	if c := col(ci.headers); c != nil {
		ev.Headers = bytes.Clone(c.Data)
	}
	ev.Owner, ev.Key = str(ci.owner), str(ci.key)
	if id, err := i64(ci.id); err != nil {
		return ev, fmt.Errorf("id: %w", err)
	} else if id != nil {
		ev.ID = *id
	}
	var err error
	if ev.TargetSubscriptionID, err = i64(ci.target); err != nil {
		return ev, fmt.Errorf("target_subscription_id: %w", err)
	}
	if ev.SkipSubscriptionID, err = i64(ci.skip); err != nil {
		return ev, fmt.Errorf("skip_subscription_id: %w", err)
	}
	if c := col(ci.createdAt); c != nil {
		if ev.CreatedAt, err = parseTimestamptz(string(c.Data)); err != nil {
			return ev, fmt.Errorf("created_at: %w", err)
		}
	}
	return ev, nil
}

// parseTimestamptz reads PostgreSQL's text form of timestamptz in the ISO
// date style ("2026-11-23 14:08:24.818802+00" or "+05:30").
func parseTimestamptz(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07:00:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unreadable timestamp %q", s)
}
