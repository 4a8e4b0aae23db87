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
	// Written: fan-out wrote the attempt with the delivery row, finished
	// (dispatch.Stages.WrittenWithDelivery).
	Written bool `json:"w,omitempty"`
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
		nanos(s.HandedOver), nanos(s.RequestStart), nanos(s.Answered), nanos(s.Recorded)}, Written: s.WrittenWithDelivery}
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

func readStageLog(path string) (map[string]stageRecord, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading relay's clock points: %w", err)
	}
	m := map[string]stageRecord{}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r stageRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("reading relay's clock points: %w", err)
		}
		m[r.Event] = r
	}
	return m, nil
}

// StagePoint is one clock point of the breakdown: its time from the
// producer's commit, and from the point before it. Events that did not
// pass it (claimed from the table, not handed over by fan-out) are left
// out of its figures.
type StagePoint struct {
	Name string `json:"name"`
	// From names the point Step is measured from.
	From       string    `json:"from"`
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
	Traced     int `json:"traced"`
	HandedOver int `json:"handed_over"`
	// WrittenWithDelivery counts those whose attempt fan-out wrote with
	// the delivery row, finished (sent ahead, answered before the
	// statement written behind).
	WrittenWithDelivery int          `json:"written_with_delivery"`
	Points              []StagePoint `json:"points"`
	// Per event over the run: relay's context switches (voluntary and
	// not, all threads: about its wake-ups), its read and write system
	// calls (about its round trips), and the WAL PostgreSQL wrote in all
	// (the producer's insert included).
	ContextSwitchesPerEvent float64 `json:"context_switches_per_event"`
	SyscallsPerEvent        float64 `json:"syscalls_per_event"`
	WALBytesPerEvent        float64 `json:"wal_bytes_per_event"`
	// TransactionsPerEvent is what PostgreSQL counted as committed in the
	// database besides the producers' inserts: relay's statements (each of
	// its statements is its own transaction) and the few polls of the
	// benchmark while it waits for the last deliveries. Until stop 27 it
	// also counted the walsender's aborted catalog transactions, one per
	// decoded transaction, about 1.2 per event at 1,000 events/s.
	TransactionsPerEvent float64 `json:"transactions_per_event"`
}

// stagePoints are the clock points in the order they are printed, each
// with the point its step is measured from. "commit" is the producer's
// clock, "receipt" the receiver's, the others relay's: at is the index
// in stageRecord.At, -1 for commit, -2 for receipt. Fan-out may hand
// deliveries over before its commit is confirmed (the request need not
// wait for it), and a delivery sent ahead is handed over before the
// statement is even sent (dispatch.Presend; fan-out writes it behind), so
// the fan-out points come after the request's, off its path: "fan-out
// sent" is measured from "WAL decoded", "fan-out committed" from "fan-out
// sent".
var stagePoints = []struct {
	name, from string
	at         int
}{
	{"WAL decoded", "commit", 0},
	{"handed over", "WAL decoded", 3},
	{"request start", "handed over", 4},
	{"receipt", "request start", -2},
	{"answer", "receipt", 5},
	{"fan-out sent", "WAL decoded", 1},
	{"fan-out committed", "fan-out sent", 2},
	{"recorded", "answer", 6},
}

// breakdown joins the producers' commit times, relay's clock points and
// the receipts. A step whose earlier point an event did not pass (a
// delivery claimed from the table has no fan-out points) is measured from
// the last point before it that the event passed.
func breakdown(samples []sample, stages map[string]stageRecord, rep ReceiverReport) *Breakdown {
	b := &Breakdown{}
	from := make([][]time.Duration, len(stagePoints))
	step := make([][]time.Duration, len(stagePoints))
	for _, s := range samples {
		rec, ok := stages[s.id]
		recv, got := rep.Times[s.id]
		if !ok || !got {
			continue
		}
		at := rec.At
		b.Traced++
		if rec.Written {
			b.WrittenWithDelivery++
		}
		if at[1] != 0 {
			b.HandedOver++
		}
		seen := map[string]int64{"commit": s.commitNs}
		last := s.commitNs
		for i, p := range stagePoints {
			var t int64
			switch p.at {
			case -2:
				t = recv
			default:
				t = at[p.at]
			}
			if t == 0 {
				continue
			}
			prev, ok := seen[p.from]
			if !ok {
				prev = last
			}
			from[i] = append(from[i], time.Duration(t-s.commitNs))
			step[i] = append(step[i], time.Duration(t-prev))
			seen[p.name] = t
			if p.name != "fan-out sent" && p.name != "fan-out committed" {
				last = t
			}
		}
	}
	for i, p := range stagePoints {
		b.Points = append(b.Points, StagePoint{Name: p.name, From: p.from, Events: len(from[i]),
			FromCommit: Percentiles(from[i]), Step: Percentiles(step[i])})
	}
	return b
}

// Percentiles are the nearest-rank p50, p90, p99 and the largest of ds
// (sorted in place), the latency scenario's figures.
func Percentiles(ds []time.Duration) Latencies {
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
