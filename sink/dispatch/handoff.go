package dispatch

import (
	"context"
	"fmt"
	"time"
)

// Handoff is a reservation a fan-out makes before inserting deliveries:
// while it holds one, it may insert up to Free deliveries already claimed
// for this dispatcher ('delivering', locked by WorkerID, with the lease)
// and hand them over in memory once committed, which saves the claim's
// round trip and re-reading the events. Every Handoff ends with exactly
// one call of Accept or Cancel.
type Handoff struct {
	// Free is the most deliveries the fan-out may claim in all.
	Free int
	// RoomIDs and RoomN give, for each subscription this dispatcher holds
	// deliveries of, how many more it may take (possibly none, or fewer
	// than none); other subscriptions get max_in_flight × HoldPerSlot.
	RoomIDs     []int64
	RoomN       []int32
	HoldPerSlot int
	// WorkerID is the locked_by of a claimed delivery, and Lease what its
	// locked_until adds to the subscription's timeout.
	WorkerID string
	Lease    time.Duration

	d         *Dispatcher
	settings  Settings
	claimedAt time.Time
}

// ReserveHandoff returns a reservation, or nil when nothing may be handed
// over now: the dispatcher is not running, stopping or full, the relay is
// paused, or the global window or an absence day holds deliveries.
func (d *Dispatcher) ReserveHandoff(ctx context.Context) *Handoff {
	if !d.started.Load() {
		return nil
	}
	settings, err := d.currentSettings(ctx, false)
	if err != nil {
		return nil
	}
	now := d.cfg.Now()
	if at, paused := settings.Gate.NextSendTime(now, nil, false); paused || at.After(now) {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	free := d.cfg.MaxHeld - d.held
	if d.stopping || free <= 0 {
		return nil
	}
	h := &Handoff{
		Free: free, HoldPerSlot: d.cfg.HoldPerSlot, WorkerID: d.cfg.WorkerID, Lease: d.cfg.LeaseMargin,
		d: d, settings: settings, claimedAt: time.Now(),
	}
	h.RoomIDs, h.RoomN = d.roomLocked()
	d.handoffs.Add(1)
	return h
}

// Claimed is a delivery a fan-out inserted claimed under a Handoff, with
// the event it carries.
type Claimed struct {
	DeliveryID, SubscriptionID int64
	// SubscriptionUpdatedAt is the subscription's updated_at as the insert
	// saw it: settings cached from before a change are read again.
	SubscriptionUpdatedAt time.Time

	EventID, EventType string
	Owner, Key         *string // nil for SQL NULL
	Payload            []byte  // the event's jsonb, as text
	Headers            []byte  // the event's custom headers (jsonb text), nil for none
	CreatedAt          time.Time

	// Stages holds the clock points fan-out took, when the dispatcher
	// traces (Dispatcher.Tracing); nil otherwise.
	Stages *Stages
}

// Accept takes the deliveries claimed under h and ends the reservation.
// commit is the outcome of their transaction when it is still to be
// confirmed (see Commit), nil when they are committed already. On error
// (their subscriptions could not be read) they stay leased to this relay
// and are sent when the lease ends, or handed back at Stop: late, never
// lost.
func (h *Handoff) Accept(ctx context.Context, claimed []Claimed, commit *Commit) error {
	d := h.d
	defer d.handoffs.Done()
	if len(claimed) == 0 {
		return nil
	}
	jobs := make([]*job, len(claimed))
	all := make([]job, len(claimed))
	want := map[int64]time.Time{}
	for i := range claimed {
		c := &claimed[i]
		all[i] = job{
			deliveryID: c.DeliveryID, subID: c.SubscriptionID,
			eventID: c.EventID, eventType: c.EventType, owner: c.Owner, key: c.Key,
			payload: c.Payload, eventHeaders: c.Headers, eventCreatedAt: c.CreatedAt,
			stages: c.Stages, commit: commit,
		}
		jobs[i] = &all[i]
		want[c.SubscriptionID] = c.SubscriptionUpdatedAt
	}
	// Not cancelled with ctx: the deliveries are committed and claimed, and
	// reading their subscriptions is short.
	ctx = context.WithoutCancel(ctx)
	filled, err := d.fillJobs(ctx, d.cfg.Pool, jobs, want)
	if err != nil {
		return fmt.Errorf("reading subscriptions of %d handed-over deliveries (they are sent when their lease ends): %w", len(jobs), err)
	}
	return d.admit(ctx, filled, h.settings, h.claimedAt, commit)
}

// Cancel ends a reservation under which nothing was claimed.
func (h *Handoff) Cancel() { h.d.handoffs.Done() }

// Commit is the outcome, still to come, of the transaction that inserted
// deliveries handed over under a Handoff. Fan-out hands them over as soon
// as its statement has returned their rows, before the commit is
// confirmed, so a request does not wait for the commit's WAL flush; the
// attempt is recorded only once the commit is confirmed (a delivery row
// not yet committed cannot be updated). When the commit fails (the server
// died), the deliveries do not exist: their attempts are dropped, and the
// stream, which acknowledges the WAL only after a confirmed commit,
// replays the events, so they are sent again with the same webhook-id.
// That is the duplicate around a crash that at-least-once allows.
type Commit struct {
	done chan struct{}
	err  error
	// absent are deliveries sent ahead (Presend) that the statement did
	// not write: a delivery of the same event and subscription existed.
	absent map[int64]struct{}
}

// NewCommit returns a commit still to be confirmed.
func NewCommit() *Commit { return &Commit{done: make(chan struct{})} }

// Resolve confirms the commit (err nil) or reports that it failed. It is
// called exactly once.
func (c *Commit) Resolve(err error) { c.resolve(err, nil) }

func (c *Commit) resolve(err error, absent []int64) {
	c.err = err
	if len(absent) > 0 {
		c.absent = make(map[int64]struct{}, len(absent))
		for _, id := range absent {
			c.absent[id] = struct{}{}
		}
	}
	close(c.done)
}

// wait returns once the commit is resolved, with its error.
func (c *Commit) wait() error {
	<-c.done
	return c.err
}

// wrote waits for the commit and reports whether it wrote delivery id.
func (c *Commit) wrote(id int64) bool {
	if c.wait() != nil {
		return false
	}
	_, missing := c.absent[id]
	return !missing
}
