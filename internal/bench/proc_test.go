package bench

import (
	"slices"
	"testing"
)

// TestRelayEnvSetsProcsOfRelayOnly checks that --relay-procs reaches the
// relay processes' environment, after the configured ChildEnv, and that
// the config's own slice is left alone (the receiver shares it).
func TestRelayEnvSetsProcsOfRelayOnly(t *testing.T) {
	// Room to grow, so that an append onto ChildEnv itself would show.
	child := make([]string, 1, 4)
	child[0] = "A=1"
	cfg := Config{ChildEnv: child, RelayProcs: 1}
	if got, want := relayEnv(cfg), []string{"A=1", "GOMAXPROCS=1"}; !slices.Equal(got, want) {
		t.Errorf("relayEnv = %q, want %q", got, want)
	}
	if spare := child[:cap(child)][1]; spare != "" {
		t.Errorf("relayEnv wrote %q into ChildEnv's array, which the receiver's environment shares", spare)
	}
	cfg.RelayProcs = 0
	if got := relayEnv(cfg); !slices.Equal(got, child) {
		t.Errorf("relayEnv without --relay-procs = %q, want %q", got, child)
	}
}
