package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Targets on a 2-core machine: issue 8's, and issue 18's (ahead of
// pgstream, a Go CDC tool posting WAL changes to webhooks, measured side
// by side: p50 0.76-0.80 / p90 1.1-1.2 / p99 10-18 ms and 323-332 µs of
// CPU per event at 1,000 events/s, 2,900 events/s in the drain).
const (
	TargetDrainPerSec    = 12000
	TargetLatencyP50Ms   = 0.7
	TargetLatencyP90Ms   = 1.5
	TargetLatencyP99Ms   = 8.0
	TargetCPUMicros      = 60
	TargetLatencyCPU     = 150.0 // µs of relay CPU per event at the latency scenario's rate
	TargetFanoutPerSec   = 10000
	TargetOverheadRatio  = 1.5
	targetVerdictMet     = "met"
	targetVerdictMissed  = "MISSED"
	targetVerdictNoCheck = ""
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func verdict(ok bool) string {
	if ok {
		return targetVerdictMet
	}
	return targetVerdictMissed
}

func num(v float64) string {
	switch {
	case v >= 100:
		s := fmt.Sprintf("%.0f", v)
		// thousands separators
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// Rows are the lines of the summary table.
func (r *Report) Rows() [][]string {
	rows := [][]string{{"scenario", "relay", "target", "limit on this machine (same run)", "relay ÷ limit", "verdict"}}
	l := r.Limits
	lim := func(f func(*LimitsResult) (string, float64)) (string, float64) {
		if l == nil {
			return "(limits not run)", 0
		}
		return f(l)
	}
	if d := r.Drain; d != nil {
		text, v := lim(func(l *LimitsResult) (string, float64) {
			return fmt.Sprintf("receiver, 8 conns: %s req/s", num(l.ReceiverPerSubscription.RequestsPerSec)), l.ReceiverPerSubscription.RequestsPerSec
		})
		rows = append(rows, []string{
			fmt.Sprintf("1. drain %s events (1 subscription): events/s, each attempt recorded", num(float64(d.Events))),
			num(d.EventsPerSec) + fmt.Sprintf(" (last receipt %.2fs, recorded %.2fs)", d.ReceivedSeconds, d.RecordedSeconds),
			fmt.Sprintf("≥ %s", num(TargetDrainPerSec)), text, ratio(d.EventsPerSec, v), verdict(d.EventsPerSec >= TargetDrainPerSec),
		})
	}
	if lv := r.Live; lv != nil {
		text, v := lim(func(l *LimitsResult) (string, float64) {
			return fmt.Sprintf("raw commits, %d clients: %s/s", l.CommitProducers.Clients, num(l.CommitProducers.CommitsPerSec)), l.CommitProducers.CommitsPerSec
		})
		kept := "kept up"
		if !lv.KeptUp {
			kept = "fell behind"
		}
		rows = append(rows, []string{
			fmt.Sprintf("2. live, %d producers, 1 event/tx: delivered events/s", lv.Producers),
			fmt.Sprintf("%s of %s produced/s; %s (tail %.2fs)", num(lv.DeliveredPerSec), num(lv.ProducedPerSec), kept, lv.TailSeconds),
			"keep up", text, ratio(lv.DeliveredPerSec, v), verdict(lv.KeptUp),
		})
	}
	if la := r.Latency; la != nil {
		c := la.CommitToReceipt
		text, v := lim(func(l *LimitsResult) (string, float64) {
			floor := l.Commit1.P50Ms + l.ReceiverPerSubscription.P50Ms
			return fmt.Sprintf("1 commit p50 %.2f ms + 1 request p50 %.2f ms = %.2f ms", l.Commit1.P50Ms, l.ReceiverPerSubscription.P50Ms, floor), floor
		})
		rows = append(rows, []string{
			fmt.Sprintf("3. latency at %d events/s for %.0fs: commit→receipt p50 / p90 / p99 / max", la.Rate, la.Seconds),
			fmt.Sprintf("%.2f / %.2f / %.2f / %.2f ms", c.P50, c.P90, c.P99, c.Max),
			fmt.Sprintf("p50 ≤ %g, p90 ≤ %g, p99 ≤ %g ms", TargetLatencyP50Ms, TargetLatencyP90Ms, TargetLatencyP99Ms), text, ratio(c.P50, v) + " (p50)",
			verdict(c.P50 <= TargetLatencyP50Ms && c.P90 <= TargetLatencyP90Ms && c.P99 <= TargetLatencyP99Ms),
		})
	}
	if f := r.Fanout; f != nil {
		text, v := lim(func(l *LimitsResult) (string, float64) {
			return fmt.Sprintf("receiver, %d conns: %s req/s", l.ReceiverFull.Connections, num(l.ReceiverFull.RequestsPerSec)), l.ReceiverFull.RequestsPerSec
		})
		filtered := ""
		if f.Filter != "" {
			filtered = ", each filtering " + f.Filter
		}
		rows = append(rows, []string{
			fmt.Sprintf("4. fan-out %s events × %d subscriptions%s: deliveries/s", num(float64(f.Events)), f.Subscriptions, filtered),
			num(f.DeliveriesPerSec) + fmt.Sprintf(" (last receipt %.2fs, recorded %.2fs)", f.ReceivedSeconds, f.RecordedSeconds),
			fmt.Sprintf("≥ %s", num(TargetFanoutPerSec)), text, ratio(f.DeliveriesPerSec, v), verdict(f.DeliveriesPerSec >= TargetFanoutPerSec),
		})
	}
	if o := r.Overhead; o != nil {
		rows = append(rows, []string{
			fmt.Sprintf("5. write path, %d producers: time per insert, relay.outbox ÷ plain table", o.Producers),
			fmt.Sprintf("%.3f× (outbox %s/s, plain %s/s); capture only, no subscription: %.3f× (%d of its events sent while disabled)",
				o.Ratio, num(o.OutboxPerSec), num(o.PlainPerSec), o.CaptureOnlyRatio, o.SentWhileDisabled),
			fmt.Sprintf("≤ %.2f×", TargetOverheadRatio), "the plain table is the limit", "—", verdict(o.Ratio <= TargetOverheadRatio),
		})
	}
	if d := r.Drain; d != nil {
		rows = append(rows, []string{
			"6. cost (drain): relay CPU per delivered event; CPU s per 1,000",
			fmt.Sprintf("%.1f µs; %.3f s", d.Cost.CPUMicrosPerEvent, d.Cost.CPUSecondsPer1000),
			fmt.Sprintf("≤ %d µs", TargetCPUMicros), "—", "—", verdict(d.Cost.CPUMicrosPerEvent <= TargetCPUMicros),
		})
	}
	for _, c := range []struct {
		name   string
		cost   *Cost
		target float64
	}{{"live", costOf(r.Live), 0}, {"latency", costOfLatency(r.Latency), TargetLatencyCPU}, {"fan-out (per delivery)", costOfFanout(r.Fanout), 0}} {
		if c.cost != nil {
			target, v := "", targetVerdictNoCheck
			if c.target > 0 {
				target, v = fmt.Sprintf("≤ %g µs", c.target), verdict(c.cost.CPUMicrosPerEvent <= c.target)
			}
			rows = append(rows, []string{
				"6. cost (" + c.name + "): relay CPU per delivered event",
				fmt.Sprintf("%.1f µs; %.3f s per 1,000", c.cost.CPUMicrosPerEvent, c.cost.CPUSecondsPer1000),
				target, "—", "—", v,
			})
		}
	}
	if r.PeakRSSBytes > 0 {
		rows = append(rows, []string{"6. relay peak RSS (largest VmHWM)", fmt.Sprintf("%.1f MiB", float64(r.PeakRSSBytes)/(1<<20)), "", "—", "—", ""})
	}
	if l != nil {
		rows = append(rows, []string{
			"7. limits: receiver alone (plain HTTP, keep-alive)",
			fmt.Sprintf("8 conns %s req/s (p50 %.2f ms); %d conns %s req/s", num(l.ReceiverPerSubscription.RequestsPerSec), l.ReceiverPerSubscription.P50Ms,
				l.ReceiverFull.Connections, num(l.ReceiverFull.RequestsPerSec)),
			"", "", "", "",
		})
		pgCPU := ""
		if l.Commit1.PostgresCPUMicros > 0 {
			pgCPU = fmt.Sprintf("; PostgreSQL CPU per commit %.0f µs (16 clients) / %.0f µs (1 client)", l.Commit16.PostgresCPUMicros, l.Commit1.PostgresCPUMicros)
		}
		rows = append(rows, []string{
			"7. limits: raw single-row commits (plain table)",
			fmt.Sprintf("16 clients %s/s; %d clients %s/s (p50 %.2f ms); 1 client %s/s (p50 %.2f ms)%s",
				num(l.Commit16.CommitsPerSec), l.CommitProducers.Clients, num(l.CommitProducers.CommitsPerSec), l.CommitProducers.P50Ms,
				num(l.Commit1.CommitsPerSec), l.Commit1.P50Ms, pgCPU),
			"", "", "", "",
		})
	}
	rows = append(rows, r.flowRows()...)
	rows = append(rows, []string{"checks: missing / duplicate deliveries (all scenarios)", fmt.Sprintf("%d / %d", r.Missing, r.Duplicates), "0 / 0", "", "", verdict(r.Missing == 0 && r.Duplicates == 0)})
	if h := r.History; h != nil {
		rows = append(rows, h.rows()...)
	}
	if c := r.Capture; c != nil {
		rows = append(rows, c.rows()...)
	}
	return rows
}

func costOf(l *LiveResult) *Cost {
	if l == nil {
		return nil
	}
	return &l.Cost
}

func costOfLatency(l *LatencyResult) *Cost {
	if l == nil {
		return nil
	}
	return &l.Cost
}

func costOfFanout(f *FanoutResult) *Cost {
	if f == nil {
		return nil
	}
	return &f.Cost
}

// WriteTable writes the summary as a Markdown table, preceded by the
// machine and followed by the clock points used.
func (r *Report) WriteTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "relay bench — %s\n", r.Started.Format("2006-01-02 15:04 UTC"))
	if r.Command != "" {
		fmt.Fprintf(w, "command: %s\n", r.Command)
	}
	fmt.Fprintf(w, "machine: %s, %d cores, %d MiB, %s, %s, PostgreSQL %s (%s)\n\n", m.CPU, m.Cores, m.MemoryMB, m.Kernel, m.Go, m.PostgreSQL, m.Server)
	rows := r.Rows()
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for n, row := range rows {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range row {
			b.WriteString(" " + c + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)) + " |")
		}
		fmt.Fprintln(w, b.String())
		if n == 0 {
			b.Reset()
			b.WriteString("|")
			for i := range row {
				b.WriteString(strings.Repeat("-", widths[i]+2) + "|")
			}
			fmt.Fprintln(w, b.String())
		}
	}
	fmt.Fprintln(w, "\nClock points: commit→receipt runs from the moment the producer's COMMIT returned (time.Now in the")
	fmt.Fprintln(w, "benchmark process) to the moment the receiver process had read the request line and headers (time.Now")
	fmt.Fprintln(w, "there); both read the same wall clock. Drain time runs from spawning relay to the last delivery recorded")
	fmt.Fprintln(w, "succeeded with its attempt row; fan-out from the events' commit to the same. Relay CPU is utime+stime")
	fmt.Fprintln(w, "of the relay process from /proc (the receiver and producers are other processes); drain includes start-up.")
	if la := r.Latency; la != nil {
		c := la.CreatedToReceipt
		fmt.Fprintf(w, "Latency from created_at (before commit) instead: p50 %.2f / p90 %.2f / p99 %.2f / max %.2f ms; %d of %d events were begun >5ms late by the producers.\n",
			c.P50, c.P90, c.P99, c.Max, la.Late, la.Events)
	}
	if la := r.Latency; la != nil && la.Breakdown != nil {
		la.Breakdown.write(w)
	}
	if lv := r.Live; lv != nil {
		fmt.Fprintf(w, "Live commit→receipt under saturation: p50 %.2f / p99 %.2f / max %.2f ms.\n", lv.Latency.P50, lv.Latency.P99, lv.Latency.Max)
	}
	fmt.Fprintf(w, "\nWhere the CPU went (seconds; %d cores give %d × wall):\n", m.Cores, m.Cores)
	for _, c := range []struct {
		name  string
		split *CPUSplit
	}{{"drain", splitOf(r.Drain)}, {"live", splitOfLive(r.Live)}, {"latency", splitOfLatency(r.Latency)}, {"fan-out", splitOfFanout(r.Fanout)}, {"write", splitOfOverhead(r.Overhead)}, {"capture", captureSplitOf(r.Overhead)}} {
		if c.split == nil {
			continue
		}
		s := c.split
		pg := "n/a (external server)"
		if s.Postgres > 0 {
			pg = fmt.Sprintf("%.2f (walsender %.2f, sessions %.2f of which relay's %.2f, autovacuum %.2f, background %.2f)", s.Postgres,
				s.PostgresBy["walsender"], s.PostgresBy["backend"], s.PostgresBy["relay_sessions"], s.PostgresBy["autovacuum"], s.PostgresBy["background"])
		}
		fmt.Fprintf(w, "  %-8s wall %6.2f  relay %6.2f  postgres %s  receiver %6.2f  bench/producers %6.2f  other processes %6.2f  (machine busy %6.2f of %6.2f)\n",
			c.name, s.Wall, s.Relay, pg, s.Receiver, s.Bench, s.Other, s.Machine, s.Wall*float64(m.Cores))
	}
}

func splitOf(d *DrainResult) *CPUSplit {
	if d == nil {
		return nil
	}
	return &d.CPU
}

func splitOfLive(l *LiveResult) *CPUSplit {
	if l == nil {
		return nil
	}
	return &l.CPU
}

func splitOfLatency(l *LatencyResult) *CPUSplit {
	if l == nil {
		return nil
	}
	return &l.CPU
}

func captureSplitOf(o *OverheadResult) *CPUSplit {
	if o == nil {
		return nil
	}
	return &o.CaptureCPU
}

func splitOfOverhead(o *OverheadResult) *CPUSplit {
	if o == nil {
		return nil
	}
	return &o.CPU
}

func splitOfFanout(f *FanoutResult) *CPUSplit {
	if f == nil {
		return nil
	}
	return &f.CPU
}

// write prints the latency breakdown: each clock point from the
// producer's commit, and from the point before it.
func (b *Breakdown) write(w io.Writer) {
	fmt.Fprintf(w, "\nLatency breakdown (%d events traced, %d handed over by fan-out, %d of them written finished with their attempt; ms, p50 / p90 / p99):\n",
		b.Traced, b.HandedOver, b.WrittenWithDelivery)
	fmt.Fprintf(w, "  %-18s %-22s %s\n", "clock point", "from commit", "step")
	for _, p := range b.Points {
		if p.Events == 0 {
			fmt.Fprintf(w, "  %-18s (not passed)\n", p.Name)
			continue
		}
		fmt.Fprintf(w, "  %-18s %-22s %-22s from %s\n", p.Name,
			fmt.Sprintf("%.2f / %.2f / %.2f", p.FromCommit.P50, p.FromCommit.P90, p.FromCommit.P99),
			fmt.Sprintf("%.2f / %.2f / %.2f", p.Step.P50, p.Step.P90, p.Step.P99), p.From)
	}
	fmt.Fprintf(w, "  per event: relay %.1f context switches, %.1f read/write system calls, %.2f committed transactions; PostgreSQL %.0f bytes of WAL (the insert included)\n",
		b.ContextSwitchesPerEvent, b.SyscallsPerEvent, b.TransactionsPerEvent, b.WALBytesPerEvent)
}
