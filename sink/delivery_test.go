package sink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/signer"
	"github.com/pgoutbox/relay/sink/dispatch"
	"github.com/pgoutbox/relay/sink/send"
)

// captured is one request a test receiver got.
type captured struct {
	Header http.Header
	Body   []byte
	At     time.Time
	Path   string
}

// receiver is a real HTTP server on 127.0.0.1 that answers with respond
// (200 when nil) and keeps every request.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	got     []captured
	respond func(n int, w http.ResponseWriter, r *http.Request)
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{respond: respond}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, captured{r.Header.Clone(), body, time.Now(), r.URL.Path})
		n := len(rc.got)
		rc.mu.Unlock()
		if rc.respond != nil {
			rc.respond(n, w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []captured {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]captured(nil), rc.got...)
}

// startDispatcher runs a dispatcher that may reach 127.0.0.0/8 (the test
// receivers) on db; http:// targets are allowed through relay.settings.
func startDispatcher(t *testing.T, db *pgtest.DB, allowCIDRs []string, mod func(*dispatch.Config)) *dispatch.Dispatcher {
	t.Helper()
	db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
	cfg, err := testDispatchConfig(db.Pool, allowCIDRs, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := dispatch.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Stop(ctx)
	})
	return d
}

var loopback = []string{"127.0.0.0/8"}

// testDispatchConfig is the dispatcher the tests run (in process or in a
// crash child): quick polls, 16 senders, reaching allowCIDRs.
func testDispatchConfig(pool *pgxpool.Pool, allowCIDRs []string, log zerolog.Logger) (dispatch.Config, error) {
	guard, err := send.NewAddressGuard(allowCIDRs)
	if err != nil {
		return dispatch.Config{}, err
	}
	return dispatch.Config{
		Pool:         pool,
		Sender:       send.New(send.Config{Guard: guard, UserAgent: "relay/test"}),
		Logger:       log,
		PollInterval: 100 * time.Millisecond,
		Concurrency:  16,
	}, nil
}

// subscribe adds a subscription to url and returns its id and secret.
func subscribe(t *testing.T, db *pgtest.DB, owner any, url string, patterns []string, extra string) (int64, string) {
	t.Helper()
	db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
	var id int64
	var secret string
	err := db.Pool.QueryRow(context.Background(), `INSERT INTO relay.subscriptions (owner, name, url, event_types)
		VALUES ($1, 'test', $2, $3) RETURNING id, secret`, owner, url, patterns).Scan(&id, &secret)
	if err != nil {
		t.Fatal(err)
	}
	if extra != "" {
		db.Exec(t, `UPDATE relay.subscriptions SET `+extra+` WHERE id = $1`, id)
	}
	return id, secret
}

type deliveryRow struct {
	Status        string
	Attempts      int
	NextAttemptAt time.Time
	LastCode      *int
	LastError     *string
}

func delivery(t *testing.T, db *pgtest.DB, subID int64) deliveryRow {
	t.Helper()
	var r deliveryRow
	err := db.Pool.QueryRow(context.Background(), `SELECT status, attempts, next_attempt_at, last_status_code, last_error
		FROM relay.deliveries WHERE subscription_id = $1 ORDER BY id LIMIT 1`, subID).
		Scan(&r.Status, &r.Attempts, &r.NextAttemptAt, &r.LastCode, &r.LastError)
	if errors.Is(err, pgx.ErrNoRows) {
		return deliveryRow{} // not fanned out yet
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDeliverEndToEndSigned(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	var secret string
	var verifyErr error
	var mu sync.Mutex
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_ = body
		w.WriteHeader(http.StatusNoContent)
	})
	subID, secret := subscribe(t, db, "user-1", rc.URL+"/hooks/abc", []string{"thread.*"}, `headers = '{"x-team": "core"}'`)
	startCapture(t, db, nil)
	startDispatcher(t, db, loopback, nil)

	var eventID string
	if err := db.Pool.QueryRow(context.Background(), `SELECT relay.emit('thread.created', '{"title":"Hello"}', 'user-1', 'thread-7')::text`).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "succeeded", func() bool { return delivery(t, db, subID).Status == "succeeded" })
	reqs := rc.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	req := reqs[0]
	// The receiver's checks, as a receiver would write them.
	mu.Lock()
	verifyErr = signer.Verify(secret, req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), req.Body, nil)
	mu.Unlock()
	if verifyErr != nil {
		t.Fatalf("Standard Webhooks signature does not verify: %v", verifyErr)
	}
	if err := signer.VerifySimple(secret, req.Header.Get("x-relay-signature"), req.Body); err != nil {
		t.Fatalf("x-relay-signature does not verify: %v", err)
	}
	for k, want := range map[string]string{
		"webhook-id": eventID, "content-type": "application/json", "user-agent": "relay/test",
		"x-relay-event": "thread.created", "x-relay-attempt": "1", "x-team": "core",
	} {
		if got := req.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	var body struct {
		ID, Type, Timestamp string
		Owner, Key          string
		Data                map[string]string
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.ID != eventID || body.Type != "thread.created" || body.Owner != "user-1" || body.Key != "thread-7" || body.Data["title"] != "Hello" {
		t.Fatalf("body = %s", req.Body)
	}
	if _, err := time.Parse(time.RFC3339, body.Timestamp); err != nil {
		t.Fatalf("timestamp %q: %v", body.Timestamp, err)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts a JOIN relay.deliveries d ON d.id = a.delivery_id
		WHERE d.subscription_id = $1 AND a.outcome = 'succeeded' AND a.status_code = 204`, subID); n != 1 {
		t.Fatalf("succeeded attempt rows = %d, want 1", n)
	}

	// Receivers written by others accept the very request relay sent.
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(req.Body, req.Header); err != nil {
		t.Fatalf("standard-webhooks Go library rejects relay's request: %v", err)
	}
	verifyWithNode(t, secret, req)
}

// verifyWithNode checks a captured request with the npm package
// standardwebhooks (testdata/interop/verify.mjs).
func verifyWithNode(t *testing.T, secret string, req captured) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node is required in CI for the interoperability check")
		}
		t.Skip("node not on PATH")
	}
	dir := filepath.Join("..", "testdata", "interop")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("testdata/interop/node_modules missing in CI; make test runs npm ci there")
		}
		t.Skip("run npm ci in testdata/interop")
	}
	line, _ := json.Marshal(map[string]any{
		"secret": secret,
		"headers": map[string]string{
			"webhook-id": req.Header.Get("webhook-id"), "webhook-timestamp": req.Header.Get("webhook-timestamp"),
			"webhook-signature": req.Header.Get("webhook-signature"),
		},
		"body": string(req.Body),
	})
	cmd := exec.Command(node, filepath.Join(dir, "verify.mjs"))
	cmd.Stdin = bytes.NewReader(append(line, '\n'))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify: %v", err)
	}
	if strings.TrimSpace(string(out)) != `{"ok":true}` {
		t.Fatalf("npm standardwebhooks rejects relay's request: %s", out)
	}
}

// TestAnswerTable runs one delivery per row of DESIGN.md §4's table.
func TestAnswerTable(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	startCapture(t, db, nil)
	startDispatcher(t, db, loopback, nil)

	refusedURL := "http://" + refusingAddr(t) + "/hook"

	status := func(code int, hdr ...string) func(int, http.ResponseWriter, *http.Request) {
		return func(_ int, w http.ResponseWriter, _ *http.Request) {
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			w.WriteHeader(code)
		}
	}
	type row struct {
		name       string
		respond    func(int, http.ResponseWriter, *http.Request)
		url        string
		extra      string
		wantStatus string
		wantTries  int
		wantRetry  time.Duration // expected next_attempt_at - last attempt, ±10% (0: no check)
		wantError  string
		wantGone   bool
		wantReason string // in disabled_reason (default "410")
	}
	rows := []row{
		{name: "200", respond: status(200), wantStatus: "succeeded", wantTries: 1},
		{name: "500 then 200", respond: func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				w.WriteHeader(500)
				return
			}
			w.WriteHeader(200)
		}, extra: `retry_schedule = '{0.3 seconds}'`, wantStatus: "succeeded", wantTries: 2},
		{name: "503 Retry-After", respond: status(503, "Retry-After", "120"), extra: `retry_schedule = '{1 second}'`,
			wantStatus: "pending", wantTries: 1, wantRetry: 120 * time.Second, wantError: "HTTP 503"},
		// 429 throttles the subscription and spends no retry: without
		// Retry-After the first back-off is one second, with it the named time.
		{name: "429", respond: status(429), extra: `retry_schedule = '{1 hour}'`, wantStatus: "pending", wantTries: 1, wantRetry: time.Second, wantError: "HTTP 429"},
		{name: "429 Retry-After", respond: status(429, "Retry-After", "120"), extra: `retry_schedule = '{1 second}'`, wantStatus: "pending", wantTries: 1, wantRetry: 120 * time.Second, wantError: "HTTP 429"},
		{name: "Slack 404 no_service", respond: func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(404)
			fmt.Fprint(w, "no_service")
		}, extra: `retry_schedule = '{1 hour}'`, wantStatus: "failed", wantTries: 1, wantError: "HTTP 404", wantGone: true, wantReason: "no_service"},
		{name: "Discord 404 unknown webhook", respond: func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(404)
			fmt.Fprint(w, `{"message": "Unknown Webhook", "code": 10015}`)
		}, extra: `retry_schedule = '{1 hour}'`, wantStatus: "failed", wantTries: 1, wantError: "HTTP 404", wantGone: true, wantReason: "10015"},
		{name: "timeout", respond: func(_ int, w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		}, extra: `timeout_ms = 1000, retry_schedule = '{1 hour}'`, wantStatus: "pending", wantTries: 1, wantRetry: time.Hour, wantError: "timeout"},
		{name: "connection refused", url: refusedURL, extra: `retry_schedule = '{5 minutes}'`, wantStatus: "pending", wantTries: 1, wantRetry: 5 * time.Minute, wantError: "refused"},
		{name: "last retry fails", respond: status(502), extra: `retry_schedule = '{0.2 seconds}'`, wantStatus: "failed", wantTries: 2, wantError: "HTTP 502"},
		{name: "410", respond: status(410), extra: `retry_schedule = '{1 hour}'`, wantStatus: "failed", wantTries: 1, wantError: "HTTP 410", wantGone: true},
		{name: "404", respond: status(404), extra: `retry_schedule = '{1 hour}'`, wantStatus: "failed", wantTries: 1, wantError: "HTTP 404"},
		{name: "301", respond: status(301, "Location", "http://169.254.169.254/latest/meta-data"), extra: `retry_schedule = '{1 hour}'`, wantStatus: "failed", wantTries: 1, wantError: "HTTP 301"},
	}
	subs := make([]int64, len(rows))
	for i, r := range rows {
		url := r.url
		if url == "" {
			url = newReceiver(t, r.respond).URL + "/hook"
		}
		subs[i], _ = subscribe(t, db, nil, url, []string{"answer.row" + fmt.Sprint(i)}, r.extra)
		db.Exec(t, `SELECT relay.emit($1, '{}')`, "answer.row"+fmt.Sprint(i))
	}
	for i, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			var d deliveryRow
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				d = delivery(t, db, subs[i])
				if d.Status == r.wantStatus && d.Attempts == r.wantTries {
					break
				}
				if time.Now().After(deadline) {
					lastError := "<nil>"
					if d.LastError != nil {
						lastError = *d.LastError
					}
					t.Fatalf("timed out after 20s waiting for %s after %d attempts: the delivery is %s after %d, last error %q",
						r.wantStatus, r.wantTries, d.Status, d.Attempts, lastError)
				}
			}
			if r.wantError != "" && (d.LastError == nil || !strings.Contains(*d.LastError, r.wantError)) {
				t.Errorf("last_error = %v, want it to contain %q", d.LastError, r.wantError)
			}
			if r.wantRetry > 0 {
				var last time.Time
				if err := db.Pool.QueryRow(context.Background(), `SELECT max(a.started_at) FROM relay.delivery_attempts a
					JOIN relay.deliveries d ON d.id = a.delivery_id WHERE d.subscription_id = $1`, subs[i]).Scan(&last); err != nil {
					t.Fatal(err)
				}
				gap := d.NextAttemptAt.Sub(last)
				if gap < r.wantRetry*9/10-time.Second || gap > r.wantRetry*11/10+time.Second {
					t.Errorf("next attempt %s after the last one, want %s ±10%%", gap, r.wantRetry)
				}
			}
			var enabled bool
			var reason *string
			if err := db.Pool.QueryRow(context.Background(), `SELECT enabled, disabled_reason FROM relay.subscriptions WHERE id = $1`, subs[i]).Scan(&enabled, &reason); err != nil {
				t.Fatal(err)
			}
			wantReason := "410"
			if r.wantReason != "" {
				wantReason = r.wantReason
			}
			if r.wantGone != !enabled || r.wantGone && (reason == nil || !strings.Contains(*reason, wantReason)) {
				t.Errorf("subscription enabled=%v reason=%v, want disabled by 410: %v", enabled, reason, r.wantGone)
			}
		})
	}
	// The redirect was not followed: the metadata address was never asked.
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts WHERE status_code = 301`); n != 1 {
		t.Fatalf("301 attempts = %d", n)
	}
}

// refusingAddr is a loopback address that refuses connections for the
// whole test: a TCP socket bound to it but not listening, so the kernel
// answers a connection with a reset and no other test's server can take
// the port. A listener closed at once would free the port, and a parallel
// test's server could bind it before the delivery is attempted.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

func TestSecretRotationSignsWithBothDuringGrace(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	subID, oldSecret := subscribe(t, db, nil, rc.URL, []string{"*"}, "")
	startCapture(t, db, nil)
	startDispatcher(t, db, loopback, nil)

	var newSecret string
	if err := db.Pool.QueryRow(context.Background(), `SELECT relay.rotate_secret($1, '1 hour')`, subID).Scan(&newSecret); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `SELECT relay.emit('rot.during', '{}')`)
	waitFor(t, 10*time.Second, "first request", func() bool { return len(rc.requests()) == 1 })
	req := rc.requests()[0]
	sig := req.Header.Get("webhook-signature")
	if n := len(strings.Fields(sig)); n != 2 {
		t.Fatalf("signature header has %d signatures during grace, want 2: %q", n, sig)
	}
	for name, s := range map[string]string{"new": newSecret, "old": oldSecret} {
		if err := signer.Verify(s, req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), sig, req.Body, nil); err != nil {
			t.Errorf("%s secret does not verify during grace: %v", name, err)
		}
	}
	if err := signer.VerifySimple(newSecret, req.Header.Get("x-relay-signature"), req.Body); err != nil {
		t.Errorf("x-relay-signature must use the new secret: %v", err)
	}

	var newest string
	if err := db.Pool.QueryRow(context.Background(), `SELECT relay.rotate_secret($1, '0 seconds')`, subID).Scan(&newest); err != nil {
		t.Fatal(err)
	}
	// Expire the previous grace too: after it only the newest signs.
	db.Exec(t, `UPDATE relay.subscriptions SET previous_secrets = '[]' WHERE id = $1`, subID)
	db.Exec(t, `SELECT relay.emit('rot.after', '{}')`)
	waitFor(t, 10*time.Second, "second request", func() bool { return len(rc.requests()) == 2 })
	req = rc.requests()[1]
	sig = req.Header.Get("webhook-signature")
	if n := len(strings.Fields(sig)); n != 1 {
		t.Fatalf("after grace, %d signatures: %q", n, sig)
	}
	if err := signer.Verify(newest, req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), sig, req.Body, nil); err != nil {
		t.Fatal(err)
	}
	if err := signer.Verify(oldSecret, req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), sig, req.Body, nil); err == nil {
		t.Fatal("old secret still verifies after grace")
	}
}

// TestSSRFRefusedAndRecorded uses a dispatcher with no allow list: every
// internal address is refused at dial time (before any packet leaves) and
// the refusal is recorded as a failed attempt.
func TestSSRFRefusedAndRecorded(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	port := rc.Listener.Addr().(*net.TCPAddr).Port
	startCapture(t, db, nil)
	startDispatcher(t, db, nil, nil)
	targets := map[string]string{
		"loopback":         fmt.Sprintf("http://127.0.0.1:%d/x", port),
		"name to loopback": fmt.Sprintf("http://localhost:%d/x", port),
		"ipv6 loopback":    fmt.Sprintf("http://[::1]:%d/x", port),
		"ipv4-mapped":      fmt.Sprintf("http://[::ffff:127.0.0.1]:%d/x", port),
		"unspecified":      fmt.Sprintf("http://0.0.0.0:%d/x", port),
		"rfc1918":          "http://10.1.2.3/x",
		"metadata":         "http://169.254.169.254/latest/meta-data",
		"cgnat":            "http://100.64.0.1/x",
		"ula":              "http://[fd00::1]/x",
		"multicast":        "http://224.0.0.1/x",
	}
	subs := map[string]int64{}
	i := 0
	for name, url := range targets {
		i++
		subs[name], _ = subscribe(t, db, nil, url, []string{fmt.Sprintf("ssrf.t%d", i)}, `retry_schedule = '{1 hour}'`)
		db.Exec(t, `SELECT relay.emit($1, '{}')`, fmt.Sprintf("ssrf.t%d", i))
	}
	for name, id := range subs {
		waitFor(t, 10*time.Second, name+" attempted", func() bool { return delivery(t, db, id).Attempts == 1 })
		d := delivery(t, db, id)
		if d.Status != "failed" || d.LastError == nil || !strings.Contains(*d.LastError, "refused") {
			t.Errorf("%s: status %s, error %v; want failed and refused", name, d.Status, d.LastError)
		}
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("the loopback receiver got %d requests through the guard", n)
	}
}

func TestExpiredLeaseIsDeliveredByAnotherRelay(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	subID, _ := subscribe(t, db, nil, rc.URL, []string{"*"}, "")
	var eventID string
	if err := db.Pool.QueryRow(context.Background(), `SELECT relay.emit('lease.test', '{}')::text`).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	// A relay claimed it and died: its lease ran out a moment ago.
	db.Exec(t, `INSERT INTO relay.deliveries (event_id, subscription_id, status, locked_by, locked_until)
		VALUES ($1, $2, 'delivering', 'dead-relay', now() - interval '1 second')`, eventID, subID)
	startDispatcher(t, db, loopback, nil)
	waitFor(t, 10*time.Second, "delivered by the living relay", func() bool { return delivery(t, db, subID).Status == "succeeded" })
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("receiver got %d requests", n)
	}
}

func TestFifthConsecutiveFailureAlertsOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	failing := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) })
	watcher := newReceiver(t, nil)
	badID, _ := subscribe(t, db, "team-a", failing.URL, []string{"*"}, `retry_schedule = '{}'`)
	watchID, _ := subscribe(t, db, "team-a", watcher.URL, []string{"relay.*"}, "")
	otherOwner, _ := subscribe(t, db, "team-b", watcher.URL, []string{"relay.*"}, "")
	// The fifth failed attempt opens the circuit too: probe quickly.
	db.Exec(t, `UPDATE relay.settings SET circuit_probe_interval = '50 milliseconds', circuit_probe_max = '200 milliseconds'`)
	startCapture(t, db, nil)
	startDispatcher(t, db, loopback, nil)
	for i := 0; i < 7; i++ {
		db.Exec(t, `SELECT relay.emit('job.done', jsonb_build_object('i', $1::int), 'team-a')`, i)
		waitFor(t, 10*time.Second, "failure recorded", func() bool {
			return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'failed'`, badID) == i+1
		})
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.outbox WHERE event_type = 'relay.subscription.failing'`); n != 1 {
		t.Fatalf("failing alerts emitted = %d, want exactly 1", n)
	}
	waitFor(t, 10*time.Second, "alert delivered to the watcher", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'succeeded'`, watchID) == 1
	})
	var payload map[string]any
	if err := json.Unmarshal(watcher.requests()[0].Body, &payload); err != nil {
		t.Fatal(err)
	}
	data := payload["data"].(map[string]any)
	if payload["type"] != "relay.subscription.failing" || data["consecutive_failures"] != float64(5) || data["subscription_id"] != float64(badID) {
		t.Fatalf("alert body = %s", watcher.requests()[0].Body)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries d JOIN relay.outbox o USING (event_id)
		WHERE o.event_type LIKE 'relay.%' AND d.subscription_id IN ($1, $2)`, badID, otherOwner); n != 0 {
		t.Fatalf("the alert reached the failing subscription or another owner (%d deliveries)", n)
	}
	// A success resets the streak.
	db.Exec(t, `UPDATE relay.subscriptions SET url = $2 WHERE id = $1`, badID, watcher.URL)
	db.Exec(t, `SELECT relay.emit('job.done', '{}', 'team-a')`)
	waitFor(t, 10*time.Second, "reset", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.subscriptions WHERE id = $1 AND consecutive_failures = 0 AND last_success_at IS NOT NULL`, badID) == 1
	})
}

func TestContinuousFailureDisablesSubscription(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	failing := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	subID, _ := subscribe(t, db, "o", failing.URL, []string{"*"}, `retry_schedule = '{}'`)
	// It has been failing for six days already; the limit is five.
	db.Exec(t, `UPDATE relay.subscriptions SET failing_since = now() - interval '6 days', consecutive_failures = 1 WHERE id = $1`, subID)
	startCapture(t, db, nil)
	startDispatcher(t, db, loopback, nil)
	db.Exec(t, `SELECT relay.emit('x.y', '{}', 'o')`)
	waitFor(t, 10*time.Second, "disabled", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.subscriptions WHERE id = $1 AND NOT enabled AND disabled_reason LIKE 'failing continuously%'`, subID) == 1
	})
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.outbox WHERE event_type = 'relay.subscription.disabled' AND owner = 'o'`); n != 1 {
		t.Fatalf("disabled events = %d", n)
	}
}

func TestPausedRelayDeliversNothingUntilResume(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	subID, _ := subscribe(t, db, nil, rc.URL, []string{"*"}, "")
	db.Exec(t, `SELECT relay.pause('maintenance')`)
	startCapture(t, db, nil)
	d := startDispatcher(t, db, loopback, nil)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'p.x', '{}' FROM generate_series(1, 20)`)
	waitFor(t, 10*time.Second, "20 pending deliveries", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'pending'`, subID) == 20
	})
	// Give the woken dispatcher several polls: still nothing may be sent.
	d.Wake()
	time.Sleep(500 * time.Millisecond)
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("paused relay sent %d requests", n)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.delivery_attempts`); n != 0 {
		t.Fatalf("paused relay recorded %d attempts", n)
	}
	db.Exec(t, `SELECT relay.resume()`)
	waitFor(t, 10*time.Second, "all 20 delivered after resume", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'succeeded'`, subID) == 20
	})
}

func TestClosedWindowDefersToOpening(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, nil)
	// A one-hour window that opened an hour from now (UTC): closed now.
	now := time.Now().UTC()
	start := now.Add(time.Hour).Truncate(time.Minute)
	end := start.Add(time.Hour)
	subID, _ := subscribe(t, db, nil, rc.URL, []string{"*"}, fmt.Sprintf(`window_start = '%s', window_end = '%s', window_time_zone = 'UTC'`,
		start.Format("15:04"), end.Format("15:04")))
	startCapture(t, db, nil)
	startDispatcher(t, db, loopback, nil)
	db.Exec(t, `SELECT relay.emit('w.x', '{}')`)
	waitFor(t, 10*time.Second, "deferred", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'pending' AND next_attempt_at > now() + interval '30 minutes'`, subID) == 1
	})
	d := delivery(t, db, subID)
	if d.Attempts != 0 || !d.NextAttemptAt.Equal(start) {
		t.Fatalf("deferred to %s with %d attempts, want %s and none", d.NextAttemptAt, d.Attempts, start)
	}
}

func TestTestButton(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	okID, _ := subscribe(t, db, "u", rc.URL, []string{"thread.created"}, "enabled = false")
	badID, _ := subscribe(t, db, "u", "http://10.9.9.9/hook", []string{"*"}, "")
	d := startDispatcher(t, db, loopback, nil)
	res, err := d.Test(context.Background(), okID)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Delivered || res.StatusCode != 200 || res.Error != "" {
		t.Fatalf("test result %+v", res)
	}
	reqs := rc.requests()
	if len(reqs) != 1 || reqs[0].Header.Get("x-relay-event") != "webhook.test" {
		t.Fatalf("receiver got %d requests", len(reqs))
	}
	res, err = d.Test(context.Background(), badID)
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered || !strings.Contains(res.Error, "refused") {
		t.Fatalf("refused target result %+v", res)
	}
	if _, err := d.Test(context.Background(), 999999); err != dispatch.ErrSubscriptionNotFound {
		t.Fatalf("unknown subscription: %v", err)
	}
}
