package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/cli"
	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/signer"
)

// Helpers shared by the tests of subs, log, the operations and verify.

// opsDB is a fresh database and the environment that points relay at it.
func opsDB(t *testing.T) (*pgtest.DB, map[string]string) {
	t.Helper()
	db := pgtest.NewDB(t)
	return db, map[string]string{"RELAY_DATABASE_URL": db.URL}
}

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runCLIIn runs one command with a context and standard input.
func runCLIIn(ctx context.Context, env map[string]string, stdin io.Reader, stdout, stderr io.Writer, args ...string) int {
	c := &cli.CLI{Stdout: stdout, Stderr: stderr, Stdin: stdin, Getenv: func(k string) string { return env[k] }}
	err := c.Run(ctx, args)
	if err != nil {
		fmt.Fprint(stderr, err.Error())
	}
	return cli.ExitCode(err)
}

// expectCLI runs a command and checks its exit code and that stdout+stderr
// contain every one of want; it returns stdout.
func expectCLI(t *testing.T, env map[string]string, code int, want []string, args ...string) string {
	t.Helper()
	got, out, errs := runCLI(t, env, args...)
	if got != code {
		t.Fatalf("relay %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errs)
	}
	for _, w := range want {
		if !strings.Contains(out+errs, w) {
			t.Fatalf("relay %s: output lacks %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), w, out, errs)
		}
	}
	return out
}

// decodeJSON parses a command's JSON output into v.
func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
}

type subJSON struct {
	ID             int64             `json:"id"`
	Owner          *string           `json:"owner"`
	Name           string            `json:"name"`
	URL            string            `json:"url"`
	EventTypes     []string          `json:"event_types"`
	Enabled        bool              `json:"enabled"`
	Format         string            `json:"format"`
	Headers        map[string]string `json:"headers"`
	TimeoutMS      int               `json:"timeout_ms"`
	RetrySchedule  []string          `json:"retry_schedule"`
	WindowStart    *string           `json:"window_start"`
	WindowEnd      *string           `json:"window_end"`
	WindowTimeZone string            `json:"window_time_zone"`
	DisabledReason *string           `json:"disabled_reason"`
	Secret         string            `json:"secret"`
	Stats24h       *struct {
		Deliveries int64 `json:"deliveries"`
		Backlog    int64 `json:"backlog"`
	} `json:"stats_24h"`
}

func TestSubsCommands(t *testing.T) {
	t.Parallel()
	db, env := opsDB(t)
	ctx := context.Background()

	// Usage errors exit 2 before anything is written.
	expectCLI(t, env, 2, []string{"subs needs an action"}, "subs")
	expectCLI(t, env, 2, []string{`unknown subs action "frobnicate"`}, "subs", "frobnicate")
	expectCLI(t, env, 0, []string{"rotate", "test"}, "subs", "--help")
	expectCLI(t, env, 0, []string{"--events", "--window"}, "subs", "add", "--help")
	expectCLI(t, env, 2, []string{"needs --url"}, "subs", "add", "--name", "x", "--events", "a.b")
	expectCLI(t, env, 2, []string{"needs --events"}, "subs", "add", "--name", "x", "--url", "https://example.com/")
	expectCLI(t, env, 2, []string{"invalid --timeout", "10x"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "a.b", "--timeout", "10x")
	expectCLI(t, env, 2, []string{"invalid --retry", "soon"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "a.b", "--retry", "1m,soon")
	expectCLI(t, env, 2, []string{"invalid --window"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "a.b", "--window", "25:00-06:00")
	expectCLI(t, env, 2, []string{"--tz needs --window"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "a.b", "--tz", "UTC")
	expectCLI(t, env, 2, []string{"invalid --header"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "a.b", "--header", "novalue")
	expectCLI(t, env, 2, []string{"flag provided but not defined: -bogus"}, "subs", "add", "--bogus")
	expectCLI(t, nil, 2, []string{"RELAY_DATABASE_URL"}, "subs", "list")

	// Refused values exit 1 with a message naming the field.
	expectCLI(t, env, 1, []string{"url must use https://"}, "subs", "add", "--name", "x", "--url", "ftp://example.com/", "--events", "a.b")
	expectCLI(t, env, 1, []string{"url must use https://"}, "subs", "add", "--name", "x", "--url", "http://example.com/", "--events", "a.b")
	expectCLI(t, env, 1, []string{"url: address 10.1.2.3 is private; refused (allow it with --allow-cidr)"}, "subs", "add", "--name", "x", "--url", "https://10.1.2.3/", "--events", "a.b")
	expectCLI(t, env, 1, []string{"event_types", "Bad.Type"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "Bad.Type")
	expectCLI(t, env, 1, []string{"format must be one of json, slack, discord"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "a.b", "--format", "xml")
	expectCLI(t, env, 1, []string{"timeout_ms must be between"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "a.b", "--timeout", "2m")
	expectCLI(t, env, 1, []string{"window_time_zone", "Mars/Olympus"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "a.b", "--window", "22:00-06:00", "--tz", "Mars/Olympus")
	expectCLI(t, env, 1, []string{"headers", "set by relay"}, "subs", "add", "--name", "x", "--url", "https://example.com/", "--events", "a.b", "--header", "Webhook-Id=x")
	if n := countSubs(t, db); n != 0 {
		t.Fatalf("%d subscriptions written by refused commands", n)
	}

	// add --json prints the subscription with its secret, once.
	out := expectCLI(t, env, 0, nil, "subs", "add", "--json", "--owner", "acme", "--name", "Orders",
		"--url", "https://hooks.example.com/secretpath?token=abc", "--events", "thread.created, order.*",
		"--format", "slack", "--header", "X-Token=abc", "--timeout", "5s", "--retry", "1m,10m,1d",
		"--window", "22:00-06:00", "--tz", "Europe/Paris")
	var added subJSON
	decodeJSON(t, out, &added)
	if added.ID == 0 || !strings.HasPrefix(added.Secret, "whsec_") || added.Owner == nil || *added.Owner != "acme" ||
		added.URL != "https://hooks.example.com/sec***" || added.Format != "slack" || added.Headers["X-Token"] != "***" ||
		added.TimeoutMS != 5000 || strings.Join(added.RetrySchedule, ",") != "1m,10m,1d" ||
		strings.Join(added.EventTypes, ",") != "thread.created,order.*" ||
		added.WindowStart == nil || *added.WindowStart != "22:00" || added.WindowTimeZone != "Europe/Paris" {
		t.Fatalf("add --json: %+v\n%s", added, out)
	}
	if strings.Contains(out, "token=abc") || strings.Contains(out, `"abc"`) {
		t.Fatalf("add --json shows the URL or a header value: %s", out)
	}
	var dbSecret string
	if err := db.Pool.QueryRow(ctx, `SELECT secret FROM relay.subscriptions WHERE id = $1`, added.ID).Scan(&dbSecret); err != nil || dbSecret != added.Secret {
		t.Fatalf("printed secret is not the stored one: %v", err)
	}

	// add, human: the secret once, the URL masked.
	out = expectCLI(t, env, 0, []string{"created subscription", "secret: whsec_", "https://other.example.net/xyz***", "not shown again"},
		"subs", "add", "--name", "Ops", "--url", "https://other.example.net/xyzzy", "--events", "*")
	opsID := idFrom(t, out, "created subscription ")
	if strings.Contains(out, "xyzzy") {
		t.Fatalf("add shows the whole URL: %s", out)
	}

	// list: a table and JSON, masked, no secrets.
	out = expectCLI(t, env, 0, []string{"ID", "OWNER", "Orders", "Ops", "(operator)", "https://hooks.example.com/sec***"}, "subs", "list")
	if strings.Contains(out, "whsec_") || strings.Contains(out, "secretpath") {
		t.Fatalf("list leaks: %s", out)
	}
	var list []subJSON
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "list", "--json"), &list)
	if len(list) != 2 || list[0].Secret != "" || list[1].Secret != "" {
		t.Fatalf("list --json: %+v", list)
	}
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "list", "--json", "--owner", "acme"), &list)
	if len(list) != 1 || list[0].ID != added.ID {
		t.Fatalf("list --owner: %+v", list)
	}
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "list", "--json", "--event-type", "order.paid"), &list)
	if len(list) != 2 {
		t.Fatalf("list --event-type order.paid: %+v", list)
	}
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "list", "--json", "--event-type", "user.created"), &list)
	if len(list) != 1 || list[0].ID != opsID {
		t.Fatalf("list --event-type user.created: %+v", list)
	}
	expectCLI(t, env, 2, []string{"exclude each other"}, "subs", "list", "--enabled", "--disabled")
	expectCLI(t, env, 2, []string{"invalid --event-type"}, "subs", "list", "--event-type", "order.*")

	// show.
	id := strconv.FormatInt(added.ID, 10)
	out = expectCLI(t, env, 0, []string{"Orders", "22:00-06:00 Europe/Paris", "X-Token: ***", "1m, 10m, 1d", "last 24h:"}, "subs", "show", id)
	if strings.Contains(out, "whsec_") || strings.Contains(out, "abc") {
		t.Fatalf("show leaks: %s", out)
	}
	var shown subJSON
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "show", id, "--json"), &shown)
	if shown.ID != added.ID || shown.Secret != "" || shown.Stats24h == nil {
		t.Fatalf("show --json: %+v", shown)
	}
	expectCLI(t, env, 1, []string{"subscription 4242 not found"}, "subs", "show", "4242")
	expectCLI(t, env, 2, []string{`invalid subscription id "abc"`}, "subs", "show", "abc")
	expectCLI(t, env, 2, []string{"exactly one subscription id"}, "subs", "show")

	// update: only what is given.
	var upd subJSON
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "update", id, "--name", "Orders v2", "--events", "order.*", "--retry", "none", "--json"), &upd)
	if upd.Name != "Orders v2" || strings.Join(upd.EventTypes, ",") != "order.*" || len(upd.RetrySchedule) != 0 ||
		upd.Format != "slack" || upd.TimeoutMS != 5000 {
		t.Fatalf("update: %+v", upd)
	}
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "update", id, "--tz", "America/New_York", "--json"), &upd)
	if upd.WindowStart == nil || *upd.WindowStart != "22:00" || *upd.WindowEnd != "06:00" || upd.WindowTimeZone != "America/New_York" {
		t.Fatalf("update --tz lost the window: %+v", upd)
	}
	upd = subJSON{}
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "update", id, "--window", "none", "--clear-headers", "--json"), &upd)
	if upd.WindowStart != nil || len(upd.Headers) != 0 {
		t.Fatalf("update --window none --clear-headers: %+v", upd)
	}
	expectCLI(t, env, 0, []string{"updated subscription " + id, "Orders v2"}, "subs", "update", id, "--url", "https://hooks.example.com/new")
	expectCLI(t, env, 2, []string{"at least one change"}, "subs", "update", id)
	expectCLI(t, env, 1, []string{"subscription 4242 not found"}, "subs", "update", "4242", "--name", "x")
	expectCLI(t, env, 1, []string{"url must use https://"}, "subs", "update", id, "--url", "ftp://example.com/")
	expectCLI(t, env, 1, []string{"name must not be empty"}, "subs", "update", id, "--name", " ")
	expectCLI(t, env, 2, []string{"invalid --timeout"}, "subs", "update", id, "--timeout", "-1s")

	// disable and enable.
	expectCLI(t, env, 0, []string{"disabled: maintenance"}, "subs", "disable", id, "--reason", "maintenance")
	expectCLI(t, env, 0, []string{"enabled:", "no (maintenance)"}, "subs", "show", id)
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "list", "--disabled", "--json"), &list)
	if len(list) != 1 || list[0].ID != added.ID || list[0].DisabledReason == nil {
		t.Fatalf("list --disabled: %+v", list)
	}
	expectCLI(t, env, 0, []string{"subscription " + id + " enabled"}, "subs", "enable", id)
	expectCLI(t, env, 1, []string{"subscription 4242 not found"}, "subs", "enable", "4242")

	// rotate prints the new secret; the old one signs on for the grace.
	out = expectCLI(t, env, 0, []string{"new secret for subscription " + id + ": whsec_", "keeps signing for 1h"}, "subs", "rotate", id, "--grace", "1h")
	newSecret := strings.Fields(strings.SplitN(out, ": ", 2)[1])[0]
	var stored string
	var previous int
	if err := db.Pool.QueryRow(ctx, `SELECT secret, jsonb_array_length(previous_secrets) FROM relay.subscriptions WHERE id = $1`, added.ID).
		Scan(&stored, &previous); err != nil || stored != newSecret || newSecret == added.Secret || previous != 1 {
		t.Fatalf("rotate: stored %q printed %q previous %d %v", stored, newSecret, previous, err)
	}
	var rot struct {
		Secret string     `json:"secret"`
		Until  *time.Time `json:"previous_secret_valid_until"`
	}
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "rotate", id, "--grace", "0", "--json"), &rot)
	if !strings.HasPrefix(rot.Secret, "whsec_") || rot.Until != nil {
		t.Fatalf("rotate --json: %+v", rot)
	}
	expectCLI(t, env, 2, []string{"invalid --grace"}, "subs", "rotate", id, "--grace", "soon")
	expectCLI(t, env, 1, []string{"grace must be between 0 and 30 days"}, "subs", "rotate", id, "--grace", "40d")
	expectCLI(t, env, 1, []string{"subscription 4242 not found"}, "subs", "rotate", "4242")

	// rm.
	var removed struct {
		ID      int64 `json:"id"`
		Removed bool  `json:"removed"`
	}
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "rm", strconv.FormatInt(opsID, 10), "--json"), &removed)
	if !removed.Removed || removed.ID != opsID {
		t.Fatalf("rm --json: %+v", removed)
	}
	expectCLI(t, env, 0, []string{"removed subscription " + id}, "subs", "rm", id)
	expectCLI(t, env, 1, []string{"subscription " + id + " not found"}, "subs", "rm", id)
	expectCLI(t, env, 0, []string{"no subscriptions"}, "subs", "list")
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "list", "--json"), &list)
	if len(list) != 0 {
		t.Fatalf("list after rm: %+v", list)
	}
}

func countSubs(t *testing.T, db *pgtest.DB) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.subscriptions`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// idFrom reads the number that follows prefix in out.
func idFrom(t *testing.T, out, prefix string) int64 {
	t.Helper()
	i := strings.Index(out, prefix)
	if i < 0 {
		t.Fatalf("no %q in %q", prefix, out)
	}
	f := strings.Fields(out[i+len(prefix):])
	id, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		t.Fatalf("no id after %q in %q", prefix, out)
	}
	return id
}

// testReceiver answers with code and checks the signature with secret.
type testReceiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	code     int
	secret   string
	got      int
	verified int
	types    []string
}

func newTestReceiver(t *testing.T, code int) *testReceiver {
	rc := &testReceiver{code: code}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.got++
		rc.types = append(rc.types, r.Header.Get("x-relay-event"))
		if rc.secret != "" && signer.Verify(rc.secret, r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"),
			r.Header.Get("webhook-signature"), body, nil) == nil {
			rc.verified++
		}
		w.WriteHeader(rc.code)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func TestSubsTestSendsOneTestEvent(t *testing.T) {
	t.Parallel()
	db, env := opsDB(t)
	db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
	ok := newTestReceiver(t, 200)
	bad := newTestReceiver(t, 500)

	// The URL check refuses loopback unless allowed.
	expectCLI(t, env, 1, []string{"url: address 127.0.0.1 is loopback", "--allow-cidr"},
		"subs", "add", "--name", "ok", "--url", ok.srv.URL+"/hook", "--events", "thread.*")
	var okSub, badSub subJSON
	decodeJSON(t, expectCLI(t, env, 0, nil, "subs", "add", "--name", "ok", "--url", ok.srv.URL+"/hook", "--events", "thread.*",
		"--allow-cidr", "127.0.0.0/8", "--json"), &okSub)
	envCIDR := map[string]string{"RELAY_DATABASE_URL": env["RELAY_DATABASE_URL"], "RELAY_ALLOW_CIDRS": "10.0.0.0/8, 127.0.0.1"}
	decodeJSON(t, expectCLI(t, envCIDR, 0, nil, "subs", "add", "--name", "bad", "--url", bad.srv.URL+"/hook", "--events", "thread.*", "--json"), &badSub)
	ok.mu.Lock()
	ok.secret = okSub.Secret
	ok.mu.Unlock()
	okID, badID := strconv.FormatInt(okSub.ID, 10), strconv.FormatInt(badSub.ID, 10)

	// Without an allow list the sender refuses the loopback receiver.
	expectCLI(t, env, 1, []string{"failed:", "127.0.0.1", "refused"}, "subs", "test", okID)
	expectCLI(t, env, 2, []string{"invalid --allow-cidr"}, "subs", "test", okID, "--allow-cidr", "nonsense")

	out := expectCLI(t, env, 0, []string{"delivered: 200 in "}, "subs", "test", okID, "--allow-cidr", "127.0.0.0/8")
	if !strings.HasSuffix(strings.TrimSpace(out), "ms") {
		t.Fatalf("test output %q", out)
	}
	var res struct {
		SubscriptionID int64  `json:"subscription_id"`
		Delivered      bool   `json:"delivered"`
		StatusCode     int    `json:"status_code"`
		Error          string `json:"error"`
		EventID        string `json:"event_id"`
		DeliveryID     int64  `json:"delivery_id"`
	}
	decodeJSON(t, expectCLI(t, envCIDR, 0, nil, "subs", "test", okID, "--json"), &res)
	if !res.Delivered || res.StatusCode != 200 || res.SubscriptionID != okSub.ID || res.EventID == "" || res.DeliveryID == 0 {
		t.Fatalf("test --json: %+v", res)
	}
	ok.mu.Lock()
	got, verified, types := ok.got, ok.verified, strings.Join(ok.types, ",")
	ok.mu.Unlock()
	if got != 2 || verified != 2 || types != "webhook.test,webhook.test" {
		t.Fatalf("receiver got %d requests, %d verified, types %s", got, verified, types)
	}

	// A failing endpoint: the reason, exit 1, and only that subscription.
	expectCLI(t, env, 1, []string{"failed: HTTP 500 Internal Server Error"}, "subs", "test", badID, "--allow-cidr", "127.0.0.0/8")
	decodeJSON(t, expectCLI(t, env, 1, nil, "subs", "test", badID, "--allow-cidr", "127.0.0.0/8", "--json"), &res)
	if res.Delivered || res.StatusCode != 500 || !strings.Contains(res.Error, "500") {
		t.Fatalf("failed test --json: %+v", res)
	}
	ok.mu.Lock()
	if ok.got != 2 {
		t.Fatalf("testing one subscription reached another: %d", ok.got)
	}
	ok.mu.Unlock()
	expectCLI(t, env, 1, []string{"subscription 4242 not found"}, "subs", "test", "4242")

	// The test attempts are in the delivery log.
	expectCLI(t, env, 0, []string{"webhook.test", "succeeded", "200", "HTTP 500 Internal Server Error"}, "log")
}

// TestSubsFilterAndOutsideWindow: the CLI sets, shows, changes and removes
// a payload filter and the outside-window choice; a bad filter is refused
// with PostgreSQL's message.
func TestSubsFilterAndOutsideWindow(t *testing.T) {
	t.Parallel()
	_, env := opsDB(t)
	out := expectCLI(t, env, 0, nil, "subs", "add", "--name", "big", "--url", "https://hooks.example.com/big", "--events", "order.*",
		"--filter", "$.amount ? (@ > 100)", "--window", "09:00-18:00", "--outside-window", "skip", "--json")
	var v struct {
		ID            int64   `json:"id"`
		Filter        *string `json:"filter"`
		OutsideWindow string  `json:"outside_window"`
	}
	decodeJSON(t, out, &v)
	if v.Filter == nil || *v.Filter != `$."amount"?(@ > 100)` || v.OutsideWindow != "skip" {
		t.Fatalf("added: %s", out)
	}
	id := strconv.FormatInt(v.ID, 10)
	expectCLI(t, env, 0, []string{"outside window:", "skip", `filter:`, `$."amount"?(@ > 100)`}, "subs", "show", id)
	expectCLI(t, env, 1, []string{"filter", "syntax error"}, "subs", "update", id, "--filter", "$.amount ? (@ >")
	expectCLI(t, env, 1, []string{"outside_window must be one of defer, send, skip"}, "subs", "update", id, "--outside-window", "later")
	expectCLI(t, env, 1, []string{"outside_window cannot be send with a window of its own"}, "subs", "update", id, "--outside-window", "send")
	out = expectCLI(t, env, 0, nil, "subs", "update", id, "--filter", "none", "--outside-window", "send", "--window", "none", "--json")
	decodeJSON(t, out, &v)
	if v.Filter != nil || v.OutsideWindow != "send" {
		t.Fatalf("updated: %s", out)
	}
}

// Flow control from the command line: pace and ordering are set, shown,
// lifted, and a bad value is refused with the flag's name.
func TestSubsRateLimitAndOrdering(t *testing.T) {
	t.Parallel()
	_, env := opsDB(t)
	out := expectCLI(t, env, 0, nil, "subs", "add", "--name", "chat", "--url", "https://hooks.slack.com/services/T/B/X", "--events", "thread.*",
		"--format", "slack", "--json")
	var v struct {
		ID        int64    `json:"id"`
		RateLimit *float64 `json:"rate_limit"`
		RateBurst *int     `json:"rate_burst"`
		Ordering  string   `json:"ordering"`
	}
	decodeJSON(t, out, &v)
	if v.RateLimit == nil || *v.RateLimit != 1 || v.Ordering != "none" {
		t.Fatalf("a slack subscription is paced at 1/s by default: %s", out)
	}
	id := strconv.FormatInt(v.ID, 10)
	expectCLI(t, env, 0, []string{"pace:", "1/s, burst 1", "ordering:", "none"}, "subs", "show", id)
	out = expectCLI(t, env, 0, nil, "subs", "update", id, "--rate-limit", "2.5", "--rate-burst", "4", "--ordering", "key", "--json")
	decodeJSON(t, out, &v)
	if v.RateLimit == nil || *v.RateLimit != 2.5 || v.RateBurst == nil || *v.RateBurst != 4 || v.Ordering != "key" {
		t.Fatalf("updated: %s", out)
	}
	expectCLI(t, env, 0, []string{"pace:", "2.5/s, burst 4", "ordering:", "key"}, "subs", "show", id)
	expectCLI(t, env, 2, []string{"--rate-limit", "requests per second"}, "subs", "update", id, "--rate-limit", "fast")
	expectCLI(t, env, 1, []string{"ordering must be none or key"}, "subs", "update", id, "--ordering", "fifo")
	out = expectCLI(t, env, 0, nil, "subs", "update", id, "--rate-limit", "none", "--json")
	decodeJSON(t, out, &v)
	if v.RateLimit != nil {
		t.Fatalf("--rate-limit none leaves %v", *v.RateLimit)
	}
}
