package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/relay/internal/pgcluster"
)

// logLines collects a relay process's output as it comes, so a test can
// wait for a line and still read everything printed before it.
type logLines struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func collect(sc *bufio.Scanner) *logLines {
	l := &logLines{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// waitFor returns the first line containing want, failing the test after
// timeout or when the process's output ends first.
func (l *logLines) waitFor(t *testing.T, timeout time.Duration, want string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range l.all() {
			if strings.Contains(line, want) {
				return line
			}
		}
		select {
		case <-l.done:
			t.Fatalf("relay's output ended before %q:\n%s", want, strings.Join(l.all(), "\n"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %s:\n%s", want, timeout, strings.Join(l.all(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adminAddrFrom reads the address from the admin server's "listening" line.
func adminAddrFrom(t *testing.T, line string) string {
	t.Helper()
	var v struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &v); err != nil || v.Addr == "" {
		t.Fatalf("no addr in %q: %v", line, err)
	}
	return v.Addr
}

func getJSON(url string) (int, map[string]any, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body map[string]any
	err = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, err
}

// stoppedCluster makes a PostgreSQL cluster of its own for a test, not yet
// started, so the test decides when the server comes up.
func stoppedCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	if os.Getenv("RELAY_TEST_DATABASE_URL") != "" {
		t.Skip("needs local PostgreSQL binaries to start a server of its own")
	}
	dir := t.TempDir()
	c, err := pgcluster.New(context.Background(), pgcluster.Config{
		DataDir:  filepath.Join(dir, "data"),
		Settings: map[string]string{"fsync": "off", "synchronous_commit": "off"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

// TestRunWaitsForPostgresThatStartsLater is the start order of a pod or a
// compose file: relay starts while its PostgreSQL is down and the server
// comes up 10 s later. Meanwhile relay logs each attempt with its reason,
// /healthz answers and /readyz does not; then relay migrates, streams and
// delivers without being restarted.
func TestRunWaitsForPostgresThatStartsLater(t *testing.T) {
	if testing.Short() {
		t.Skip("10-second start-order scenario")
	}
	cluster := stoppedCluster(t)
	var got sync.Map // webhook-id → User-Agent
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got.Store(r.Header.Get("webhook-id"), r.Header.Get("User-Agent"))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()

	url := cluster.URL("postgres")
	started := time.Now()
	const token = "operator-token-for-the-start-order-test"
	cmd, sc := relayProcess(t, nil, "run", "--database-url", url, "--admin-addr", "127.0.0.1:0", "--admin-token", token,
		"--allow-cidr", "127.0.0.0/8", "--log-format", "json")
	out := collect(sc)
	base := "http://" + adminAddrFrom(t, out.waitFor(t, 30*time.Second, "admin API listening"))
	out.waitFor(t, 30*time.Second, `"reason":"connection refused"`)

	if code, body, err := getJSON(base + "/healthz"); err != nil || code != 200 || body["state"] != "waiting_for_database" || body["version"] == "" {
		t.Fatalf("/healthz while waiting: %d %v %v", code, body, err)
	}
	if code, body, err := getJSON(base + "/readyz"); err != nil || code != 503 || !strings.Contains(fmt.Sprint(body["error"]), "waiting for the database: connection refused") {
		t.Fatalf("/readyz while waiting: %d %v %v", code, body, err)
	}

	// PostgreSQL comes up 10 s after relay started.
	time.Sleep(time.Until(started.Add(10 * time.Second)))
	if err := cluster.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	waitUntil(t, 60*time.Second, "/readyz to answer 200", func() bool {
		code, _, _ := getJSON(base + "/readyz")
		return code == 200
	})
	ready := time.Now()
	attempts := 0
	for _, l := range out.all() {
		if strings.Contains(l, "waiting for the database:") {
			attempts++
		}
	}
	t.Logf("start order: PostgreSQL up %.1fs after relay started; relay streaming and ready %.2fs after that, after %d logged attempts",
		up.Sub(started).Seconds(), ready.Sub(up).Seconds(), attempts)
	if attempts < 2 {
		t.Fatalf("%d waiting lines logged in 10 s, want one per attempt", attempts)
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var eventID string
	subscribeOverHTTP(t, conn, base, token, recv.URL)
	if err := conn.QueryRow(ctx, `SELECT relay.emit('order.placed', '{"n": 1}')::text`).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, ok := got.Load(eventID); !ok; _, ok = got.Load(eventID) {
		if time.Now().After(deadline) {
			var state string
			_ = conn.QueryRow(ctx, `SELECT coalesce(string_agg(status || ' ' || coalesce(last_error, ''), '; '), 'no delivery') FROM relay.deliveries`).Scan(&state)
			t.Fatalf("event %s not delivered within 30s (deliveries: %s); relay's output:\n%s", eventID, state, strings.Join(out.all(), "\n"))
		}
		time.Sleep(25 * time.Millisecond)
	}
	if ua, _ := got.Load(eventID); !strings.HasPrefix(ua.(string), "relay/") || !strings.Contains(ua.(string), "go1.") {
		t.Errorf("User-Agent %q, want relay/<version> (commit …; go…)", ua)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("relay run after SIGTERM: %v", err)
	}
}

// subscribeOverHTTP lets a running relay deliver to the plain-http test
// receiver at url: it sets allow_http and adds a subscription to every
// event. The dispatcher learns of allow_http through a notification; the
// Test button, which delivers through the same path, says when it has.
func subscribeOverHTTP(t *testing.T, conn *pgx.Conn, base, token, url string) {
	t.Helper()
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `UPDATE relay.settings SET allow_http = true`); err != nil {
		t.Fatal(err)
	}
	var subID int64
	if err := conn.QueryRow(ctx, `INSERT INTO relay.subscriptions (name, url, event_types) VALUES ('all', $1, '{*}') RETURNING id`, url).Scan(&subID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "a test delivery to the http receiver", func() bool {
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/webhooks/%d/test", base, subID), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var res struct{ Delivered bool }
		return json.NewDecoder(resp.Body).Decode(&res) == nil && res.Delivered
	})
}

// TestRunFailsFastOnAuthentication: waiting cannot fix a wrong password,
// so relay run exits 2 at once, naming the role, although it would wait
// forever for a server that is down.
func TestRunFailsFastOnAuthentication(t *testing.T) {
	cluster := stoppedCluster(t)
	hba := filepath.Join(cluster.DataDir(), "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hba, append([]byte("host all app 127.0.0.1/32 scram-sha-256\n"), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, `CREATE ROLE app LOGIN REPLICATION PASSWORD 'right-password'`)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}

	url := fmt.Sprintf("postgres://app:wrong-password@127.0.0.1:%d/postgres?sslmode=disable", cluster.Port())
	raw, _ := json.Marshal([]string{"run", "--database-url", url, "--admin-addr", "off", "--log-format", "json"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RELAY_TEST_AS_CLI="+string(raw))
	var output strings.Builder
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("relay run still running after 60s with a wrong password:\n%s", output.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != 2 || !strings.Contains(output.String(), `authentication failed for role "app"`) || !strings.Contains(output.String(), "28P01") {
		t.Fatalf("exit %d (%v), want 2 naming the role; output:\n%s", code, err, output.String())
	}
	if strings.Contains(output.String(), "waiting for the database") {
		t.Fatalf("relay waited on an authentication failure:\n%s", output.String())
	}
}

// TestWaitForDatabaseZeroFailsAtOnce: --wait-for-database 0 keeps the old
// behaviour of failing on the first refused attempt, exit 1.
func TestWaitForDatabaseZeroFailsAtOnce(t *testing.T) {
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	code, _, errs := runCLI(t, nil, "run", "--database-url", url, "--admin-addr", "off", "--wait-for-database", "0", "--log-format", "json")
	if code != 1 || !strings.Contains(errs, "database not reachable after 1 attempt(s)") || !strings.Contains(errs, "connection refused") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	code, _, errs = runCLI(t, nil, "run", "--database-url", url, "--wait-for-database", "-5s")
	if code != 2 || !strings.Contains(errs, "wait-for-database") {
		t.Fatalf("negative wait: exit %d: %s", code, errs)
	}
	code, _, errs = runCLI(t, map[string]string{"RELAY_WAIT_FOR_DATABASE": "soon"}, "run", "--database-url", url)
	if code != 2 || !strings.Contains(errs, "RELAY_WAIT_FOR_DATABASE") {
		t.Fatalf("bad env: exit %d: %s", code, errs)
	}
}
