package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgoutbox/relay/sink/dispatch"
)

// StageLog collects the clock points of every delivery a relay process
// records (it is the dispatch.Tracer of bench-relay --stage-trace) and
// writes them to a file when relay stops, for the latency scenario's
// breakdown. It keeps the first recorded attempt of each event, at most
// maxStageRecords of them.
type StageLog struct {
	mu   sync.Mutex
	recs []stageRecord
	seen map[string]struct{}
}

const maxStageRecords = 1 << 21

// stageRecord is one line of the file: the event id and its clock points
// in the order of stagePoints (Unix nanoseconds, 0 when not passed).
type stageRecord struct {
	Event string   `json:"e"`
	At    [7]int64 `json:"t"`
}

// NewStageLog returns an empty log.
func NewStageLog() *StageLog { return &StageLog{seen: map[string]struct{}{}} }

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Traced implements dispatch.Tracer.
func (l *StageLog) Traced(eventID string, s *dispatch.Stages) {
	r := stageRecord{Event: eventID, At: [7]int64{nanos(s.Decoded), nanos(s.FanoutStart), nanos(s.FanoutCommit),
		nanos(s.HandedOver), nanos(s.RequestStart), nanos(s.Answered), nanos(s.Recorded)}}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.seen[eventID]; dup || len(l.recs) >= maxStageRecords {
		return
	}
	l.seen[eventID] = struct{}{}
	l.recs = append(l.recs, r)
}

// WriteFile writes the log as JSON lines.
func (l *StageLog) WriteFile(path string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for i := range l.recs {
		if err := enc.Encode(&l.recs[i]); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readStageLog(path string) (map[string][7]int64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading relay's clock points: %w", err)
	}
	m := map[string][7]int64{}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r stageRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("reading relay's clock points: %w", err)
		}
		m[r.Event] = r.At
	}
	return m, nil
}

// StagePoint is one clock point of the breakdown: its time from the
// producer's commit, and from the point before it. Events that did not
// pass it (claimed from the table, not handed over by fan-out) are left
// out of its figures.
type StagePoint struct {
	Name       string    `json:"name"`
	Events     int       `json:"events"`
	FromCommit Latencies `json:"from_commit"`
	Step       Latencies `json:"step"`
}

// Breakdown is where the latency scenario's milliseconds went, from
// relay's own clock points (bench-relay --stage-trace) between the
// producer's commit and the receipt, and countable costs per event.
type Breakdown struct {
	// Traced counts events with relay's clock points; HandedOver those
	// that fan-out handed straight to the dispatcher.
	Traced     int          `json:"traced"`
	HandedOver int          `json:"handed_over"`
	Points     []StagePoint `json:"points"`
	// Per event over the run: relay's context switches (voluntary and
	// not, all threads: about its wake-ups), its read and write system
	// calls (about its round trips), and the WAL PostgreSQL wrote in all
	// (the producer's insert included).
	ContextSwitchesPerEvent float64 `json:"context_switches_per_event"`
	SyscallsPerEvent        float64 `json:"syscalls_per_event"`
	WALBytesPerEvent        float64 `json:"wal_bytes_per_event"`
}

// stagePoints names the points in order; index 0 is the producer's
// commit, "receipt" the receiver's clock, the others relay's.
var stagePoints = []string{"commit", "WAL decoded", "fan-out sent", "fan-out committed", "handed over",
	"request start", "receipt", "answer", "recorded"}

// breakdown joins the producers' commit times, relay's clock points and
// the receipts.
func breakdown(samples []sample, stages map[string][7]int64, rep ReceiverReport) *Breakdown {
	b := &Breakdown{}
	n := len(stagePoints)
	from := make([][]time.Duration, n)
	step := make([][]time.Duration, n)
	for _, s := range samples {
		at, ok := stages[s.id]
		recv, got := rep.Times[s.id]
		if !ok || !got {
			continue
		}
		b.Traced++
		if at[1] != 0 {
			b.HandedOver++
		}
		// Points in stagePoints order.
		pts := []int64{s.commitNs, at[0], at[1], at[2], at[3], at[4], recv, at[5], at[6]}
		prev := pts[0]
		for i := 1; i < n; i++ {
			if pts[i] == 0 {
				continue
			}
			from[i] = append(from[i], time.Duration(pts[i]-pts[0]))
			step[i] = append(step[i], time.Duration(pts[i]-prev))
			prev = pts[i]
		}
	}
	for i := 1; i < n; i++ {
		b.Points = append(b.Points, StagePoint{Name: stagePoints[i], Events: len(from[i]),
			FromCommit: percentiles(from[i]), Step: percentiles(step[i])})
	}
	return b
}

func percentiles(ds []time.Duration) Latencies {
	l := Latencies{P50: ms(percentile(ds, 0.5)), P90: ms(percentile(ds, 0.9)), P99: ms(percentile(ds, 0.99))}
	if len(ds) > 0 {
		l.Max = ms(ds[len(ds)-1])
	}
	return l
}

// procCounters are a process's context switches (all its threads) and
// read/write system calls so far.
type procCounters struct {
	switches, syscalls int64
}

func readProcCounters(pid int) procCounters {
	var c procCounters
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				c.switches += n
			}
		}
	}
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (k == "syscr" || k == "syscw") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				c.syscalls += n
			}
		}
	}
	return c
}
