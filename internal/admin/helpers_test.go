package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/admin"
	"github.com/pgoutbox/relay/internal/metrics"
	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/internal/tokens"
	"github.com/pgoutbox/relay/subscriptions"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const operatorToken = "operator-token-for-tests-0123456789"

// env is a running admin server on a fresh database, with an operator
// token and owner tokens for alice and bob.
type env struct {
	t       *testing.T
	db      *pgtest.DB
	srv     *admin.Server
	base    string
	alice   string
	bob     string
	tester  *fakeTester
	metrics *metrics.Metrics
	logs    *syncBuffer
	client  *http.Client
}

type envOpts struct {
	noOperator bool
	noTester   bool
	ready      func(context.Context) error
	configure  func(*admin.Config)
}

// syncBuffer collects log lines from concurrent requests.
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

func newEnv(t *testing.T, o *envOpts) *env {
	t.Helper()
	if o == nil {
		o = &envOpts{}
	}
	db := pgtest.NewDB(t)
	ctx := context.Background()
	ts := tokens.NewStore(db.Pool)
	alice, _, err := ts.Create(ctx, "alice", "tests")
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := ts.Create(ctx, "bob", "tests")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, alice: alice, bob: bob, logs: &syncBuffer{}, client: &http.Client{Timeout: 60 * time.Second}}
	e.metrics = metrics.New(db.Pool, "relay_admin_test_"+db.Name)
	cfg := admin.Config{
		Addr:       "127.0.0.1:0",
		Pool:       db.Pool,
		Logger:     zerolog.New(zerolog.MultiLevelWriter(e.logs, zerolog.NewTestWriter(t))).Level(zerolog.DebugLevel),
		Metrics:    e.metrics,
		Ready:      o.ready,
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	}
	if !o.noOperator {
		cfg.OperatorToken = operatorToken
	}
	if !o.noTester {
		e.tester = &fakeTester{store: subscriptions.NewStore(db.Pool)}
		cfg.Tester = e.tester
	}
	if o.configure != nil {
		o.configure(&cfg)
	}
	srv, err := admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	e.srv = srv
	e.base = "http://" + srv.Addr()
	return e
}

// resp is an answer: its status, headers, raw body and the body decoded as
// a JSON object (nil when it is not one).
type resp struct {
	status int
	header http.Header
	raw    []byte
	obj    map[string]any
}

func (e *env) do(method, path, token string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := resp{status: res.StatusCode, header: res.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.obj)
	return r
}

// want checks the status.
func (r resp) want(t *testing.T, status int) resp {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

// wantError checks an error answer: status, code and field (""=null).
func (r resp) wantError(t *testing.T, status int, code, field string) resp {
	t.Helper()
	r.want(t, status)
	e, ok := r.obj["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %s", r.raw)
	}
	wantKeys(t, e, "code", "message", "field")
	if e["code"] != code {
		t.Fatalf("error code %v, want %s: %s", e["code"], code, r.raw)
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Fatalf("empty error message: %s", r.raw)
	}
	if field == "" && e["field"] != nil || field != "" && e["field"] != field {
		t.Fatalf("error field %v, want %q: %s", e["field"], field, r.raw)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error content type %q", ct)
	}
	return r
}

// wantKeys checks that obj has exactly these keys.
func wantKeys(t *testing.T, obj map[string]any, keys ...string) {
	t.Helper()
	var have []string
	for k := range obj {
		have = append(have, k)
	}
	sort.Strings(have)
	sort.Strings(keys)
	if strings.Join(have, ",") != strings.Join(keys, ",") {
		t.Fatalf("keys\n have %v\n want %v", have, keys)
	}
}

func obj(t *testing.T, v any) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%v (%T) is not an object", v, v)
	}
	return m
}

func arr(t *testing.T, v any) []any {
	t.Helper()
	a, ok := v.([]any)
	if !ok {
		t.Fatalf("%v (%T) is not an array", v, v)
	}
	return a
}

// num reads a JSON number.
func num(t *testing.T, v any) float64 {
	t.Helper()
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("%v (%T) is not a number", v, v)
	}
	return f
}

// createWebhook creates a webhook through the API and returns its id.
func (e *env) createWebhook(token string, body map[string]any) int64 {
	e.t.Helper()
	r := e.do("POST", "/api/webhooks", token, body).want(e.t, http.StatusCreated)
	return int64(num(e.t, r.obj["id"]))
}

func (e *env) hook(token, name string) int64 {
	e.t.Helper()
	return e.createWebhook(token, map[string]any{"name": name, "url": "https://hooks.example.com/" + name, "events": []string{"*"}})
}

// delivery inserts an event and a delivery of subscription subID with the
// given status and attempt durations (status code 200 unless failed).
func (e *env) delivery(subID int64, eventType, owner, status string, durations ...int) int64 {
	e.t.Helper()
	ctx := context.Background()
	var ownerArg any
	if owner != "" {
		ownerArg = owner
	}
	var eventID string
	if err := e.db.Pool.QueryRow(ctx, `SELECT relay.emit($1, '{"title":"hello"}', $2, 'key-1')::text`, eventType, ownerArg).Scan(&eventID); err != nil {
		e.t.Fatal(err)
	}
	code := 200
	if status == "failed" {
		code = 500
	}
	var id int64
	err := e.db.Pool.QueryRow(ctx, `INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts, completed_at, last_status_code, last_duration_ms, last_error)
		VALUES ($1, $2, $3, $4, CASE WHEN $3 IN ('succeeded', 'failed') THEN now() END,
		        CASE WHEN $4 > 0 THEN $5::int END, CASE WHEN $4 > 0 THEN $6::int END, CASE WHEN $3 = 'failed' THEN 'HTTP 500' END)
		RETURNING id`, eventID, subID, status, len(durations), code, lastInt(durations)).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	for i, d := range durations {
		outcome := "retry"
		if i == len(durations)-1 && (status == "succeeded" || status == "failed") {
			outcome = status
		}
		e.db.Exec(e.t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, response_body)
			VALUES ($1, $2, now(), $3, $4, $5, 'ok')`, id, i+1, d, code, outcome)
	}
	return id
}

func lastInt(xs []int) int {
	if len(xs) == 0 {
		return 0
	}
	return xs[len(xs)-1]
}

// fakeTester stands in for package sink's Tester: it POSTs a webhook.test
// body to the subscription's URL with a plain client and reports what
// happened, the way the real one maps an attempt. Errors and results can be
// forced per test.
type fakeTester struct {
	store *subscriptions.Store
	mu    sync.Mutex
	calls []int64
	err   error
}

func (f *fakeTester) Test(ctx context.Context, id int64) (admin.TestResult, error) {
	f.mu.Lock()
	f.calls = append(f.calls, id)
	forced := f.err
	f.mu.Unlock()
	if forced != nil {
		return admin.TestResult{}, forced
	}
	sub, err := f.store.Get(ctx, id, nil)
	if err != nil {
		return admin.TestResult{}, err
	}
	client := &http.Client{Timeout: time.Duration(sub.TimeoutMS) * time.Millisecond}
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, "POST", sub.URL, strings.NewReader(`{"type":"webhook.test"}`))
	res, err := client.Do(req)
	dur := time.Since(start).Milliseconds()
	if err != nil {
		reason := err.Error()
		var oe *net.OpError
		if errors.As(err, &oe) && strings.Contains(oe.Err.Error(), "refused") {
			reason = "connection refused"
		}
		return admin.TestResult{DurationMS: dur, Error: reason}, nil
	}
	res.Body.Close()
	r := admin.TestResult{StatusCode: res.StatusCode, DurationMS: dur, Delivered: res.StatusCode/100 == 2}
	if !r.Delivered {
		r.Error = fmt.Sprintf("HTTP %d", res.StatusCode)
	}
	return r, nil
}

func (f *fakeTester) called() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.calls...)
}
