package dispatch

import (
	"context"
	"time"
)

// listen wakes the dispatcher on notifications from other processes:
// deliveries created by another relay, redeliver/replay, pause/resume,
// holds another relay set (throttle windows, circuits), and changes of
// subscriptions (see presend.go).
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

func (d *Dispatcher) listenOnce(ctx context.Context) error {
	conn, err := d.cfg.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	// The connection is left in LISTEN state; destroy it rather than return
	// it to the pool.
	defer conn.Conn().Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN relay_deliveries; LISTEN relay_settings; LISTEN relay_flow; LISTEN relay_subscriptions"); err != nil {
		return err
	}
	// Sending from a subscription snapshot needs every change to be
	// heard: a snapshot is read only from now on, and dropped when the
	// listener goes.
	d.presend.invalidate(true)
	defer d.presend.invalidate(false)
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == "relay_subscriptions" {
			d.presend.invalidate(true)
			continue
		}
		if n.Channel == "relay_flow" {
			// A relay held or released a subscription: read the holds.
			d.mu.Lock()
			d.flowForce = true
			d.mu.Unlock()
			d.wakeFlow()
			continue
		}
		if n.Channel == "relay_settings" {
			d.mu.Lock()
			d.settingsAt = time.Time{}
			d.mu.Unlock()
		}
		d.Wake()
	}
}
