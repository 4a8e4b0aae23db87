package bench

import (
	"context"
	"fmt"
	"time"
)

// Flow-control scenarios (issue 17).
//
// slow: 100 subscriptions whose receivers take 100 ms per request, the
// case where relay's concurrency, not its CPU, is the limit: deliveries/s
// and relay's CPU per delivery.
//
// ordering: the drain twice, with a backlog whose events carry 1,000 keys,
// once with ordering = none and once with ordering = key, so the cost of
// per-key order reads against the same backlog on the same machine.

// slowPathDelay is how long the receiver takes on a path under /slow/.
const slowPathDelay = 100 * time.Millisecond

// SlowResult is the slow-receivers scenario.
type SlowResult struct {
	Events           int      `json:"events"`
	Subscriptions    int      `json:"subscriptions"`
	Deliveries       int      `json:"deliveries"`
	ReceiverDelayMs  float64  `json:"receiver_delay_ms"`
	RecordedSeconds  float64  `json:"recorded_seconds"`
	DeliveriesPerSec float64  `json:"deliveries_per_sec"`
	Check            Check    `json:"check"`
	Cost             Cost     `json:"cost"`
	CPU              CPUSplit `json:"cpu_split"`
}

func (b *runner) slow(ctx context.Context) error {
	db, err := b.newDB(ctx, "slow")
	if err != nil {
		return err
	}
	defer db.drop()
	subs := 100
	if _, err := db.pool.Exec(ctx, `
		INSERT INTO relay.subscriptions (name, url, event_types)
		SELECT 'slow-' || i, $1 || '/slow/s/' || i, '{*}' FROM generate_series(1, $2) AS i`, b.recv.base, subs); err != nil {
		return err
	}
	rp, err := b.startWarm(ctx, db, "slow", subs)
	if err != nil {
		return err
	}
	defer rp.stop(30 * time.Second)
	events := b.cfg.SlowEvents
	b.progress("%d events × %d subscriptions answering in %s", events, subs, slowPathDelay)
	f, err := b.fanToAll(ctx, db, rp, events, subs, "/slow/s/", 10*time.Minute)
	if err != nil {
		return err
	}
	ids, want, c, u0, u1, split := f.ids, f.want, f.check, f.u0, f.u1, f.split
	committed, recordedAt := f.committed, f.recordedAt
	r := &SlowResult{
		Events: len(ids), Subscriptions: subs, Deliveries: want, ReceiverDelayMs: ms(slowPathDelay),
		RecordedSeconds: recordedAt.Sub(committed).Seconds(),
		Check:           c, Cost: newCost(u1.CPU-u0.CPU, want, u1, false), CPU: split,
	}
	r.DeliveriesPerSec = float64(want) / r.RecordedSeconds
	b.report.Slow = r
	if c.Missing > 0 {
		return errIncomplete
	}
	return nil
}

// OrderingResult is the drain of one keyed backlog with and without
// per-key order.
type OrderingResult struct {
	Events int          `json:"events"`
	Keys   int          `json:"keys"`
	None   *DrainResult `json:"none"`
	Key    *DrainResult `json:"key"`
}

func (b *runner) ordering(ctx context.Context) error {
	r := &OrderingResult{Events: b.cfg.OrderingEvents, Keys: b.cfg.OrderingKeys}
	b.report.Ordering = r
	for _, mode := range []string{"none", "key"} {
		d, err := b.keyedDrain(ctx, mode)
		if mode == "none" {
			r.None = d
		} else {
			r.Key = d
		}
		if err != nil {
			return fmt.Errorf("ordering = %s: %w", mode, err)
		}
	}
	return nil
}

// keyedDrain is the drain scenario on a backlog of events with keys, for
// a subscription with the given ordering.
func (b *runner) keyedDrain(ctx context.Context, ordering string) (*DrainResult, error) {
	db, err := b.newDB(ctx, "ordering_"+ordering)
	if err != nil {
		return nil, err
	}
	defer db.drop()
	if _, err := db.pool.Exec(ctx, `INSERT INTO relay.subscriptions (name, url, event_types, ordering) VALUES ('bench', $1, '{*}', $2)`,
		b.recv.base+"/hook", ordering); err != nil {
		return nil, err
	}
	rp, err := b.startRelay(db.url, db.name, "ordering-setup")
	if err != nil {
		return nil, err
	}
	if err := db.waitStreaming(ctx, db.name, rp, time.Minute); err != nil {
		_ = rp.stop(10 * time.Second)
		return nil, err
	}
	if err := rp.stop(30 * time.Second); err != nil {
		return nil, err
	}
	b.progress("committing %d events with %d keys while relay is stopped (ordering = %s)", b.cfg.OrderingEvents, b.cfg.OrderingKeys, ordering)
	ids, err := insertBulk(ctx, db.pool, b.cfg.OrderingEvents, 1000)
	if err != nil {
		return nil, err
	}
	if _, err := db.pool.Exec(ctx, `UPDATE relay.outbox SET key = 'k' || (id % $1)`, b.cfg.OrderingKeys); err != nil {
		return nil, err
	}
	if err := b.recv.reset(ctx); err != nil {
		return nil, err
	}
	s0 := b.snapCPU(nil)
	rp, err = b.startRelay(db.url, db.name, "ordering-"+ordering)
	if err != nil {
		return nil, err
	}
	defer rp.stop(30 * time.Second)
	timeout := time.Minute + time.Duration(len(ids))*time.Second/200
	if _, err := b.recv.waitReceived(ctx, len(ids), timeout); err != nil {
		return nil, err
	}
	recordedAt, attempts, err := db.waitRecorded(ctx, len(ids), time.Minute)
	if err != nil {
		return nil, err
	}
	split := b.cpuSince(s0, rp)
	u, err := rp.usage()
	if err != nil {
		return nil, err
	}
	b.notePeak(u)
	rep, err := b.recv.report(ctx)
	if err != nil {
		return nil, err
	}
	c, last := check(ids, rep)
	b.noteChecks(c.Missing, c.Duplicates)
	d := &DrainResult{
		Events: len(ids), ReceivedSeconds: time.Unix(0, last).Sub(rp.started).Seconds(),
		RecordedSeconds: recordedAt.Sub(rp.started).Seconds(), AttemptsRecorded: attempts,
		Check: c, Cost: newCost(u.CPU, len(ids), u, true), CPU: split,
	}
	d.EventsPerSec = float64(len(ids)) / d.RecordedSeconds
	d.ReceivedPerSec = float64(len(ids)) / d.ReceivedSeconds
	if c.Missing > 0 {
		return d, errIncomplete
	}
	return d, nil
}

// minKeyedShare is the ordering scenario's target: the keyed drain at
// least this share of the same backlog's unordered rate. With far more
// keys than requests in flight, ordering by key should cost little: 0.69-
// 0.73 on a 2-core machine, 0.09-0.22 while the claim's plan re-read its
// ids for every candidate (BENCHMARKS.md, "The keyed drain").
const minKeyedShare = 0.5

// flowRows are the report's rows of the flow-control scenarios.
func (r *Report) flowRows() [][]string {
	var rows [][]string
	if s := r.Slow; s != nil {
		rows = append(rows, []string{
			fmt.Sprintf("8. %d subscriptions answering in %.0f ms, %s events: deliveries/s; relay CPU per delivery", s.Subscriptions, s.ReceiverDelayMs, num(float64(s.Events))),
			fmt.Sprintf("%s (recorded %.2fs); %.1f µs", num(s.DeliveriesPerSec), s.RecordedSeconds, s.Cost.CPUMicrosPerEvent),
			"—", "relay --concurrency ÷ receiver delay", "—", "measured",
		})
	}
	if o := r.Ordering; o != nil && o.None != nil && o.Key != nil {
		share := ratio(o.Key.EventsPerSec, o.None.EventsPerSec)
		rows = append(rows, []string{
			fmt.Sprintf("9. drain %s events, %d keys: events/s, ordering = none vs key", num(float64(o.Events)), o.Keys),
			fmt.Sprintf("%s vs %s (%s)", num(o.None.EventsPerSec), num(o.Key.EventsPerSec), share),
			fmt.Sprintf("key ≥ %.1f × none", minKeyedShare), "the same backlog unordered", share,
			verdict(o.Key.EventsPerSec >= minKeyedShare*o.None.EventsPerSec),
		})
	}
	return rows
}
