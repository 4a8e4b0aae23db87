package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/pgoutbox/relay/sink/policy/backpressure"
)

// Flow control across relays (issue 17). A subscription's limits are the
// endpoint's, so they hold for every relay together, through PostgreSQL:
//
//   - its max_in_flight is shared out by leases (relay.flow_leases): this
//     relay starts a request only within the share it leased, and a dead
//     relay's share ends with its lease;
//   - its rate_limit is a token bucket (relay.subscription_pace): each
//     request spends a token this relay was granted a moment before;
//   - a hold (held_until: a throttle window, an announced pause, an open
//     circuit) stops every relay: the claim skips the subscription, and
//     deliveries already held here wait.
//
// The flow loop asks relay.acquire_flow for shares and tokens in one
// statement for every subscription that needs some, renews leases before
// they end and gives back the shares of subscriptions gone idle. A
// subscription that sends steadily costs one statement per half lease,
// whatever its traffic.

const (
	// flowLeaseMargin is added to a subscription's timeout to form the
	// lease of its share: a request started within the lease ends within it.
	flowLeaseMargin = 10 * time.Second
	// flowRetry is how soon a relay asks again for a share it wanted and
	// did not get (another relay holds it).
	flowRetry = 200 * time.Millisecond
	// flowIdle is how long a subscription with nothing to send keeps its
	// share before giving it back.
	flowIdle = time.Second
	// tokenLife is how long granted tokens may wait to be spent; unspent
	// ones are lost, never saved up into a burst.
	tokenLife = 200 * time.Millisecond
	// handBackHold: a hold at least this long hands the deliveries waiting
	// here back to the database instead of keeping them.
	handBackHold = 2 * time.Second
)

// flowState is what this relay holds of a subscription's flow control.
type flowState struct {
	slots       int       // this relay's leased share of max_in_flight
	leaseUntil  time.Time // when the share's lease ends
	leaseFor    time.Duration
	tokens      int // granted tokens, to spend before tokensUntil
	tokensUntil time.Time
	nextTokenAt time.Time // when the bucket has a token again
	holdUntil   time.Time // no request but a probe before this
	circuit     bool      // the circuit is open: probes only
	failsInRow  int       // failed attempts here since the last success
	rateLimited bool
	// deniedAt is when the last ask got fewer slots than it wanted
	// (another relay holds them): asking again waits flowRetry from it.
	deniedAt time.Time
	// busyAt is the last moment this relay had a request of it in flight
	// or queued: the share is given back flowIdle after it.
	busyAt time.Time
}

// mayStartLocked reports whether st may start j now. When a share or a
// token is missing it asks the flow loop for one.
func (d *Dispatcher) mayStartLocked(st *subState, j *job, now time.Time) bool {
	if st.sending >= st.maxInFlight {
		return false
	}
	f := &st.flow
	if !j.probe && (f.circuit || now.Before(f.holdUntil)) {
		// Whoever set the hold woke the flow loop, which plans a pass at
		// its end.
		return false
	}
	if st.sending >= f.slots || !now.Add(j.timeout).Before(f.leaseUntil) {
		// Asked lately and not granted (another relay holds the share):
		// the flow loop asks again at its retry time, not at every pump.
		if now.Sub(f.deniedAt) >= flowRetry {
			d.wakeFlow()
		}
		return false
	}
	if f.rateLimited && (f.tokens <= 0 || now.After(f.tokensUntil)) {
		if !now.Before(f.nextTokenAt) {
			d.wakeFlow()
		}
		return false
	}
	return true
}

func (d *Dispatcher) wakeFlow() {
	select {
	case d.flowWake <- struct{}{}:
	default:
	}
}

func (d *Dispatcher) flowLoop(ctx context.Context) {
	defer close(d.flowDone)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.flowWake:
		case <-timer.C:
		}
		next, err := d.flowOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.log.Warn().Err(err).Msg("acquiring flow control shares")
			next = time.Now().Add(jitter(500 * time.Millisecond))
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(time.Until(next), time.Millisecond))
	}
}

// flowOnce asks for what the subscriptions held here need and returns
// when to look again.
func (d *Dispatcher) flowOnce(ctx context.Context) (time.Time, error) {
	now := time.Now()
	next := now.Add(time.Second)
	soon := func(t time.Time) {
		if t.After(now) && t.Before(next) {
			next = t
		}
	}
	var (
		ids                       []int64
		want, sending, wantTokens []int32
		leases                    []float64
	)
	d.mu.Lock()
	force := d.flowForce
	d.flowForce = false
	for id, st := range d.subs {
		f := &st.flow
		queued := len(st.queue)
		// With work queued it wants its whole max_in_flight (the others'
		// leases and the even split bound what it gets); without, only
		// what it is using.
		w := st.sending
		if queued > 0 {
			w = st.maxInFlight
		}
		if w > 0 {
			f.busyAt = now
		}
		held := now.Before(f.holdUntil)
		if held && queued > 0 {
			soon(f.holdUntil)
		}
		need := force && (f.slots > 0 || w > 0)
		if w > f.slots {
			if now.Sub(f.deniedAt) >= flowRetry {
				need = true
			} else {
				soon(f.deniedAt.Add(flowRetry))
			}
		}
		if f.slots > 0 {
			renewAt := f.leaseUntil.Add(-f.leaseFor / 2)
			if w == 0 && st.sending == 0 {
				// Idle since its last request: give it back. Idle at
				// this instant is not enough: between two requests a
				// steady sender has none in flight most of the time.
				renewAt = f.busyAt.Add(flowIdle)
			}
			if !now.Before(renewAt) {
				need = true
			} else {
				soon(renewAt)
			}
		}
		// Tokens only for requests that can start now: one held back for
		// want of a slot would go out later, bunched with newer ones.
		wt := 0
		room := f.slots - st.sending
		if f.slots == 0 {
			room = 1 // the first share comes with the first tokens
		}
		if f.rateLimited && queued > 0 && !held && room > 0 && (f.tokens <= 0 || now.After(f.tokensUntil)) {
			if now.Before(f.nextTokenAt) {
				soon(f.nextTokenAt)
			} else {
				wt = min(queued, room)
				need = true
			}
		}
		// A hold that ended lets queued jobs go.
		d.markRunnableLocked(id, st)
		if !need {
			continue
		}
		lease := flowLeaseMargin
		if queued > 0 {
			lease += st.queue[0].timeout
		} else {
			lease += 60 * time.Second
		}
		ids = append(ids, id)
		want = append(want, int32(w))
		sending = append(sending, int32(st.sending))
		wantTokens = append(wantTokens, int32(wt))
		leases = append(leases, lease.Seconds())
	}
	d.pumpLocked()
	d.mu.Unlock()
	if len(ids) == 0 {
		return next, nil
	}
	before := time.Now()
	rows, err := d.cfg.Pool.Query(ctx, `SELECT subscription_id, slots, tokens, next_token_at, held_until, circuit_open, lease_until, db_now
		FROM relay.acquire_flow($1, $2, $3, $4, $5, $6)`, d.cfg.WorkerID, ids, want, sending, wantTokens, leases)
	if err != nil {
		return next, fmt.Errorf("acquire_flow: %w", err)
	}
	type grant struct {
		id                          int64
		slots, tokens               int
		nextToken, heldUntil, lease *time.Time
		circuit                     bool
		dbNow                       time.Time
	}
	var grants []grant
	for rows.Next() {
		var g grant
		if err := rows.Scan(&g.id, &g.slots, &g.tokens, &g.nextToken, &g.heldUntil, &g.circuit, &g.lease, &g.dbNow); err != nil {
			rows.Close()
			return next, fmt.Errorf("acquire_flow: %w", err)
		}
		grants = append(grants, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return next, fmt.Errorf("acquire_flow: %w", err)
	}
	after := time.Now()
	asked := make(map[int64]int, len(ids)) // position in ids, want and leases
	for i, id := range ids {
		asked[id] = i
	}
	var handBack []*job
	d.mu.Lock()
	for _, g := range grants {
		st := d.subs[g.id]
		if st == nil {
			continue
		}
		f := &st.flow
		// Times the database gave are read on this relay's clock, from
		// the database's now at the time of the answer.
		local := func(t time.Time) time.Time { return after.Add(t.Sub(g.dbNow)) }
		f.slots = g.slots
		f.deniedAt = time.Time{}
		if int32(g.slots) < want[asked[g.id]] {
			f.deniedAt = after
		}
		if g.lease != nil {
			f.leaseFor = time.Duration(leases[asked[g.id]] * float64(time.Second))
			f.leaseUntil = before.Add(f.leaseFor) // a lease that began no earlier than before
		} else {
			f.leaseUntil, f.leaseFor = time.Time{}, 0
		}
		if g.tokens > 0 {
			f.tokens, f.tokensUntil = g.tokens, after.Add(tokenLife)
		}
		f.nextTokenAt = time.Time{}
		if g.nextToken != nil {
			f.nextTokenAt = local(*g.nextToken)
			soon(f.nextTokenAt)
		}
		if g.heldUntil != nil {
			if h := local(*g.heldUntil); h.After(f.holdUntil) {
				f.holdUntil = h
			}
		}
		f.circuit = g.circuit
		if g.circuit || time.Until(f.holdUntil) >= handBackHold {
			handBack = append(handBack, d.takeQueueLocked(st, false)...)
		}
		d.markRunnableLocked(g.id, st)
	}
	d.pumpLocked()
	d.mu.Unlock()
	d.handBack(handBack)
	return next, nil
}

// holdSubscription applies a hold the recorder wrote (zero until: the
// circuit closed, the hold is lifted).
func (d *Dispatcher) holdSubscription(subID int64, until time.Time, circuit bool) {
	d.mu.Lock()
	st := d.subs[subID]
	if st == nil {
		d.mu.Unlock()
		return
	}
	var back []*job
	if until.IsZero() {
		st.flow.holdUntil, st.flow.circuit = time.Time{}, false
	} else if until.After(st.flow.holdUntil) {
		st.flow.holdUntil = until
	}
	if circuit {
		st.flow.circuit = true
	}
	if circuit || time.Until(st.flow.holdUntil) >= handBackHold {
		back = d.takeQueueLocked(st, false)
	}
	d.markRunnableLocked(subID, st)
	d.pumpLocked()
	d.mu.Unlock()
	d.handBack(back)
	d.wakeFlow()
}

// holdAfterAnswerLocked holds st at once after an answer that asked for
// time, before the recorder writes the hold for every relay.
func (d *Dispatcher) holdAfterAnswerLocked(st *subState, r *result) {
	if r.released || r.requeue {
		return
	}
	h := r.rec.Hold
	switch r.rec.Outcome() {
	case "throttled":
		if h <= 0 {
			h = backpressure.Backoff(0)
		}
	case "succeeded":
		st.flow.failsInRow = 0
	default:
		// Enough failures in a row to open the circuit: stop sending the
		// backlog now rather than when the recorder has written them (a
		// fast-failing endpoint would see all of it meanwhile); the
		// recorder opens the circuit for every relay.
		st.flow.failsInRow++
		if t := d.settings.FailureAlertThreshold; t > 0 && st.flow.failsInRow >= t {
			h = max(h, time.Second)
		}
	}
	if h > 0 {
		if until := time.Now().Add(h); until.After(st.flow.holdUntil) {
			st.flow.holdUntil = until
			d.wakeFlow() // to plan a pass at the hold's end
		}
	}
}

// takeQueueLocked removes st's queued jobs (but probes, unless all).
func (d *Dispatcher) takeQueueLocked(st *subState, all bool) []*job {
	var out []*job
	kept := st.queue[:0]
	for _, j := range st.queue {
		if j.probe && !all {
			kept = append(kept, j)
		} else {
			out = append(out, j)
		}
	}
	clear(st.queue[len(kept):])
	st.queue = kept
	return out
}

// handBack returns unsent jobs to pending through the recorder, as a job
// held too long does: they are due for whichever relay may send them.
func (d *Dispatcher) handBack(jobs []*job) {
	if len(jobs) == 0 {
		return
	}
	d.mu.Lock()
	if d.stopping {
		// Stop's release hands every delivery of this relay back.
		d.mu.Unlock()
		return
	}
	d.workersDone.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.workersDone.Done()
		for _, j := range jobs {
			d.results <- &result{job: j, requeue: true}
		}
	}()
}
