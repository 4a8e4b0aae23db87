package dispatch

import (
	"context"
	"time"

	"github.com/pgoutbox/relay/sink/policy/classify"
)

// recordLoop writes attempts in batches: whatever results are waiting,
// and those that come within RecordLinger of the first, are recorded
// together.
func (d *Dispatcher) recordLoop(ctx context.Context) {
	defer close(d.recordDone)
	batch := make([]*result, 0, 1024)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	open := true
	for open {
		r, ok := <-d.results
		if !ok {
			return
		}
		batch = append(batch[:0], r)
		if d.cfg.RecordLinger > 0 {
			linger.Reset(d.cfg.RecordLinger)
		}
	gather:
		for len(batch) < cap(batch) {
			select {
			case r, ok := <-d.results:
				if !ok {
					open = false
					break gather
				}
				batch = append(batch, r)
				continue
			default:
			}
			if d.cfg.RecordLinger <= 0 {
				break
			}
			select {
			case r, ok := <-d.results:
				if !ok {
					open = false
					break gather
				}
				batch = append(batch, r)
			case <-linger.C:
				break gather
			}
		}
		linger.Stop()
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

// record writes a batch of results: their attempts, and the deliveries
// held too long to start handed back.
func (d *Dispatcher) record(ctx context.Context, batch []*result) error {
	d.recordMu.Lock()
	defer d.recordMu.Unlock()
	attempts := d.recordBuf[:0]
	defer func() { clear(attempts); d.recordBuf = attempts[:0] }()
	var handBack []int64
	dropped := 0
	var written int64
	for _, r := range batch {
		if c := r.job.commit; c != nil && !r.uncommitted {
			// Handed over before its insert's commit was confirmed: the row
			// can be updated only once it is. Fan-out confirms it long
			// before most answers come back.
			if !c.wrote(r.job.deliveryID) {
				r.uncommitted = true
				dropped++
			}
		}
		switch {
		case r.uncommitted:
		case r.released:
		case r.requeue:
			handBack = append(handBack, r.job.deliveryID)
		default:
			// Fan-out wrote it with its delivery (Presend.TakeAnswered),
			// in the statement that has committed by now.
			r.rec.Written = r.job.aheadState.Load() == aheadWritten
			if r.rec.Written {
				written++
			}
			attempts = append(attempts, r.rec)
		}
	}
	if dropped > 0 {
		d.log.Warn().Int("num_deliveries", dropped).Msg("attempts of deliveries whose insert did not commit are not recorded; their events are replayed and sent again")
	}
	if len(attempts) == 0 && len(handBack) == 0 {
		return nil
	}
	if err := d.recorder.Record(ctx, attempts, handBack); err != nil {
		return err
	}
	d.writtenAhead.Add(written)
	d.recorded(batch, len(attempts))
	return nil
}

// recorded counts a committed batch and tells the observer and the tracer.
func (d *Dispatcher) recorded(batch []*result, attempts int) {
	d.attempts.Add(int64(attempts))
	if t := d.cfg.Tracer; t != nil {
		now := time.Now()
		for _, r := range batch {
			if s := r.job.stages; s != nil && !r.released && !r.requeue && !r.uncommitted {
				s.Recorded, s.WrittenWithDelivery = now, r.rec.Written
				t.Traced(r.job.eventID, s)
			}
		}
	}
	if d.cfg.Observer != nil {
		for _, r := range batch {
			if r.released || r.requeue || r.uncommitted {
				continue
			}
			if r.rec.Verdict == classify.VerdictSucceeded {
				d.cfg.Observer.Delivered(time.Since(r.job.eventCreatedAt))
			}
			d.cfg.Observer.AttemptDone(r.rec.Outcome(), r.rec.Duration)
		}
	}
}
