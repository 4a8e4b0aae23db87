package dispatch

import "time"

// Stages are the clock points of one delivery on its way through this
// relay, for relay bench's latency breakdown. They are taken only when
// Config.Tracer is set; a point not passed (a delivery claimed from the
// table rather than handed over by fan-out has no decode or fan-out
// point) stays zero.
type Stages struct {
	// Decoded is when the stream decoded the event from the WAL.
	Decoded time.Time
	// FanoutStart is when the fan-out statement of its batch was sent,
	// FanoutCommit when that statement had committed.
	FanoutStart, FanoutCommit time.Time
	// HandedOver is when the delivery was queued in the dispatcher.
	HandedOver time.Time
	// RequestStart is when its request was about to be written (body
	// rendered and signed), Answered when the answer had been read.
	RequestStart, Answered time.Time
	// Recorded is when its attempt had committed.
	Recorded time.Time
	// WrittenWithDelivery: fan-out wrote the attempt with the delivery
	// row (Presend.TakeAnswered); Recorded is then when the recorder
	// counted it, after that statement's commit.
	WrittenWithDelivery bool
}

// Tracer receives the Stages of every recorded attempt. It is called
// from the dispatcher's record loop and must not block; nil (the default)
// takes no clock point at all.
type Tracer interface {
	Traced(eventID string, s *Stages)
}

// Tracing reports whether clock points are taken (Config.Tracer is set):
// fan-out stamps its own points into Claimed.Stages only then.
func (d *Dispatcher) Tracing() bool { return d.cfg.Tracer != nil }
