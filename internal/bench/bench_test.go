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
	for _, args := range [][]string{{"bench", "--only", "nope"}, {"bench", "--events", "0"}, {"bench", "extra"}} {
		var errb bytes.Buffer
		err := (&cli.CLI{Stderr: &errb}).Run(context.Background(), args)
		if cli.ExitCode(err) != 2 {
			t.Errorf("%q: exit %d (%v), want 2", args, cli.ExitCode(err), err)
		}
	}
}
