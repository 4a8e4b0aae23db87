package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/pgoutbox/relay/internal/bench"
	"github.com/pgoutbox/relay/internal/cli"
	"github.com/pgoutbox/relay/internal/pgtest"
)

// childEnv makes this test binary act as the relay command: relay bench
// starts `relay run` and `relay bench-receiver` from its own executable.
const childEnv = "RELAY_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		err := cli.New().Run(context.Background(), os.Args[1:])
		if err != nil {
			os.Stderr.WriteString("relay: " + err.Error() + "\n")
		}
		os.Exit(cli.ExitCode(err))
	}
	pgtest.Main(m)
}

// TestBenchDrainSmoke runs `relay bench` end to end at a tiny size: a
// relay process and a receiver process, 2,000 events. It checks that the
// JSON parses and that every event arrived once; it asserts no timing.
func TestBenchDrainSmoke(t *testing.T) {
	srv := pgtest.Start(t)
	t.Setenv(childEnv, "1")
	var out, errb bytes.Buffer
	c := &cli.CLI{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	err := c.Run(context.Background(), []string{"bench", "--only", "drain", "--events", "2000", "--json", "--database-url", srv.AdminURL})
	if err != nil {
		t.Fatalf("relay bench: %v\n%s", err, errb.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("output is not the JSON report: %v\n%s", err, out.String())
	}
	d := rep.Drain
	if d == nil || rep.Live != nil {
		t.Fatalf("report %+v: want the drain scenario only", rep)
	}
	if d.Events != 2000 || d.Check.Expected != 2000 || d.Check.Received != 2000 || d.Check.Missing != 0 || d.Check.Duplicates != 0 || rep.Missing != 0 {
		t.Errorf("drain check %+v", d.Check)
	}
	if d.AttemptsRecorded < 2000 || d.EventsPerSec <= 0 || d.Cost.CPUSeconds <= 0 || rep.PeakRSSBytes <= 0 {
		t.Errorf("drain result %+v", d)
	}
	if !strings.Contains(rep.Command, "--only drain") || rep.Machine.Cores <= 0 || rep.Machine.PostgreSQL == "" {
		t.Errorf("report header %+v %+v", rep.Command, rep.Machine)
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{{"bench", "--only", "nope"}, {"bench", "--events", "0"}, {"bench", "extra"}, {"bench", "--relay-procs", "-1"}} {
		var errb bytes.Buffer
		err := (&cli.CLI{Stderr: &errb}).Run(context.Background(), args)
		if cli.ExitCode(err) != 2 {
			t.Errorf("%q: exit %d (%v), want 2", args, cli.ExitCode(err), err)
		}
	}
}

// TestBenchLatencyBreakdown runs the latency scenario briefly and checks
// that relay's clock points came back for every event, in the order a
// delivery passes them (per event, so their medians are ordered too). It
// asserts no timing.
func TestBenchLatencyBreakdown(t *testing.T) {
	srv := pgtest.Start(t)
	t.Setenv(childEnv, "1")
	var out, errb bytes.Buffer
	c := &cli.CLI{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	err := c.Run(context.Background(), []string{"bench", "--only", "latency", "--latency-duration", "1s", "--rate", "200", "--json", "--database-url", srv.AdminURL})
	if err != nil {
		t.Fatalf("relay bench: %v\n%s", err, errb.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("output is not the JSON report: %v\n%s", err, out.String())
	}
	la := rep.Latency
	if la == nil || la.Breakdown == nil {
		t.Fatalf("report %+v: want the latency scenario with its breakdown", rep)
	}
	b := la.Breakdown
	if la.Events != 200 || b.Traced != la.Events || la.Check.Missing != 0 {
		t.Fatalf("%d events, %d traced, check %+v", la.Events, b.Traced, la.Check)
	}
	at := map[string]bench.StagePoint{}
	for _, p := range b.Points {
		at[p.Name] = p
	}
	for _, name := range []string{"WAL decoded", "handed over", "request start", "receipt", "answer", "recorded"} {
		if p, ok := at[name]; !ok || p.Events == 0 {
			t.Errorf("clock point %q missing: %+v", name, b.Points)
		}
	}
	if at["fan-out sent"].Events != b.HandedOver || at["fan-out committed"].Events != b.HandedOver {
		t.Errorf("fan-out points for %d/%d events, want the %d handed over", at["fan-out sent"].Events, at["fan-out committed"].Events, b.HandedOver)
	}
	if b.WrittenWithDelivery > b.HandedOver {
		t.Errorf("%d deliveries written finished by fan-out, more than the %d it handed over", b.WrittenWithDelivery, b.HandedOver)
	}
	order := []string{"handed over", "request start", "answer", "recorded"}
	for i := 1; i < len(order); i++ {
		if a, z := at[order[i-1]].FromCommit.P50, at[order[i]].FromCommit.P50; z < a {
			t.Errorf("%s (p50 %.3f ms) before %s (p50 %.3f ms)", order[i], z, order[i-1], a)
		}
	}
	t.Logf("per event: %.1f context switches, %.1f system calls, %.2f transactions, %.0f bytes of WAL",
		b.ContextSwitchesPerEvent, b.SyscallsPerEvent, b.TransactionsPerEvent, b.WALBytesPerEvent)
	if b.SyscallsPerEvent <= 0 || b.ContextSwitchesPerEvent <= 0 || b.WALBytesPerEvent <= 0 || b.TransactionsPerEvent <= 0 {
		t.Errorf("per-event counts %+v", b)
	}
}

// TestBenchHistoryAndCaptureSmoke runs the history and capture scenarios
// at a tiny size and checks what they report beyond timings: both layouts
// ran, retention removed the oldest day in each (by dropping its partition
// in the daily layout only), every drained delivery arrived once, and each
// decoded workload was split whole between the two shards.
func TestBenchHistoryAndCaptureSmoke(t *testing.T) {
	srv := pgtest.Start(t)
	t.Setenv(childEnv, "1")
	var out, errb bytes.Buffer
	c := &cli.CLI{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	err := c.Run(context.Background(), []string{"bench", "--only", "history,capture", "--history-attempts", "3000",
		"--history-days", "3", "--history-drain", "200", "--capture-events", "2000", "--json", "--database-url", srv.AdminURL})
	if err != nil {
		t.Fatalf("relay bench: %v\n%s", err, errb.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("output is not the JSON report: %v\n%s", err, out.String())
	}
	h := rep.History
	if h == nil || len(h.Layouts) != 2 || rep.Drain != nil || h.Deliveries == nil {
		t.Fatalf("report %+v: want the history scenario with two layouts and the deliveries probe", rep)
	}
	for i, l := range h.Layouts {
		if l.Retention.Events == 0 || l.RetentionDuringDrain.Events == 0 {
			t.Errorf("%s: retention removed %d then %d events, want some each time", l.Layout, l.Retention.Events, l.RetentionDuringDrain.Events)
		}
		if dropped := len(l.Retention.Partitions) > 0; dropped != (i == 1) {
			t.Errorf("%s: partitions dropped %v", l.Layout, l.Retention.Partitions)
		}
		if l.Log.Runs == 0 || l.Stats.Runs == 0 || l.DrainAlonePerSec <= 0 || l.DrainDuringRetentionPerSec <= 0 {
			t.Errorf("%s: %+v", l.Layout, l)
		}
	}
	if rep.Missing != 0 || rep.Duplicates != 0 {
		t.Errorf("missing %d, duplicates %d", rep.Missing, rep.Duplicates)
	}
	cp := rep.Capture
	if cp == nil {
		t.Fatal("no capture report")
	}
	for _, r := range []bench.DecodeRun{cp.OneRow, cp.HundredRow} {
		if r.Events == 0 || r.ShardEventCounts[0]+r.ShardEventCounts[1] != r.Events || r.ShardEventCounts[0] == 0 || r.ShardEventCounts[1] == 0 {
			t.Errorf("capture run %+v", r)
		}
	}
}

// TestBenchFanoutFilterSmoke runs the fan-out scenario at a tiny size with
// a payload filter on every subscription: every delivery still arrives
// once (the filter passes every benchmark event), and a filter the events
// do not pass is refused before anything runs.
func TestBenchFanoutFilterSmoke(t *testing.T) {
	srv := pgtest.Start(t)
	t.Setenv(childEnv, "1")
	run := func(filter string) (bench.Report, string, error) {
		var out, errb bytes.Buffer
		c := &cli.CLI{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
		err := c.Run(context.Background(), []string{"bench", "--only", "fanout", "--fanout-events", "40", "--fanout-subs", "5",
			"--fanout-filter", filter, "--json", "--database-url", srv.AdminURL})
		var rep bench.Report
		if err == nil {
			if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
				t.Fatalf("output is not the JSON report: %v\n%s", jerr, out.String())
			}
		}
		return rep, errb.String(), err
	}
	rep, stderr, err := run(`$.tags[*] ? (@ == "relay")`)
	if err != nil {
		t.Fatalf("relay bench: %v\n%s", err, stderr)
	}
	f := rep.Fanout
	if f == nil || f.Filter != `$.tags[*] ? (@ == "relay")` || f.Deliveries != 200 || f.Check.Missing != 0 || f.Check.Duplicates != 0 {
		t.Fatalf("fan-out result %+v", f)
	}
	if _, _, err := run(`$.seq ? (@ < 0)`); err == nil || !strings.Contains(err.Error(), "do not pass it") {
		t.Fatalf("a filter no event passes: %v", err)
	}
}
