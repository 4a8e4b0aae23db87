package admin_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/admin"
	"github.com/pgoutbox/relay/internal/tokens"
	"github.com/pgoutbox/relay/subscriptions"
)

var webhookKeys = []string{"id", "owner", "name", "url", "events", "enabled", "format", "template", "headers",
	"timeout_ms", "retry_schedule", "max_in_flight", "window", "ignore_global_window", "outside_window", "filter",
	"rate_limit", "rate_burst", "ordering", "flow", "health", "created_at", "updated_at"}

var healthKeys = []string{"consecutive_failures", "failing_since", "last_success_at", "last_failure_at", "last_error", "disabled_reason"}

var webhookStatsKeys = []string{"deliveries_24h", "succeeded_24h", "failed_24h", "pending_24h", "success_rate_24h",
	"attempts_24h", "timeout_rate_24h", "avg_ms", "p50_ms", "p95_ms", "backlog", "oldest_pending_seconds",
	"consecutive_failures", "last_success_at", "last_failure_at"}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := e.hook(e.alice, "a")

	// Health and metrics need no token.
	e.do("GET", "/healthz", "", nil).want(t, 200)
	e.do("GET", "/readyz", "", nil).want(t, 200)
	e.do("GET", "/metrics", "", nil).want(t, 200)
	e.do("GET", "/api/openapi.json", "", nil).want(t, 200)

	// Every API route answers 401 without a token, with a wrong one, with a
	// malformed header.
	paths := []struct{ method, path string }{
		{"GET", "/api/webhooks"}, {"POST", "/api/webhooks"}, {"GET", fmt.Sprintf("/api/webhooks/%d", id)},
		{"PATCH", fmt.Sprintf("/api/webhooks/%d", id)}, {"DELETE", fmt.Sprintf("/api/webhooks/%d", id)},
		{"POST", fmt.Sprintf("/api/webhooks/%d/test", id)}, {"POST", fmt.Sprintf("/api/webhooks/%d/rotate-secret", id)},
		{"POST", fmt.Sprintf("/api/webhooks/%d/replay", id)}, {"GET", "/api/deliveries"}, {"GET", "/api/deliveries/1"},
		{"POST", "/api/deliveries/1/redeliver"}, {"GET", "/api/stats"}, {"GET", "/api/event-types"},
		{"GET", "/api/settings"}, {"PUT", "/api/settings"}, {"GET", "/api/nothing-here"},
		{"GET", "/api/me"}, {"POST", "/api/filters/check"}, {"GET", "/api/event-types/order.paid"},
		{"PUT", "/api/event-types/order.paid"}, {"DELETE", "/api/event-types/order.paid"},
	}
	for _, p := range paths {
		for _, tok := range []string{"", "wrong", tokens.Generate(), operatorToken + "x"} {
			r := e.do(p.method, p.path, tok, nil).wantError(t, 401, "unauthorized", "")
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("%s %s: no WWW-Authenticate", p.method, p.path)
			}
		}
	}
	req, _ := http.NewRequest("GET", e.base+"/api/webhooks", nil)
	req.Header.Set("Authorization", "Basic "+e.alice)
	if res, err := e.client.Do(req); err != nil || res.StatusCode != 401 {
		t.Fatalf("basic auth scheme: %v %v", res.StatusCode, err)
	}

	// Valid tokens pass; the scheme is case-insensitive.
	e.do("GET", "/api/webhooks", e.alice, nil).want(t, 200)
	e.do("GET", "/api/webhooks", operatorToken, nil).want(t, 200)
	req.Header.Set("Authorization", "bearer "+e.alice)
	if res, err := e.client.Do(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("lowercase bearer: %v %v", res.StatusCode, err)
	}

	// A revoked token is refused at once.
	ts := tokens.NewStore(e.db.Pool)
	list, err := ts.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range list {
		if tok.Owner == "alice" {
			if _, err := ts.Revoke(context.Background(), tok.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.do("GET", "/api/webhooks", e.alice, nil).wantError(t, 401, "unauthorized", "")
	e.do("GET", fmt.Sprintf("/api/webhooks/%d", id), e.alice, nil).wantError(t, 401, "unauthorized", "")
	e.do("GET", "/api/webhooks", e.bob, nil).want(t, 200)

	// Operator-only routes: 403 for an owner token.
	e.do("GET", "/api/settings", e.bob, nil).wantError(t, 403, "forbidden", "")
	e.do("PUT", "/api/settings", e.bob, map[string]any{"paused": true}).wantError(t, 403, "forbidden", "")

	// Unknown API route with a valid token: JSON 404.
	e.do("GET", "/api/nothing-here", operatorToken, nil).wantError(t, 404, "not_found", "")

	// Tokens never reach the logs.
	logs := e.logs.String()
	for _, secret := range []string{e.alice, e.bob, operatorToken} {
		if strings.Contains(logs, secret) {
			t.Fatal("a token was logged")
		}
	}
	if !strings.Contains(logs, `"component":"admin"`) || !strings.Contains(logs, `"request_id":`) || !strings.Contains(logs, `"owner":"bob"`) {
		t.Fatalf("request log lacks component, request_id or owner:\n%s", logs)
	}
}

func TestNoOperatorToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, &envOpts{noOperator: true})
	e.do("GET", "/api/webhooks", "", nil).wantError(t, 401, "unauthorized", "")
	e.do("GET", "/api/webhooks", operatorToken, nil).wantError(t, 401, "unauthorized", "")
	e.do("GET", "/api/webhooks", "", nil).wantError(t, 401, "unauthorized", "")
	e.do("GET", "/api/webhooks", e.alice, nil).want(t, 200)
	e.do("GET", "/healthz", "", nil).want(t, 200)
	e.do("GET", "/metrics", "", nil).want(t, 200)
	if logs := e.logs.String(); !strings.Contains(logs, "RELAY_ADMIN_TOKEN") || !strings.Contains(logs, "--admin-token") {
		t.Fatalf("the log does not say how to set a token:\n%s", logs)
	}
}

func TestWebhookCRUD(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)

	// Create: 201, the full shape, the secret, Location.
	r := e.do("POST", "/api/webhooks", e.alice, map[string]any{
		"name": "Slack alerts", "url": "https://hooks.slack.com/services/T0/B0/XXXX", "events": []string{"thread.created", "message.*"},
		"format": "slack", "headers": map[string]string{"X-Team": "core"}, "timeout_ms": 5000,
		"retry_schedule": []float64{30, 120.5}, "window": map[string]string{"start": "22:00", "end": "06:00", "time_zone": "Europe/Paris"},
		"ignore_global_window": true,
	}).want(t, 201)
	wantKeys(t, r.obj, append(webhookKeys, "secret")...)
	id := int64(num(t, r.obj["id"]))
	if r.header.Get("Location") != fmt.Sprintf("/api/webhooks/%d", id) {
		t.Fatalf("Location %q", r.header.Get("Location"))
	}
	secret, _ := r.obj["secret"].(string)
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("secret %q", secret)
	}
	if r.obj["owner"] != "alice" || r.obj["name"] != "Slack alerts" || r.obj["url"] != "https://hooks.slack.com/services/T0/B0/XXXX" ||
		r.obj["enabled"] != true || r.obj["format"] != "slack" || r.obj["template"] != nil || num(t, r.obj["timeout_ms"]) != 5000 ||
		num(t, r.obj["max_in_flight"]) != 8 || r.obj["ignore_global_window"] != true {
		t.Fatalf("created: %s", r.raw)
	}
	if ev := arr(t, r.obj["events"]); len(ev) != 2 || ev[0] != "thread.created" || ev[1] != "message.*" {
		t.Fatalf("events %v", ev)
	}
	if h := obj(t, r.obj["headers"]); h["X-Team"] != "core" || len(h) != 1 {
		t.Fatalf("headers %v", h)
	}
	if rs := arr(t, r.obj["retry_schedule"]); len(rs) != 2 || rs[0] != 30.0 || rs[1] != 120.5 {
		t.Fatalf("retry_schedule %v", rs)
	}
	w := obj(t, r.obj["window"])
	wantKeys(t, w, "start", "end", "time_zone")
	if w["start"] != "22:00" || w["end"] != "06:00" || w["time_zone"] != "Europe/Paris" {
		t.Fatalf("window %v", w)
	}
	h := obj(t, r.obj["health"])
	wantKeys(t, h, healthKeys...)
	if num(t, h["consecutive_failures"]) != 0 || h["last_success_at"] != nil || h["disabled_reason"] != nil {
		t.Fatalf("health %v", h)
	}
	for _, k := range []string{"created_at", "updated_at"} {
		if _, err := time.Parse(time.RFC3339Nano, r.obj[k].(string)); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}

	// Defaults when only the required fields are given.
	r = e.do("POST", "/api/webhooks", e.alice, map[string]any{"name": "min", "url": "https://a.example.com/x", "events": []string{"*"}}).want(t, 201)
	minID := int64(num(t, r.obj["id"]))
	if r.obj["format"] != "json" || r.obj["window"] != nil || num(t, r.obj["timeout_ms"]) != 10000 || len(obj(t, r.obj["headers"])) != 0 {
		t.Fatalf("defaults: %s", r.raw)
	}
	if rs := arr(t, r.obj["retry_schedule"]); len(rs) != 3 || rs[0] != 60.0 || rs[1] != 300.0 || rs[2] != 900.0 {
		t.Fatalf("default retry_schedule %v", rs)
	}

	// Get: the shape with stats, never the secret.
	e.delivery(id, "thread.created", "alice", "succeeded", 10)
	e.delivery(id, "thread.created", "alice", "failed", 20, 40)
	r = e.do("GET", fmt.Sprintf("/api/webhooks/%d", id), e.alice, nil).want(t, 200)
	wantKeys(t, r.obj, append(webhookKeys, "stats")...)
	st := obj(t, r.obj["stats"])
	wantKeys(t, st, webhookStatsKeys...)
	if num(t, st["deliveries_24h"]) != 2 || num(t, st["succeeded_24h"]) != 1 || num(t, st["failed_24h"]) != 1 ||
		num(t, st["success_rate_24h"]) != 0.5 || num(t, st["attempts_24h"]) != 3 || num(t, st["p50_ms"]) != 20 ||
		num(t, st["p95_ms"]) < 38 || num(t, st["p95_ms"]) > 40 || num(t, st["backlog"]) != 0 || st["oldest_pending_seconds"] != nil {
		t.Fatalf("stats %v", st)
	}
	if strings.Contains(string(r.raw), secret) {
		t.Fatal("GET returned the secret")
	}

	// List: the caller's webhooks, no secret, filters.
	r = e.do("GET", "/api/webhooks", e.alice, nil).want(t, 200)
	wantKeys(t, r.obj, "webhooks")
	list := arr(t, r.obj["webhooks"])
	if len(list) != 2 || strings.Contains(string(r.raw), "whsec_") {
		t.Fatalf("list: %s", r.raw)
	}
	wantKeys(t, obj(t, list[0]), webhookKeys...)
	if r := e.do("GET", "/api/webhooks?event_type=message.sent", e.alice, nil).want(t, 200); len(arr(t, r.obj["webhooks"])) != 2 {
		t.Fatalf("event_type filter: %s", r.raw)
	}
	if r := e.do("GET", "/api/webhooks?event_type=thread.archived", e.alice, nil).want(t, 200); len(arr(t, r.obj["webhooks"])) != 1 {
		t.Fatalf("event_type filter: %s", r.raw)
	}
	e.do("GET", "/api/webhooks?enabled=maybe", e.alice, nil).wantError(t, 400, "invalid_field", "enabled")
	e.do("GET", "/api/webhooks?event_type=Bad", e.alice, nil).wantError(t, 400, "invalid_field", "event_type")
	if r := e.do("GET", "/api/webhooks", e.bob, nil).want(t, 200); len(arr(t, r.obj["webhooks"])) != 0 {
		t.Fatalf("bob sees: %s", r.raw)
	}

	// Patch: only the given fields change; window null removes the window.
	r = e.do("PATCH", fmt.Sprintf("/api/webhooks/%d", id), e.alice, map[string]any{
		"name": "Renamed", "events": []string{"*"}, "retry_schedule": []float64{}, "window": nil, "template": "New {{type}}",
	}).want(t, 200)
	wantKeys(t, r.obj, webhookKeys...)
	if r.obj["name"] != "Renamed" || r.obj["url"] != "https://hooks.slack.com/services/T0/B0/XXXX" || r.obj["window"] != nil ||
		len(arr(t, r.obj["retry_schedule"])) != 0 || r.obj["template"] != "New {{type}}" || r.obj["format"] != "slack" {
		t.Fatalf("patched: %s", r.raw)
	}
	// Disable with a reason, then enable (clears the health record).
	r = e.do("PATCH", fmt.Sprintf("/api/webhooks/%d", id), e.alice, map[string]any{"enabled": false, "disabled_reason": "holiday"}).want(t, 200)
	if r.obj["enabled"] != false || obj(t, r.obj["health"])["disabled_reason"] != "holiday" {
		t.Fatalf("disabled: %s", r.raw)
	}
	if r := e.do("GET", "/api/webhooks?enabled=false", e.alice, nil).want(t, 200); len(arr(t, r.obj["webhooks"])) != 1 {
		t.Fatalf("enabled=false: %s", r.raw)
	}
	e.db.Exec(t, `UPDATE relay.subscriptions SET consecutive_failures = 4 WHERE id = $1`, id)
	r = e.do("PATCH", fmt.Sprintf("/api/webhooks/%d", id), e.alice, map[string]any{"enabled": true}).want(t, 200)
	if hh := obj(t, r.obj["health"]); r.obj["enabled"] != true || hh["disabled_reason"] != nil || num(t, hh["consecutive_failures"]) != 0 {
		t.Fatalf("enabled: %s", r.raw)
	}
	// A new window, then an empty patch changes nothing.
	r = e.do("PATCH", fmt.Sprintf("/api/webhooks/%d", id), e.alice, map[string]any{"window": map[string]string{"start": "09:00", "end": "17:30"}}).want(t, 200)
	if w := obj(t, r.obj["window"]); w["start"] != "09:00" || w["end"] != "17:30" || w["time_zone"] != "UTC" {
		t.Fatalf("window: %s", r.raw)
	}
	e.do("PATCH", fmt.Sprintf("/api/webhooks/%d", id), e.alice, map[string]any{}).want(t, 200)

	// Delete: 204 with no body, then 404.
	r = e.do("DELETE", fmt.Sprintf("/api/webhooks/%d", minID), e.alice, nil).want(t, 204)
	if len(r.raw) != 0 {
		t.Fatalf("204 with a body: %s", r.raw)
	}
	e.do("DELETE", fmt.Sprintf("/api/webhooks/%d", minID), e.alice, nil).wantError(t, 404, "not_found", "")
	e.do("GET", fmt.Sprintf("/api/webhooks/%d", minID), e.alice, nil).wantError(t, 404, "not_found", "")
	e.do("GET", "/api/webhooks/abc", e.alice, nil).wantError(t, 404, "not_found", "")
	e.do("GET", "/api/webhooks/0", e.alice, nil).wantError(t, 404, "not_found", "")

	// The operator creates for an owner or for itself; an owner cannot create for another.
	r = e.do("POST", "/api/webhooks", operatorToken, map[string]any{"owner": "bob", "name": "for bob", "url": "https://b.example.com/", "events": []string{"*"}}).want(t, 201)
	if r.obj["owner"] != "bob" {
		t.Fatalf("operator-created owner %v", r.obj["owner"])
	}
	r = e.do("POST", "/api/webhooks", operatorToken, map[string]any{"name": "ops", "url": "https://o.example.com/", "events": []string{"*"}}).want(t, 201)
	if r.obj["owner"] != nil {
		t.Fatalf("operator webhook owner %v", r.obj["owner"])
	}
	e.do("POST", "/api/webhooks", e.alice, map[string]any{"owner": "bob", "name": "x", "url": "https://b.example.com/", "events": []string{"*"}}).
		wantError(t, 400, "invalid_field", "owner")
	e.do("POST", "/api/webhooks", e.alice, map[string]any{"owner": "alice", "name": "x", "url": "https://b.example.com/", "events": []string{"*"}}).want(t, 201)
	if r := e.do("GET", "/api/webhooks", operatorToken, nil).want(t, 200); len(arr(t, r.obj["webhooks"])) != 4 {
		t.Fatalf("operator list: %s", r.raw)
	}
	if r := e.do("GET", "/api/webhooks?owner=bob", operatorToken, nil).want(t, 200); len(arr(t, r.obj["webhooks"])) != 1 {
		t.Fatalf("operator list of bob: %s", r.raw)
	}
	if r := e.do("GET", "/api/webhooks?owner=bob", e.alice, nil).want(t, 200); len(arr(t, r.obj["webhooks"])) != 2 {
		t.Fatalf("owner filter must not widen an owner's scope: %s", r.raw)
	}
}

func TestWebhookValidation(t *testing.T) {
	t.Parallel()
	// No allow list here: localhost and private addresses are refused.
	e := newEnv(t, &envOpts{configure: func(c *admin.Config) { c.AllowCIDRs = nil }})
	good := func() map[string]any {
		return map[string]any{"name": "n", "url": "https://hooks.example.com/x", "events": []string{"thread.created"}}
	}
	with := func(k string, v any) map[string]any {
		b := good()
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
		return b
	}
	cases := []struct {
		name  string
		body  any
		code  string
		field string
	}{
		{"http url", with("url", "http://hooks.example.com/x"), "invalid_field", "url"},
		{"localhost", with("url", "https://localhost/x"), "invalid_field", "url"},
		{"sub.localhost", with("url", "https://api.localhost:8443/x"), "invalid_field", "url"},
		{"private ip", with("url", "https://10.0.0.5/x"), "invalid_field", "url"},
		{"metadata ip", with("url", "https://169.254.169.254/latest"), "invalid_field", "url"},
		{"no host", with("url", "https:///x"), "invalid_field", "url"},
		{"missing url", with("url", nil), "invalid_field", "url"},
		{"empty events", with("events", []string{}), "invalid_field", "events"},
		{"missing events", with("events", nil), "invalid_field", "events"},
		{"bad pattern", with("events", []string{"thread.*.x"}), "invalid_field", "events"},
		{"events not an array", with("events", "thread.created"), "invalid_field", "events"},
		{"unknown format", with("format", "xml"), "invalid_field", "format"},
		{"missing name", with("name", nil), "invalid_field", "name"},
		{"blank name", with("name", "   "), "invalid_field", "name"},
		{"timeout", with("timeout_ms", 100), "invalid_field", "timeout_ms"},
		{"timeout type", with("timeout_ms", "fast"), "invalid_field", "timeout_ms"},
		{"retry negative", with("retry_schedule", []float64{-1}), "invalid_field", "retry_schedule"},
		{"retry too long", with("retry_schedule", []float64{8 * 86400}), "invalid_field", "retry_schedule"},
		{"reserved header", with("headers", map[string]string{"webhook-signature": "x"}), "invalid_field", "headers"},
		{"header type", with("headers", map[string]any{"x-a": 1}), "invalid_field", "headers"},
		{"half window", with("window", map[string]string{"start": "22:00"}), "invalid_field", "window.start"},
		{"bad window time", with("window", map[string]string{"start": "22:00", "end": "24:30"}), "invalid_field", "window.end"},
		{"bad time zone", with("window", map[string]string{"start": "22:00", "end": "06:00", "time_zone": "Mars/Base"}), "invalid_field", "window.time_zone"},
		{"bad secret", with("secret", "short"), "invalid_field", "secret"},
		{"in flight", with("max_in_flight", 1000), "invalid_field", "max_in_flight"},
		{"event_types instead of events", with("event_types", []string{"*"}), "unknown_field", "event_types"},
		{"malformed json", `{"name": "n",`, "malformed_json", ""},
		{"not an object", `["a"]`, "malformed_json", ""},
		{"empty body", "", "malformed_json", ""},
		{"trailing data", `{"name":"n"} {}`, "malformed_json", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("POST", "/api/webhooks", e.alice, c.body)
			r.wantError(t, 400, c.code, c.field)
		})
	}
	// Nothing was created.
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.subscriptions`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d subscriptions after refused creates (%v)", n, err)
	}
	// A body over 1 MiB.
	big := fmt.Sprintf(`{"name": "%s", "url": "https://a.example.com/", "events": ["*"]}`, strings.Repeat("x", 1<<20))
	e.do("POST", "/api/webhooks", e.alice, big).wantError(t, 413, "body_too_large", "")

	// allow_http lets http:// through (still not to a private address).
	e.do("PUT", "/api/settings", operatorToken, map[string]any{"allow_http": true}).want(t, 200)
	e.do("POST", "/api/webhooks", e.alice, with("url", "http://127.0.0.1:9/x")).wantError(t, 400, "invalid_field", "url")
	id := e.createWebhook(e.alice, with("url", "http://hooks.example.com/x"))

	// PATCH validates the same way.
	p := fmt.Sprintf("/api/webhooks/%d", id)
	e.do("PATCH", p, e.alice, map[string]any{"url": "https://192.168.1.1/"}).wantError(t, 400, "invalid_field", "url")
	e.do("PATCH", p, e.alice, map[string]any{"events": []string{}}).wantError(t, 400, "invalid_field", "events")
	e.do("PATCH", p, e.alice, map[string]any{"format": "yaml"}).wantError(t, 400, "invalid_field", "format")
	e.do("PATCH", p, e.alice, map[string]any{"window": map[string]any{"start": "x"}}).wantError(t, 400, "invalid_field", "window")
	e.do("PATCH", p, e.alice, map[string]any{"window": "always"}).wantError(t, 400, "invalid_field", "window")
	e.do("PATCH", p, e.alice, map[string]any{"owner": "bob"}).wantError(t, 400, "unknown_field", "owner")
	e.do("PATCH", p, e.alice, "").wantError(t, 400, "malformed_json", "")
	e.do("PUT", "/api/settings", operatorToken, map[string]any{"allow_http": false}).want(t, 200)
	e.do("PATCH", p, e.alice, map[string]any{"url": "http://hooks.example.com/y"}).wantError(t, 400, "invalid_field", "url")

	// An allow list lets local receivers through, by address or by the name localhost.
	local := newEnv(t, nil) // allows 127.0.0.0/8
	local.do("POST", "/api/webhooks", local.alice, with("url", "https://127.0.0.1:8443/x")).want(t, 201)
	local.do("POST", "/api/webhooks", local.alice, with("url", "https://localhost:8443/x")).want(t, 201)
	local.do("POST", "/api/webhooks", local.alice, with("url", "https://10.0.0.5/x")).wantError(t, 400, "invalid_field", "url")
}

func TestOwnership(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bobHook := e.hook(e.bob, "bob")
	aliceHook := e.hook(e.alice, "alice")
	bobDelivery := e.delivery(bobHook, "thread.created", "bob", "failed", 5)
	e.delivery(aliceHook, "thread.created", "alice", "succeeded", 5)
	hp := fmt.Sprintf("/api/webhooks/%d", bobHook)
	dp := fmt.Sprintf("/api/deliveries/%d", bobDelivery)
	since := time.Now().Add(-time.Hour).Format(time.RFC3339)

	// Alice cannot see, change, test, rotate, replay or redeliver Bob's objects: 404, never 403.
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", hp, nil},
		{"PATCH", hp, map[string]any{"name": "stolen"}},
		{"PATCH", hp, map[string]any{"enabled": false}},
		{"PATCH", hp, map[string]any{"url": "https://evil.example.com/"}},
		{"DELETE", hp, nil},
		{"POST", hp + "/test", nil},
		{"POST", hp + "/rotate-secret", nil},
		{"POST", hp + "/replay", map[string]any{"since": since}},
		{"GET", dp, nil},
		{"POST", dp + "/redeliver", nil},
		{"GET", fmt.Sprintf("/api/deliveries?webhook_id=%d", bobHook), nil},
	} {
		e.do(c.method, c.path, e.alice, c.body).wantError(t, 404, "not_found", "")
	}
	// The same answers as for ids that do not exist.
	e.do("GET", "/api/webhooks/999999", e.alice, nil).wantError(t, 404, "not_found", "")
	e.do("GET", "/api/deliveries/999999", e.alice, nil).wantError(t, 404, "not_found", "")
	if got := e.tester.called(); len(got) != 0 {
		t.Fatalf("the tester ran for another owner's webhook: %v", got)
	}

	// Lists are scoped.
	r := e.do("GET", "/api/webhooks", e.alice, nil).want(t, 200)
	if l := arr(t, r.obj["webhooks"]); len(l) != 1 || num(t, obj(t, l[0])["id"]) != float64(aliceHook) {
		t.Fatalf("alice's list: %s", r.raw)
	}
	r = e.do("GET", "/api/deliveries", e.alice, nil).want(t, 200)
	if l := arr(t, r.obj["deliveries"]); len(l) != 1 || num(t, obj(t, l[0])["webhook_id"]) != float64(aliceHook) {
		t.Fatalf("alice's deliveries: %s", r.raw)
	}
	r = e.do("GET", "/api/stats", e.alice, nil).want(t, 200)
	if l := arr(t, r.obj["webhooks"]); len(l) != 1 || num(t, obj(t, r.obj["overall"])["deliveries"]) != 1 {
		t.Fatalf("alice's stats: %s", r.raw)
	}

	// Nothing of Bob's changed.
	r = e.do("GET", hp, e.bob, nil).want(t, 200)
	if r.obj["name"] != "bob" || r.obj["enabled"] != true {
		t.Fatalf("bob's webhook changed: %s", r.raw)
	}

	// The operator can do it all.
	e.do("GET", hp, operatorToken, nil).want(t, 200)
	e.do("PATCH", hp, operatorToken, map[string]any{"name": "renamed by operator"}).want(t, 200)
	e.do("POST", hp+"/test", operatorToken, nil).want(t, 200)
	e.do("POST", hp+"/rotate-secret", operatorToken, nil).want(t, 200)
	e.do("GET", dp, operatorToken, nil).want(t, 200)
	e.do("POST", hp+"/replay", operatorToken, map[string]any{"since": since}).want(t, 200)
	e.do("POST", fmt.Sprintf("/api/deliveries/%d/redeliver", e.delivery(bobHook, "a.b", "bob", "failed", 1)), operatorToken, nil).want(t, 202)
	r = e.do("GET", "/api/deliveries", operatorToken, nil).want(t, 200)
	if l := arr(t, r.obj["deliveries"]); len(l) != 3 {
		t.Fatalf("operator deliveries: %s", r.raw)
	}
	e.do("DELETE", hp, operatorToken, nil).want(t, 204)
}

func TestTestEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.do("PUT", "/api/settings", operatorToken, map[string]any{"allow_http": true}).want(t, 200)

	// A local receiver answering 204, one answering 500, and a refused port.
	var got int
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got++
		time.Sleep(20 * time.Millisecond)
		w.WriteHeader(204)
	}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer bad.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String() + "/hook"
	ln.Close()

	okID := e.createWebhook(e.alice, map[string]any{"name": "ok", "url": ok.URL + "/hook", "events": []string{"*"}})
	badID := e.createWebhook(e.alice, map[string]any{"name": "bad", "url": bad.URL + "/hook", "events": []string{"*"}})
	refusedID := e.createWebhook(e.alice, map[string]any{"name": "refused", "url": refused, "events": []string{"*"}})

	r := e.do("POST", fmt.Sprintf("/api/webhooks/%d/test", okID), e.alice, nil).want(t, 200)
	wantKeys(t, r.obj, "delivered", "status_code", "duration_ms", "webhook_enabled", "relay_paused", "notes")
	if r.obj["webhook_enabled"] != true || r.obj["relay_paused"] != false || len(arr(t, r.obj["notes"])) != 0 {
		t.Fatalf("test of an enabled webhook, relay running: %s", r.raw)
	}
	if r.obj["delivered"] != true || num(t, r.obj["status_code"]) != 204 || num(t, r.obj["duration_ms"]) < 20 || got != 1 {
		t.Fatalf("test ok: %s (receiver hit %d times)", r.raw, got)
	}
	r = e.do("POST", fmt.Sprintf("/api/webhooks/%d/test", badID), e.alice, nil).want(t, 200)
	wantKeys(t, r.obj, "delivered", "status_code", "duration_ms", "error", "webhook_enabled", "relay_paused", "notes")
	if r.obj["delivered"] != false || num(t, r.obj["status_code"]) != 500 || r.obj["error"] != "HTTP 500" {
		t.Fatalf("test 500: %s", r.raw)
	}
	r = e.do("POST", fmt.Sprintf("/api/webhooks/%d/test", refusedID), e.alice, nil).want(t, 200)
	if r.obj["delivered"] != false || num(t, r.obj["status_code"]) != 0 || !strings.Contains(r.obj["error"].(string), "connection refused") {
		t.Fatalf("test refused: %s", r.raw)
	}
	// A disabled webhook can be tested too; the tester was called with exactly these ids.
	// It says so, and says when relay is paused: the test goes out, real
	// events would not.
	e.do("PATCH", fmt.Sprintf("/api/webhooks/%d", okID), e.alice, map[string]any{"enabled": false}).want(t, 200)
	e.do("PUT", "/api/settings", operatorToken, map[string]any{"paused": true}).want(t, 200)
	r = e.do("POST", fmt.Sprintf("/api/webhooks/%d/test", okID), e.alice, nil).want(t, 200)
	notes := fmt.Sprint(arr(t, r.obj["notes"]))
	if r.obj["delivered"] != true || r.obj["webhook_enabled"] != false || r.obj["relay_paused"] != true ||
		!strings.Contains(notes, "the webhook is disabled") || !strings.Contains(notes, "relay is paused") {
		t.Fatalf("test of a disabled webhook while paused: %s", r.raw)
	}
	e.do("PUT", "/api/settings", operatorToken, map[string]any{"paused": false}).want(t, 200)
	if calls := e.tester.called(); fmt.Sprint(calls) != fmt.Sprint([]int64{okID, badID, refusedID, okID}) {
		t.Fatalf("tester calls %v", calls)
	}

	// Errors of the tester itself.
	e.tester.mu.Lock()
	e.tester.err = subscriptions.ErrNotFound
	e.tester.mu.Unlock()
	e.do("POST", fmt.Sprintf("/api/webhooks/%d/test", okID), e.alice, nil).wantError(t, 404, "not_found", "")
	e.tester.mu.Lock()
	e.tester.err = errors.New("database is on fire")
	e.tester.mu.Unlock()
	r = e.do("POST", fmt.Sprintf("/api/webhooks/%d/test", okID), e.alice, nil).wantError(t, 500, "internal", "")
	if strings.Contains(string(r.raw), "fire") || !strings.Contains(string(r.raw), r.header.Get("X-Request-Id")) {
		t.Fatalf("internal error leaks or lacks the request id: %s", r.raw)
	}

	// Without a tester: 503 (after the ownership check).
	e2 := newEnv(t, &envOpts{noTester: true})
	id := e2.hook(e2.alice, "x")
	e2.do("POST", fmt.Sprintf("/api/webhooks/%d/test", id), e2.alice, nil).wantError(t, 503, "unavailable", "")
	e2.do("POST", fmt.Sprintf("/api/webhooks/%d/test", id), e2.bob, nil).wantError(t, 404, "not_found", "")
}

func TestRotateSecretAndReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	r := e.do("POST", "/api/webhooks", e.alice, map[string]any{"name": "a", "url": "https://a.example.com/", "events": []string{"*"}}).want(t, 201)
	id := int64(num(t, r.obj["id"]))
	old := r.obj["secret"].(string)
	p := fmt.Sprintf("/api/webhooks/%d", id)

	r = e.do("POST", p+"/rotate-secret", e.alice, nil).want(t, 200)
	wantKeys(t, r.obj, "id", "secret", "grace_seconds")
	if s := r.obj["secret"].(string); !strings.HasPrefix(s, "whsec_") || s == old || num(t, r.obj["grace_seconds"]) != 86400 {
		t.Fatalf("rotate: %s", r.raw)
	}
	r = e.do("POST", p+"/rotate-secret", e.alice, map[string]any{"grace_seconds": 0}).want(t, 200)
	if num(t, r.obj["grace_seconds"]) != 0 {
		t.Fatalf("rotate with no grace: %s", r.raw)
	}
	e.do("POST", p+"/rotate-secret", e.alice, map[string]any{"grace_seconds": -5}).wantError(t, 400, "invalid_field", "grace_seconds")
	e.do("POST", p+"/rotate-secret", e.alice, map[string]any{"grace": 5}).wantError(t, 400, "unknown_field", "grace")
	if r := e.do("GET", p, e.alice, nil); strings.Contains(string(r.raw), "whsec_") {
		t.Fatal("GET returned a secret after rotation")
	}

	// Replay the failed deliveries in a range.
	e.delivery(id, "a.b", "alice", "failed", 1)
	e.delivery(id, "a.b", "alice", "failed", 1)
	e.delivery(id, "a.b", "alice", "succeeded", 1)
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	r = e.do("POST", p+"/replay", e.alice, map[string]any{"since": since}).want(t, 200)
	wantKeys(t, r.obj, "webhook_id", "queued", "since", "until")
	if num(t, r.obj["queued"]) != 2 || num(t, r.obj["webhook_id"]) != float64(id) {
		t.Fatalf("replay: %s", r.raw)
	}
	r = e.do("POST", p+"/replay", e.alice, map[string]any{"since": since, "until": time.Now().Add(time.Minute).Format(time.RFC3339)}).want(t, 200)
	if num(t, r.obj["queued"]) != 0 {
		t.Fatalf("second replay: %s", r.raw)
	}
	e.do("POST", p+"/replay", e.alice, map[string]any{}).wantError(t, 400, "invalid_field", "since")
	e.do("POST", p+"/replay", e.alice, map[string]any{"since": "yesterday"}).wantError(t, 400, "invalid_field", "since")
	e.do("POST", p+"/replay", e.alice, map[string]any{"since": since, "until": "soon"}).wantError(t, 400, "invalid_field", "until")
	e.do("POST", p+"/replay", e.alice, map[string]any{"since": time.Now().Format(time.RFC3339), "until": since}).wantError(t, 400, "invalid_field", "since")
	e.do("POST", "/api/webhooks/424242/replay", e.alice, map[string]any{"since": since}).wantError(t, 404, "not_found", "")
}

// Flow control through the API: a Slack webhook is paced at 1/s unless
// told otherwise; rate_limit, rate_burst and ordering are set, changed and
// removed (null); bad values are refused naming the field.
func TestWebhookFlowControl(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	r := e.do("POST", "/api/webhooks", e.alice, map[string]any{
		"name": "Slack", "url": "https://hooks.slack.com/services/T0/B0/XXXX", "events": []string{"thread.created"}, "format": "slack",
	}).want(t, 201)
	id := int64(num(t, r.obj["id"]))
	if num(t, r.obj["rate_limit"]) != 1 || r.obj["rate_burst"] != nil || r.obj["ordering"] != "none" {
		t.Fatalf("slack defaults: %s", r.raw)
	}
	flow := obj(t, r.obj["flow"])
	wantKeys(t, flow, "held_until", "hold_reason", "circuit_open", "circuit_opened_at", "throttled_since")
	if flow["circuit_open"] != false || flow["held_until"] != nil {
		t.Fatalf("flow of a new webhook: %s", r.raw)
	}
	r = e.do("POST", "/api/webhooks", e.alice, map[string]any{
		"name": "Ordered", "url": "https://example.com/hook", "events": []string{"*"}, "rate_limit": 5, "rate_burst": 2, "ordering": "key",
	}).want(t, 201)
	id2 := int64(num(t, r.obj["id"]))
	if num(t, r.obj["rate_limit"]) != 5 || num(t, r.obj["rate_burst"]) != 2 || r.obj["ordering"] != "key" {
		t.Fatalf("created: %s", r.raw)
	}
	r = e.do("PATCH", fmt.Sprintf("/api/webhooks/%d", id), e.alice, `{"rate_limit": null, "ordering": "key"}`).want(t, 200)
	if r.obj["rate_limit"] != nil || r.obj["ordering"] != "key" {
		t.Fatalf("patched: %s", r.raw)
	}
	r = e.do("PATCH", fmt.Sprintf("/api/webhooks/%d", id2), e.alice, `{"rate_limit": 0.5, "rate_burst": null}`).want(t, 200)
	if num(t, r.obj["rate_limit"]) != 0.5 || r.obj["rate_burst"] != nil {
		t.Fatalf("patched: %s", r.raw)
	}
	path := fmt.Sprintf("/api/webhooks/%d", id2)
	e.do("PATCH", path, e.alice, `{"rate_limit": -1}`).wantError(t, 400, "invalid_field", "rate_limit")
	e.do("PATCH", path, e.alice, `{"rate_limit": "fast"}`).wantError(t, 400, "invalid_field", "rate_limit")
	e.do("PATCH", path, e.alice, `{"rate_burst": 0}`).wantError(t, 400, "invalid_field", "rate_burst")
	e.do("PATCH", path, e.alice, `{"ordering": "fifo"}`).wantError(t, 400, "invalid_field", "ordering")
}
