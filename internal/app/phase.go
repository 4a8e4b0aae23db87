package app

import (
	"errors"
	"fmt"

	"github.com/pgoutbox/relay/internal/buildinfo"
)

// The phases of an App, in order. Start moves through them; Stop moves to
// phaseStopping from wherever Start got to.
const (
	phaseNew int32 = iota
	phaseWaiting
	phaseStarting
	phaseRunning
	phaseStopping
)

var phaseNames = map[int32]string{
	phaseNew:      "new",
	phaseWaiting:  "waiting_for_database",
	phaseStarting: "starting",
	phaseRunning:  "running",
	phaseStopping: "stopping",
}

// startupState is nil once the App runs, else why it does not yet (or no
// longer): what /readyz answers while relay waits for its database.
func (a *App) startupState() error {
	switch a.phase.Load() {
	case phaseRunning:
		return nil
	case phaseWaiting:
		if st, ok := a.wait.Status(); ok {
			return fmt.Errorf("waiting for the database: %s", st)
		}
		return errors.New("connecting to the database")
	case phaseStarting:
		return errors.New("starting: migrating and setting up replication")
	case phaseStopping:
		return errors.New("stopping")
	}
	return errors.New("not started")
}

// health is what /healthz adds to its answer: what the process is doing
// and which build it is.
func (a *App) health() map[string]any {
	b := buildinfo.Read()
	h := map[string]any{
		"state":      phaseNames[a.phase.Load()],
		"version":    b.Version,
		"commit":     b.ShortCommit(),
		"go_version": b.GoVersion,
	}
	if st, ok := a.wait.Status(); ok && a.phase.Load() == phaseWaiting {
		h["waiting_for"] = st.String()
	}
	return h
}
