package console_test

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// testFlowControl: the webhook form sets and lifts the rate limit and
// per-key ordering, and the list says when a webhook is held or its
// circuit is open.
func testFlowControl(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	tb.do("creating a paced, ordered webhook",
		chromedp.WaitVisible(chromedp.ID("webhooks-empty")),
		chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.ID("create-form")),
		chromedp.SendKeys(chromedp.ID("create-name"), "Paced"),
		chromedp.SendKeys(chromedp.ID("create-url"), "https://hooks.example.com/paced"),
		chromedp.SendKeys(chromedp.ID("create-pattern"), "order.*"),
		chromedp.SendKeys(chromedp.ID("create-rate_limit"), "-1"),
		chromedp.Click(chromedp.ID("create-submit")),
		chromedp.WaitVisible(chromedp.CSS("#create-rate_limit-error:not(:empty)")))
	tb.do("fixing the rate",
		setValue("#create-rate_limit", "2.5"),
		chromedp.Click(chromedp.ID("create-ordering")),
		chromedp.Click(chromedp.ID("create-submit")),
		chromedp.WaitVisible(chromedp.ID("secret-box")))
	var rate *float64
	var ordering string
	read := func() {
		t.Helper()
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT rate_limit, ordering FROM relay.subscriptions WHERE name = 'Paced'`).Scan(&rate, &ordering); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if rate == nil || *rate != 2.5 || ordering != "key" {
		t.Fatalf("stored rate_limit %v ordering %q", rate, ordering)
	}
	tb.do("editing: lifting the limit and the order",
		chromedp.Click(chromedp.ID("secret-done")),
		// The secret was not copied: closing asks first.
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitVisible(chromedp.CSS(`tr.webhook-row button[data-action="edit"]`)),
		chromedp.Click(chromedp.CSS(`tr.webhook-row button[data-action="edit"]`)),
		chromedp.WaitVisible(chromedp.ID("edit-form")))
	if got := eval[string](tb, `document.getElementById('edit-rate_limit').value`); got != "2.5" {
		t.Errorf("edit form rate = %q", got)
	}
	if !eval[bool](tb, `document.getElementById('edit-ordering').checked`) {
		t.Error("edit form does not show the ordering")
	}
	tb.do("saving",
		setValue("#edit-rate_limit", ""),
		chromedp.Click(chromedp.ID("edit-ordering")),
		chromedp.Click(chromedp.ID("edit-submit")),
		chromedp.WaitNotPresent(chromedp.ID("edit-form")))
	read()
	if rate != nil || ordering != "none" {
		t.Fatalf("after edit: rate_limit %v ordering %q", rate, ordering)
	}
	e.db.Exec(t, `UPDATE relay.subscriptions SET circuit_opened_at = now(), held_until = now() + interval '1 minute', hold_reason = 'circuit open' WHERE name = 'Paced'`)
	tb.open("")
	tb.do("the list shows the open circuit", chromedp.WaitVisible(chromedp.CSS("tr.webhook-row .flow-state")))
	if got := tb.text("tr.webhook-row .flow-state"); !strings.Contains(got, "Circuit open") {
		t.Errorf("flow state = %q", got)
	}
}
