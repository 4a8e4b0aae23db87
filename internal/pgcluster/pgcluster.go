// Package pgcluster runs a PostgreSQL server from the locally installed
// server binaries (initdb, postgres). The test harness uses it for a
// throwaway cluster and `relay run` for its embedded default.
//
// PostgreSQL refuses to run as root, so when the current process is root the
// server runs as an unprivileged user (postgres if it exists, else nobody),
// and the data directory is handed to that user.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries is returned when initdb and postgres cannot be found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found; " +
	"install them (Debian/Ubuntu: apt-get install -y postgresql; macOS: brew install postgresql@16) " +
	"or set --database-url / RELAY_DATABASE_URL to an existing server")

// SearchGlob is where FindBinDir looks last for server binaries (Debian and
// Ubuntu install them there, off PATH). Tests point it elsewhere.
var SearchGlob = "/usr/lib/postgresql/*/bin"

// FindBinDir finds the directory holding initdb and postgres: on PATH first,
// then `pg_config --bindir`, then the newest SearchGlob match.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := exec.LookPath("postgres"); err == nil {
			return dir, nil
		}
		if isExec(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	if pgc, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(pgc, "--bindir").Output(); err == nil {
			dir := strings.TrimSpace(string(out))
			if isExec(filepath.Join(dir, "initdb")) && isExec(filepath.Join(dir, "postgres")) {
				return dir, nil
			}
		}
	}
	dirs, _ := filepath.Glob(SearchGlob)
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if isExec(filepath.Join(dir, "initdb")) && isExec(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Config describes a cluster.
type Config struct {
	// DataDir is the cluster's data directory; created by initdb if empty.
	DataDir string
	// BinDir holds initdb and postgres; found with FindBinDir when empty.
	BinDir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Settings are extra server settings (-c name=value). wal_level=logical
	// and enough replication slots are always set.
	Settings map[string]string
	// LogFile receives the server's output; DataDir/../postgres.log when empty.
	LogFile string
}

// Cluster is one running (or stopped) PostgreSQL server.
type Cluster struct {
	cfg     Config
	cred    *syscall.Credential
	cmd     *exec.Cmd
	exited  chan struct{}
	logFile *os.File
}

// New prepares a cluster, running initdb when the data directory holds no
// cluster yet. It does not start the server.
func New(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("pgcluster: DataDir is required")
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = abs
	if cfg.BinDir == "" {
		if cfg.BinDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	if cfg.Port == 0 {
		if cfg.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if cfg.LogFile == "" {
		cfg.LogFile = filepath.Join(filepath.Dir(cfg.DataDir), filepath.Base(cfg.DataDir)+".log")
	}
	c := &Cluster{cfg: cfg}
	if os.Geteuid() == 0 {
		if c.cred, err = unprivilegedUser(); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "PG_VERSION")); err == nil {
		return c, nil
	}
	if err := c.initdb(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func unprivilegedUser() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root and no unprivileged user (postgres or nobody) exists to run PostgreSQL")
}

// URL is the connection string for a database of this cluster, as the
// superuser "postgres" over TCP on 127.0.0.1.
func (c *Cluster) URL(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.cfg.Port, database)
}

// Port is the TCP port the server listens on.
func (c *Cluster) Port() int { return c.cfg.Port }

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return c.cfg.DataDir }

func (c *Cluster) initdb(ctx context.Context) error {
	if err := os.MkdirAll(c.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	if err := c.handOver(c.cfg.DataDir); err != nil {
		return err
	}
	closeInheritedOnExec()
	cmd := exec.CommandContext(ctx, filepath.Join(c.cfg.BinDir, "initdb"),
		"-D", c.cfg.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb in %s: %w\n%s", c.cfg.DataDir, err, out)
	}
	return nil
}

// handOver gives dir to the unprivileged user and makes every parent
// directory traversable, since the server must reach its data directory.
func (c *Cluster) handOver(dir string) error {
	if c.cred == nil {
		return nil
	}
	if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("giving %s to uid %d: %w", dir, c.cred.Uid, err)
	}
	for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, st.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("making %s traversable for the postgres user: %w", p, err)
			}
		}
	}
	return nil
}

// Start starts the server and waits until it accepts connections. After
// the server exited on its own (see Exited), Start starts it again.
func (c *Cluster) Start(ctx context.Context) error {
	if c.cmd != nil {
		select {
		case <-c.exited:
			c.reap()
		default:
			return errors.New("pgcluster: already started")
		}
	}
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": "",
		"wal_level":               "logical",
		"max_replication_slots":   "64",
		"max_wal_senders":         "64",
		"max_connections":         "200",
	}
	for k, v := range c.cfg.Settings {
		settings[k] = v
	}
	args := []string{"-D", c.cfg.DataDir, "-p", strconv.Itoa(c.cfg.Port)}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}
	logf, err := os.OpenFile(c.cfg.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening server log: %w", err)
	}
	closeInheritedOnExec()
	cmd := exec.Command(filepath.Join(c.cfg.BinDir, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = os.TempDir()
	// Setpgid keeps a terminal's Ctrl-C from reaching the server directly:
	// the owner stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting postgres: %w", err)
	}
	c.cmd, c.logFile, c.exited = cmd, logf, make(chan struct{})
	go func() { _ = cmd.Wait(); close(c.exited) }()
	if err := c.waitReady(ctx); err != nil {
		_ = c.Stop()
		return err
	}
	return nil
}

// Exited is closed when the server that the last Start started exits, on
// its own or by Stop; nil before the first Start.
func (c *Cluster) Exited() <-chan struct{} { return c.exited }

// reap cleans up after a server that exited on its own: the backends it
// left behind (they would hold its shared memory and keep a new server
// from starting) are killed with the rest of its process group, and its
// log file is closed.
func (c *Cluster) reap() {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
	c.cmd = nil
	if c.logFile != nil {
		c.logFile.Close()
		c.logFile = nil
	}
}

// LogTail returns about the last n bytes of the server's log, from the
// start of a line, or a note saying why it cannot be read.
func (c *Cluster) LogTail(n int) string {
	b, err := os.ReadFile(c.cfg.LogFile)
	if err != nil {
		return fmt.Sprintf("(server log %s unreadable: %v)", c.cfg.LogFile, err)
	}
	t := tail(string(b), n)
	if len(t) < len(b) {
		if i := strings.IndexByte(t, '\n'); i >= 0 {
			t = t[i+1:]
		}
	}
	return t
}

// LogFile is where the server's output goes.
func (c *Cluster) LogFile() string { return c.cfg.LogFile }

func (c *Cluster) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-c.exited:
			log, _ := os.ReadFile(c.cfg.LogFile)
			return fmt.Errorf("postgres exited during start-up; its log:\n%s", tail(string(log), 2000))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 60s: %w", err)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Stop shuts the server down (fast mode: open sessions are ended) and waits.
// Stopping a stopped cluster does nothing.
func (c *Cluster) Stop() error {
	if c.cmd == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	c.reap()
	return nil
}

// closeInheritedOnExec marks every descriptor this process inherited
// (3 and up; those Go opens are close-on-exec already) close-on-exec, so
// the server does not inherit them. flock(1) passes its lock as such a
// descriptor: a server left running by a test binary that was killed
// would otherwise hold the lock of everyone's benchmarks until it is
// found and stopped. This process keeps them open.
func closeInheritedOnExec() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// Kill ends the server with SIGKILL, the postmaster and every one of its
// processes at once, as the kernel's OOM killer or a power cut would:
// nothing is flushed or shut down cleanly, so the next Start runs crash
// recovery. Each server process is its own session leader (PostgreSQL
// calls setsid in every child), so they are found through /proc: the
// postmaster is stopped first so that it forks no more, then all are
// killed. It waits for the postmaster to exit and its children to go.
func (c *Cluster) Kill() error {
	if c.cmd == nil {
		return nil
	}
	pm := c.cmd.Process.Pid
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("stopping postgres: %w", err)
	}
	children := childrenOf(pm)
	for _, pid := range children {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := syscall.Kill(pm, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing postgres: %w", err)
	}
	<-c.exited
	c.cmd = nil
	if c.logFile != nil {
		c.logFile.Close()
		c.logFile = nil
	}
	// Killed children are reaped by init; wait until they are gone, so
	// that the next Start does not find their shared memory in use.
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range children {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// alive reports whether pid is a process that has not exited (a zombie
// waiting to be reaped has: it holds no memory any more).
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || len(stat) < i+3 || (stat[i+2] != 'Z' && stat[i+2] != 'X')
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command is in parentheses and may hold spaces: the parent
		// pid is the second field after the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// Restart stops and starts the server on the same data and port.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.Start(ctx)
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
