package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// HTTPFigure is a plain HTTP load on the receiver.
type HTTPFigure struct {
	Connections    int     `json:"connections"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	P50Ms          float64 `json:"p50_ms"`
}

// CommitFigure is single-row INSERT … COMMIT into the plain table.
type CommitFigure struct {
	Clients       int     `json:"clients"`
	CommitsPerSec float64 `json:"commits_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	// PostgresCPUMicros is PostgreSQL's CPU per commit (throwaway cluster
	// only): what one event costs the server before relay does anything.
	PostgresCPUMicros float64 `json:"postgres_cpu_us,omitempty"`
}

// LimitsResult is what the machine does without relay: the receiver's
// ceiling at the concurrencies relay uses, and the raw commit rate.
type LimitsResult struct {
	// ReceiverPerSubscription is at 8 connections: relay's default
	// max_in_flight for one subscription.
	ReceiverPerSubscription HTTPFigure `json:"receiver_per_subscription"`
	// ReceiverFull is at relay's --concurrency.
	ReceiverFull HTTPFigure `json:"receiver_full"`
	// Commit16 is the raw single-row commit rate with 16 clients;
	// CommitProducers with as many clients as the live producers; Commit1
	// with one (its p50 is the latency of one commit).
	Commit16        CommitFigure `json:"commit_16"`
	CommitProducers CommitFigure `json:"commit_producers"`
	Commit1         CommitFigure `json:"commit_1"`
}

// Cost is relay's CPU and memory over a scenario.
type Cost struct {
	CPUSeconds         float64 `json:"cpu_seconds"`
	CPUSecondsPer1000  float64 `json:"cpu_seconds_per_1000"`
	CPUMicrosPerEvent  float64 `json:"cpu_us_per_event"`
	PeakRSSBytes       int64   `json:"peak_rss_bytes"`
	CountedDeliveries  int     `json:"counted_deliveries"`
	IncludesStartupCPU bool    `json:"includes_startup_cpu"`
}

func newCost(cpu time.Duration, deliveries int, u ProcUsage, startup bool) Cost {
	c := Cost{CPUSeconds: cpu.Seconds(), PeakRSSBytes: u.PeakRSS, CountedDeliveries: deliveries, IncludesStartupCPU: startup}
	if deliveries > 0 {
		c.CPUSecondsPer1000 = cpu.Seconds() * 1000 / float64(deliveries)
		c.CPUMicrosPerEvent = float64(cpu.Microseconds()) / float64(deliveries)
	}
	return c
}

// Check is what the receiver saw against what was committed.
type Check struct {
	Expected   int      `json:"expected"`
	Received   int      `json:"received"`
	Missing    int      `json:"missing"`
	Duplicates int      `json:"duplicates"`
	MissingIDs []string `json:"missing_ids,omitempty"`
	DupIDs     []string `json:"duplicate_ids,omitempty"`
}

// check compares expected delivery keys with the receiver's report and
// returns the latest receipt among them (Unix nanoseconds).
func check(expected []string, rep ReceiverReport) (Check, int64) {
	c := Check{Expected: len(expected)}
	var last int64
	for _, k := range expected {
		t, ok := rep.Times[k]
		if !ok {
			c.Missing++
			if len(c.MissingIDs) < 10 {
				c.MissingIDs = append(c.MissingIDs, k)
			}
			continue
		}
		c.Received++
		last = max(last, t)
		if rep.Duplicated[k] > 0 {
			c.Duplicates++
			if len(c.DupIDs) < 10 {
				c.DupIDs = append(c.DupIDs, k)
			}
		}
	}
	return c, last
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (b *runner) limits(ctx context.Context) error {
	r := &LimitsResult{}
	b.report.Limits = r
	for _, f := range []*HTTPFigure{{Connections: 8}, {Connections: b.cfg.Concurrency}} {
		b.progress("receiver ceiling with %d connections", f.Connections)
		l, err := loadReceiver(ctx, b.recv.base, f.Connections, 3*time.Second)
		if err != nil {
			return err
		}
		f.RequestsPerSec = float64(l.Requests) / l.Elapsed.Seconds()
		f.P50Ms = ms(l.P50)
		if f.Connections == 8 {
			r.ReceiverPerSubscription = *f
		} else {
			r.ReceiverFull = *f
		}
		if err := b.recv.reset(ctx); err != nil {
			return err
		}
	}
	db, err := b.newDB(ctx, "limits")
	if err != nil {
		return err
	}
	defer db.drop()
	if err := withPlainTable(ctx, db.pool); err != nil {
		return err
	}
	for _, f := range []*CommitFigure{{Clients: 16}, {Clients: b.cfg.Producers}, {Clients: 1}} {
		b.progress("raw single-row commits with %d clients", f.Clients)
		s0 := b.snapCPU(nil)
		res, err := produceFlat(ctx, db.pool, "public.bench_plain", f.Clients, 3*time.Second)
		if err != nil {
			return err
		}
		if split := b.cpuSince(s0, nil); split.Postgres > 0 && len(res.samples) > 0 {
			f.PostgresCPUMicros = split.Postgres * 1e6 / float64(len(res.samples))
		}
		f.CommitsPerSec = float64(len(res.samples)) / res.elapsed.Seconds()
		f.P50Ms = ms(percentile(res.commits, 0.5))
		switch f.Clients {
		case 16:
			r.Commit16 = *f
		case 1:
			r.Commit1 = *f
		}
		if f.Clients == b.cfg.Producers {
			r.CommitProducers = *f
		}
	}
	return nil
}

// DrainResult: a backlog committed while relay was stopped, delivered from
// relay's start.
type DrainResult struct {
	Events int `json:"events"`
	// ReceivedSeconds is from spawning relay to the last receipt;
	// RecordedSeconds to when every delivery is recorded succeeded with its
	// attempt row (polled every 20ms once all had arrived).
	ReceivedSeconds float64 `json:"received_seconds"`
	RecordedSeconds float64 `json:"recorded_seconds"`
	// EventsPerSec is Events / RecordedSeconds: delivered, each with its
	// attempt recorded.
	EventsPerSec     float64  `json:"events_per_sec"`
	ReceivedPerSec   float64  `json:"received_per_sec"`
	AttemptsRecorded int      `json:"attempts_recorded"`
	Check            Check    `json:"check"`
	Cost             Cost     `json:"cost"`
	CPU              CPUSplit `json:"cpu_split"`
}

func (b *runner) drain(ctx context.Context) error {
	db, err := b.newDB(ctx, "drain")
	if err != nil {
		return err
	}
	defer db.drop()
	if err := db.subscribe(ctx, b.recv.base, 1); err != nil {
		return err
	}
	slot := db.name
	// A first run creates the slot, so the backlog below is in its WAL
	// (a relay that was stopped, not one that never ran).
	rp, err := b.startRelay(db.url, slot, "drain-setup")
	if err != nil {
		return err
	}
	if err := db.waitStreaming(ctx, slot, rp, time.Minute); err != nil {
		_ = rp.stop(10 * time.Second)
		return err
	}
	if err := rp.stop(30 * time.Second); err != nil {
		return err
	}
	b.progress("committing %d events while relay is stopped", b.cfg.Events)
	ids, err := insertBulk(ctx, db.pool, b.cfg.Events, 1000)
	if err != nil {
		return err
	}
	if err := b.recv.reset(ctx); err != nil {
		return err
	}
	b.progress("starting relay and draining")
	s0 := b.snapCPU(nil)
	rp, err = b.startRelay(db.url, slot, "drain")
	if err != nil {
		return err
	}
	defer rp.stop(30 * time.Second)
	timeout := time.Minute + time.Duration(b.cfg.Events)*time.Second/500
	if _, err := b.recv.waitReceived(ctx, len(ids), timeout); err != nil {
		return err
	}
	recordedAt, attempts, err := db.waitRecorded(ctx, len(ids), time.Minute)
	if err != nil {
		return err
	}
	split := b.cpuSince(s0, rp)
	u, err := rp.usage()
	if err != nil {
		return err
	}
	b.notePeak(u)
	rep, err := b.recv.report(ctx)
	if err != nil {
		return err
	}
	c, last := check(ids, rep)
	b.noteChecks(c.Missing, c.Duplicates)
	r := &DrainResult{
		Events:           len(ids),
		ReceivedSeconds:  time.Unix(0, last).Sub(rp.started).Seconds(),
		RecordedSeconds:  recordedAt.Sub(rp.started).Seconds(),
		AttemptsRecorded: attempts,
		Check:            c,
		Cost:             newCost(u.CPU, len(ids), u, true),
		CPU:              split,
	}
	r.EventsPerSec = float64(len(ids)) / r.RecordedSeconds
	r.ReceivedPerSec = float64(len(ids)) / r.ReceivedSeconds
	b.report.Drain = r
	if c.Missing > 0 {
		return errIncomplete
	}
	return nil
}

// Latencies are commit→receipt percentiles in milliseconds.
type Latencies struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func latencies(samples []sample, rep ReceiverReport) Latencies {
	ds := make([]time.Duration, 0, len(samples))
	for _, s := range samples {
		if t, ok := rep.Times[s.id]; ok {
			ds = append(ds, time.Duration(t-s.commitNs))
		}
	}
	l := Latencies{P50: ms(percentile(ds, 0.5)), P90: ms(percentile(ds, 0.9)), P99: ms(percentile(ds, 0.99))}
	if len(ds) > 0 {
		l.Max = ms(ds[len(ds)-1])
	}
	return l
}

// startWarm starts relay on db, waits for it to stream, and sends a few
// events through so connections are open before measuring.
func (b *runner) startWarm(ctx context.Context, db *benchDB, tag string, deliveriesPerEvent int) (*relayProc, error) {
	rp, err := b.startRelay(db.url, db.name, tag)
	if err != nil {
		return nil, err
	}
	if err := db.waitStreaming(ctx, db.name, rp, time.Minute); err != nil {
		_ = rp.stop(10 * time.Second)
		return nil, err
	}
	ids, err := insertBulk(ctx, db.pool, 20, 20)
	if err == nil {
		_, err = b.recv.waitReceived(ctx, len(ids)*deliveriesPerEvent, time.Minute)
	}
	if err == nil {
		_, _, err = db.waitRecorded(ctx, len(ids)*deliveriesPerEvent, time.Minute)
	}
	if err == nil {
		err = b.recv.reset(ctx)
	}
	if err != nil {
		_ = rp.stop(10 * time.Second)
		return nil, fmt.Errorf("warming up: %w", err)
	}
	return rp, nil
}

// LiveResult: producers insert one event per transaction as fast as they
// can while relay runs.
type LiveResult struct {
	Producers       int     `json:"producers"`
	Seconds         float64 `json:"seconds"`
	Produced        int     `json:"produced"`
	ProducedPerSec  float64 `json:"produced_per_sec"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	// TailSeconds is from the producers' stop to the last receipt: the
	// backlog relay had left. KeptUp means it was under a second.
	TailSeconds float64   `json:"tail_seconds"`
	KeptUp      bool      `json:"kept_up"`
	Latency     Latencies `json:"latency"`
	Check       Check     `json:"check"`
	Cost        Cost      `json:"cost"`
	CPU         CPUSplit  `json:"cpu_split"`
}

// steadyRun is a scenario where producers insert while a warmed-up relay
// delivers to one subscription: what was produced, what the receiver saw,
// and what relay spent meanwhile.
type steadyRun struct {
	db    *benchDB
	rp    *relayProc
	res   produceResult
	ids   []string // the events produced, in order
	rep   ReceiverReport
	check Check
	last  int64 // the latest receipt, Unix nanoseconds
	cost  Cost
	split CPUSplit
	// pc0, pc1 and wal0, wal1 are relay's context switches and system
	// calls, and the WAL position, before and after producing.
	pc0, pc1   procCounters
	wal0, wal1 int64
	// tx0 is the database's transaction count before producing (see
	// benchDB.transactions).
	tx0 int64
}

// runSteady sets up the scenario tag (its database, one subscription, a
// warm relay), runs produce while measuring relay, waits until every
// event produced was received (within receiveWait) and recorded, checks
// the receipts, and hands the run to finish before tearing down. It
// returns errIncomplete when events went missing.
func (b *runner) runSteady(ctx context.Context, tag string, receiveWait time.Duration,
	produce func(ctx context.Context, db *benchDB) (produceResult, error), finish func(r *steadyRun) error) error {
	db, err := b.newDB(ctx, tag)
	if err != nil {
		return err
	}
	defer db.drop()
	if err := db.subscribe(ctx, b.recv.base, 1); err != nil {
		return err
	}
	rp, err := b.startWarm(ctx, db, tag, 1)
	if err != nil {
		return err
	}
	defer rp.stop(30 * time.Second)
	u0, err := rp.usage()
	if err != nil {
		return err
	}
	s0 := b.snapCPU(rp)
	r := &steadyRun{db: db, rp: rp, pc0: readProcCounters(rp.pid())}
	if r.wal0, err = db.walLSN(ctx); err != nil {
		return err
	}
	if r.tx0, err = db.transactions(ctx); err != nil {
		return err
	}
	if r.res, err = produce(ctx, db); err != nil {
		return err
	}
	if _, err := b.recv.waitReceived(ctx, len(r.res.samples), receiveWait); err != nil {
		return err
	}
	// The warm-up's 20 events are recorded too.
	if _, _, err := db.waitRecorded(ctx, len(r.res.samples)+20, time.Minute); err != nil {
		return err
	}
	r.split = b.cpuSince(s0, rp)
	r.pc1 = readProcCounters(rp.pid())
	if r.wal1, err = db.walLSN(ctx); err != nil {
		return err
	}
	u1, err := rp.usage()
	if err != nil {
		return err
	}
	b.notePeak(u1)
	if r.rep, err = b.recv.report(ctx); err != nil {
		return err
	}
	r.ids = make([]string, len(r.res.samples))
	for i, s := range r.res.samples {
		r.ids[i] = s.id
	}
	r.check, r.last = check(r.ids, r.rep)
	b.noteChecks(r.check.Missing, r.check.Duplicates)
	r.cost = newCost(u1.CPU-u0.CPU, len(r.ids), u1, false)
	if err := finish(r); err != nil {
		return err
	}
	if r.check.Missing > 0 {
		return errIncomplete
	}
	return nil
}

func (b *runner) live(ctx context.Context) error {
	var start, end time.Time
	produce := func(ctx context.Context, db *benchDB) (produceResult, error) {
		start = time.Now()
		res, err := produceFlat(ctx, db.pool, "relay.outbox", b.cfg.Producers, b.cfg.Duration)
		end = time.Now()
		return res, err
	}
	return b.runSteady(ctx, "live", 2*time.Minute, produce, func(run *steadyRun) error {
		inWindow := 0
		for _, id := range run.ids {
			if t, ok := run.rep.Times[id]; ok && t <= end.UnixNano() {
				inWindow++
			}
		}
		window := end.Sub(start).Seconds()
		r := &LiveResult{
			Producers:       b.cfg.Producers,
			Seconds:         window,
			Produced:        len(run.ids),
			ProducedPerSec:  float64(len(run.ids)) / window,
			DeliveredPerSec: float64(inWindow) / window,
			TailSeconds:     max(0, time.Unix(0, run.last).Sub(end).Seconds()),
			Latency:         latencies(run.res.samples, run.rep),
			Check:           run.check,
			Cost:            run.cost,
			CPU:             run.split,
		}
		r.KeptUp = r.TailSeconds < 1
		b.report.Live = r
		return nil
	})
}

// LatencyResult: a fixed rate below saturation.
type LatencyResult struct {
	Rate    int     `json:"rate"`
	Seconds float64 `json:"seconds"`
	Events  int     `json:"events"`
	// Late counts events the producers began more than 5ms after due.
	Late int `json:"late"`
	// CommitToReceipt is from the moment the producer's COMMIT returned to
	// the moment the receiver had read the request headers (both
	// time.Now() wall clock of the same machine, in different processes).
	CommitToReceipt Latencies `json:"commit_to_receipt"`
	// CreatedToReceipt is from the row's created_at (now() of the
	// inserting transaction, taken before its commit) to the receipt.
	CreatedToReceipt Latencies `json:"created_to_receipt"`
	// Breakdown is where the time went, from relay's clock points.
	Breakdown *Breakdown `json:"breakdown,omitempty"`
	Check     Check      `json:"check"`
	Cost      Cost       `json:"cost"`
	CPU       CPUSplit   `json:"cpu_split"`
}

func (b *runner) latency(ctx context.Context) error {
	var late int
	produce := func(ctx context.Context, db *benchDB) (produceResult, error) {
		b.progress("%d events/s for %s", b.cfg.Rate, b.cfg.LatencyDuration)
		res, l, err := producePaced(ctx, db.pool, b.cfg.Rate, b.cfg.LatencyDuration, 8)
		late = l
		return res, err
	}
	return b.runSteady(ctx, "latency", time.Minute, produce, func(run *steadyRun) error {
		// relay writes its clock points when it stops.
		if err := run.rp.stop(30 * time.Second); err != nil {
			return err
		}
		tx1, err := run.db.settledTransactions(ctx)
		if err != nil {
			return err
		}
		var bd *Breakdown
		if run.rp.stageTrace != "" {
			stages, err := readStageLog(run.rp.stageTrace)
			if err != nil {
				return err
			}
			bd = breakdown(run.res.samples, stages, run.rep)
			if n := float64(len(run.res.samples)); n > 0 {
				bd.ContextSwitchesPerEvent = float64(run.pc1.switches-run.pc0.switches) / n
				bd.SyscallsPerEvent = float64(run.pc1.syscalls-run.pc0.syscalls) / n
				bd.WALBytesPerEvent = float64(run.wal1-run.wal0) / n
				// The producers' inserts are one transaction each.
				bd.TransactionsPerEvent = float64(tx1-run.tx0-int64(len(run.res.samples))) / n
			}
		}
		created, err := createdTimes(ctx, run.db)
		if err != nil {
			return err
		}
		cs := make([]sample, 0, len(run.res.samples))
		for _, s := range run.res.samples {
			if t, ok := created[s.id]; ok {
				cs = append(cs, sample{s.id, t})
			}
		}
		b.report.Latency = &LatencyResult{
			Rate:             b.cfg.Rate,
			Seconds:          b.cfg.LatencyDuration.Seconds(),
			Events:           len(run.ids),
			Late:             late,
			CommitToReceipt:  latencies(run.res.samples, run.rep),
			CreatedToReceipt: latencies(cs, run.rep),
			Breakdown:        bd,
			Check:            run.check,
			Cost:             run.cost,
			CPU:              run.split,
		}
		return nil
	})
}

func createdTimes(ctx context.Context, db *benchDB) (map[string]int64, error) {
	rows, err := db.pool.Query(ctx, `SELECT event_id::text, (extract(epoch FROM created_at) * 1000000)::bigint FROM relay.outbox`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var id string
		var us int64
		if err := rows.Scan(&id, &us); err != nil {
			return nil, err
		}
		m[id] = us * 1000
	}
	return m, rows.Err()
}

// FanoutResult: events × subscriptions committed at once while relay runs.
type FanoutResult struct {
	Events        int `json:"events"`
	Subscriptions int `json:"subscriptions"`
	// Filter is the payload filter every subscription had, "" for none.
	Filter     string `json:"filter,omitempty"`
	Deliveries int    `json:"deliveries"`
	// From the commit of the events to the last receipt, and to every
	// delivery recorded succeeded with its attempt row.
	ReceivedSeconds  float64  `json:"received_seconds"`
	RecordedSeconds  float64  `json:"recorded_seconds"`
	DeliveriesPerSec float64  `json:"deliveries_per_sec"`
	Check            Check    `json:"check"`
	Cost             Cost     `json:"cost"`
	CPU              CPUSplit `json:"cpu_split"`
}

func (b *runner) fanout(ctx context.Context) error {
	db, err := b.newDB(ctx, "fanout")
	if err != nil {
		return err
	}
	defer db.drop()
	subs := b.cfg.FanoutSubscriptions
	if err := db.subscribeFiltered(ctx, b.recv.base, max(subs, 2), b.cfg.FanoutFilter); err != nil {
		return err
	}
	if subs < 2 {
		subs = 2
	}
	rp, err := b.startWarm(ctx, db, "fanout", subs)
	if err != nil {
		return err
	}
	defer rp.stop(30 * time.Second)
	b.progress("%d events × %d subscriptions", b.cfg.FanoutEvents, subs)
	f, err := b.fanToAll(ctx, db, rp, b.cfg.FanoutEvents, subs, "/s/", 5*time.Minute)
	if err != nil {
		return err
	}
	ids, want, c, u0, u1, split := f.ids, f.want, f.check, f.u0, f.u1, f.split
	committed, recordedAt, last := f.committed, f.recordedAt, f.last
	r := &FanoutResult{
		Events: len(ids), Subscriptions: subs, Deliveries: want, Filter: b.cfg.FanoutFilter,
		ReceivedSeconds: time.Unix(0, last).Sub(committed).Seconds(),
		RecordedSeconds: recordedAt.Sub(committed).Seconds(),
		Check:           c,
		Cost:            newCost(u1.CPU-u0.CPU, want, u1, false),
		CPU:             split,
	}
	r.DeliveriesPerSec = float64(want) / r.RecordedSeconds
	b.report.Fanout = r
	if c.Missing > 0 {
		return errIncomplete
	}
	return nil
}

// fannedOut is what fanToAll measured: one bulk insert of events that every
// one of subs subscriptions receives.
type fannedOut struct {
	ids                   []string
	want                  int
	committed, recordedAt time.Time
	last                  int64 // receipt of the last delivery, unix ns
	check                 Check
	u0, u1                ProcUsage
	split                 CPUSplit
}

// fanToAll inserts events in one transaction against a warm relay whose subs
// subscriptions all match them (their receiver paths are pathPrefix + 1…subs),
// waits until every delivery is received and recorded, and measures relay's
// CPU and the receiver's completeness. The fan-out and slow-receiver
// scenarios share it.
func (b *runner) fanToAll(ctx context.Context, db *benchDB, rp *relayProc, events, subs int, pathPrefix string, wait time.Duration) (*fannedOut, error) {
	u0, err := rp.usage()
	if err != nil {
		return nil, err
	}
	s0 := b.snapCPU(rp)
	ids, err := insertBulk(ctx, db.pool, events, events)
	if err != nil {
		return nil, err
	}
	f := &fannedOut{ids: ids, want: len(ids) * subs, committed: time.Now(), u0: u0}
	if _, err := b.recv.waitReceived(ctx, f.want, wait); err != nil {
		return nil, err
	}
	if f.recordedAt, _, err = db.waitRecorded(ctx, f.want+20*subs, time.Minute); err != nil {
		return nil, err
	}
	f.split = b.cpuSince(s0, rp)
	if f.u1, err = rp.usage(); err != nil {
		return nil, err
	}
	b.notePeak(f.u1)
	rep, err := b.recv.report(ctx)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, f.want)
	for _, id := range ids {
		for i := 1; i <= subs; i++ {
			keys = append(keys, id+"|"+pathPrefix+strconv.Itoa(i))
		}
	}
	f.check, f.last = check(keys, rep)
	b.noteChecks(f.check.Missing, f.check.Duplicates)
	return f, nil
}

// OverheadResult: the same single-row inserts into relay.outbox and into a
// plain table with the same columns, defaults, checks and indexes (not
// published), with relay running. Phases alternate plain, capture-only
// (relay.outbox with no subscription enabled: relay decodes and fans out
// to nothing) and delivered (relay.outbox, every event delivered), twice.
type OverheadResult struct {
	Producers    int     `json:"producers"`
	PhaseSeconds float64 `json:"phase_seconds"`
	PlainPerSec  float64 `json:"plain_per_sec"`
	OutboxPerSec float64 `json:"outbox_per_sec"`
	PlainP50Ms   float64 `json:"plain_p50_ms"`
	OutboxP50Ms  float64 `json:"outbox_p50_ms"`
	// Ratio is plain rate / outbox rate (time per insert, outbox over
	// plain) with every event delivered meanwhile.
	Ratio float64 `json:"ratio"`
	// CaptureOnly* are the same with no subscription: what the outbox
	// table and relay's reading of the WAL cost the writer, without the
	// deliveries' work competing for the same cores.
	CaptureOnlyPerSec float64 `json:"capture_only_per_sec"`
	CaptureOnlyRatio  float64 `json:"capture_only_ratio"`
	OutboxCheck       Check   `json:"outbox_check"`
	// SentWhileDisabled counts the requests relay started, while the
	// subscription was disabled, for events committed after it was (those
	// of the capture-only phases); it must be 0. A capture-only event relay
	// fans out only after the next phase enabled the subscription again is
	// matched then, and sent: fan-out matches subscriptions as they are
	// when it writes the deliveries.
	SentWhileDisabled int `json:"sent_while_disabled"`
	// CPU is where the machine's CPU went during the delivered phases,
	// CaptureCPU during the capture-only ones.
	CPU        CPUSplit `json:"cpu_split"`
	CaptureCPU CPUSplit `json:"capture_cpu_split"`
}

// add sums splits of several phases.
func (c *CPUSplit) add(o CPUSplit) {
	c.Wall += o.Wall
	c.Relay += o.Relay
	c.Postgres += o.Postgres
	c.Receiver += o.Receiver
	c.Bench += o.Bench
	c.Machine += o.Machine
	c.Other += o.Other
	for k, v := range o.PostgresBy {
		if c.PostgresBy == nil {
			c.PostgresBy = map[string]float64{}
		}
		c.PostgresBy[k] += v
	}
}

func (b *runner) overhead(ctx context.Context) error {
	db, err := b.newDB(ctx, "overhead")
	if err != nil {
		return err
	}
	defer db.drop()
	if err := db.subscribe(ctx, b.recv.base, 1); err != nil {
		return err
	}
	if err := withPlainTable(ctx, db.pool); err != nil {
		return err
	}
	rp, err := b.startWarm(ctx, db, "overhead", 1)
	if err != nil {
		return err
	}
	defer rp.stop(30 * time.Second)
	phase := max(b.cfg.Duration*3/10, time.Second)
	type tally struct {
		n    int
		secs float64
		durs []time.Duration
	}
	var plain, capture, delivered tally
	var outboxIDs, disabledIDs []string
	var enabledAt time.Time // when the subscription was enabled again after the capture-only phase
	sentDisabled := 0
	var split, captureSplit CPUSplit
	for _, kind := range []string{"plain", "capture", "delivered", "plain", "capture", "delivered"} {
		table := "relay.outbox"
		if kind == "plain" {
			table = "public.bench_plain"
		}
		enabled := kind != "capture"
		if kind == "delivered" && len(disabledIDs) > 0 {
			// Taken before the update: a request started earlier was
			// started while the subscription was disabled.
			enabledAt = time.Now()
		}
		if _, err := db.pool.Exec(ctx, `UPDATE relay.subscriptions SET enabled = $1 WHERE enabled <> $1`, enabled); err != nil {
			return err
		}
		b.progress("inserting into %s for %s (%s)", table, phase, kind)
		s0 := b.snapCPU(rp)
		res, err := produceFlat(ctx, db.pool, table, b.cfg.Producers, phase)
		if err != nil {
			return err
		}
		t := &plain
		switch kind {
		case "capture":
			t = &capture
			captureSplit.add(b.cpuSince(s0, rp))
			for _, s := range res.samples {
				disabledIDs = append(disabledIDs, s.id)
			}
		case "delivered":
			t = &delivered
			for _, s := range res.samples {
				outboxIDs = append(outboxIDs, s.id)
			}
			// Let relay finish before the next phase.
			if _, err := b.recv.waitAll(ctx, outboxIDs, 2*time.Minute); err != nil {
				return err
			}
			split.add(b.cpuSince(s0, rp))
			if len(disabledIDs) > 0 {
				var n int
				if err := db.pool.QueryRow(ctx, `
					SELECT count(*) FROM relay.delivery_attempts AS a JOIN relay.deliveries AS d ON d.id = a.delivery_id
					WHERE d.event_id = ANY($1::uuid[]) AND a.started_at < $2`, disabledIDs, enabledAt).Scan(&n); err != nil {
					return err
				}
				sentDisabled += n
				disabledIDs = nil
			}
		}
		t.n += len(res.samples)
		t.secs += res.elapsed.Seconds()
		t.durs = append(t.durs, res.commits...)
	}
	u, err := rp.usage()
	if err != nil {
		return err
	}
	b.notePeak(u)
	rep, err := b.recv.report(ctx)
	if err != nil {
		return err
	}
	c, _ := check(outboxIDs, rep)
	b.noteChecks(c.Missing, c.Duplicates)
	// Events committed while the subscription was disabled must not
	// reach it: relay stops sending to a subscription from the change on.
	r := &OverheadResult{
		Producers:         b.cfg.Producers,
		PhaseSeconds:      phase.Seconds(),
		PlainPerSec:       float64(plain.n) / plain.secs,
		OutboxPerSec:      float64(delivered.n) / delivered.secs,
		CaptureOnlyPerSec: float64(capture.n) / capture.secs,
		PlainP50Ms:        ms(percentile(plain.durs, 0.5)),
		OutboxP50Ms:       ms(percentile(delivered.durs, 0.5)),
		OutboxCheck:       c,
		SentWhileDisabled: sentDisabled,
		CPU:               split,
		CaptureCPU:        captureSplit,
	}
	r.Ratio = r.PlainPerSec / r.OutboxPerSec
	r.CaptureOnlyRatio = r.PlainPerSec / r.CaptureOnlyPerSec
	b.report.Overhead = r
	if c.Missing > 0 {
		return errIncomplete
	}
	if sentDisabled > 0 {
		return fmt.Errorf("%d requests were started while their subscription was disabled, for events committed after it was", sentDisabled)
	}
	return nil
}
