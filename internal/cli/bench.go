package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/pgoutbox/relay/internal/bench"
)

func init() {
	register("bench", "measure relay end to end on this machine (drain, live, latency, fan-out, write overhead, cost, limits)", (*CLI).bench)
	register("bench-receiver", "internal: the webhook receiver process of relay bench", (*CLI).benchReceiver)
	register("bench-relay", "internal: relay run with a CPU profile or clock points, for relay bench", (*CLI).benchRelay)
}

func (c *CLI) bench(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench", "bench [--only drain,latency] [--events 50000] [--json] [--database-url URL]")
	var cfg bench.Config
	only := fs.String("only", "", "comma-separated scenarios to run: "+strings.Join(bench.Scenarios, ",")+" (default all of these), or "+
		strings.Join(bench.ExtraScenarios, ",")+" (only when named)")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "a postgres:// server where the role may CREATE DATABASE (each scenario gets a database, dropped after); empty starts a throwaway cluster")
	fs.IntVar(&cfg.Events, "events", 50000, "drain: events committed while relay is stopped")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "live: how long the producers insert (write overhead runs 4 phases of 3/10 of it)")
	fs.DurationVar(&cfg.LatencyDuration, "latency-duration", 30*time.Second, "latency: how long the fixed rate runs")
	fs.IntVar(&cfg.Rate, "rate", 1000, "latency: events per second")
	fs.IntVar(&cfg.FanoutEvents, "fanout-events", 1000, "fan-out: events")
	fs.IntVar(&cfg.FanoutSubscriptions, "fanout-subs", 100, "fan-out: subscriptions matching every event")
	fs.StringVar(&cfg.FanoutFilter, "fanout-filter", "", `fan-out: a payload filter (jsonpath) every subscription gets; the events must pass it, e.g. '$.tags[*] ? (@ == "relay")'`)
	fs.IntVar(&cfg.SlowEvents, "slow-events", 200, "slow: events to 100 subscriptions whose receivers take 100 ms")
	fs.IntVar(&cfg.OrderingEvents, "ordering-events", 20000, "ordering: keyed backlog drained with ordering = none, then key")
	fs.IntVar(&cfg.OrderingKeys, "ordering-keys", 1000, "ordering: distinct keys in that backlog")
	fs.IntVar(&cfg.Producers, "producers", 4, "live and write overhead: inserting connections")
	fs.IntVar(&cfg.HistoryAttempts, "history-attempts", 10_000_000, "history: attempts loaded (one per delivery, 3 subscriptions)")
	fs.IntVar(&cfg.HistoryDays, "history-days", 9, "history: days the attempts span (at least 3)")
	fs.IntVar(&cfg.HistoryDrainEvents, "history-drain", 20000, "history: events of each drain run against the history")
	fs.IntVar(&cfg.CaptureEvents, "capture-events", 200000, "capture: events decoded (100 per transaction; a quarter of them one per transaction)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "relay's --concurrency")
	fs.IntVar(&cfg.RelayProcs, "relay-procs", 0, "GOMAXPROCS of the relay processes only, as under a CPU limit of that many cores (0: Go's default, the machine's cores)")
	fs.StringVar(&cfg.ProfileDir, "profile-dir", "", "write a CPU profile of each relay process here (go tool pprof)")
	fs.StringVar(&cfg.RelayLogLevel, "relay-log-level", "warn", "--log-level of the relay processes")
	fs.BoolVar(&cfg.KeepFiles, "keep", false, "keep the run's directory (relay and receiver logs, the cluster's log)")
	asJSON := fs.Bool("json", false, "print the results as JSON instead of the table")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("bench takes no arguments (got %q)", fs.Args())
	}
	if *only != "" {
		for _, s := range strings.Split(*only, ",") {
			if s = strings.TrimSpace(s); s != "" {
				cfg.Only = append(cfg.Only, s)
			}
		}
	}
	for _, s := range cfg.Only {
		if !contains(bench.Scenarios, s) && !contains(bench.ExtraScenarios, s) {
			return usageError("--only: unknown scenario %q (want %s, or %s)", s, strings.Join(bench.Scenarios, ", "), strings.Join(bench.ExtraScenarios, ", "))
		}
	}
	if cfg.HistoryAttempts < 3000 || cfg.HistoryDays < 3 || cfg.HistoryDrainEvents <= 0 || cfg.CaptureEvents < 1000 {
		return usageError("--history-attempts must be at least 3000, --history-days at least 3, --capture-events at least 1000")
	}
	if cfg.Events <= 0 || cfg.Rate <= 0 || cfg.FanoutEvents <= 0 || cfg.FanoutSubscriptions <= 0 || cfg.Producers <= 0 ||
		cfg.SlowEvents <= 0 || cfg.OrderingEvents <= 0 || cfg.OrderingKeys <= 0 ||
		cfg.Duration <= 0 || cfg.LatencyDuration <= 0 || cfg.Concurrency <= 0 || cfg.Concurrency > 4096 || cfg.RelayProcs < 0 {
		return usageError("sizes, rates and durations must be positive (concurrency at most 4096, --relay-procs not negative)")
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return err
		}
	}
	cfg.Progress = c.Stderr
	cfg.Command = "relay bench " + strings.Join(args, " ")
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if rep != nil {
		if *asJSON {
			if werr := rep.WriteJSON(c.Stdout); werr != nil && err == nil {
				err = werr
			}
		} else {
			rep.WriteTable(c.Stdout)
		}
	}
	return err
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (c *CLI) benchReceiver(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench-receiver", "bench-receiver [--addr 127.0.0.1:0]")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench.ServeReceiver(ctx, *addr, c.Stdout)
}

// benchRelay is `relay run` under a CPU profile, with the clock points of
// every delivery written to a file at exit, or both: bench-relay
// [--cpuprofile FILE] [--stage-trace FILE] -- run [flags]. With a CPU
// profile it also writes the run's allocation profile next to it (FILE
// without .cpu.pprof, plus .allocs.pprof).
func (c *CLI) benchRelay(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench-relay", "bench-relay [--cpuprofile FILE] [--stage-trace FILE] -- run [flags]")
	path := fs.String("cpuprofile", "", "write a CPU profile here")
	tracePath := fs.String("stage-trace", "", "write the clock points of every delivery here when relay stops (JSON lines)")
	if err := parse(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 || rest[0] != "run" {
		return usageError("want [--cpuprofile FILE] [--stage-trace FILE] -- run [flags]")
	}
	var stages *bench.StageLog
	if *tracePath != "" {
		stages = bench.NewStageLog()
		c.tracer = stages
	}
	if *path != "" {
		f, err := os.Create(*path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("starting CPU profile: %w", err)
		}
	}
	err := c.run(ctx, rest[1:])
	if *path != "" {
		pprof.StopCPUProfile()
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if stages != nil {
		if werr := stages.WriteFile(*tracePath); werr != nil && err == nil {
			err = werr
		}
	}
	if *path != "" {
		// Beside it, what was allocated over the whole run (sampled), for
		// `go tool pprof -sample_index=alloc_space`.
		if af, ferr := os.Create(strings.TrimSuffix(*path, ".cpu.pprof") + ".allocs.pprof"); ferr == nil {
			_ = pprof.Lookup("allocs").WriteTo(af, 0)
			af.Close()
		}
	}
	return err
}
