package cli_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/relay/internal/pgcluster"
)

// postmasterPID reads the server's pid from its lock file.
func postmasterPID(t *testing.T, pgdata string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pgdata, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %q", b)
	}
	return pid
}

// TestEmbeddedServerKilledIsRestarted runs `relay run` on its embedded
// PostgreSQL and kills the server twice: the first time relay restarts it
// and goes on delivering; the second time its data directory has been
// removed, so relay exits non-zero with the end of the server's log
// instead of running on without a database.
func TestEmbeddedServerKilledIsRestarted(t *testing.T) {
	if _, err := pgcluster.FindBinDir(); err != nil {
		t.Skip(err)
	}
	dataDir := filepath.Join(t.TempDir(), "relay-data")
	pgdata := filepath.Join(dataDir, "pgdata")
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	var got sync.Map
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got.Store(r.Header.Get("webhook-id"), true)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()

	const token = "operator-token-for-the-embedded-test"
	cmd, sc := relayProcess(t, nil, "run", "--data-dir", dataDir, "--embedded-port", strconv.Itoa(port),
		"--admin-addr", "127.0.0.1:0", "--admin-token", token, "--allow-cidr", "127.0.0.0/8", "--log-format", "json")
	out := collect(sc)
	base := "http://" + adminAddrFrom(t, out.waitFor(t, 90*time.Second, "admin API listening"))
	out.waitFor(t, 90*time.Second, "relay running")
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/relay?sslmode=disable", port)
	ctx := context.Background()
	emit := func() string {
		t.Helper()
		var id string
		// The server may still be restarting: try until it answers.
		waitUntil(t, 60*time.Second, "the embedded server to take an event", func() bool {
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				return false
			}
			defer conn.Close(ctx)
			return conn.QueryRow(ctx, `SELECT relay.emit('embedded.check', '{}')::text`).Scan(&id) == nil
		})
		return id
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	subscribeOverHTTP(t, conn, base, token, recv.URL)
	conn.Close(ctx)
	first := emit()
	waitUntil(t, 30*time.Second, "the first event delivered", func() bool { _, ok := got.Load(first); return ok })

	// 1. The server is killed: relay restarts it and keeps delivering.
	pid := postmasterPID(t, pgdata)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, 30*time.Second, "embedded PostgreSQL exited unexpectedly")
	out.waitFor(t, 90*time.Second, "embedded PostgreSQL restarted")
	if newPID := postmasterPID(t, pgdata); newPID == pid {
		t.Fatalf("postmaster pid still %d after the restart", pid)
	}
	second := emit()
	waitUntil(t, 60*time.Second, "an event delivered after the restart", func() bool { _, ok := got.Load(second); return ok })

	// 2. Its data directory is removed and it is killed again: relay
	// cannot restart it and exits non-zero with the end of its log.
	pid = postmasterPID(t, pgdata)
	if err := os.RemoveAll(pgdata); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { <-out.done; exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("relay still running 60s after its embedded server lost its data directory:\n%s", strings.Join(out.all(), "\n"))
	}
	all := strings.Join(out.all(), "\n")
	if err == nil || !strings.Contains(all, "data directory "+pgdata+" is gone") || !strings.Contains(all, "end of its log") ||
		!strings.Contains(all, "database system is ready to accept connections") {
		t.Fatalf("exit %v, want non-zero with the server's log tail; output:\n%s", err, all)
	}
	t.Logf("relay exited with %v after the data directory was removed", err)
}
