package admin_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/pgoutbox/relay/internal/admin"
	"github.com/pgoutbox/relay/internal/metrics"
)

var deliveryKeys = []string{"id", "event_id", "event_type", "owner", "webhook_id", "webhook_name", "url", "status", "attempts",
	"last_status_code", "last_error", "last_duration_ms", "created_at", "completed_at", "next_attempt_at"}

var statsKeys = []string{"deliveries", "succeeded", "failed", "pending", "success_rate", "attempts", "timeouts", "timeout_rate",
	"avg_duration_ms", "p50_duration_ms", "p95_duration_ms", "backlog", "oldest_pending_seconds"}

func TestDeliveries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	a := e.createWebhook(e.alice, map[string]any{"name": "Make", "url": "https://hooks.make.com/abcdef?token=secret", "events": []string{"*"}})
	b := e.hook(e.alice, "other")
	d1 := e.delivery(a, "thread.created", "alice", "succeeded", 12)
	d2 := e.delivery(a, "message.sent", "alice", "failed", 5, 7)
	d3 := e.delivery(a, "thread.archived", "alice", "pending")
	d4 := e.delivery(b, "thread.created", "alice", "succeeded", 3)
	d5 := e.delivery(b, "thread.created", "alice", "failed", 4)
	e.db.Exec(t, `UPDATE relay.deliveries SET created_at = now() - interval '10 days' WHERE id = $1`, d1)

	ids := func(r resp) []int64 {
		t.Helper()
		var out []int64
		for _, d := range arr(t, r.obj["deliveries"]) {
			out = append(out, int64(num(t, obj(t, d)["id"])))
		}
		return out
	}
	eq := func(got []int64, want ...int64) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("ids %v, want %v", got, want)
		}
	}

	// Default: the last 7 days, newest first, full shape, masked URL.
	r := e.do("GET", "/api/deliveries", e.alice, nil).want(t, 200)
	wantKeys(t, r.obj, "deliveries", "next_cursor")
	eq(ids(r), d5, d4, d3, d2)
	if r.obj["next_cursor"] != nil {
		t.Fatalf("next_cursor on the only page: %v", r.obj["next_cursor"])
	}
	for _, d := range arr(t, r.obj["deliveries"]) {
		wantKeys(t, obj(t, d), deliveryKeys...)
	}
	dj := obj(t, arr(t, r.obj["deliveries"])[2]) // d3, pending
	if dj["url"] != "https://hooks.make.com/abc***" || dj["webhook_name"] != "Make" || num(t, dj["webhook_id"]) != float64(a) ||
		dj["status"] != "pending" || dj["next_attempt_at"] == nil || dj["completed_at"] != nil || dj["event_type"] != "thread.archived" ||
		dj["owner"] != "alice" || len(dj["event_id"].(string)) != 36 || num(t, dj["attempts"]) != 0 || dj["last_status_code"] != nil {
		t.Fatalf("pending delivery: %v", dj)
	}
	dj = obj(t, arr(t, r.obj["deliveries"])[3]) // d2, failed
	if dj["status"] != "failed" || dj["next_attempt_at"] != nil || dj["completed_at"] == nil || num(t, dj["attempts"]) != 2 ||
		num(t, dj["last_status_code"]) != 500 || dj["last_error"] != "HTTP 500" || num(t, dj["last_duration_ms"]) != 7 {
		t.Fatalf("failed delivery: %v", dj)
	}
	if strings.Contains(string(r.raw), "token=secret") {
		t.Fatal("the full URL leaked into the log API")
	}

	// Filters.
	eq(ids(e.do("GET", "/api/deliveries?days=30", e.alice, nil).want(t, 200)), d5, d4, d3, d2, d1)
	eq(ids(e.do("GET", "/api/deliveries?status=failed", e.alice, nil).want(t, 200)), d5, d2)
	eq(ids(e.do("GET", "/api/deliveries?status=success&days=30", e.alice, nil).want(t, 200)), d4, d1)
	eq(ids(e.do("GET", fmt.Sprintf("/api/deliveries?webhook_id=%d", b), e.alice, nil).want(t, 200)), d5, d4)
	eq(ids(e.do("GET", "/api/deliveries?event_type=thread.created", e.alice, nil).want(t, 200)), d5, d4)
	eq(ids(e.do("GET", "/api/deliveries?event_type=thread.*&days=30", e.alice, nil).want(t, 200)), d5, d4, d3, d1)

	// Keyset pagination with an opaque cursor.
	r = e.do("GET", "/api/deliveries?days=30&limit=2", e.alice, nil).want(t, 200)
	eq(ids(r), d5, d4)
	cur, _ := r.obj["next_cursor"].(string)
	if cur == "" {
		t.Fatalf("no next_cursor: %s", r.raw)
	}
	r = e.do("GET", "/api/deliveries?days=30&limit=2&cursor="+cur, e.alice, nil).want(t, 200)
	eq(ids(r), d3, d2)
	r = e.do("GET", "/api/deliveries?days=30&limit=2&cursor="+r.obj["next_cursor"].(string), e.alice, nil).want(t, 200)
	eq(ids(r), d1)
	if r.obj["next_cursor"] != nil {
		t.Fatalf("next_cursor on the last page: %s", r.raw)
	}

	// Bad parameters.
	for q, field := range map[string]string{
		"status=done": "status", "days=0": "days", "days=x": "days", "days=1000": "days", "limit=0": "limit",
		"limit=501": "limit", "webhook_id=x": "webhook_id", "event_type=Thread": "event_type", "cursor=%21%21": "cursor", "cursor=LTE": "cursor",
	} {
		e.do("GET", "/api/deliveries?"+q, e.alice, nil).wantError(t, 400, "invalid_field", field)
	}
	e.do("GET", "/api/deliveries?webhook_id=999999", e.alice, nil).wantError(t, 404, "not_found", "")

	// Detail with the attempts.
	r = e.do("GET", fmt.Sprintf("/api/deliveries/%d", d2), e.alice, nil).want(t, 200)
	wantKeys(t, r.obj, append(deliveryKeys, "key", "payload", "last_response", "attempt_log")...)
	if r.obj["key"] != "key-1" || obj(t, r.obj["payload"])["title"] != "hello" || r.obj["last_response"] != nil {
		t.Fatalf("detail: %s", r.raw)
	}
	log := arr(t, r.obj["attempt_log"])
	if len(log) != 2 {
		t.Fatalf("attempt_log: %v", log)
	}
	at := obj(t, log[0])
	wantKeys(t, at, "attempt", "started_at", "duration_ms", "status_code", "outcome", "error", "response_body", "retry_after")
	if num(t, at["attempt"]) != 1 || num(t, at["duration_ms"]) != 5 || at["outcome"] != "retry" || obj(t, log[1])["outcome"] != "failed" {
		t.Fatalf("attempts: %v", log)
	}
	if r := e.do("GET", fmt.Sprintf("/api/deliveries/%d", d3), e.alice, nil).want(t, 200); len(arr(t, r.obj["attempt_log"])) != 0 {
		t.Fatalf("attempt_log of a fresh delivery: %s", r.raw)
	}
	e.do("GET", "/api/deliveries/999999", e.alice, nil).wantError(t, 404, "not_found", "")

	// Redeliver: 202 then 409 while it is queued; a pending one is 409.
	r = e.do("POST", fmt.Sprintf("/api/deliveries/%d/redeliver", d2), e.alice, nil).want(t, 202)
	wantKeys(t, r.obj, "id", "status")
	if r.obj["status"] != "pending" || num(t, r.obj["id"]) != float64(d2) {
		t.Fatalf("redeliver: %s", r.raw)
	}
	e.do("POST", fmt.Sprintf("/api/deliveries/%d/redeliver", d2), e.alice, nil).wantError(t, 409, "conflict", "")
	e.do("POST", fmt.Sprintf("/api/deliveries/%d/redeliver", d3), e.alice, nil).wantError(t, 409, "conflict", "")
	e.do("POST", "/api/deliveries/999999/redeliver", e.alice, nil).wantError(t, 404, "not_found", "")
	e.do("POST", fmt.Sprintf("/api/deliveries/%d/redeliver", d4), e.alice, nil).want(t, 202)
}

func TestStatsAndEventTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	a := e.hook(e.alice, "a")
	b := e.hook(e.bob, "b")
	e.delivery(a, "thread.created", "alice", "succeeded", 10)
	e.delivery(a, "thread.created", "alice", "succeeded", 30)
	e.delivery(a, "message.sent", "alice", "failed", 20)
	e.delivery(a, "message.sent", "alice", "pending")
	e.delivery(b, "analysis.completed", "bob", "succeeded", 100)
	e.db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, outcome, error)
		SELECT id, 9, now(), 10000, 'retry', 'timeout after 10s' FROM relay.deliveries WHERE status = 'pending'`)

	r := e.do("GET", "/api/stats", e.alice, nil).want(t, 200)
	wantKeys(t, r.obj, "days", "since", "overall", "webhooks", "hourly")
	if num(t, r.obj["days"]) != 7 {
		t.Fatalf("days: %s", r.raw)
	}
	ov := obj(t, r.obj["overall"])
	wantKeys(t, ov, statsKeys...)
	if num(t, ov["deliveries"]) != 4 || num(t, ov["succeeded"]) != 2 || num(t, ov["failed"]) != 1 || num(t, ov["pending"]) != 1 ||
		num(t, ov["success_rate"]) < 0.666 || num(t, ov["success_rate"]) > 0.667 || num(t, ov["attempts"]) != 4 ||
		num(t, ov["timeouts"]) != 1 || num(t, ov["timeout_rate"]) != 0.25 || num(t, ov["avg_duration_ms"]) != 2515 || num(t, ov["backlog"]) != 1 {
		t.Fatalf("overall: %v", ov)
	}
	hooks := arr(t, r.obj["webhooks"])
	if len(hooks) != 1 {
		t.Fatalf("webhooks: %v", hooks)
	}
	h := obj(t, hooks[0])
	wantKeys(t, h, append(statsKeys, "webhook_id", "webhook_name", "owner", "enabled", "consecutive_failures", "last_success_at", "last_failure_at")...)
	if num(t, h["webhook_id"]) != float64(a) || h["webhook_name"] != "a" || num(t, h["deliveries"]) != 4 {
		t.Fatalf("webhook line: %v", h)
	}
	r = e.do("GET", "/api/stats?days=1", operatorToken, nil).want(t, 200)
	if len(arr(t, r.obj["webhooks"])) != 2 || num(t, obj(t, r.obj["overall"])["deliveries"]) != 5 || num(t, obj(t, r.obj["overall"])["success_rate"]) != 0.75 {
		t.Fatalf("operator stats: %s", r.raw)
	}
	e.do("GET", "/api/stats?days=0", e.alice, nil).wantError(t, 400, "invalid_field", "days")

	// Event types: the caller's events, sorted, without the test event.
	e.db.Exec(t, `SELECT relay.emit('webhook.test', '{}', 'alice')`)
	// relay's own alert types come from the catalog, which every schema has.
	const relayTypes = "relay.subscription.disabled relay.subscription.failing"
	r = e.do("GET", "/api/event-types", e.alice, nil).want(t, 200)
	wantKeys(t, r.obj, "event_types", "catalog")
	if fmt.Sprint(arr(t, r.obj["event_types"])) != "[message.sent "+relayTypes+" thread.created]" {
		t.Fatalf("alice's event types: %s", r.raw)
	}
	r = e.do("GET", "/api/event-types", operatorToken, nil).want(t, 200)
	if fmt.Sprint(arr(t, r.obj["event_types"])) != "[analysis.completed message.sent "+relayTypes+" thread.created]" {
		t.Fatalf("all event types: %s", r.raw)
	}
	e2 := newEnv(t, nil)
	if r := e2.do("GET", "/api/event-types", e2.bob, nil).want(t, 200); fmt.Sprint(arr(t, r.obj["event_types"])) != "["+relayTypes+"]" {
		t.Fatalf("fresh install event types: %s", r.raw)
	}
}

func TestSettingsAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	keys := []string{"paused", "paused_reason", "paused_at", "absence_days", "window", "failure_alert_threshold",
		"disable_after_seconds", "retention_seconds", "payload_retention_seconds", "allow_http", "strict_event_types", "updated_at"}
	r := e.do("GET", "/api/settings", operatorToken, nil).want(t, 200)
	wantKeys(t, r.obj, keys...)
	if r.obj["paused"] != false || r.obj["window"] != nil || num(t, r.obj["failure_alert_threshold"]) != 5 ||
		num(t, r.obj["retention_seconds"]) != 7*86400 || num(t, r.obj["disable_after_seconds"]) != 5*86400 || len(arr(t, r.obj["absence_days"])) != 0 ||
		r.obj["payload_retention_seconds"] != nil {
		t.Fatalf("defaults: %s", r.raw)
	}
	r = e.do("PUT", "/api/settings", operatorToken, map[string]any{
		"paused": true, "paused_reason": "migration", "absence_days": []string{"sunday"},
		"window":                  map[string]string{"start": "08:00", "end": "20:00", "time_zone": "Europe/Paris"},
		"failure_alert_threshold": 3, "retention_seconds": 2 * 86400, "payload_retention_seconds": 86400,
	}).want(t, 200)
	wantKeys(t, r.obj, keys...)
	if r.obj["paused"] != true || r.obj["paused_reason"] != "migration" || r.obj["paused_at"] == nil ||
		fmt.Sprint(r.obj["absence_days"]) != "[sunday]" || obj(t, r.obj["window"])["time_zone"] != "Europe/Paris" ||
		num(t, r.obj["failure_alert_threshold"]) != 3 || num(t, r.obj["retention_seconds"]) != 2*86400 ||
		num(t, r.obj["payload_retention_seconds"]) != 86400 {
		t.Fatalf("updated: %s", r.raw)
	}
	var paused bool
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT paused FROM relay.settings`).Scan(&paused); err != nil || !paused {
		t.Fatalf("not paused in the database: %v", err)
	}
	r = e.do("PUT", "/api/settings", operatorToken, map[string]any{"paused": false, "window": nil, "payload_retention_seconds": 0}).want(t, 200)
	if r.obj["paused"] != false || r.obj["paused_reason"] != nil || r.obj["window"] != nil || num(t, r.obj["failure_alert_threshold"]) != 3 ||
		r.obj["payload_retention_seconds"] != nil {
		t.Fatalf("resumed: %s", r.raw)
	}
	for body, field := range map[string]string{
		`{"absence_days": ["funday"]}`:                                     "absence_days",
		`{"failure_alert_threshold": 0}`:                                   "failure_alert_threshold",
		`{"retention_seconds": 60}`:                                        "retention_seconds",
		`{"payload_retention_seconds": 60}`:                                "payload_retention_seconds",
		`{"disable_after_seconds": 0}`:                                     "disable_after_seconds",
		`{"window": {"start": "08:00", "end": "09:00", "time_zone": "X"}}`: "window.time_zone",
		`{"window": {"start": "08:00"}}`:                                   "window",
		`{"paused": "yes"}`:                                                "paused",
	} {
		e.do("PUT", "/api/settings", operatorToken, body).wantError(t, 400, "invalid_field", field)
	}
	e.do("PUT", "/api/settings", operatorToken, `{"pause": true}`).wantError(t, 400, "unknown_field", "pause")
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	r := e.do("GET", "/healthz", "", nil).want(t, 200)
	if r.obj["status"] != "ok" {
		t.Fatalf("healthz: %s", r.raw)
	}
	if r := e.do("GET", "/readyz", "", nil).want(t, 200); r.obj["status"] != "ready" {
		t.Fatalf("readyz: %s", r.raw)
	}

	// A failing readiness check.
	down := newEnv(t, &envOpts{ready: func(context.Context) error { return errors.New("slot is lost") }})
	r = down.do("GET", "/readyz", "", nil).want(t, 503)
	if r.obj["status"] != "not_ready" || r.obj["error"] != "slot is lost" {
		t.Fatalf("readyz failing: %s", r.raw)
	}

	// SlotReadiness against a real slot.
	ctx := context.Background()
	slot := "ready_" + e.db.Name
	streaming := false
	check := admin.SlotReadiness(e.db.Pool, slot, func() bool { return streaming })
	if err := check(ctx); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing slot: %v", err)
	}
	e.db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	if err := check(ctx); err == nil || !strings.Contains(err.Error(), "nobody streams") {
		t.Fatalf("idle slot: %v", err)
	}
	streaming = true
	if err := check(ctx); err != nil {
		t.Fatalf("streaming: %v", err)
	}

	// Metrics: after a few deliveries, the series match the database.
	a := e.hook(e.alice, "a")
	e.delivery(a, "thread.created", "alice", "pending")
	e.delivery(a, "thread.created", "alice", "pending")
	e.delivery(a, "thread.created", "alice", "failed", 5)
	e.delivery(a, "thread.created", "alice", "succeeded", 5)
	e.db.Exec(t, `UPDATE relay.deliveries SET created_at = now() - interval '90 seconds' WHERE status = 'pending'`)
	e.metrics.AddEventsCaptured(4)
	e.metrics.ObserveAttempt(metrics.OutcomeSucceeded, 5*time.Millisecond)
	e.metrics.ObserveAttempt(metrics.OutcomeFailed, 5*time.Millisecond)
	e.metrics.ObserveDelivered(time.Now().Add(-200*time.Millisecond), time.Now())

	res, err := http.Get(e.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	text := string(body)
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var pending, failed int
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed') FROM relay.deliveries`).Scan(&pending, &failed); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"relay_events_captured_total 4",
		`relay_delivery_attempts_total{outcome="succeeded"} 1`,
		`relay_delivery_attempts_total{outcome="failed"} 1`,
		`relay_delivery_attempts_total{outcome="retry"} 0`,
		"relay_delivery_attempt_duration_seconds_count 2",
		"relay_commit_to_delivered_seconds_count 1",
		fmt.Sprintf(`relay_deliveries{status="pending"} %d`, pending),
		fmt.Sprintf(`relay_deliveries{status="failed"} %d`, failed),
		`relay_deliveries{status="delivering"} 0`,
		`relay_subscriptions{state="enabled"} 1`,
		`relay_subscriptions{state="failing"} 0`,
		`relay_subscriptions{state="disabled"} 0`,
		"relay_database_up 1",
		`relay_replication_slot_wal_status{slot="relay_admin_test_` + e.db.Name + `",status="missing"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	var oldest float64
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "relay_oldest_pending_age_seconds "); ok {
			if _, err := fmt.Sscan(v, &oldest); err != nil {
				t.Fatal(err)
			}
		}
	}
	if oldest < 89 || oldest > 300 {
		t.Errorf("relay_oldest_pending_age_seconds = %v, want about 90", oldest)
	}

	// Without metrics: 404.
	nom := newEnv(t, &envOpts{configure: func(c *admin.Config) { c.Metrics = nil }})
	nom.do("GET", "/metrics", "", nil).wantError(t, 404, "not_found", "")
}

func TestServerLifecycleAndRequestIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	if strings.HasSuffix(e.srv.Addr(), ":0") {
		t.Fatalf("Addr %q is not the real port", e.srv.Addr())
	}
	// A request id is made for each request, or taken from the client.
	r1 := e.do("GET", "/healthz", "", nil)
	r2 := e.do("GET", "/healthz", "", nil)
	id1, id2 := r1.header.Get("X-Request-Id"), r2.header.Get("X-Request-Id")
	if id1 == "" || id1 == id2 {
		t.Fatalf("request ids %q %q", id1, id2)
	}
	req, _ := http.NewRequest("GET", e.base+"/api/webhooks", nil)
	req.Header.Set("X-Request-Id", "client-chosen-42")
	req.Header.Set("Authorization", "Bearer "+e.alice)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("X-Request-Id") != "client-chosen-42" {
		t.Fatalf("client request id not echoed: %q", res.Header.Get("X-Request-Id"))
	}
	if !strings.Contains(e.logs.String(), `"request_id":"client-chosen-42"`) {
		t.Fatal("the request id is not in the logs")
	}
	req.Header.Set("X-Request-Id", "bad id\twith spaces")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Fatalf("unsafe request id kept: %q", got)
	}

	// The root without a console, and with one.
	if r := e.do("GET", "/", "", nil).want(t, 200); r.obj["openapi"] != "/api/openapi.json" {
		t.Fatalf("root: %s", r.raw)
	}
	e.do("GET", "/nothing", "", nil).wantError(t, 404, "not_found", "")
	con := newEnv(t, &envOpts{configure: func(c *admin.Config) {
		c.Static = fstest.MapFS{"index.html": {Data: []byte("<h1>relay console</h1>")}, "app.js": {Data: []byte("1")}}
	}})
	if r := con.do("GET", "/", "", nil).want(t, 200); !strings.Contains(string(r.raw), "relay console") {
		t.Fatalf("console: %s", r.raw)
	}
	con.do("GET", "/app.js", "", nil).want(t, 200)
	con.do("GET", "/api/webhooks", "", nil).wantError(t, 401, "unauthorized", "")

	// Start twice fails; Shutdown is idempotent, also before Start.
	if err := e.srv.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(e.base + "/healthz"); err == nil {
		t.Fatal("still serving after Shutdown")
	}
	idle, err := admin.New(admin.Config{Pool: e.db.Pool})
	if err != nil {
		t.Fatal(err)
	}
	if idle.Addr() != admin.DefaultAddr {
		t.Fatalf("default addr %q", idle.Addr())
	}
	if err := idle.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.New(admin.Config{}); err == nil {
		t.Fatal("New without a pool succeeded")
	}
}

func TestShutdownWaitsForRequests(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{})
	e := newEnv(t, &envOpts{ready: func(ctx context.Context) error {
		close(started)
		<-release
		return nil
	}})
	done := make(chan int, 1)
	go func() {
		res, err := http.Get(e.base + "/readyz")
		if err != nil {
			done <- -1
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- e.srv.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if code := <-done; code != 200 {
		t.Fatalf("in-flight request ended with %d", code)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}
