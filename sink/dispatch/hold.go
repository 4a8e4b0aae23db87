package dispatch

import (
	"math"
	"time"
)

// subState is what this relay holds for one subscription.
type subState struct {
	queue       []*job // claimed, waiting for a slot, oldest first
	sending     int    // requests in flight
	held        int    // claimed and not yet recorded (queued included)
	maxInFlight int
	runnable    bool // listed in Dispatcher.runnable
	// rate is the pace of finished requests (per second, decaying with
	// rateTau), as of rateAt; zero rateAt means none finished yet.
	rate   float64
	rateAt time.Time
	// flow is the subscription's flow control as this relay holds it.
	flow flowState
}

// Holding per subscription: about holdTime of its pace, within
// [minHoldPerSlot, maxHoldPerSlot] × max_in_flight.
const (
	rateTau        = time.Second
	holdTime       = 4 * time.Second
	minHoldPerSlot = 4
	maxHoldPerSlot = 4096
	idleForget     = 30 * time.Second
)

func (d *Dispatcher) subLocked(id int64) *subState {
	st := d.subs[id]
	if st == nil {
		st = &subState{maxInFlight: 1}
		d.subs[id] = st
	}
	return st
}

// forgetLocked drops an idle subscription's state once its pace is old.
func (d *Dispatcher) forgetLocked(id int64, st *subState) bool {
	if st.held <= 0 && st.sending <= 0 && len(st.queue) == 0 && !st.runnable && st.flow.slots == 0 &&
		!time.Now().Before(st.flow.holdUntil) &&
		(st.rateAt.IsZero() || time.Since(st.rateAt) > idleForget) {
		delete(d.subs, id)
		return true
	}
	return false
}

// holdCapLocked is how many deliveries this relay may hold for st.
func (d *Dispatcher) holdCapLocked(st *subState, now time.Time) int {
	if st.rateAt.IsZero() {
		return st.maxInFlight * d.cfg.HoldPerSlot
	}
	rate := st.rate * math.Exp(-now.Sub(st.rateAt).Seconds()/rateTau.Seconds())
	c := int(rate * holdTime.Seconds())
	return min(max(c, st.maxInFlight*minHoldPerSlot), st.maxInFlight*maxHoldPerSlot)
}

// enqueueLocked takes a claimed job into this relay's hands and starts it
// if a slot is free.
func (d *Dispatcher) enqueueLocked(j *job) {
	st := d.subLocked(j.subID)
	if j.maxInFlight > 0 {
		st.maxInFlight = j.maxInFlight
	}
	st.flow.rateLimited = j.rateLimited
	d.held++
	st.held++
	if j.probe {
		// An open circuit's probe goes first: nothing else may go.
		st.queue = append([]*job{j}, st.queue...)
	} else {
		st.queue = append(st.queue, j)
	}
	d.markRunnableLocked(j.subID, st)
	d.pumpLocked()
}

func (d *Dispatcher) markRunnableLocked(id int64, st *subState) {
	if !st.runnable && len(st.queue) > 0 && d.mayStartLocked(st, st.queue[0], time.Now()) {
		st.runnable = true
		d.runnable = append(d.runnable, id)
	}
}

// pumpLocked starts queued jobs while slots are free, one subscription
// after another so that a big backlog does not starve the others.
func (d *Dispatcher) pumpLocked() {
	now := time.Now()
	for !d.stopping && d.inflight < d.cfg.Concurrency && len(d.runnable) > 0 {
		id := d.runnable[0]
		d.runnable = d.runnable[1:]
		st := d.subs[id]
		if st == nil {
			continue
		}
		st.runnable = false
		if len(st.queue) == 0 || !d.mayStartLocked(st, st.queue[0], now) {
			continue
		}
		j := st.queue[0]
		if st.flow.rateLimited {
			st.flow.tokens--
		}
		st.queue[0] = nil
		st.queue = st.queue[1:]
		st.sending++
		st.flow.busyAt = now
		d.inflight++
		d.jobs <- j // never blocks: the channel holds at most inflight jobs
		d.markRunnableLocked(id, st)
	}
}

// sentLocked frees the slot of a job whose request is over.
func (d *Dispatcher) sentLocked(j *job, now time.Time) {
	d.inflight--
	if st := d.subs[j.subID]; st != nil {
		st.sending--
		st.flow.busyAt = now
		if !st.rateAt.IsZero() {
			st.rate *= math.Exp(-now.Sub(st.rateAt).Seconds() / rateTau.Seconds())
		}
		st.rate += 1 / rateTau.Seconds()
		st.rateAt = now
		d.markRunnableLocked(j.subID, st)
	}
	d.pumpLocked()
}

// recordedLocked lets go of recorded jobs and says whether the claim loop
// should look for more: it found work last time, and this relay now holds
// at most half of what it may, overall or for one of these subscriptions.
func (d *Dispatcher) recordedLocked(batch []*result) bool {
	wake := false
	now := time.Now()
	for _, r := range batch {
		d.held--
		if r.requeue {
			d.more = true // handed back: claimable again
		}
		st := d.subs[r.job.subID]
		if st == nil {
			continue
		}
		st.held--
		if st.held*2 <= d.holdCapLocked(st, now) {
			wake = true
		}
		d.forgetLocked(r.job.subID, st)
	}
	return d.more && (wake || d.held*2 <= d.cfg.MaxHeld)
}

// roomLocked lists, per subscription this relay knows, how many more
// deliveries it may hold for it (possibly none or fewer than none); the
// claim gives the others max_in_flight × HoldPerSlot.
func (d *Dispatcher) roomLocked() ([]int64, []int32) {
	now := time.Now()
	ids := make([]int64, 0, len(d.subs))
	ns := make([]int32, 0, len(d.subs))
	for id, st := range d.subs {
		if d.forgetLocked(id, st) {
			continue
		}
		ids = append(ids, id)
		ns = append(ns, int32(d.holdCapLocked(st, now)-st.held))
	}
	return ids, ns
}

func (d *Dispatcher) setMore(v bool) {
	d.mu.Lock()
	d.more = v
	d.mu.Unlock()
}
