package console_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// testCatalogAndFilter: on a fresh install (nothing emitted) the create
// modal lists the event-type catalog with its descriptions; the filter is
// checked by the server against the catalog's example payload, a bad path
// is shown on the field, and what is saved is the filter and the
// outside-window choice.
func testCatalogAndFilter(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	if code := e.call("PUT", "/api/event-types/order.paid", opToken, map[string]any{
		"description": "An order was paid.",
		"example":     map[string]any{"order_id": "o_1", "amount": 120},
	}, nil); code != http.StatusCreated {
		t.Fatalf("cataloging order.paid: %d", code)
	}
	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	tb.do("opening the modal",
		chromedp.WaitVisible(chromedp.ID("webhooks-empty")),
		chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.CSS(`#create-event-options input[value="order.paid"]`)))
	desc := eval[string](tb, `document.querySelector('#create-event-options input[value="order.paid"]').closest('label').querySelector('.check-desc').textContent`)
	if desc != "An order was paid." {
		t.Errorf("catalog description shown = %q", desc)
	}
	if eval[bool](tb, `!!document.querySelector('#create-event-options input[value="webhook.test"]')`) {
		t.Error("the test event is offered as something to subscribe to")
	}

	tb.do("filling in and checking a filter that matches",
		chromedp.SendKeys(chromedp.ID("create-name"), "Big orders"),
		chromedp.SendKeys(chromedp.ID("create-url"), "https://hooks.example.com/orders"),
		chromedp.Click(chromedp.CSS(`#create-event-options input[value="order.paid"]`)),
		chromedp.SendKeys(chromedp.ID("create-filter"), "$.amount ? (@ > 100)"),
		chromedp.Click(chromedp.ID("create-check-filter")),
		chromedp.WaitVisible(chromedp.CSS("#create-filter-result.filter-yes")))
	// The sample came from the catalog's example.
	if got := eval[float64](tb, `JSON.parse(document.getElementById('create-sample').value).amount`); got != 120 {
		t.Errorf("sample payload amount = %v, want the catalog example's 120", got)
	}
	if got := tb.text("#create-filter-result"); !strings.Contains(got, "matches (path)") {
		t.Errorf("result = %q", got)
	}
	tb.screenshot("filter-matches")

	tb.do("a bad path is shown on the field",
		setValue("#create-filter", "$.amount ? (@ >"),
		chromedp.Click(chromedp.ID("create-check-filter")),
		chromedp.WaitVisible(chromedp.CSS("#create-filter-error:not(:empty)")))
	if got := tb.text("#create-filter-error"); !strings.Contains(got, "syntax error") {
		t.Errorf("filter error = %q", got)
	}
	tb.do("a filter that does not match",
		setValue("#create-filter", `$.amount > 1000`),
		chromedp.Click(chromedp.ID("create-check-filter")),
		chromedp.WaitVisible(chromedp.CSS("#create-filter-result.filter-no")))
	if got := tb.text("#create-filter-result"); !strings.Contains(got, "does not match (condition)") {
		t.Errorf("result = %q", got)
	}
	tb.do("creating with skip outside the window",
		setValue("#create-filter", "$.amount ? (@ > 100)"),
		chromedp.Click(chromedp.ID("create-outside-skip")),
		chromedp.Click(chromedp.ID("create-submit")),
		chromedp.WaitVisible(chromedp.ID("secret-box")))
	var filter, outside string
	if err := e.db.Pool.QueryRow(context.Background(),
		`SELECT filter::text, outside_window FROM relay.subscriptions WHERE name = 'Big orders'`).Scan(&filter, &outside); err != nil {
		t.Fatal(err)
	}
	if filter != `$."amount"?(@ > 100)` || outside != "skip" {
		t.Fatalf("stored filter %q outside_window %q", filter, outside)
	}

	// Editing shows what was saved, and clearing the filter removes it.
	tb.do("editing",
		chromedp.Click(chromedp.ID("secret-done")),
		// The secret was not copied: closing asks first.
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitVisible(chromedp.CSS(`tr.webhook-row button[data-action="edit"]`)),
		chromedp.Click(chromedp.CSS(`tr.webhook-row button[data-action="edit"]`)),
		chromedp.WaitVisible(chromedp.ID("edit-form")))
	if got := eval[string](tb, `document.getElementById('edit-filter').value`); got != filter {
		t.Errorf("edit form filter = %q", got)
	}
	if !eval[bool](tb, `document.getElementById('edit-outside-skip').checked`) {
		t.Error("edit form does not show skip")
	}
	tb.do("clearing the filter",
		setValue("#edit-filter", ""),
		chromedp.Click(chromedp.ID("edit-outside-defer")),
		chromedp.Click(chromedp.ID("edit-submit")),
		chromedp.WaitNotPresent(chromedp.ID("edit-form")))
	var cleared *string
	if err := e.db.Pool.QueryRow(context.Background(),
		`SELECT filter::text, outside_window FROM relay.subscriptions WHERE name = 'Big orders'`).Scan(&cleared, &outside); err != nil {
		t.Fatal(err)
	}
	if cleared != nil || outside != "defer" {
		t.Fatalf("after edit: filter %v outside_window %q", cleared, outside)
	}
}

// testSkippedDelivery: a delivery skipped outside its window shows in the
// log with its reason, the status filter finds it, and it can be
// redelivered.
func testSkippedDelivery(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	w := e.createWebhook("Office hours", "https://hooks.example.com/office", []string{"*"}, nil)
	const reason = "skipped: outside the subscription's delivery window 09:00-18:00 Europe/Paris (outside_window = skip)"
	skipped := e.delivery(w, "order.paid", "skipped", time.Minute, attempt{ago: time.Minute, outcome: "skipped", err: reason})
	e.delivery(w, "order.paid", "succeeded", 2*time.Minute, attempt{ago: 2 * time.Minute, ms: 20, code: 200, outcome: "succeeded"})
	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	tb.open("#/deliveries")
	tb.do("the log", chromedp.WaitVisible(chromedp.ID("deliveries-table")))
	tb.selectValue("#f-status", "skipped")
	tb.waitJS("only the skipped row", `(() => { const r = document.querySelectorAll('tr.delivery-row'); return r.length === 1 && r[0].dataset.status === 'skipped'; })()`)
	row := fmt.Sprintf(`tr.delivery-row[data-id="%d"]`, skipped)
	if got := tb.text(row + " .error-text"); got != reason {
		t.Errorf("reason shown = %q", got)
	}
	if got := tb.text(row + " .status-skipped"); got != "Skipped" {
		t.Errorf("status badge = %q", got)
	}
	tb.screenshot("skipped")
	tb.do("redelivering", chromedp.Click(chromedp.CSS(row+` button[data-action="redeliver"]`)))
	tb.waitToast("success")
	var status string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT status FROM relay.deliveries WHERE id = $1`, skipped).Scan(&status); err != nil || status != "pending" {
		t.Fatalf("after redeliver: %q %v", status, err)
	}
}

// testOwnerFromMe: an owner token with no webhook yet is named in the top
// bar (from GET /api/me, not guessed from its webhooks), and http:// URLs
// are accepted as you type when the server allows them.
func testOwnerFromMe(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{allowHTTP: true})
	tb := newTab(t, b, e, desktop)
	tb.signIn(e.ownerToken("carol"))
	tb.waitJS("the owner badge", `document.getElementById('whoami').textContent === 'Owner: carol'`)
	tb.do("typing an http:// URL",
		chromedp.WaitVisible(chromedp.ID("new-webhook")),
		chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.ID("create-form")),
		chromedp.SendKeys(chromedp.ID("create-url"), "http://hooks.example.com/x"))
	if got := tb.text("#create-url-error"); got != "" {
		t.Errorf("http:// refused as you type although allow_http is on: %q", got)
	}
}
