package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/signer"
)

// Observer receives delivery measurements (Prometheus metrics in relay run).
// Implementations must be safe for concurrent use.
type Observer interface {
	// AttemptDone is called for every recorded attempt, with its outcome
	// (succeeded, retry or failed) and duration.
	AttemptDone(outcome string, d time.Duration)
	// Delivered is called when a delivery succeeds, with the time from the
	// event's commit to the receiver's answer.
	Delivered(commitToDelivered time.Duration)
}

// DispatcherConfig configures a Dispatcher.
type DispatcherConfig struct {
	Pool *pgxpool.Pool
	// Sender sends the requests: an HTTPSender or an H1Sender.
	Sender Sender
	Logger zerolog.Logger
	// WorkerID names this relay in deliveries.locked_by (default host-pid).
	WorkerID string
	// Concurrency is how many requests may be in flight at once (default 64).
	Concurrency int
	// ClaimBatch is the most deliveries claimed in one statement (default 512).
	ClaimBatch int
	// MaxHeld bounds the deliveries this relay holds claimed at once:
	// queued for a free slot, being sent, or waiting for their attempt to
	// be recorded (default 65536, and at least Concurrency; a held
	// delivery costs about 300 bytes plus its payload, which deliveries of
	// one event share). What one subscription may hold follows its pace
	// (see HoldPerSlot), so this bound matters for fan-out to many
	// subscriptions, where it measured 9,400 deliveries/s at 16384 and
	// 13,500-16,000 at 65536 on the 2-core benchmark. Holding ahead lets
	// one claim feed many requests, and lets fan-out hand a burst straight
	// over instead of leaving it to be claimed.
	MaxHeld int
	// HoldPerSlot bounds what is held for a subscription whose pace is not
	// known yet: max_in_flight × HoldPerSlot deliveries (default 256). Once
	// it is, the bound follows it: about four seconds of its sending, at
	// least 4 and at most 4096 per slot. A delivery held longer than
	// LeaseMargin/2 before its request starts is handed back unsent, so a
	// slow endpoint's backlog never outlives its lease.
	HoldPerSlot int
	// PollInterval is the longest the dispatcher sleeps without looking for
	// due work, a safety net under notifications (default 2s).
	PollInterval time.Duration
	// LeaseMargin is added to a subscription's timeout to form the lease on a
	// claimed delivery (default 30s). A relay that dies mid-request leaves its
	// deliveries to be claimed again when the lease ends.
	LeaseMargin time.Duration
	// MaxRetryAfter caps how long a receiver's Retry-After may delay a retry
	// (default DefaultMaxRetryAfter).
	MaxRetryAfter time.Duration
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
	// Jitter returns a draw in [-1, 1] scaled by DefaultJitter by the
	// dispatcher (default uniform random).
	Jitter func() float64
	// Observer receives measurements; nil means none.
	Observer Observer
}

// Dispatcher claims due deliveries, sends them and records every attempt.
// Several relays may dispatch from one database: claims use FOR UPDATE SKIP
// LOCKED and a lease, so no delivery is sent twice in normal running.
type Dispatcher struct {
	cfg DispatcherConfig
	log zerolog.Logger

	wake    chan struct{}
	jobs    chan *job
	results chan *result

	mu sync.Mutex
	// inflight counts requests being sent (at most Concurrency; every job
	// in the jobs channel is counted, so sending to it never blocks).
	inflight int
	// held counts claimed deliveries not yet recorded; subs holds them per
	// subscription with the queue of those waiting for a slot; runnable
	// lists, in turn, the subscriptions with a queued job and a free slot.
	held     int
	subs     map[int64]*subState
	runnable []int64
	// more is set when the last claim found work: there may be more, so
	// freed capacity wakes the claim loop.
	more        bool
	stopping    bool
	handoffs    sync.WaitGroup
	settings    Settings
	settingsAt  time.Time
	keys        sync.Map // secret string → signer.Key
	info        subCache
	healthMu    sync.Mutex
	health      map[int64]healthMark
	stopClaims  context.CancelFunc
	hardCancel  context.CancelFunc
	claimDone   chan struct{}
	workersDone sync.WaitGroup
	recordDone  chan struct{}
	stopOnce    sync.Once
	started     atomic.Bool
	attempts    atomic.Int64
}

// NewDispatcher returns a dispatcher; Start runs it.
func NewDispatcher(cfg DispatcherConfig) (*Dispatcher, error) {
	if cfg.Pool == nil || cfg.Sender == nil {
		return nil, errors.New("sink: dispatcher needs Pool and Sender")
	}
	if cfg.WorkerID == "" {
		host, _ := os.Hostname()
		cfg.WorkerID = fmt.Sprintf("%s-%d-%04x", host, os.Getpid(), rand.IntN(0x10000))
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.ClaimBatch <= 0 {
		cfg.ClaimBatch = 512
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = 65536
	}
	cfg.MaxHeld = max(cfg.MaxHeld, cfg.Concurrency)
	if cfg.HoldPerSlot <= 0 {
		cfg.HoldPerSlot = 256
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 2 * time.Second
	}
	if cfg.LeaseMargin <= 0 {
		cfg.LeaseMargin = 30 * time.Second
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func() float64 { return 2*rand.Float64() - 1 }
	}
	log := cfg.Logger.With().Str("component", "dispatcher").Logger()
	return &Dispatcher{
		cfg:     cfg,
		log:     log,
		info:    subCache{log: log},
		wake:    make(chan struct{}, 1),
		jobs:    make(chan *job, cfg.Concurrency),
		results: make(chan *result, max(cfg.Concurrency*4, 256)),
		subs:    map[int64]*subState{},
	}, nil
}

// Wake makes the dispatcher look for due work now. Fan-out calls it after
// committing deliveries, so the happy path has no polling delay.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// AttemptsRecorded counts the attempts this dispatcher has recorded.
func (d *Dispatcher) AttemptsRecorded() int64 { return d.attempts.Load() }

// Start begins dispatching. It returns once the settings are readable.
func (d *Dispatcher) Start(ctx context.Context) error {
	if _, err := d.currentSettings(ctx, true); err != nil {
		return err
	}
	base := context.WithoutCancel(ctx)
	hardCtx, hardCancel := context.WithCancel(base)
	claimCtx, stopClaims := context.WithCancel(hardCtx)
	d.hardCancel, d.stopClaims = hardCancel, stopClaims
	d.claimDone = make(chan struct{})
	d.recordDone = make(chan struct{})
	for i := 0; i < d.cfg.Concurrency; i++ {
		d.workersDone.Add(1)
		go d.worker(hardCtx)
	}
	go d.recorder(base)
	go d.listen(claimCtx)
	go d.claimLoop(claimCtx)
	d.started.Store(true)
	return nil
}

// Stop stops claiming, lets requests in flight finish until ctx ends (then
// cancels them), records their outcomes and hands back the deliveries this
// relay still held, sent or not. It may be called more than once.
func (d *Dispatcher) Stop(ctx context.Context) {
	if !d.started.Load() {
		return
	}
	d.stopOnce.Do(func() {
		d.stopClaims()
		<-d.claimDone
		d.mu.Lock()
		d.stopping = true
		d.mu.Unlock()
		// A fan-out that reserved a hand-over finishes it (or gives up);
		// none can start now.
		d.handoffs.Wait()
		d.mu.Lock()
		// Queued deliveries were never sent: release below hands them back.
		for id, st := range d.subs {
			d.held -= len(st.queue)
			st.held -= len(st.queue)
			st.queue = nil
			d.forgetLocked(id, st)
		}
		d.runnable = nil
		d.mu.Unlock()
		close(d.jobs)
		finished := make(chan struct{})
		go func() { d.workersDone.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-ctx.Done():
			d.hardCancel()
			<-finished
		}
		close(d.results)
		<-d.recordDone
		d.hardCancel()
		d.release()
	})
}

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
	if st.held <= 0 && st.sending <= 0 && len(st.queue) == 0 && !st.runnable &&
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
	d.held++
	st.held++
	st.queue = append(st.queue, j)
	d.markRunnableLocked(j.subID, st)
	d.pumpLocked()
}

func (d *Dispatcher) markRunnableLocked(id int64, st *subState) {
	if !st.runnable && len(st.queue) > 0 && st.sending < st.maxInFlight {
		st.runnable = true
		d.runnable = append(d.runnable, id)
	}
}

// pumpLocked starts queued jobs while slots are free, one subscription
// after another so that a big backlog does not starve the others.
func (d *Dispatcher) pumpLocked() {
	for !d.stopping && d.inflight < d.cfg.Concurrency && len(d.runnable) > 0 {
		id := d.runnable[0]
		d.runnable = d.runnable[1:]
		st := d.subs[id]
		if st == nil {
			continue
		}
		st.runnable = false
		if len(st.queue) == 0 || st.sending >= st.maxInFlight {
			continue
		}
		j := st.queue[0]
		st.queue[0] = nil
		st.queue = st.queue[1:]
		st.sending++
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

// release hands back deliveries claimed by this relay that were not sent
// (their requests were cancelled by a hard stop), so another relay or the
// next start sends them without waiting for the lease.
func (d *Dispatcher) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tag, err := d.cfg.Pool.Exec(ctx, `
		UPDATE relay.deliveries SET status = 'pending', locked_until = NULL, locked_by = NULL
		WHERE status = 'delivering' AND locked_by = $1`, d.cfg.WorkerID)
	if err != nil {
		d.log.Warn().Err(err).Msg("releasing claimed deliveries; their leases will expire instead")
		return
	}
	if n := tag.RowsAffected(); n > 0 {
		d.log.Info().Int64("num_deliveries", n).Msg("released deliveries not sent before shutdown")
	}
}

// listen wakes the dispatcher on notifications from other processes:
// deliveries created by another relay, redeliver/replay, pause/resume.
func (d *Dispatcher) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := d.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		d.log.Debug().Err(err).Msg("notification listener reconnecting")
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(time.Second)):
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.75 + rand.Float64()*0.5))
}

func (d *Dispatcher) listenOnce(ctx context.Context) error {
	conn, err := d.cfg.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	// The connection is left in LISTEN state; destroy it rather than return
	// it to the pool.
	defer conn.Conn().Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN relay_deliveries; LISTEN relay_settings"); err != nil {
		return err
	}
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == "relay_settings" {
			d.mu.Lock()
			d.settingsAt = time.Time{}
			d.mu.Unlock()
		}
		d.Wake()
	}
}

func (d *Dispatcher) currentSettings(ctx context.Context, force bool) (Settings, error) {
	d.mu.Lock()
	fresh := !force && time.Since(d.settingsAt) < 2*time.Second
	s := d.settings
	d.mu.Unlock()
	if fresh {
		return s, nil
	}
	s, err := LoadSettings(ctx, d.cfg.Pool)
	if err != nil {
		return s, err
	}
	d.mu.Lock()
	d.settings, d.settingsAt = s, time.Now()
	d.mu.Unlock()
	return s, nil
}

func (d *Dispatcher) claimLoop(ctx context.Context) {
	defer close(d.claimDone)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		}
		sleep, err := d.claimOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.log.Warn().Err(err).Msg("claiming deliveries")
			sleep = jitter(time.Second)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(sleep)
	}
}

// claimOnce claims what may be sent now and returns how long to sleep
// before looking again (unless woken earlier).
func (d *Dispatcher) claimOnce(ctx context.Context) (time.Duration, error) {
	settings, err := d.currentSettings(ctx, false)
	if err != nil {
		return 0, err
	}
	if settings.Gate.Paused {
		// Nothing is claimed; relay.resume() notifies and wakes us.
		return d.cfg.PollInterval, nil
	}
	d.mu.Lock()
	free := d.cfg.MaxHeld - d.held
	roomIDs, roomN := d.roomLocked()
	d.mu.Unlock()
	if free <= 0 {
		return d.cfg.PollInterval, nil // recording a batch wakes us
	}
	limit := min(free, d.cfg.ClaimBatch)
	claimedAt := time.Now()
	// Not cancelled with ctx: a claim cancelled in flight could still commit
	// on the server after Stop's release, leaving rows claimed by no one
	// until their lease ends. The statement is short; let it finish.
	jobs, err := d.claim(context.WithoutCancel(ctx), limit, roomIDs, roomN)
	if err != nil {
		return 0, err
	}
	if err := d.admit(ctx, jobs, settings, claimedAt); err != nil {
		return 0, err
	}
	if len(jobs) == limit {
		d.setMore(true)
		return 0, nil // there may be more due right now
	}
	sleep, dueNow, err := d.untilNextDue(ctx)
	// Something due that could not be claimed (its subscription is at its
	// limit, for one) is looked for again when this relay lets go of some.
	d.setMore(dueNow)
	return sleep, err
}

func (d *Dispatcher) setMore(v bool) {
	d.mu.Lock()
	d.more = v
	d.mu.Unlock()
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

// admit takes claimed jobs into this relay's hands: those the global
// switches or their subscription's window allow now are queued, the others
// go back to pending until their window opens. claimedAt is a moment
// before the claim was made: a job not started within LeaseMargin/2 of it
// is handed back unsent.
func (d *Dispatcher) admit(ctx context.Context, jobs []*job, settings Settings, claimedAt time.Time) error {
	if len(jobs) == 0 {
		return nil
	}
	now := d.cfg.Now()
	sendBy := claimedAt.Add(d.cfg.LeaseMargin / 2)
	var deferIDs []int64
	var deferUntil []time.Time
	d.mu.Lock()
	for _, j := range jobs {
		at, paused := settings.Gate.NextSendTime(now, j.window, j.ignoreGlobal)
		if paused {
			at = now.Add(d.cfg.PollInterval)
		}
		if at.After(now) {
			deferIDs = append(deferIDs, j.deliveryID)
			deferUntil = append(deferUntil, at)
			continue
		}
		j.sendBy = sendBy
		d.enqueueLocked(j)
	}
	d.mu.Unlock()
	if len(deferIDs) > 0 {
		// Outside a window or on an absence day: back to pending until the
		// window opens. Nothing is attempted, nothing is dropped.
		_, err := d.cfg.Pool.Exec(ctx, `
			UPDATE relay.deliveries AS d SET status = 'pending', next_attempt_at = u.at, locked_until = NULL, locked_by = NULL
			FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, at)
			WHERE d.id = u.id AND d.locked_by = $3`, deferIDs, deferUntil, d.cfg.WorkerID)
		if err != nil {
			return fmt.Errorf("deferring deliveries to their window: %w", err)
		}
		d.log.Debug().Int("num_deliveries", len(deferIDs)).Msg("deferred deliveries to their delivery window")
	}
	return nil
}

// untilNextDue is how long until the earliest pending delivery or lease
// expiry (this relay's own leases included: they end LeaseMargin after
// their timeout, far beyond the poll interval, and reading the first entry
// of the index is cheaper than skipping them), bounded by the poll interval. dueNow reports that something is
// due already although the claim just made did not take it (its
// subscription is at its limit or disabled, or another relay is on it):
// freed capacity or a notification wakes us for it, the poll interval
// otherwise.
func (d *Dispatcher) untilNextDue(ctx context.Context) (sleep time.Duration, dueNow bool, err error) {
	var next *time.Time
	err = d.cfg.Pool.QueryRow(ctx, `
		SELECT least(
			(SELECT min(next_attempt_at) FROM relay.deliveries WHERE status = 'pending'),
			(SELECT min(locked_until) FROM relay.deliveries WHERE status = 'delivering'))`).Scan(&next)
	if err != nil {
		return 0, false, err
	}
	sleep = d.cfg.PollInterval
	if next != nil {
		until := time.Until(*next)
		dueNow = until <= 0
		if until > 0 && until < sleep {
			sleep = max(until, time.Millisecond)
		}
	}
	return sleep, dueNow, nil
}

// reserveHandoff lets a fan-out insert deliveries already claimed for this
// relay and hand them over in memory, saving the claim's round trip. It
// returns nil when nothing may be handed over: the dispatcher is stopping
// or full, the relay is paused, or the global window or an absence day
// holds deliveries now. A non-nil reservation must end with acceptHandoff
// or cancelHandoff.
func (d *Dispatcher) reserveHandoff(ctx context.Context) *handoff {
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
	h := &handoff{free: free, settings: settings, claimedAt: time.Now()}
	h.roomIDs, h.roomN = d.roomLocked()
	d.handoffs.Add(1)
	return h
}

// handoff is a reservation made by reserveHandoff.
type handoff struct {
	free      int
	roomIDs   []int64
	roomN     []int32
	settings  Settings
	claimedAt time.Time
}

// acceptHandoff takes the jobs a fan-out claimed under h.
func (d *Dispatcher) acceptHandoff(ctx context.Context, h *handoff, jobs []*job) error {
	defer d.handoffs.Done()
	return d.admit(ctx, jobs, h.settings, h.claimedAt)
}

// cancelHandoff ends a reservation that claimed nothing.
func (d *Dispatcher) cancelHandoff(*handoff) { d.handoffs.Done() }

// job is one claimed delivery with what sending it needs.
type job struct {
	deliveryID, subID  int64
	eventID, eventType string
	owner, key         *string
	payload            []byte
	eventHeaders       []byte
	eventCreatedAt     time.Time
	attempts           int // attempts made before this one
	cycleAttempts      int // attempts since last queued, before this one

	url          string
	secrets      []string // newest first
	format       string
	template     string
	subHeaders   []byte
	timeout      time.Duration
	schedule     []time.Duration
	window       *Window
	ignoreGlobal bool
	targeted     bool
	maxInFlight  int

	// sendBy is when a queued job becomes too old to start: its lease
	// could run out before its request ends.
	sendBy time.Time
}

// claimSQL claims due deliveries in one statement. Candidates are pending
// deliveries that are due and deliveries whose lease expired (their relay
// died), each found through its partial index; each subscription gets at
// most the room this relay has for it.
// FOR UPDATE SKIP LOCKED lets several relays claim side by side without
// waiting on or double-sending each other's rows; the outer WHERE
// re-checks the status after the lock.
const claimSQL = `
WITH busy AS (
    SELECT * FROM unnest($3::bigint[], $4::int[]) AS b(subscription_id, room)
), due AS (
    (SELECT d.id, d.subscription_id, d.next_attempt_at
     FROM relay.deliveries AS d
     WHERE $6::bigint IS NULL AND d.status = 'pending' AND d.next_attempt_at <= now()
     ORDER BY d.next_attempt_at
     LIMIT $2 * 4)
    UNION ALL
    (SELECT d.id, d.subscription_id, d.next_attempt_at
     FROM relay.deliveries AS d
     WHERE $6::bigint IS NULL AND d.status = 'delivering' AND d.locked_until < now()
     ORDER BY d.locked_until
     LIMIT $2 * 4)
    UNION ALL
    SELECT d.id, d.subscription_id, d.next_attempt_at
    FROM relay.deliveries AS d
    WHERE d.id = $6 AND d.status = 'pending'
), ranked AS (
    SELECT due.id, due.next_attempt_at,
           row_number() OVER (PARTITION BY due.subscription_id ORDER BY due.next_attempt_at, due.id) AS rn,
           coalesce(busy.room, s.max_in_flight * $7) AS free
    FROM due
    JOIN relay.subscriptions AS s ON s.id = due.subscription_id
    LEFT JOIN busy ON busy.subscription_id = due.subscription_id
    WHERE s.enabled OR EXISTS (
        SELECT 1 FROM relay.deliveries AS dd JOIN relay.outbox AS o ON o.event_id = dd.event_id
        WHERE dd.id = due.id AND o.target_subscription_id = s.id)
), picked AS (
    SELECT d.id FROM relay.deliveries AS d
    WHERE d.id IN (SELECT id FROM ranked WHERE rn <= free ORDER BY next_attempt_at LIMIT $2)
      AND ((d.status = 'pending' AND (d.next_attempt_at <= now() OR d.id = $6))
        OR (d.status = 'delivering' AND d.locked_until < now()))
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE relay.deliveries AS d
    SET status = 'delivering', locked_by = $1,
        locked_until = now() + make_interval(secs => s.timeout_ms / 1000.0) + $5::interval
    FROM picked, relay.subscriptions AS s
    WHERE d.id = picked.id AND s.id = d.subscription_id
    RETURNING d.id, d.event_id, d.subscription_id, d.attempts, d.cycle_attempts
)
SELECT c.id, c.subscription_id, c.event_id::text, o.event_type, o.owner, o.key, o.payload::text, o.headers::text,
       o.created_at, c.attempts, c.cycle_attempts, o.target_subscription_id IS NOT NULL, s.updated_at
FROM claimed AS c
JOIN relay.outbox AS o ON o.event_id = c.event_id
JOIN relay.subscriptions AS s ON s.id = c.subscription_id`

// claim claims up to limit due deliveries; with only set, it claims that one
// pending delivery whatever its due time (the test button).
func (d *Dispatcher) claim(ctx context.Context, limit int, roomIDs []int64, roomN []int32, only ...int64) ([]*job, error) {
	var onlyID *int64
	if len(only) == 1 {
		onlyID = &only[0]
	}
	rows, err := d.cfg.Pool.Query(ctx, claimSQL, d.cfg.WorkerID, limit, roomIDs, roomN, d.cfg.LeaseMargin.String(), onlyID, d.cfg.HoldPerSlot)
	if err != nil {
		return nil, fmt.Errorf("claiming: %w", err)
	}
	defer rows.Close()
	var jobs []*job
	want := map[int64]time.Time{}
	for rows.Next() {
		j := &job{}
		var payload string
		var headers *string
		var updated time.Time
		if err := rows.Scan(&j.deliveryID, &j.subID, &j.eventID, &j.eventType, &j.owner, &j.key, &payload, &headers,
			&j.eventCreatedAt, &j.attempts, &j.cycleAttempts, &j.targeted, &updated); err != nil {
			return nil, fmt.Errorf("reading claimed delivery: %w", err)
		}
		j.payload = []byte(payload)
		if headers != nil {
			j.eventHeaders = []byte(*headers)
		}
		want[j.subID] = updated
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claiming: %w", err)
	}
	rows.Close()
	// On error the claimed deliveries stay leased to this relay: release
	// at stop, or the lease's end, hands them on.
	return d.fillJobs(ctx, d.cfg.Pool, jobs, want)
}

// fillJobs gives jobs their subscriptions' settings and returns them,
// less those whose subscription is gone. want maps each subscription to
// the updated_at the claim saw.
func (d *Dispatcher) fillJobs(ctx context.Context, q querier, jobs []*job, want map[int64]time.Time) ([]*job, error) {
	if len(jobs) == 0 {
		return jobs, nil
	}
	infos, err := d.info.get(ctx, q, want)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	kept := jobs[:0]
	for _, j := range jobs {
		// A subscription deleted meanwhile took its deliveries with it.
		if s := infos[j.subID]; s != nil {
			s.fill(j, now)
			kept = append(kept, j)
		}
	}
	clear(jobs[len(kept):])
	return kept, nil
}

// result is the outcome of one attempt, waiting to be recorded.
type result struct {
	job        *job
	attempt    int
	startedAt  time.Time
	send       SendResult
	verdict    Verdict
	status     string // the delivery's status after this attempt
	nextAt     *time.Time
	errText    string
	retryAfter string
	released   bool // cancelled by a hard stop: not an attempt
	requeue    bool // held too long to start: handed back unsent
}

func (d *Dispatcher) worker(ctx context.Context) {
	defer d.workersDone.Done()
	for j := range d.jobs {
		var r *result
		if time.Now().After(j.sendBy) {
			r = &result{job: j, requeue: true}
		} else {
			r = d.attempt(ctx, j)
		}
		// The slot is free as soon as the request is over; recording is
		// batched behind it.
		d.mu.Lock()
		d.sentLocked(j, time.Now())
		d.mu.Unlock()
		d.results <- r
	}
}

// attempt sends one delivery and decides what happens next.
func (d *Dispatcher) attempt(ctx context.Context, j *job) *result {
	r := &result{job: j, attempt: j.attempts + 1, startedAt: d.cfg.Now()}
	body, err := RenderBody(j.format, EventView{
		EventID: j.eventID, Type: j.eventType, Owner: j.owner, Key: j.key,
		Timestamp: j.eventCreatedAt, Payload: json.RawMessage(j.payload),
	}, j.template)
	if err != nil {
		r.send = SendResult{Err: fmt.Errorf("rendering %s body: %w", j.format, err)}
	} else {
		header, err := d.headers(j, r.attempt, r.startedAt, body)
		if err != nil {
			r.send = SendResult{Err: err}
		} else {
			settings, _ := d.currentSettings(ctx, false)
			r.send = d.cfg.Sender.Send(ctx, SendRequest{
				URL: j.url, Body: body, Header: header, Timeout: j.timeout, AllowHTTP: settings.AllowHTTP,
			})
		}
	}
	if ctx.Err() != nil && r.send.StatusCode == 0 {
		r.released = true
		return r
	}
	r.verdict = Classify(r.send.StatusCode, r.send.Err)
	r.retryAfter = r.send.RetryAfter
	if r.send.Err != nil {
		r.errText = r.send.Err.Error()
	} else if r.verdict != VerdictSucceeded {
		r.errText = "HTTP " + strconv.Itoa(r.send.StatusCode)
		if t := http.StatusText(r.send.StatusCode); t != "" {
			r.errText += " " + t
		}
	}
	switch r.verdict {
	case VerdictSucceeded:
		r.status = "succeeded"
	case VerdictRetry:
		now := d.cfg.Now()
		var ra time.Duration
		if r.retryAfter != "" {
			ra, _ = ParseRetryAfter(r.retryAfter, now)
		}
		if at, ok := NextAttemptAt(j.schedule, j.cycleAttempts+1, now, ra, d.cfg.MaxRetryAfter, DefaultJitter*d.cfg.Jitter()); ok {
			r.status, r.nextAt = "pending", &at
		} else {
			r.status = "failed"
		}
	default:
		r.status = "failed"
	}
	return r
}

// headers builds the request headers of DESIGN.md §4 (the sender adds
// user-agent).
func (d *Dispatcher) headers(j *job, attempt int, now time.Time, body []byte) (http.Header, error) {
	keys := make([]signer.Key, 0, len(j.secrets))
	for _, s := range j.secrets {
		k, err := d.key(s)
		if err != nil {
			return nil, fmt.Errorf("subscription %d secret: %w", j.subID, err)
		}
		keys = append(keys, k)
	}
	h := make(http.Header, 12)
	for _, extra := range [][]byte{j.subHeaders, j.eventHeaders} {
		if len(extra) > 2 {
			var m map[string]string
			if err := json.Unmarshal(extra, &m); err != nil {
				return nil, fmt.Errorf("custom headers are not an object of strings: %w", err)
			}
			for k, v := range m {
				h.Set(k, v)
			}
		}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Webhook-Id", j.eventID)
	h.Set("Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("Webhook-Signature", signer.SignatureHeader(keys, j.eventID, now, body))
	h.Set("X-Relay-Event", j.eventType)
	h.Set("X-Relay-Delivery", strconv.FormatInt(j.deliveryID, 10))
	h.Set("X-Relay-Attempt", strconv.Itoa(attempt))
	h.Set("X-Relay-Signature", keys[0].SignSimple(body))
	return h, nil
}

func (d *Dispatcher) key(secret string) (signer.Key, error) {
	if k, ok := d.keys.Load(secret); ok {
		return k.(signer.Key), nil
	}
	k, err := signer.ParseSecret(secret)
	if err != nil {
		return k, err
	}
	d.keys.Store(secret, k)
	return k, nil
}

// recorder writes attempts in batches: whatever results are waiting are
// recorded in one transaction.
func (d *Dispatcher) recorder(ctx context.Context) {
	defer close(d.recordDone)
	batch := make([]*result, 0, 1024)
	for r := range d.results {
		batch = append(batch[:0], r)
	drain:
		for len(batch) < cap(batch) {
			select {
			case r, ok := <-d.results:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		d.recordWithRetry(ctx, batch)
	}
}

func (d *Dispatcher) recordWithRetry(ctx context.Context, batch []*result) {
	for try := 0; ; try++ {
		err := d.record(ctx, batch)
		if err == nil {
			break
		}
		if try >= 5 {
			// The deliveries stay 'delivering' and are claimed again when
			// their lease ends: the receiver may see them twice, nothing is lost.
			d.log.Error().Err(err).Int("num_deliveries", len(batch)).Msg("recording attempts failed; leases will expire and the deliveries will be sent again")
			break
		}
		d.log.Warn().Err(err).Int("try", try+1).Msg("recording attempts")
		time.Sleep(jitter(time.Duration(100<<try) * time.Millisecond))
	}
	d.mu.Lock()
	wake := d.recordedLocked(batch)
	d.mu.Unlock()
	if wake {
		d.Wake()
	}
}
