package fanout

import (
	"context"
	"time"

	"github.com/pgoutbox/relay/outbox"
	"github.com/pgoutbox/relay/sink/dispatch"
)

// Writing behind.
//
// A chunk whose events were all sent ahead (dispatch.Presend, Complete)
// hands nothing over that waits for its statement: the requests are out.
// Its statement is therefore not run at once. The chunks that arrive
// within WriteBehind of the first join it, and one statement writes them
// all: the deliveries whose success is back by then are inserted
// finished, with their attempt (one write of the row instead of an
// insert and the recorder's update), the others claimed as usual. The
// statement costs PostgreSQL about the same for one event as for ten. Meanwhile the stream goes on decoding and sending: a stream
// blocked in the wait would hold the next events back, which is the
// latency presend removes.
//
// What DESIGN §2 needs still holds: the stream acknowledges each chunk
// only once the group's statement has committed (the channel writeBehind
// returns), and an attempt is recorded only once its row is (a failed
// statement drops them, and the events are replayed and sent again).
// Statements keep the order of their events: a group runs its statement
// only after the group before it, and a chunk written at once waits for
// the group in progress (awaitBehind).

// behindGroup is the chunks one statement writes behind.
type behindGroup struct {
	// Under Fanout.mu until the group closes.
	events   []outbox.Event
	cands    []string // the events' candidates (candidatesOf)
	handoffs []*dispatch.Handoff
	pres     []*dispatch.Presend
	offsets  []int64 // where each chunk's events start in events
	durables []chan error
	sent     int // deliveries sent ahead, over all chunks

	deadline time.Time
	// written is closed once the statement has returned and, when it
	// left deliveries pending, committed: a later statement may run.
	written chan struct{}
}

// writeBehind adds a chunk sent ahead to the group gathering, or starts
// one, and returns the channel that receives the outcome of the
// statement that writes it.
func (f *Fanout) writeBehind(ctx context.Context, events []outbox.Event, cands []string, h *dispatch.Handoff, pre *dispatch.Presend) <-chan error {
	durable := make(chan error, 1) // never blocks the group
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.gathering
	if g == nil || g.sent+pre.Len() > chunkDeliveries {
		g = &behindGroup{deadline: time.Now().Add(f.cfg.WriteBehind), written: make(chan struct{})}
		go f.runBehind(ctx, g, f.last)
		f.gathering, f.last = g, g
	}
	g.offsets = append(g.offsets, int64(len(g.events)))
	// The stream reuses its slice of events, not what they point to.
	g.events = append(g.events, events...)
	g.cands = append(g.cands, cands...)
	g.handoffs = append(g.handoffs, h)
	g.pres = append(g.pres, pre)
	g.durables = append(g.durables, durable)
	g.sent += pre.Len()
	return durable
}

// runBehind gathers the group until its deadline and waits for the group
// before it, closes it, and writes it. Chunks go on joining while it
// waits for the group before it: under load, groups grow instead of
// queueing.
func (f *Fanout) runBehind(ctx context.Context, g, prev *behindGroup) {
	t := time.NewTimer(time.Until(g.deadline))
	<-t.C
	if prev != nil {
		<-prev.written
	}
	f.mu.Lock()
	if f.gathering == g {
		f.gathering = nil
	}
	f.mu.Unlock()
	// One reservation covers the statement's claims (what a subscription
	// made since the snapshot may match); the others end here.
	for _, h := range g.handoffs[1:] {
		h.Cancel()
	}
	pre := dispatch.MergePresends(g.pres, g.offsets)
	_, durable, err := f.write(ctx, g.events, columnsOf(g.events, g.cands), g.handoffs[0], pre, true)
	// Had it left deliveries pending, write would have committed first.
	close(g.written)
	f.mu.Lock()
	if f.last == g {
		f.last = nil
	}
	f.mu.Unlock()
	if err == nil && durable != nil {
		err = <-durable
	}
	for _, d := range g.durables {
		d <- err
	}
}

// awaitBehind waits until the statements of every group written behind
// have run (see runBehind).
func (f *Fanout) awaitBehind() {
	f.mu.Lock()
	g := f.last
	f.mu.Unlock()
	if g != nil {
		<-g.written
	}
}
