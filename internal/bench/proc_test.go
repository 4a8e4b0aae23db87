package bench

import (
	"slices"
	"testing"
)

// TestRelayEnvSetsProcsOfRelayOnly checks that --relay-procs reaches the
// relay processes' environment, after the configured ChildEnv, and that
// the config's own slice is left alone (the receiver shares it).
func TestRelayEnvSetsProcsOfRelayOnly(t *testing.T) {
	child := []string{"A=1"}
	cfg := Config{ChildEnv: child, RelayProcs: 1}
	if got, want := relayEnv(cfg), []string{"A=1", "GOMAXPROCS=1"}; !slices.Equal(got, want) {
		t.Errorf("relayEnv = %q, want %q", got, want)
	}
	if !slices.Equal(cfg.ChildEnv, []string{"A=1"}) || len(child) != 1 {
		t.Errorf("ChildEnv changed: %q", cfg.ChildEnv)
	}
	cfg.RelayProcs = 0
	if got := relayEnv(cfg); !slices.Equal(got, child) {
		t.Errorf("relayEnv without --relay-procs = %q, want %q", got, child)
	}
}
