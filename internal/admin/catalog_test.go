package admin_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestWebhookFilterAndOutsideWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	r := e.do("POST", "/api/webhooks", e.alice, map[string]any{
		"name": "big", "url": "https://hooks.example.com/big", "events": []string{"order.*"},
		"filter": "$.amount ? (@ > 100)", "outside_window": "skip", "window": map[string]any{"start": "09:00", "end": "18:00"},
	}).want(t, http.StatusCreated)
	if r.obj["filter"] != `$."amount"?(@ > 100)` || r.obj["outside_window"] != "skip" {
		t.Fatalf("created: %s", r.raw)
	}
	id := int64(num(t, r.obj["id"]))
	path := fmt.Sprintf("/api/webhooks/%d", id)

	// A bad path is a field error with PostgreSQL's message, on create and
	// on update; the webhook keeps its filter.
	r = e.do("POST", "/api/webhooks", e.alice, map[string]any{
		"name": "bad", "url": "https://hooks.example.com/bad", "events": []string{"*"}, "filter": "$.amount ? (@ >",
	}).wantError(t, 400, "invalid_field", "filter")
	if msg := obj(t, r.obj["error"])["message"].(string); !strings.Contains(msg, "syntax error") {
		t.Fatalf("message %q", msg)
	}
	e.do("PATCH", path, e.alice, map[string]any{"filter": "$.a == $x"}).wantError(t, 400, "invalid_field", "filter")
	e.do("PATCH", path, e.alice, map[string]any{"filter": 12}).wantError(t, 400, "invalid_field", "filter")
	e.do("PATCH", path, e.alice, map[string]any{"outside_window": "later"}).wantError(t, 400, "invalid_field", "outside_window")
	// send with a window of its own is refused by the database: the field
	// still comes back.
	e.do("PATCH", path, e.alice, map[string]any{"outside_window": "send"}).wantError(t, 400, "invalid_field", "outside_window")
	r = e.do("GET", path, e.alice, nil).want(t, 200)
	if r.obj["filter"] != `$."amount"?(@ > 100)` || r.obj["outside_window"] != "skip" {
		t.Fatalf("after refused updates: %s", r.raw)
	}

	r = e.do("PATCH", path, e.alice, map[string]any{"filter": `$.channel == "email"`, "outside_window": "send", "window": nil}).want(t, 200)
	if r.obj["filter"] != `($."channel" == "email")` || r.obj["outside_window"] != "send" || r.obj["window"] != nil {
		t.Fatalf("updated: %s", r.raw)
	}
	r = e.do("PATCH", path, e.alice, map[string]any{"filter": nil}).want(t, 200)
	if r.obj["filter"] != nil {
		t.Fatalf("filter removed: %s", r.raw)
	}
	r = e.do("PATCH", path, e.alice, map[string]any{"filter": "$.x", "outside_window": "defer"}).want(t, 200)
	r = e.do("PATCH", path, e.alice, map[string]any{"filter": ""}).want(t, 200)
	if r.obj["filter"] != nil || r.obj["outside_window"] != "defer" {
		t.Fatalf("filter removed with \"\": %s", r.raw)
	}
}

func TestFilterCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	r := e.do("POST", "/api/filters/check", e.alice, map[string]any{
		"filter": "$.amount ? (@ > 100)", "payload": map[string]any{"amount": 120},
	}).want(t, 200)
	wantKeys(t, r.obj, "filter", "kind", "matches")
	if r.obj["kind"] != "path" || r.obj["matches"] != true || r.obj["filter"] != `$."amount"?(@ > 100)` {
		t.Fatalf("check: %s", r.raw)
	}
	r = e.do("POST", "/api/filters/check", operatorToken, map[string]any{
		"filter": `$.channel == "email"`, "payload": map[string]any{"channel": "sms"},
	}).want(t, 200)
	if r.obj["kind"] != "predicate" || r.obj["matches"] != false {
		t.Fatalf("predicate check: %s", r.raw)
	}
	r = e.do("POST", "/api/filters/check", e.alice, map[string]any{"filter": "exists($.refund)"}).want(t, 200)
	if r.obj["kind"] != "predicate" || r.obj["matches"] != nil {
		t.Fatalf("check without payload: %s", r.raw)
	}
	r = e.do("POST", "/api/filters/check", e.alice, map[string]any{"filter": "$.a ? (", "payload": map[string]any{}}).
		wantError(t, 400, "invalid_field", "filter")
	if msg := obj(t, r.obj["error"])["message"].(string); !strings.Contains(msg, "jsonpath") {
		t.Fatalf("message %q", msg)
	}
	e.do("POST", "/api/filters/check", e.alice, map[string]any{"filter": "$.a", "payload": []int{1}}).
		wantError(t, 400, "invalid_field", "payload")
	e.do("POST", "/api/filters/check", e.alice, map[string]any{"filter": ""}).wantError(t, 400, "invalid_field", "filter")
	e.do("POST", "/api/filters/check", e.alice, map[string]any{"filter": "$", "extra": 1}).wantError(t, 400, "unknown_field", "extra")
}

func TestEventTypeCatalogAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	body := map[string]any{
		"description": "An order was paid.",
		"example":     map[string]any{"order_id": "o_1", "amount": 120},
		"json_schema": map[string]any{"type": "object"},
	}
	r := e.do("PUT", "/api/event-types/order.paid", operatorToken, body).want(t, http.StatusCreated)
	wantKeys(t, r.obj, "name", "description", "example", "json_schema", "created_at", "updated_at")
	if num(t, obj(t, r.obj["example"])["amount"]) != 120 {
		t.Fatalf("created: %s", r.raw)
	}
	e.do("PUT", "/api/event-types/order.paid", operatorToken, map[string]any{"description": "Paid."}).want(t, http.StatusOK)
	// Owners read the catalog, only the operator writes it.
	e.do("PUT", "/api/event-types/order.paid", e.alice, body).wantError(t, 403, "forbidden", "")
	e.do("DELETE", "/api/event-types/order.paid", e.alice, nil).wantError(t, 403, "forbidden", "")
	r = e.do("GET", "/api/event-types/order.paid", e.alice, nil).want(t, 200)
	if r.obj["description"] != "Paid." || r.obj["example"] != nil {
		t.Fatalf("replaced entry: %s", r.raw)
	}
	r = e.do("GET", "/api/event-types", e.bob, nil).want(t, 200)
	cat := arr(t, r.obj["catalog"])
	var names []string
	for _, c := range cat {
		names = append(names, obj(t, c)["name"].(string))
	}
	if strings.Join(names, " ") != "order.paid relay.subscription.disabled relay.subscription.failing webhook.test" {
		t.Fatalf("catalog %v", names)
	}
	// A fresh install lists cataloged types although nothing was emitted,
	// but not the test event.
	if fmt.Sprint(arr(t, r.obj["event_types"])) != "[order.paid relay.subscription.disabled relay.subscription.failing]" {
		t.Fatalf("event types %s", r.raw)
	}
	e.do("PUT", "/api/event-types/Order%20Paid", operatorToken, body).wantError(t, 400, "invalid_field", "name")
	e.do("PUT", "/api/event-types/order.refunded", operatorToken, map[string]any{"example": []int{1}}).wantError(t, 400, "invalid_field", "example")
	e.do("PUT", "/api/event-types/order.refunded", operatorToken, map[string]any{"json_schema": "x"}).wantError(t, 400, "invalid_field", "json_schema")
	e.do("GET", "/api/event-types/order.refunded", e.alice, nil).wantError(t, 404, "not_found", "")
	e.do("DELETE", "/api/event-types/order.paid", operatorToken, nil).want(t, http.StatusNoContent)
	e.do("DELETE", "/api/event-types/order.paid", operatorToken, nil).wantError(t, 404, "not_found", "")

	// The strict setting: the outbox refuses uncataloged types with a
	// message that says what to do.
	r = e.do("PUT", "/api/settings", operatorToken, map[string]any{"strict_event_types": true}).want(t, 200)
	if r.obj["strict_event_types"] != true {
		t.Fatalf("settings: %s", r.raw)
	}
	if _, err := e.db.Pool.Exec(t.Context(), `SELECT relay.emit('order.paid')`); err == nil || !strings.Contains(err.Error(), "is not in the event-type catalog") {
		t.Fatalf("strict outbox: %v", err)
	}
}

func TestMe(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	keys := []string{"operator", "owner", "allow_http", "strict_event_types", "paused", "paused_reason",
		"can_change_settings", "can_write_event_types", "can_choose_owner", "can_test_webhooks"}
	r := e.do("GET", "/api/me", operatorToken, nil).want(t, 200)
	wantKeys(t, r.obj, keys...)
	if r.obj["operator"] != true || r.obj["owner"] != nil || r.obj["allow_http"] != false ||
		r.obj["can_change_settings"] != true || r.obj["can_test_webhooks"] != true {
		t.Fatalf("operator: %s", r.raw)
	}
	e.do("PUT", "/api/settings", operatorToken, map[string]any{"allow_http": true, "paused": true, "paused_reason": "maintenance"}).want(t, 200)
	r = e.do("GET", "/api/me", e.alice, nil).want(t, 200)
	if r.obj["operator"] != false || r.obj["owner"] != "alice" || r.obj["allow_http"] != true || r.obj["paused"] != true ||
		r.obj["paused_reason"] != nil || r.obj["can_change_settings"] != false || r.obj["can_write_event_types"] != false {
		t.Fatalf("owner: %s", r.raw)
	}
	r = e.do("GET", "/api/me", operatorToken, nil).want(t, 200)
	if r.obj["paused_reason"] != "maintenance" {
		t.Fatalf("operator sees the reason: %s", r.raw)
	}
	e2 := newEnv(t, &envOpts{noTester: true})
	if r := e2.do("GET", "/api/me", e2.bob, nil).want(t, 200); r.obj["can_test_webhooks"] != false {
		t.Fatalf("no tester: %s", r.raw)
	}
}
