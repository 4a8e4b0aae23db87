package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// clockTicks is the unit of utime and stime in /proc/<pid>/stat
// (sysconf(_SC_CLK_TCK), 100 on every Linux architecture Go supports).
const clockTicks = 100

// ProcUsage is a process's CPU time and peak resident memory, read from
// /proc/<pid>/stat (utime + stime) and /proc/<pid>/status (VmHWM).
type ProcUsage struct {
	CPU     time.Duration
	PeakRSS int64 // bytes
}

// ReadUsage reads process pid's usage so far (the peers' harnesses in
// scripts/peers read theirs with it too).
func ReadUsage(pid int) (ProcUsage, error) {
	var u ProcUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name is in parentheses and may hold spaces: count fields
	// after the last ')'. Fields 14 and 15 (utime, stime) are then at 11, 12.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, errors.New("unreadable utime/stime")
	}
	u.CPU = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			u.PeakRSS = kb << 10
		}
	}
	return u, nil
}

// child is a process the benchmark started: relay run or the receiver.
type child struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
}

// startChild runs exe args… with its output in logPath.
func startChild(name, exe string, env []string, logPath string, args ...string) (*child, io.Reader, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, exited: make(chan struct{}), log: logf}
	return c, out, nil
}

// wait reaps the process in the background once its stdout is consumed.
func (c *child) reap() {
	go func() { _ = c.cmd.Wait(); c.log.Close(); close(c.exited) }()
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) usage() (ProcUsage, error) { return ReadUsage(c.pid()) }

func (c *child) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits, then kills after timeout.
func (c *child) stop(timeout time.Duration) error {
	if !c.running() {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not stop within %s and was killed", c.name, timeout)
	}
}

// relayProc is one `relay run` process.
type relayProc struct {
	*child
	started time.Time
	// stageTrace is the file relay writes its clock points to when it
	// stops ("" when it takes none).
	stageTrace string
}

// relayArgs are the flags every benchmarked relay runs with.
func relayArgs(dbURL, slot string, concurrency int, logLevel string) []string {
	return []string{"run", "--database-url", dbURL, "--slot", slot, "--publication", slot,
		"--admin-addr", "off", "--allow-cidr", "127.0.0.0/8", "--log-format", "json", "--log-level", logLevel,
		"--concurrency", strconv.Itoa(concurrency)}
}

// tracedScenarios take relay's clock points (bench-relay --stage-trace).
// Only the latency scenario does: the others measure relay's throughput
// and CPU exactly as it is deployed, without the clock reads.
var tracedScenarios = map[string]bool{"latency": true}

func (b *runner) startRelay(dbURL, slot, tag string) (*relayProc, error) {
	return b.startRelayArgs(relayArgs(dbURL, slot, b.cfg.Concurrency, b.cfg.RelayLogLevel), tag)
}

// startRelayArgs starts relay with args (relayArgs and more).
func (b *runner) startRelayArgs(args []string, tag string) (*relayProc, error) {
	var wrap []string
	if b.cfg.ProfileDir != "" {
		prof, err := filepath.Abs(filepath.Join(b.cfg.ProfileDir, "relay-"+tag+".cpu.pprof"))
		if err != nil {
			return nil, err
		}
		wrap = append(wrap, "--cpuprofile", prof)
	}
	trace := ""
	if tracedScenarios[tag] {
		trace = filepath.Join(b.dir, "relay-"+tag+".stages.jsonl")
		wrap = append(wrap, "--stage-trace", trace)
	}
	if len(wrap) > 0 {
		args = append(append(append([]string{"bench-relay"}, wrap...), "--"), args...)
	}
	started := time.Now()
	c, out, err := startChild("relay", b.exe, relayEnv(b.cfg), filepath.Join(b.dir, "relay-"+tag+".log"), args...)
	if err != nil {
		return nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	c.reap()
	return &relayProc{child: c, started: started, stageTrace: trace}, nil
}

// relayEnv is what the relay processes get added to their environment:
// the configured ChildEnv, and GOMAXPROCS when RelayProcs sets it.
func relayEnv(cfg Config) []string {
	env := slices.Clone(cfg.ChildEnv)
	if cfg.RelayProcs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(cfg.RelayProcs))
	}
	return env
}

// receiverProc is the `relay bench-receiver` process and a client of its
// control endpoints.
type receiverProc struct {
	*child
	base   string
	client *http.Client
}

func (b *runner) startReceiver() (*receiverProc, error) {
	c, out, err := startChild("receiver", b.exe, b.cfg.ChildEnv, filepath.Join(b.dir, "receiver.log"), "bench-receiver", "--addr", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	lines := bufio.NewScanner(out)
	addrc := make(chan string, 1)
	go func() {
		var v struct{ Addr string }
		if lines.Scan() {
			_ = json.Unmarshal(lines.Bytes(), &v)
		}
		addrc <- v.Addr
		_, _ = io.Copy(io.Discard, out)
	}()
	c.reap()
	select {
	case addr := <-addrc:
		if addr == "" {
			_ = c.stop(time.Second)
			return nil, fmt.Errorf("the receiver did not start; see %s", c.log.Name())
		}
		return &receiverProc{child: c, base: "http://" + addr, client: &http.Client{Timeout: time.Minute}}, nil
	case <-time.After(30 * time.Second):
		_ = c.stop(time.Second)
		return nil, errors.New("the receiver did not start within 30s")
	}
}

func (r *receiverProc) call(ctx context.Context, method, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, r.base+"/_bench/"+path, nil)
	if err != nil {
		return err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("receiver %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("receiver %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (r *receiverProc) reset(ctx context.Context) error {
	var c Counts
	return r.call(ctx, http.MethodPost, "reset", &c)
}

func (r *receiverProc) count(ctx context.Context) (Counts, error) {
	var c Counts
	err := r.call(ctx, http.MethodGet, "count", &c)
	return c, err
}

func (r *receiverProc) report(ctx context.Context) (ReceiverReport, error) {
	var rep ReceiverReport
	err := r.call(ctx, http.MethodGet, "report", &rep)
	return rep, err
}

// waitReceived polls the receiver until it holds want unique deliveries or
// timeout passes; it returns the last counts.
func (r *receiverProc) waitReceived(ctx context.Context, want int, timeout time.Duration) (Counts, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := r.count(ctx)
		if err != nil {
			return c, err
		}
		if c.Unique >= want {
			return c, nil
		}
		if time.Now().After(deadline) {
			return c, fmt.Errorf("only %d of %d deliveries arrived within %s", c.Unique, want, timeout)
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitAll polls the receiver until every key of want has arrived or
// timeout passes, and returns the last report. A count would not do where
// other keys may arrive too: it could be reached before all of want are.
func (r *receiverProc) waitAll(ctx context.Context, want []string, timeout time.Duration) (ReceiverReport, error) {
	deadline := time.Now().Add(timeout)
	for {
		// The counts are cheap; the report is read once they allow it.
		if _, err := r.waitReceived(ctx, len(want), time.Until(deadline)); err != nil {
			return ReceiverReport{}, err
		}
		rep, err := r.report(ctx)
		if err != nil {
			return rep, err
		}
		c, _ := check(want, rep)
		if c.Missing == 0 {
			return rep, nil
		}
		if time.Now().After(deadline) {
			return rep, fmt.Errorf("only %d of %d deliveries arrived within %s", c.Received, len(want), timeout)
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CPUSplit is where the machine's CPU went during a measurement, in
// seconds: relay, PostgreSQL (postmaster and its children; only for the
// throwaway cluster), the receiver and the benchmark process itself (the
// producers). Wall is the measurement's length: on N cores at most N×Wall
// seconds are available.
type CPUSplit struct {
	Wall     float64 `json:"wall_seconds"`
	Relay    float64 `json:"relay"`
	Postgres float64 `json:"postgres,omitempty"`
	// PostgresBy splits Postgres: walsender (logical decoding), backend
	// (SQL sessions), autovacuum, background; relay_sessions is the part of
	// backend spent on relay's own sessions (the rest is the producers').
	PostgresBy map[string]float64 `json:"postgres_by,omitempty"`
	Receiver   float64            `json:"receiver"`
	Bench      float64            `json:"bench"`
	// Machine is all busy CPU time of the machine (/proc/stat), and Other
	// what of it none of the above used: other work on the machine, which
	// makes the run noisy when it is large.
	Machine float64 `json:"machine"`
	Other   float64 `json:"other"`
}

type cpuSnap struct {
	at                             time.Time
	relay, receiver, self, machine time.Duration
	postgres                       map[int]pgProc
}

// machineCPU is the busy time of all CPUs from /proc/stat (user, nice,
// system, irq, softirq, steal).
func machineCPU() time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postgresCPU sums the CPU time of the throwaway cluster's postmaster and
// its children by kind: "walsender" (logical decoding), "backend" (SQL
// sessions), "background" (checkpointer, WAL writer, autovacuum…). Empty
// when the server is not ours. Processes that exited are not counted.
func (b *runner) postgresCPU() map[int]pgProc {
	if b.cluster == nil {
		return nil
	}
	raw, err := os.ReadFile(filepath.Join(b.cluster.DataDir(), "postmaster.pid"))
	if err != nil {
		return nil
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	if err != nil {
		return nil
	}
	relayPids := b.relaySessions()
	entries, _ := os.ReadDir("/proc")
	procs := map[int]pgProc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if pid != pm && ppid != pm {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		kind := "background"
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			switch c := string(cmd); {
			case strings.Contains(c, "walsender"):
				kind = "walsender"
			case strings.Contains(c, "autovacuum worker"):
				kind = "autovacuum"
			case strings.Contains(c, "127.0.0.1("):
				kind = "backend"
			}
		}
		procs[pid] = pgProc{kind: kind, relay: relayPids[pid], cpu: time.Duration(ut+st) * time.Second / clockTicks}
	}
	return procs
}

// relaySessions are the server processes of relay's own SQL sessions (its
// pools name themselves relay-…), as opposed to the producers'.
func (b *runner) relaySessions() map[int]bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		return nil
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name LIKE 'relay-%'`)
	if err != nil {
		return nil
	}
	pids := map[int]bool{}
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) == nil {
			pids[pid] = true
		}
	}
	rows.Close()
	return pids
}

type pgProc struct {
	kind string
	// relay: a session of relay's (kind backend).
	relay bool
	cpu   time.Duration
}

func (b *runner) snapCPU(rp *relayProc) cpuSnap {
	s := cpuSnap{at: time.Now(), postgres: b.postgresCPU(), self: selfCPU(), machine: machineCPU()}
	if rp != nil {
		if u, err := rp.usage(); err == nil {
			s.relay = u.CPU
		}
	}
	if u, err := b.recv.usage(); err == nil {
		s.receiver = u.CPU
	}
	return s
}

func (b *runner) cpuSince(s0 cpuSnap, rp *relayProc) CPUSplit {
	s1 := b.snapCPU(rp)
	c := CPUSplit{
		Wall:     s1.at.Sub(s0.at).Seconds(),
		Relay:    (s1.relay - s0.relay).Seconds(),
		Receiver: (s1.receiver - s0.receiver).Seconds(),
		Bench:    (s1.self - s0.self).Seconds(),
		Machine:  (s1.machine - s0.machine).Seconds(),
	}
	if s1.postgres != nil {
		c.PostgresBy = map[string]float64{}
		for pid, p := range s1.postgres {
			d := p.cpu - s0.postgres[pid].cpu
			c.PostgresBy[p.kind] += d.Seconds()
			c.Postgres += d.Seconds()
			if p.relay || s0.postgres[pid].relay {
				// A part of "backend", not added to the total again.
				c.PostgresBy["relay_sessions"] += d.Seconds()
			}
		}
	}
	if c.Postgres > 0 { // otherwise the server's share is unknown
		c.Other = max(0, c.Machine-c.Relay-c.Postgres-c.Receiver-c.Bench)
	}
	return c
}
