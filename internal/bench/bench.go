// Package bench measures relay end to end on one machine: PostgreSQL, a
// relay process and a receiver process side by side, plus the limits of
// that machine measured in the same run (the receiver's own ceiling and the
// raw commit rate), so every relay figure can be read against what the box
// can do at all. `relay bench` runs it; see BENCHMARKS.md for the latest
// table and how to read it.
//
// Relay and the receiver are separate processes started from the current
// executable (relay run and relay bench-receiver): relay's CPU time and peak
// RSS are read from /proc/<pid>/stat and /proc/<pid>/status and include
// nothing of the receiver or of the benchmark's producers.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/pgoutbox/relay/internal/pgcluster"
)

// Scenarios, in the order they run, are what a run without --only runs.
var Scenarios = []string{"limits", "drain", "live", "latency", "fanout", "overhead", "slow", "ordering"}

// ExtraScenarios run only when named in --only, after Scenarios: the
// history at size (10 million attempts by default, minutes of loading) and
// the capture stage alone (logical decoding and capture shards).
var ExtraScenarios = []string{"history", "capture"}

// Config is what `relay bench` can be told. Zero values take the defaults
// documented on each field.
type Config struct {
	// DatabaseURL is a postgres:// URL of a server on which the role may
	// CREATE DATABASE; each scenario gets its own database there, dropped
	// afterwards. Empty starts a throwaway cluster from the local binaries.
	DatabaseURL string
	// Only limits the run to these scenarios (default all of Scenarios).
	Only []string
	// Events is the drain scenario's backlog (default 50,000).
	Events int
	// Duration is how long the live and write-overhead producers run
	// (default 10s for live; overhead runs four phases of Duration/3).
	Duration time.Duration
	// LatencyDuration and Rate are the latency scenario's length and pace
	// (defaults 30s and 1,000 events/s).
	LatencyDuration time.Duration
	Rate            int
	// FanoutEvents × FanoutSubscriptions deliveries in the fan-out scenario
	// (defaults 1,000 × 100).
	FanoutEvents, FanoutSubscriptions int
	// HistoryAttempts, HistoryDays and HistoryDrainEvents size the history
	// scenario: attempts loaded over that many days (defaults 10,000,000
	// over 9 days), and the backlog of each drain run against it (default
	// 20,000 events, to 3 subscriptions).
	HistoryAttempts, HistoryDays, HistoryDrainEvents int
	// CaptureEvents is the capture scenario's backlog (default 200,000).
	CaptureEvents int
	// FanoutFilter, when set, is a payload filter (jsonpath) every
	// fan-out subscription gets; every benchmark event must pass it, so the
	// deliveries are the same as without and the difference is the cost of
	// filtering.
	FanoutFilter string
	// SlowEvents is how many events go to the 100 slow subscriptions of
	// the slow scenario (default 200: 20,000 deliveries).
	SlowEvents int
	// OrderingEvents and OrderingKeys size the ordering scenario's keyed
	// backlog (defaults 20,000 events, 1,000 keys).
	OrderingEvents, OrderingKeys int
	// Producers is how many connections insert in the live and overhead
	// scenarios (default 4).
	Producers int
	// Concurrency is relay's --concurrency (default 64, relay's default).
	Concurrency int
	// RelayProcs, when positive, is the GOMAXPROCS of the relay processes
	// (not of PostgreSQL, the receiver or the producers): how relay does
	// on fewer cores than the machine has, as under a container's CPU
	// limit. Zero leaves Go's default.
	RelayProcs int
	// ProfileDir, when set, makes each relay process write a CPU profile
	// there (relay-<scenario>.cpu.pprof).
	ProfileDir string
	// Exe is the relay executable (default os.Executable()); ChildEnv is
	// added to the environment of the processes started from it.
	Exe      string
	ChildEnv []string
	// RelayLogLevel is the relay processes' --log-level (default warn);
	// their logs are kept with the run's files when a scenario fails.
	RelayLogLevel string
	// KeepFiles keeps the run's directory (logs, the throwaway cluster's
	// log) and prints where it is.
	KeepFiles bool
	// Progress receives one line per step (nil: none).
	Progress io.Writer
	// Command is recorded in the report as the command that produced it.
	Command string
}

func (c *Config) defaults() error {
	if c.Events <= 0 {
		c.Events = 50000
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.LatencyDuration <= 0 {
		c.LatencyDuration = 30 * time.Second
	}
	if c.Rate <= 0 {
		c.Rate = 1000
	}
	if c.FanoutEvents <= 0 {
		c.FanoutEvents = 1000
	}
	if c.FanoutSubscriptions <= 0 {
		c.FanoutSubscriptions = 100
	}
	if c.HistoryAttempts <= 0 {
		c.HistoryAttempts = 10_000_000
	}
	if c.HistoryDays <= 2 {
		c.HistoryDays = 9
	}
	if c.HistoryDrainEvents <= 0 {
		c.HistoryDrainEvents = 20000
	}
	if c.CaptureEvents <= 0 {
		c.CaptureEvents = 200_000
	}
	if c.Producers <= 0 {
		c.Producers = 4
	}
	if c.SlowEvents <= 0 {
		c.SlowEvents = 200
	}
	if c.OrderingEvents <= 0 {
		c.OrderingEvents = 20000
	}
	if c.OrderingKeys <= 0 {
		c.OrderingKeys = 1000
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if len(c.Only) == 0 {
		c.Only = Scenarios
	}
	for _, s := range c.Only {
		if !slices.Contains(Scenarios, s) && !slices.Contains(ExtraScenarios, s) {
			return fmt.Errorf("unknown scenario %q: want %s", s, strings.Join(append(slices.Clone(Scenarios), ExtraScenarios...), ", "))
		}
	}
	if c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.Exe = exe
	}
	if c.RelayLogLevel == "" {
		c.RelayLogLevel = "warn"
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// Machine describes where the benchmark ran.
type Machine struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	MemoryMB   int64  `json:"memory_mb"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	PostgreSQL string `json:"postgresql"`
	Server     string `json:"server"` // "embedded throwaway cluster" or the redacted URL
}

// Report is the result of a run; scenarios not run are nil.
type Report struct {
	Command  string          `json:"command"`
	Started  time.Time       `json:"started"`
	Machine  Machine         `json:"machine"`
	Limits   *LimitsResult   `json:"limits,omitempty"`
	Drain    *DrainResult    `json:"drain,omitempty"`
	Live     *LiveResult     `json:"live,omitempty"`
	Latency  *LatencyResult  `json:"latency,omitempty"`
	Fanout   *FanoutResult   `json:"fanout,omitempty"`
	Overhead *OverheadResult `json:"overhead,omitempty"`
	History  *HistoryResult  `json:"history,omitempty"`
	Capture  *CaptureResult  `json:"capture,omitempty"`
	Slow     *SlowResult     `json:"slow,omitempty"`
	Ordering *OrderingResult `json:"ordering,omitempty"`
	// PeakRSSBytes is the largest VmHWM of the relay processes.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	// Missing and Duplicates sum over all scenarios (both should be 0).
	Missing    int `json:"missing"`
	Duplicates int `json:"duplicates"`
}

// runner holds what the scenarios share.
type runner struct {
	cfg      Config
	exe      string
	dir      string
	adminURL string
	cluster  *pgcluster.Cluster
	recv     *receiverProc
	report   *Report
}

func (b *runner) progress(format string, args ...any) {
	fmt.Fprintf(b.cfg.Progress, "bench: "+format+"\n", args...)
}

// Run runs the scenarios of cfg and returns the report. A scenario that
// fails ends the run with its error; the report holds what finished.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	dir, err := tempDir()
	if err != nil {
		return nil, err
	}
	b := &runner{cfg: cfg, exe: cfg.Exe, dir: dir, report: &Report{Command: cfg.Command, Started: time.Now().UTC()}}
	keep := cfg.KeepFiles
	if keep {
		b.progress("keeping the run's files in %s", dir)
	}
	defer func() {
		if b.cluster != nil {
			_ = b.cluster.Stop()
		}
		if !keep {
			os.RemoveAll(dir)
		}
	}()
	if cfg.DatabaseURL == "" {
		b.progress("starting a throwaway PostgreSQL in %s", dir)
		if b.cluster, b.adminURL, err = startCluster(ctx, dir); err != nil {
			return nil, err
		}
		b.report.Machine.Server = "embedded throwaway cluster (pgcluster defaults, as relay run's embedded server)"
	} else {
		b.adminURL = cfg.DatabaseURL
		b.report.Machine.Server = redact(cfg.DatabaseURL)
	}
	b.report.Machine = machine(b.report.Machine.Server)
	b.report.Machine.PostgreSQL = b.serverVersion(ctx)

	if b.recv, err = b.startReceiver(); err != nil {
		return nil, err
	}
	defer func() { _ = b.recv.stop(5 * time.Second) }()

	steps := map[string]func(context.Context) error{
		"limits": b.limits, "drain": b.drain, "live": b.live,
		"latency": b.latency, "fanout": b.fanout, "overhead": b.overhead,
		"history": b.history, "capture": b.capture,
		"slow": b.slow, "ordering": b.ordering,
	}
	for _, s := range append(slices.Clone(Scenarios), ExtraScenarios...) {
		if !slices.Contains(cfg.Only, s) {
			continue
		}
		b.progress("scenario %s", s)
		if err := b.recv.reset(ctx); err != nil {
			return b.report, err
		}
		if err := steps[s](ctx); err != nil {
			keep = true
			return b.report, fmt.Errorf("scenario %s: %w (logs kept in %s)", s, err, dir)
		}
	}
	return b.report, nil
}

func (b *runner) notePeak(u ProcUsage) {
	b.report.PeakRSSBytes = max(b.report.PeakRSSBytes, u.PeakRSS)
}

func (b *runner) noteChecks(missing, dups int) {
	b.report.Missing += missing
	b.report.Duplicates += dups
}

func machine(server string) Machine {
	m := Machine{CPU: cpuModel(), Cores: runtime.NumCPU(), Go: runtime.Version(), Server: server}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryMB = kb >> 10
		}
	}
	return m
}

// errIncomplete marks a scenario whose deliveries did not all arrive.
var errIncomplete = errors.New("deliveries missing")
