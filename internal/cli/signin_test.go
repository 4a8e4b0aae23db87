package cli_test

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
)

// readUntil collects lines until one contains want; it fails after 60s or
// when the process ends first.
func readUntil(t *testing.T, lines *bufio.Scanner, want string) []string {
	t.Helper()
	type result struct {
		seen []string
		ok   bool
	}
	done := make(chan result, 1)
	go func() {
		var seen []string
		for lines.Scan() {
			seen = append(seen, lines.Text())
			if strings.Contains(lines.Text(), want) {
				done <- result{seen, true}
				return
			}
		}
		done <- result{seen, false}
	}()
	select {
	case r := <-done:
		if !r.ok {
			t.Fatalf("relay exited before %q; output:\n%s", want, strings.Join(r.seen, "\n"))
		}
		return r.seen
	case <-time.After(60 * time.Second):
		t.Fatalf("no %q within 60s", want)
	}
	return nil
}

var consoleLine = regexp.MustCompile(`admin API and console on (http://127\.0\.0\.1:\d+/)`)

// apiStatus calls GET path on base with token.
func apiStatus(t *testing.T, base, path, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", strings.TrimSuffix(base, "/")+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestFreshEmbeddedRunCanSignIn follows a new user: `relay run` with no
// flags at all (an embedded PostgreSQL in the data directory) prints a
// working operator token once, never warns that there is none, and the
// other commands find the embedded database without a connection string.
func TestFreshEmbeddedRunCanSignIn(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "relay-data")
	env := []string{"RELAY_DATA_DIR=" + dir, "RELAY_DATABASE_URL=", "RELAY_ADMIN_TOKEN=", "RELAY_EMBEDDED_PORT=0",
		"RELAY_ADMIN_ADDR=127.0.0.1:0", "RELAY_SLOT=", "RELAY_LOG_FORMAT=json"}
	start := func() (*bufio.Scanner, func(), []string) {
		cmd, lines := relayProcess(t, env, "run")
		seen := readUntil(t, lines, "relay running")
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			go func() {
				for lines.Scan() {
				}
			}()
			if err := cmd.Wait(); err != nil {
				t.Errorf("relay run after SIGTERM: %v", err)
			}
		}
		return lines, stop, seen
	}

	_, stop, out := start()
	all := strings.Join(out, "\n")
	m := consoleLine.FindStringSubmatch(all)
	if m == nil {
		t.Fatalf("no console address in:\n%s", all)
	}
	base := m[1]
	tokRE := regexp.MustCompile(`(?m)^  (relayop_[A-Za-z0-9_-]+)$`)
	tm := tokRE.FindStringSubmatch(all)
	if tm == nil || !strings.Contains(all, "printed only now") {
		t.Fatalf("no operator token printed:\n%s", all)
	}
	token := tm[1]
	if strings.Contains(all, "no operator token") {
		t.Errorf("the no-token warning appears although relay made a token:\n%s", all)
	}
	stored, err := os.ReadFile(filepath.Join(dir, "operator-token"))
	if err != nil || strings.TrimSpace(string(stored)) != token {
		t.Fatalf("token file %q (%v), want the printed token", stored, err)
	}
	// The printed token signs in as the operator.
	if code := apiStatus(t, base, "/api/settings", token); code != 200 {
		t.Fatalf("GET /api/settings with the printed token: %d", code)
	}

	// relay tokens create finds the embedded database by itself.
	cliEnv := map[string]string{"RELAY_DATA_DIR": dir}
	ownerTok := strings.TrimSpace(expectCLI(t, cliEnv, 0, nil, "tokens", "create", "--owner", "alice"))
	if code := apiStatus(t, base, "/api/webhooks", ownerTok); code != 200 {
		t.Fatalf("GET /api/webhooks with the owner token: %d", code)
	}
	expectCLI(t, cliEnv, 0, []string{"alice"}, "tokens", "list")
	expectCLI(t, cliEnv, 0, []string{"no subscriptions"}, "subs", "list")
	stop()

	// Stopped: the CLI says so instead of "no database".
	expectCLI(t, cliEnv, 1, []string{"is not running", "relay run"}, "tokens", "list")

	// A restart keeps the token and does not print it again.
	_, stop, out = start()
	all = strings.Join(out, "\n")
	if strings.Contains(all, token) || !strings.Contains(all, "sign in with the operator token kept in "+filepath.Join(dir, "operator-token")) {
		t.Errorf("restart output:\n%s", all)
	}
	m = consoleLine.FindStringSubmatch(all)
	if m == nil || apiStatus(t, m[1], "/api/settings", token) != 200 {
		t.Errorf("the kept token does not sign in after a restart:\n%s", all)
	}
	stop()
}

// TestRunWithoutTokenWarnsOnce checks that relay run on a database of its
// own with no operator token says so once, and says on standard output
// how to sign in anyway.
func TestRunWithoutTokenWarnsOnce(t *testing.T) {
	db := pgtest.NewDB(t)
	cmd, lines := relayProcess(t, []string{"RELAY_ADMIN_TOKEN="}, "run", "--database-url", db.URL, "--slot", db.Name,
		"--admin-addr", "127.0.0.1:0", "--log-format", "json")
	out := strings.Join(readUntil(t, lines, "relay running"), "\n")
	if n := strings.Count(out, "no operator token"); n != 1 {
		t.Errorf("the no-token warning appears %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "relay tokens create --owner NAME") {
		t.Errorf("standard output does not say how to sign in:\n%s", out)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	go func() {
		for lines.Scan() {
		}
	}()
	_ = cmd.Wait()
}
