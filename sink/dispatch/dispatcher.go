// Package dispatch sends the deliveries fan-out wrote: it claims due ones
// (FOR UPDATE SKIP LOCKED, with a lease), holds them per subscription
// within its limits, renders and signs each request, hands it to a Sender,
// classifies the answer, schedules the retry, and has every attempt
// recorded in batches (package record). It also takes deliveries a
// fan-out inserted already claimed for it (Handoff), and sends the test
// button's event.
//
// It touches PostgreSQL (deliveries, subscriptions and relay.settings, the
// notifications of relay_deliveries and relay_settings) and reaches the
// network only through its Sender. It never reads the outbox stream or
// imports the fan-out: data moves one way.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgoutbox/relay/sink/policy/retry"
	"github.com/pgoutbox/relay/sink/record"
	"github.com/pgoutbox/relay/sink/send"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
)

// Observer receives delivery measurements (Prometheus metrics in relay run).
// Implementations must be safe for concurrent use.
type Observer interface {
	// AttemptDone is called for every recorded attempt, with its outcome
	// (succeeded, retry, throttled or failed) and duration.
	AttemptDone(outcome string, d time.Duration)
	// Delivered is called when a delivery succeeds, with the time from the
	// event's commit to the receiver's answer.
	Delivered(commitToDelivered time.Duration)
}

// Sender sends one attempt; *send.Sender is the one relay uses.
type Sender interface {
	Send(ctx context.Context, r send.Request) send.Result
}

// Config configures a Dispatcher.
type Config struct {
	Pool *pgxpool.Pool
	// Sender sends the requests (a *send.Sender in relay run).
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
	// (default retry.DefaultMaxRetryAfter).
	MaxRetryAfter time.Duration
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
	// Jitter returns a draw in [-1, 1] scaled by retry.DefaultJitter by the
	// dispatcher (default uniform random).
	Jitter func() float64
	// Observer receives measurements; nil means none.
	Observer Observer
	// RecordLinger is how long the recorder waits after an attempt ends
	// for more to record in the same statement (default 5ms; negative:
	// none). Recording is off the delivery's path (the slot is free when
	// the request ends), so at low rates this trades a few milliseconds
	// before the attempt is in the log for far fewer statements, commits
	// and WAL flushes: one per event, one by one, at 1,000 events/s.
	RecordLinger time.Duration
	// Tracer, when set, receives the clock points of every recorded
	// attempt (relay bench's latency breakdown); nil takes none.
	Tracer Tracer
	// Spans, when set, records an OpenTelemetry span for each attempt, a child of the
	// event's trace (see package eventtrace), and the request carries a
	// traceparent naming it. Nil means no tracing, at no cost: the event's
	// own headers (a traceparent among them) are still sent as they are.
	Spans trace.Tracer
}

// Dispatcher claims due deliveries, sends them and records every attempt.
// Several relays may dispatch from one database: claims use FOR UPDATE SKIP
// LOCKED and a lease, so no delivery is sent twice in normal running.
type Dispatcher struct {
	cfg      Config
	log      zerolog.Logger
	recorder *record.Recorder
	// recordMu serialises record (the record loop, and Test), whose
	// batches are built in recordBuf.
	recordMu  sync.Mutex
	recordBuf []record.Attempt

	wake chan struct{}
	// flowWake asks the flow loop for shares, tokens or a hold's end;
	// flowForce makes its next pass read every subscription's state
	// (another relay changed a hold).
	flowWake  chan struct{}
	flowForce bool
	flowDone  chan struct{}
	jobs      chan *job
	results   chan *result

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
	info        subCache
	presend     presender
	stopClaims  context.CancelFunc
	hardCancel  context.CancelFunc
	claimDone   chan struct{}
	workersDone sync.WaitGroup
	recordDone  chan struct{}
	stopOnce    sync.Once
	started     atomic.Bool
	attempts    atomic.Int64
	sentAhead   atomic.Int64
	// writtenAhead counts attempts fan-out wrote (WrittenWithDelivery).
	writtenAhead atomic.Int64
}

// New returns a dispatcher; Start runs it.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Pool == nil || cfg.Sender == nil {
		return nil, errors.New("dispatch: dispatcher needs Pool and Sender")
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
	if cfg.RecordLinger == 0 {
		cfg.RecordLinger = 5 * time.Millisecond
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = retry.DefaultMaxRetryAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func() float64 { return 2*rand.Float64() - 1 }
	}
	log := cfg.Logger.With().Str("component", "dispatcher").Logger()
	d := &Dispatcher{
		cfg:      cfg,
		log:      log,
		info:     subCache{log: log},
		wake:     make(chan struct{}, 1),
		flowWake: make(chan struct{}, 1),
		jobs:     make(chan *job, cfg.Concurrency),
		results:  make(chan *result, max(cfg.Concurrency*4, 256)),
		subs:     map[int64]*subState{},
	}
	d.recorder = record.New(record.Config{
		Pool:     cfg.Pool,
		WorkerID: cfg.WorkerID,
		Logger:   log,
		Now:      cfg.Now,
		Policy: func(ctx context.Context) (record.Policy, error) {
			s, err := d.currentSettings(ctx, false)
			return record.Policy{FailureAlertThreshold: s.FailureAlertThreshold, DisableAfter: s.DisableAfter,
				ThrottleCap: s.ThrottleCap, ProbeInterval: s.ProbeInterval, ProbeMax: s.ProbeMax}, err
		},
		OnHold: d.holdSubscription,
	})
	return d, nil
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
	d.flowDone = make(chan struct{})
	d.presend.kick, d.presend.done = make(chan struct{}, 1), make(chan struct{})
	d.recordDone = make(chan struct{})
	for i := 0; i < d.cfg.Concurrency; i++ {
		d.workersDone.Add(1)
		go d.worker(hardCtx)
	}
	go d.recordLoop(base)
	go d.listen(claimCtx)
	go d.claimLoop(claimCtx)
	go d.flowLoop(claimCtx)
	go d.presendLoop(claimCtx)
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
		<-d.flowDone
		<-d.presend.done
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

func (d *Dispatcher) worker(ctx context.Context) {
	defer d.workersDone.Done()
	for j := range d.jobs {
		var r *result
		if time.Now().After(j.sendBy) {
			r = &j.res
			*r = result{job: j, requeue: true}
		} else {
			r = d.attempt(ctx, j)
		}
		// The slot is free as soon as the request is over; recording is
		// batched behind it. An answer asking for time holds the
		// subscription here at once.
		d.mu.Lock()
		if st := d.subs[j.subID]; st != nil {
			d.holdAfterAnswerLocked(st, r)
		}
		d.sentLocked(j, time.Now())
		d.mu.Unlock()
		if j.sentAhead {
			// Its result is final: fan-out may take it (TakeAnswered).
			j.aheadState.Store(aheadAnswered)
		}
		d.results <- r
	}
}
