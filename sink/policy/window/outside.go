package window

import (
	"fmt"
	"time"
)

// Outside is what a subscription does with a delivery that comes due while
// a delivery window that applies to it (its own, or the global one unless
// it ignores it) is closed: relay.subscriptions.outside_window.
type Outside int

const (
	// Defer keeps the delivery pending until the windows open (the
	// default, and what every delivery did before outside_window).
	Defer Outside = iota
	// Send lets it go out at once: windows never hold it.
	Send
	// Skip ends a delivery that has never been attempted as skipped, with
	// the reason. A delivery already attempted (a retry) or queued again by
	// hand (redeliver: the skip was its attempt) is deferred instead, so a
	// skipped delivery can still be sent.
	Skip
)

// ParseOutside reads an outside_window value; "" means Defer.
func ParseOutside(s string) (Outside, error) {
	switch s {
	case "", "defer":
		return Defer, nil
	case "send":
		return Send, nil
	case "skip":
		return Skip, nil
	}
	return Defer, fmt.Errorf("outside_window %q: want defer, send or skip", s)
}

// String gives the outside_window value.
func (o Outside) String() string {
	switch o {
	case Send:
		return "send"
	case Skip:
		return "skip"
	}
	return "defer"
}

// Decision is what Decide says about one delivery due now.
type Decision struct {
	// Paused: the relay is paused; keep the delivery pending.
	Paused bool
	// Skip: end the delivery as skipped, for Reason.
	Skip   bool
	Reason string
	// At is when the delivery may go out; now itself means at once. It is
	// set unless Paused or Skip.
	At time.Time
}

// Decide applies the gate and the subscription's outside-window choice to
// a delivery due at now. firstAttempt tells whether the delivery was never
// attempted (its skip, if any, counts as an attempt). A pause and absence
// days always hold deliveries, whatever outside says: they are the
// operator's, not the endpoint's.
func (g Gate) Decide(now time.Time, sub *Window, ignoreGlobal bool, outside Outside, firstAttempt bool) Decision {
	if g.Paused {
		return Decision{Paused: true}
	}
	switch outside {
	case Send:
		at, _ := g.NextSendTime(now, nil, true)
		return Decision{At: at}
	case Skip:
		if !firstAttempt || g.isAbsent(now) {
			break
		}
		if !ignoreGlobal && g.Global != nil && !g.Global.IsOpen(now) {
			return Decision{Skip: true, Reason: "skipped: outside the global delivery window " + g.Global.String() + " (outside_window = skip)"}
		}
		if sub != nil && !sub.IsOpen(now) {
			return Decision{Skip: true, Reason: "skipped: outside the subscription's delivery window " + sub.String() + " (outside_window = skip)"}
		}
	}
	at, _ := g.NextSendTime(now, sub, ignoreGlobal)
	return Decision{At: at}
}
