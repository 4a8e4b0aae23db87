package dispatch

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgoutbox/relay/sink/policy/classify"
)

// Sending before writing (presend).
//
// The fan-out statement that writes an event's deliveries costs about
// 0.4 ms on the 2-core benchmark, more than everything else on the way
// from the WAL to the receiver together. For a fresh event (one no earlier
// session can have handed over, outbox.Event.Fresh) and the subscriptions
// nothing holds back (enabled, no filter, no window, no ordering, no open
// circuit or hold), the dispatcher therefore sends at once, matching the
// event in memory against a snapshot of those subscriptions, with a
// delivery id taken ahead from the table's own sequence; fan-out writes
// those deliveries, claimed by this relay, with these ids, in the same
// statement as the others. The request and the write overlap.
//
// What this keeps of DESIGN §2:
//   - the slot is still acknowledged only once the delivery rows are
//     committed, so a crash before that replays the event (replays are not
//     fresh: they go through the table) and it is sent again with the same
//     webhook-id, the duplicate around a crash that at-least-once allows;
//   - an attempt is recorded only once its delivery row is committed (see
//     Commit); one whose row was not written is dropped with the event's
//     replay, as for a hand-over whose commit failed;
//   - what was sent is what the log shows: the deliveries sent ahead are
//     written whatever the subscription has become meanwhile.
//
// Fan-out writes such events behind (fanout/behind.go): a few
// milliseconds later, several hand-overs in one statement, and the
// deliveries whose success is back by then are inserted finished with
// their attempt (TakeAnswered), so the recorder writes nothing for them.
//
// The snapshot is only used while it is known to be current. Every change
// that decides whether a subscription gets an event (migration 000008)
// writes a logical decoding message into the WAL with its transaction
// (migration 000009): the stream decodes it in commit order with the
// events, and the snapshot is dropped (SubscriptionsChanged) before any
// event committed after the change is matched. The snapshot read again is
// kept only if it sees that transaction: logical decoding may hand a
// transaction over a moment before its rows are visible to other
// sessions. A notification on relay_subscriptions drops the snapshot too
// (a relay that does not hold the slot hears of changes that way), and no
// snapshot is used while the listener is not connected.
//
// The notification alone left a window: it reaches the listener after the
// commit, and an event committed meanwhile was matched by the snapshot
// from before (sent to a subscription just disabled, or to its former
// owner). TestSubscriptionChangesAreHeardInCommitOrder shows it with the
// notification held back; how often it happened in practice depends on
// how quickly the listener runs after the commit.

// maxPresendSubs bounds the subscriptions in the snapshot. Past it,
// events go through the table as before: a snapshot of many thousands
// of subscriptions read again on every change would cost more than the
// statement it saves.
const maxPresendSubs = 2000

// presendIDBatch is how many delivery ids are taken from the sequence at
// once; more are taken when fewer than half are left.
const presendIDBatch = 1024

// presendSub is a subscription fresh events may be sent to at once.
type presendSub struct {
	id        int64
	owner     *string
	heldUntil *time.Time
	info      *subInfo
}

// presendIndex is the snapshot: subscriptions by pattern.
type presendIndex struct {
	byPattern map[string][]*presendSub
	readAt    time.Time
	// complete: every enabled subscription is in it (none has a filter,
	// a window, ordering or an open circuit), so what it does not match
	// no subscription does.
	complete bool
}

// presender keeps the snapshot and the ids taken ahead.
type presender struct {
	mu sync.Mutex
	// index is nil while no current snapshot is known.
	index *presendIndex
	// gen moves on every notification: a snapshot read that started
	// before is not kept.
	gen uint64
	// listening: the listener is connected, so notifications arrive.
	listening bool
	// mustSee are the transactions (xid8, as text) of the subscription
	// changes the stream decoded: a snapshot is kept only when they are
	// all visible to it.
	mustSee []string
	ids     []int64
	kick    chan struct{}
	done    chan struct{}
}

// invalidate drops the snapshot (a subscription changed, or notifications
// may have been missed) and asks for a new one.
func (p *presender) invalidate(listening bool) {
	p.mu.Lock()
	p.gen++
	p.index = nil
	p.listening = listening
	p.mu.Unlock()
	p.wake()
}

// SubscriptionsChanged drops the snapshot because the stream decoded a
// change of subscriptions committed by transaction xid (the content of
// its relay.subscriptions message): the events decoded after it are
// matched by a snapshot that sees that change, or go through the table.
// It is called by fan-out in the stream's goroutine and does not block.
func (d *Dispatcher) SubscriptionsChanged(xid string) {
	p := &d.presend
	p.mu.Lock()
	p.gen++
	p.index = nil
	if xid != "" && !slices.Contains(p.mustSee, xid) {
		p.mustSee = append(p.mustSee, xid)
	}
	p.mu.Unlock()
	p.wake()
}

func (p *presender) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// presendSnapshotSQL reads the snapshot. Its first column says whether
// the statement sees every transaction of $2 (committed changes the stream
// decoded); the subscriptions follow, NULL when there are none.
const presendSnapshotSQL = `
SELECT v.seen, a.all_in, s.*
FROM (SELECT coalesce(bool_and(pg_visible_in_snapshot(x, pg_current_snapshot())), true) AS seen
      FROM unnest($2::text[]::xid8[]) AS x) AS v
CROSS JOIN (
    -- Whether the snapshot holds every enabled subscription: none has a
    -- filter, a window, ordering or an open circuit (true when there is
    -- no enabled subscription at all).
    SELECT NOT EXISTS (SELECT 1 FROM relay.subscriptions
                       WHERE enabled AND NOT (filter IS NULL AND window_start IS NULL AND ordering = 'none' AND circuit_opened_at IS NULL)) AS all_in
) AS a
LEFT JOIN LATERAL (
    SELECT id, event_types, owner, held_until
    FROM relay.subscriptions
    WHERE enabled AND filter IS NULL AND window_start IS NULL AND ordering = 'none' AND circuit_opened_at IS NULL
    LIMIT $1
) AS s ON true`

// unseenRetry is how soon a snapshot is read again when it did not yet see
// a change the stream decoded (visible within milliseconds).
const unseenRetry = time.Millisecond

// presendLoop keeps the snapshot current and ids in stock until ctx ends.
func (d *Dispatcher) presendLoop(ctx context.Context) {
	p := &d.presend
	defer close(p.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-timer.C:
		}
		unseen, err := d.presendRefresh(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("reading subscriptions to send fresh events at once (they go through the table meanwhile)")
		}
		next := subCacheTTL
		if unseen {
			next = unseenRetry
		}
		timer.Reset(next) // since Go 1.23, Reset drops a pending tick
	}
}

// presendRefresh takes ids when fewer than half a batch are left, and
// reads the snapshot again when it is missing or older than the
// subscription cache's TTL (which covers hand edits of columns that do
// not notify, such as url). unseen reports a snapshot not kept because it
// did not yet see a change the stream decoded: read it again soon.
func (d *Dispatcher) presendRefresh(ctx context.Context) (unseen bool, err error) {
	p := &d.presend
	p.mu.Lock()
	needIDs := len(p.ids) < presendIDBatch/2
	gen, listening := p.gen, p.listening
	stale := p.index == nil || time.Since(p.index.readAt) >= subCacheTTL
	mustSee := slices.Clone(p.mustSee)
	p.mu.Unlock()
	if needIDs {
		var ids []int64
		rows, err := d.cfg.Pool.Query(ctx, `SELECT nextval(pg_get_serial_sequence('relay.deliveries', 'id')) FROM generate_series(1, $1)`, presendIDBatch)
		if err != nil {
			return false, fmt.Errorf("taking delivery ids: %w", err)
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return false, fmt.Errorf("taking delivery ids: %w", err)
			}
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			return false, fmt.Errorf("taking delivery ids: %w", err)
		}
		p.mu.Lock()
		p.ids = append(p.ids, ids...)
		p.mu.Unlock()
	}
	if !stale || !listening {
		return false, nil
	}
	readAt := time.Now()
	if mustSee == nil {
		mustSee = []string{} // an empty array, not NULL
	}
	rows, err := d.cfg.Pool.Query(ctx, presendSnapshotSQL, maxPresendSubs+1, mustSee)
	if err != nil {
		return false, fmt.Errorf("reading subscriptions: %w", err)
	}
	var subs []*presendSub
	var patterns [][]string
	complete, seen := false, false
	want := map[int64]time.Time{}
	for rows.Next() {
		s := &presendSub{}
		var id *int64
		var types []string
		if err := rows.Scan(&seen, &complete, &id, &types, &s.owner, &s.heldUntil); err != nil {
			rows.Close()
			return false, fmt.Errorf("reading subscriptions: %w", err)
		}
		if id == nil {
			// None in the snapshot: no enabled subscription (complete),
			// or every enabled one is held back (not complete).
			break
		}
		s.id = *id
		subs = append(subs, s)
		patterns = append(patterns, types)
		// A zero updated_at matches no cached entry: the snapshot reads
		// every subscription's settings again, for a hand edit that
		// notified without moving updated_at.
		want[s.id] = time.Time{}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("reading subscriptions: %w", err)
	}
	if !seen {
		return true, nil
	}
	idx := &presendIndex{byPattern: map[string][]*presendSub{}, readAt: readAt, complete: complete}
	if len(subs) > maxPresendSubs {
		// Too many to keep in memory: an empty snapshot, every event goes
		// through the table.
		subs, idx.complete = nil, false
	}
	if len(subs) > 0 {
		infos, err := d.info.get(ctx, d.cfg.Pool, want)
		if err != nil {
			return false, err
		}
		for i, s := range subs {
			if s.info = infos[s.id]; s.info == nil {
				continue // deleted meanwhile
			}
			for _, pat := range patterns[i] {
				idx.byPattern[pat] = append(idx.byPattern[pat], s)
			}
		}
	}
	p.mu.Lock()
	if p.gen == gen {
		p.index = idx
	}
	// The changes this read saw need not be seen again.
	p.mustSee = slices.DeleteFunc(p.mustSee, func(x string) bool { return slices.Contains(mustSee, x) })
	p.mu.Unlock()
	return false, nil
}

// mayMatch reports whether a subscription of the snapshot has one of the
// events' patterns (owners aside).
func (idx *presendIndex) mayMatch(events []FreshEvent) bool {
	for i := range events {
		for pat := range strings.SplitSeq(events[i].Candidates, " ") {
			if len(idx.byPattern[pat]) > 0 {
				return true
			}
		}
	}
	return false
}

// FreshEvent is an event fan-out may have sent before writing its
// deliveries (see outbox.Event.Fresh).
type FreshEvent struct {
	// Ord is its place in the fan-out statement's batch, from 1.
	Ord int64
	// Candidates are the patterns its type matches, space-separated
	// ("* a.* a.b"), as fan-out computes them.
	Candidates         string
	EventID, EventType string
	Owner, Key         *string
	// Skip keeps the event from that subscription.
	Skip             *int64
	Payload, Headers []byte
	CreatedAt        time.Time
	// Decoded is when the stream decoded it (tracing only).
	Decoded time.Time
}

// Presend is what a Handoff sent ahead of the fan-out statement: the
// deliveries that statement must write, claimed by this relay, with these
// ids, whatever it matches itself.
type Presend struct {
	// Ords, SubIDs and IDs give each delivery's event (its Ord), its
	// subscription and its id.
	Ords, SubIDs, IDs []int64

	// Complete: the snapshot held every enabled subscription and none was
	// left out for want of room or ids, so the fan-out statement will
	// most likely hand nothing more over and may wait for answers.
	Complete bool

	commit *Commit
	stages []*Stages
	jobs   []*job // parallel to IDs
	// parts, for one merged from several (MergePresends), are those.
	parts     []*Presend
	partStart []int // where each part's deliveries start in IDs
}

// MergePresends is one Presend for a statement that writes the events
// of several chunks, one after the other: the events of parts[i] start
// at offsets[i] in it. Resolving it resolves them all.
func MergePresends(parts []*Presend, offsets []int64) *Presend {
	if len(parts) == 1 && offsets[0] == 0 {
		return parts[0]
	}
	m := &Presend{Complete: true, parts: parts}
	for i, p := range parts {
		m.partStart = append(m.partStart, len(m.IDs))
		for _, ord := range p.Ords {
			m.Ords = append(m.Ords, ord+offsets[i])
		}
		m.SubIDs = append(m.SubIDs, p.SubIDs...)
		m.IDs = append(m.IDs, p.IDs...)
		m.Complete = m.Complete && p.Complete
	}
	return m
}

// The states of a job sent ahead (job.aheadState).
const (
	aheadSending  = iota // its attempt has not ended
	aheadAnswered        // its result is waiting to be recorded
	aheadWritten         // fan-out writes it with the delivery
)

// Answers are the attempts of deliveries sent ahead that fan-out writes
// with the deliveries, finished: each slice is parallel to Presend.IDs,
// nil where the attempt is recorded as usual, and the slices are nil
// when nothing is taken.
type Answers struct {
	Started   []*time.Time
	Durations []*int32
	Codes     []*int32
	Responses []*string
	N         int
}

// TakeAnswered takes, for fan-out to write with their deliveries, the
// attempts sent ahead that have already succeeded: a success that set no
// hold and needs nothing but its row. The delivery is then inserted
// succeeded, with its attempt, in one statement, instead of inserted
// 'delivering' and updated by the recorder: one write of the row, four
// index entries and a commit fewer, and the recorder only counts it.
// Call it once, before the statement is sent; the recorder sees what was
// taken only once that statement's commit is resolved.
func (p *Presend) TakeAnswered() Answers {
	var a Answers
	if p == nil {
		return a
	}
	if p.parts != nil {
		for i, part := range p.parts {
			pa := part.TakeAnswered()
			if pa.N == 0 {
				continue
			}
			if a.N == 0 {
				n := len(p.IDs)
				a.Started, a.Durations, a.Codes, a.Responses = make([]*time.Time, n), make([]*int32, n), make([]*int32, n), make([]*string, n)
			}
			at := p.partStart[i]
			copy(a.Started[at:], pa.Started)
			copy(a.Durations[at:], pa.Durations)
			copy(a.Codes[at:], pa.Codes)
			copy(a.Responses[at:], pa.Responses)
			a.N += pa.N
		}
		return a
	}
	for i, j := range p.jobs {
		if j.aheadState.Load() != aheadAnswered {
			continue
		}
		r := &j.res
		rec := &r.rec
		if r.released || r.requeue || rec.Status != "succeeded" || rec.Verdict != classify.VerdictSucceeded ||
			rec.Hold > 0 || rec.Probe || rec.OrderingKey != nil || rec.Attempt != 1 {
			continue
		}
		if a.N == 0 {
			n := len(p.jobs)
			a.Started, a.Durations, a.Codes, a.Responses = make([]*time.Time, n), make([]*int32, n), make([]*int32, n), make([]*string, n)
		}
		j.aheadState.Store(aheadWritten)
		a.N++
		started := rec.StartedAt
		dur, code := int32(rec.Duration.Milliseconds()), int32(rec.StatusCode)
		a.Started[i], a.Durations[i], a.Codes[i] = &started, &dur, &code
		if rec.Response != "" {
			resp := rec.Response
			a.Responses[i] = &resp
		}
	}
	return a
}

// Len is how many deliveries were sent ahead.
func (p *Presend) Len() int {
	if p == nil {
		return 0
	}
	return len(p.IDs)
}

// Started notes when the fan-out statement was sent (tracing only).
func (p *Presend) Started(at time.Time) {
	if p == nil {
		return
	}
	for _, part := range p.parts {
		part.Started(at)
	}
	for _, s := range p.stages {
		s.FanoutStart = at
	}
}

// Resolve reports the fan-out statement's outcome: err when it did not
// commit, else the ids it did not write (a delivery of the same event and
// subscription existed). Their attempts are not recorded. It is called
// exactly once when Len > 0.
func (p *Presend) Resolve(err error, absent []int64) {
	if p == nil {
		return
	}
	for _, part := range p.parts {
		part.Resolve(err, absent)
	}
	if p.commit == nil {
		return
	}
	if err == nil {
		now := time.Now()
		for _, s := range p.stages {
			s.FanoutCommit = now
		}
	}
	p.commit.resolve(err, absent)
}

// Presend sends at once, from the snapshot, the deliveries of fresh events
// to subscriptions nothing holds back, within the room h gives (which it
// takes from h, so the fan-out statement claims only what is left) and the
// ids in stock. When it sent nothing it returns nil, or, when the snapshot
// is complete and no subscription matches the events at all, an empty
// Presend that is Complete: fan-out then writes the events behind, with
// those it groups them with, instead of one statement per chunk for
// events that go nowhere.
func (h *Handoff) Presend(ctx context.Context, events []FreshEvent) *Presend {
	d := h.d
	p := &d.presend
	now := time.Now()
	p.mu.Lock()
	idx := p.index
	if idx != nil && p.listening && idx.complete && !idx.mayMatch(events) {
		// No subscription has a pattern of these events: nothing to
		// send, and no ids or room needed. The statement still runs
		// (behind), and matches what has changed since the snapshot.
		p.mu.Unlock()
		return &Presend{Complete: true}
	}
	if idx == nil || !p.listening || len(p.ids) == 0 || h.Free <= 0 || len(idx.byPattern) == 0 {
		low := len(p.ids) < presendIDBatch/2
		p.mu.Unlock()
		if low {
			p.wake()
		}
		return nil
	}
	room := map[int64]int{}
	for i, id := range h.RoomIDs {
		room[id] = int(h.RoomN[i])
	}
	out := &Presend{}
	var jobs []*job
	taken := 0
	complete, limited := idx.complete, false
	for i := range events {
		ev := &events[i]
		first := len(out.IDs) // this event's deliveries start here
		rest := ev.Candidates
		for rest != "" {
			if taken >= h.Free || taken >= len(p.ids) {
				limited = true
				break
			}
			pat := rest
			if sp := strings.IndexByte(rest, ' '); sp >= 0 {
				pat, rest = rest[:sp], rest[sp+1:]
			} else {
				rest = ""
			}
			for _, s := range idx.byPattern[pat] {
				if taken >= h.Free || taken >= len(p.ids) {
					limited = true
					break
				}
				if s.owner != nil && (ev.Owner == nil || *s.owner != *ev.Owner) {
					continue
				}
				if ev.Skip != nil && *ev.Skip == s.id {
					continue
				}
				if s.heldUntil != nil && s.heldUntil.After(now) {
					limited = true // the statement writes it held
					continue
				}
				// A subscription two of whose patterns match (* and a.*)
				// gets the event once.
				if slices.Contains(out.SubIDs[first:], s.id) {
					continue
				}
				r, known := room[s.id]
				if !known {
					r = s.info.maxInFlight * h.HoldPerSlot
				}
				if r <= 0 {
					room[s.id] = r
					limited = true
					continue
				}
				room[s.id] = r - 1
				id := p.ids[taken]
				taken++
				out.Ords = append(out.Ords, ev.Ord)
				out.SubIDs = append(out.SubIDs, s.id)
				out.IDs = append(out.IDs, id)
				j := &job{
					deliveryID: id, subID: s.id,
					eventID: ev.EventID, eventType: ev.EventType, owner: ev.Owner, key: ev.Key,
					payload: ev.Payload, eventHeaders: ev.Headers, eventCreatedAt: ev.CreatedAt,
				}
				s.info.fill(j, now)
				if d.cfg.Tracer != nil {
					j.stages = &Stages{Decoded: ev.Decoded}
					out.stages = append(out.stages, j.stages)
				}
				jobs = append(jobs, j)
			}
		}
	}
	p.ids = p.ids[taken:]
	low := len(p.ids) < presendIDBatch/2
	p.mu.Unlock()
	if low {
		p.wake()
	}
	if taken == 0 {
		if complete && !limited {
			return &Presend{Complete: true} // nothing matches (see above)
		}
		return nil
	}
	h.Free -= taken
	h.RoomIDs, h.RoomN = h.RoomIDs[:0], h.RoomN[:0]
	for id, r := range room {
		h.RoomIDs = append(h.RoomIDs, id)
		h.RoomN = append(h.RoomN, int32(r))
	}
	d.sentAhead.Add(int64(taken))
	out.commit = NewCommit()
	out.jobs, out.Complete = jobs, complete && !limited
	for _, j := range jobs {
		j.commit, j.sentAhead = out.commit, true
	}
	if err := d.admit(context.WithoutCancel(ctx), jobs, h.settings, h.claimedAt, out.commit); err != nil {
		// admit fails only settling deferred jobs, after the commit; the
		// leases cover them.
		d.log.Warn().Err(err).Msg("sending fresh deliveries")
	}
	return out
}

// SentAhead counts the deliveries this dispatcher sent before their row
// was written (Presend).
func (d *Dispatcher) SentAhead() int64 { return d.sentAhead.Load() }

// WrittenWithDelivery counts the attempts fan-out wrote with their
// delivery, finished (Presend.TakeAnswered), that have committed.
func (d *Dispatcher) WrittenWithDelivery() int64 { return d.writtenAhead.Load() }
