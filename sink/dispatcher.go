package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	Pool   *pgxpool.Pool
	Sender *HTTPSender
	Logger zerolog.Logger
	// WorkerID names this relay in deliveries.locked_by (default host-pid).
	WorkerID string
	// Concurrency is how many requests may be in flight at once (default 64).
	Concurrency int
	// ClaimBatch is the most deliveries claimed in one statement (default 256).
	ClaimBatch int
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

	mu          sync.Mutex
	inflight    int
	perSub      map[int64]int
	settings    Settings
	settingsAt  time.Time
	keys        sync.Map // secret string → signer.Key
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
		cfg.ClaimBatch = 256
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
	return &Dispatcher{
		cfg:     cfg,
		log:     cfg.Logger.With().Str("component", "dispatcher").Logger(),
		wake:    make(chan struct{}, 1),
		jobs:    make(chan *job, cfg.Concurrency),
		results: make(chan *result, cfg.Concurrency*2),
		perSub:  map[int64]int{},
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
// relay still held. It may be called more than once.
func (d *Dispatcher) Stop(ctx context.Context) {
	if !d.started.Load() {
		return
	}
	d.stopOnce.Do(func() {
		d.stopClaims()
		<-d.claimDone
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
	free := d.cfg.Concurrency - d.inflight
	busyIDs := make([]int64, 0, len(d.perSub))
	busyN := make([]int32, 0, len(d.perSub))
	for id, n := range d.perSub {
		busyIDs = append(busyIDs, id)
		busyN = append(busyN, int32(n))
	}
	d.mu.Unlock()
	if free <= 0 {
		return d.cfg.PollInterval, nil // a finishing request wakes us
	}
	limit := min(free, d.cfg.ClaimBatch)
	jobs, err := d.claim(ctx, limit, busyIDs, busyN)
	if err != nil {
		return 0, err
	}
	now := d.cfg.Now()
	var deferIDs []int64
	var deferUntil []time.Time
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
		d.mu.Lock()
		d.inflight++
		d.perSub[j.subID]++
		d.mu.Unlock()
		d.jobs <- j
	}
	if len(deferIDs) > 0 {
		// Outside a window or on an absence day: back to pending until the
		// window opens. Nothing is attempted, nothing is dropped.
		_, err := d.cfg.Pool.Exec(ctx, `
			UPDATE relay.deliveries AS d SET status = 'pending', next_attempt_at = u.at, locked_until = NULL, locked_by = NULL
			FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, at)
			WHERE d.id = u.id AND d.locked_by = $3`, deferIDs, deferUntil, d.cfg.WorkerID)
		if err != nil {
			return 0, fmt.Errorf("deferring deliveries to their window: %w", err)
		}
		d.log.Debug().Int("num_deliveries", len(deferIDs)).Msg("deferred deliveries to their delivery window")
	}
	if len(jobs) == limit {
		return 0, nil // there may be more due right now
	}
	return d.untilNextDue(ctx)
}

// untilNextDue is how long until the earliest pending delivery or lease
// expiry, bounded by the poll interval.
func (d *Dispatcher) untilNextDue(ctx context.Context) (time.Duration, error) {
	var next *time.Time
	err := d.cfg.Pool.QueryRow(ctx, `
		SELECT least(
			(SELECT min(next_attempt_at) FROM relay.deliveries WHERE status = 'pending'),
			(SELECT min(locked_until) FROM relay.deliveries WHERE status = 'delivering' AND locked_by IS DISTINCT FROM $1))`,
		d.cfg.WorkerID).Scan(&next)
	if err != nil {
		return 0, err
	}
	sleep := d.cfg.PollInterval
	if next != nil {
		if until := time.Until(*next); until < sleep {
			sleep = max(until, time.Millisecond)
		}
	}
	return sleep, nil
}

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
}

// claimSQL claims due deliveries in one statement. Candidates are pending
// deliveries that are due and deliveries whose lease expired (their relay
// died); each subscription gets at most its max_in_flight minus what this
// relay already has in flight for it. FOR UPDATE SKIP LOCKED lets several
// relays claim side by side without waiting on or double-sending each
// other's rows; the outer WHERE re-checks the status after the lock.
const claimSQL = `
WITH busy AS (
    SELECT * FROM unnest($3::bigint[], $4::int[]) AS b(subscription_id, n)
), due AS (
    SELECT d.id, d.subscription_id, d.next_attempt_at
    FROM relay.deliveries AS d
    WHERE ($6::bigint IS NULL AND ((d.status = 'pending' AND d.next_attempt_at <= now())
                                 OR (d.status = 'delivering' AND d.locked_until < now())))
       OR (d.id = $6 AND d.status = 'pending')
    ORDER BY d.next_attempt_at
    LIMIT $2 * 4
), ranked AS (
    SELECT due.id, due.next_attempt_at,
           row_number() OVER (PARTITION BY due.subscription_id ORDER BY due.next_attempt_at, due.id) AS rn,
           s.max_in_flight - coalesce(busy.n, 0) AS free
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
       o.created_at, c.attempts, c.cycle_attempts, o.target_subscription_id IS NOT NULL,
       s.url, s.secret,
       ARRAY(SELECT p->>'secret' FROM jsonb_array_elements(s.previous_secrets) AS p
             WHERE (p->>'expires_at')::timestamptz > now() ORDER BY p->>'expires_at' DESC),
       s.format, coalesce(s.template, ''), s.headers::text, s.timeout_ms,
       ARRAY(SELECT extract(epoch FROM i)::float8 FROM unnest(s.retry_schedule) AS i),
       s.window_start::text, s.window_end::text, s.window_time_zone, s.ignore_global_window
FROM claimed AS c
JOIN relay.outbox AS o ON o.event_id = c.event_id
JOIN relay.subscriptions AS s ON s.id = c.subscription_id`

// claim claims up to limit due deliveries; with only set, it claims that one
// pending delivery whatever its due time (the test button).
func (d *Dispatcher) claim(ctx context.Context, limit int, busyIDs []int64, busyN []int32, only ...int64) ([]*job, error) {
	var onlyID *int64
	if len(only) == 1 {
		onlyID = &only[0]
	}
	rows, err := d.cfg.Pool.Query(ctx, claimSQL, d.cfg.WorkerID, limit, busyIDs, busyN, d.cfg.LeaseMargin.String(), onlyID)
	if err != nil {
		return nil, fmt.Errorf("claiming: %w", err)
	}
	defer rows.Close()
	var jobs []*job
	for rows.Next() {
		j := &job{}
		var payload string
		var headers *string
		var secret string
		var previous []string
		var subHeaders string
		var timeoutMS int
		var schedule []float64
		var ws, we *string
		var zone string
		if err := rows.Scan(&j.deliveryID, &j.subID, &j.eventID, &j.eventType, &j.owner, &j.key, &payload, &headers,
			&j.eventCreatedAt, &j.attempts, &j.cycleAttempts, &j.targeted,
			&j.url, &secret, &previous, &j.format, &j.template, &subHeaders, &timeoutMS, &schedule,
			&ws, &we, &zone, &j.ignoreGlobal); err != nil {
			return nil, fmt.Errorf("reading claimed delivery: %w", err)
		}
		j.payload = []byte(payload)
		if headers != nil {
			j.eventHeaders = []byte(*headers)
		}
		j.secrets = append([]string{secret}, previous...)
		j.subHeaders = []byte(subHeaders)
		j.timeout = time.Duration(timeoutMS) * time.Millisecond
		j.schedule = make([]time.Duration, len(schedule))
		for i, s := range schedule {
			j.schedule[i] = time.Duration(s * float64(time.Second))
		}
		if j.eventType == "webhook.test" {
			j.schedule = nil // a test answers once; it is not retried
		}
		if ws != nil && we != nil {
			w, err := ParseWindow(*ws, *we, zone)
			if err != nil {
				d.log.Warn().Err(err).Int64("subscription_id", j.subID).Msg("ignoring unreadable delivery window")
			} else {
				j.window = &w
			}
		}
		jobs = append(jobs, j)
	}
	return jobs, rows.Err()
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
}

func (d *Dispatcher) worker(ctx context.Context) {
	defer d.workersDone.Done()
	for j := range d.jobs {
		d.results <- d.attempt(ctx, j)
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
	batch := make([]*result, 0, 512)
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
	for _, r := range batch {
		d.inflight--
		if d.perSub[r.job.subID]--; d.perSub[r.job.subID] <= 0 {
			delete(d.perSub, r.job.subID)
		}
	}
	d.mu.Unlock()
	d.Wake()
}
