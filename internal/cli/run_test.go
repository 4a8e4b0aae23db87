package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/cli"
	"github.com/pgoutbox/relay/internal/pgtest"
)

// runAsRelay makes this test binary behave as the relay command when the
// environment asks, so tests can run `relay run` as a real process and send
// it real signals.
func runAsRelay() bool {
	raw := os.Getenv("RELAY_TEST_AS_CLI")
	if raw == "" {
		return false
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		panic(err)
	}
	err := cli.New().Run(context.Background(), args)
	if err != nil {
		os.Stderr.WriteString("relay: " + err.Error() + "\n")
	}
	os.Exit(cli.ExitCode(err))
	return true
}

// relayProcess starts `relay args…` as a child process.
func relayProcess(t *testing.T, env []string, args ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	raw, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "RELAY_TEST_AS_CLI="+string(raw)), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, bufio.NewScanner(out)
}

func countRows(t *testing.T, db *pgtest.DB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestRunEndToEndAndGracefulStop runs `relay run` as a process: an insert is
// delivered; SIGTERM during a burst exits 0, and the next start delivers
// the rest with nothing lost.
func TestRunEndToEndAndGracefulStop(t *testing.T) {
	db := pgtest.NewDB(t)
	var mu sync.Mutex
	seen := map[string]int{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		seen[r.Header.Get("webhook-id")]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
	db.Exec(t, `INSERT INTO relay.subscriptions (owner, name, url, event_types) VALUES (NULL, 'all', $1, '{*}')`, recv.URL)
	args := []string{"run", "--database-url", db.URL, "--slot", db.Name, "--admin-addr", "127.0.0.1:0",
		"--allow-cidr", "127.0.0.0/8", "--log-format", "json", "--concurrency", "4"}

	cmd, lines := relayProcess(t, nil, args...)
	waitForLine(t, lines, "relay running")
	db.Exec(t, `SELECT relay.emit('run.first', '{}')`)
	waitUntil(t, 15*time.Second, "first delivery", func() bool {
		return countRows(t, db, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`) == 1
	})

	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'run.burst', jsonb_build_object('n', g) FROM generate_series(1, 400) g`)
	waitUntil(t, 15*time.Second, "the burst to be under way", func() bool {
		return countRows(t, db, `SELECT count(*) FROM relay.delivery_attempts`) > 20
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for lines.Scan() {
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("relay run after SIGTERM: %v (want exit 0)", err)
	}
	if n := countRows(t, db, `SELECT count(*) FROM relay.deliveries WHERE status = 'delivering'`); n != 0 {
		t.Fatalf("%d deliveries left claimed after a graceful stop", n)
	}
	delivered := countRows(t, db, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`)
	t.Logf("delivered before SIGTERM took effect: %d of 401", delivered)

	cmd2, lines2 := relayProcess(t, nil, args...)
	waitForLine(t, lines2, "relay running")
	waitUntil(t, 30*time.Second, "all 401 delivered after restart", func() bool {
		return countRows(t, db, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`) == 401
	})
	_ = cmd2.Process.Signal(syscall.SIGTERM)
	mu.Lock()
	defer mu.Unlock()
	dupes := 0
	for _, n := range seen {
		if n > 1 {
			dupes++
		}
	}
	if len(seen) != 401 || dupes != 0 {
		t.Fatalf("receiver saw %d distinct events (%d more than once), want 401 once each", len(seen), dupes)
	}
}

func waitForLine(t *testing.T, lines *bufio.Scanner, want string) {
	t.Helper()
	done := make(chan bool, 1)
	var seen []string
	go func() {
		for lines.Scan() {
			seen = append(seen, lines.Text())
			if strings.Contains(lines.Text(), want) {
				done <- true
				return
			}
		}
		done <- false
	}()
	select {
	case ok := <-done:
		if !ok {
			t.Fatalf("relay exited before %q; output:\n%s", want, strings.Join(seen, "\n"))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no %q within 30s", want)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--database-url", "postgres://x", "--slot", "Bad-Slot"}, `slot "Bad-Slot"`},
		{[]string{"run", "--database-url", "postgres://x", "--allow-cidr", "10.0.0.0/99"}, `allow-cidr "10.0.0.0/99"`},
		{[]string{"run", "--database-url", "postgres://x", "--concurrency", "-3"}, "concurrency -3"},
		{[]string{"run", "--database-url", "postgres://x", "--admin-addr", "nonsense"}, `admin address "nonsense"`},
		{[]string{"run", "--database-url", "postgres://x", "--log-level", "chatty"}, `log level "chatty"`},
		{[]string{"run", "--database-url", "postgres://x", "--retention", "5m"}, "retention 5m0s"},
		{[]string{"run", "--retention", "forever"}, "invalid value"},
	} {
		code, _, errs := runCLI(t, nil, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	env := map[string]string{"RELAY_CONCURRENCY": "many"}
	if code, _, errs := runCLI(t, env, "run", "--database-url", "postgres://x"); code != 2 || !strings.Contains(errs, "RELAY_CONCURRENCY") {
		t.Errorf("bad env: %d %q", code, errs)
	}
}

func TestDemoShowsDeliveriesAndRetries(t *testing.T) {
	if testing.Short() {
		t.Skip("20-second demo")
	}
	code, out, errs := runCLI(t, nil, "demo", "--duration", "20s", "--admin-addr", "127.0.0.1:0", "--every", "400ms")
	if code != 0 {
		t.Fatalf("demo exit %d: %s\n%s", code, errs, out)
	}
	var events, delivered, retried, failed, verified, bad int
	i := strings.LastIndex(out, "summary:")
	if i < 0 {
		t.Fatalf("no summary in:\n%s", out)
	}
	if _, err := fmtSscanf(out[i:], &events, &delivered, &retried, &failed, &verified, &bad); err != nil {
		t.Fatalf("summary %q: %v", out[i:], err)
	}
	if delivered == 0 || retried == 0 || bad != 0 || verified == 0 {
		t.Fatalf("demo summary: %s", out[i:])
	}
	t.Logf("%s", strings.TrimSpace(out[i:]))
}
