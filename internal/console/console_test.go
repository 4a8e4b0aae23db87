package console_test

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/pgoutbox/relay/internal/console"
	"github.com/pgoutbox/relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestFiles checks the embedded console without a browser: every file
// index.html loads is there.
func TestFiles(t *testing.T) {
	files := console.Files()
	for _, p := range []string{"index.html", "favicon.svg", "css/console.css", "js/app.js", "js/api.js", "js/i18n.js",
		"js/ui.js", "js/state.js", "js/webhooks.js", "js/stats.js", "js/deliveries.js", "js/settings.js",
		"portal.html", "css/portal.css", "js/portal.js"} {
		if _, err := fs.Stat(files, p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range regexp.MustCompile(`(?:src|href)="([^"#:]+)"`).FindAllSubmatch(index, -1) {
		if _, err := fs.Stat(files, string(ref[1])); err != nil {
			t.Errorf("index.html refers to %s: %v", ref[1], err)
		}
	}
}

// TestConsole drives the console in headless Chromium. The subtests share
// one browser; each has its own tab, database and admin server. They run one
// after another: a dozen tabs at once on a 2-core machine, beside the rest of
// the race-enabled suite, made waits time out now and then.
func TestConsole(t *testing.T) {
	b := startBrowser(t)
	run := func(name string, f func(t *testing.T, b context.Context)) {
		t.Run(name, func(t *testing.T) {
			f(t, b)
		})
	}
	run("SignIn", testSignIn)
	run("CreateWebhook", testCreateWebhook)
	run("HTTPSValidation", testHTTPSValidation)
	run("ToggleEnabled", testToggle)
	run("TestButton", testTestButton)
	run("Delete", testDelete)
	run("Stats", testStats)
	run("DeliveriesFilter", testDeliveries)
	run("PhoneCards", testLayout)
	run("OwnerScoped", testOwnerScoped)
	run("Settings", testSettings)
	run("CatalogAndFilter", testCatalogAndFilter)
	run("FlowControl", testFlowControl)
	run("OwnerFromMe", testOwnerFromMe)
	run("SkippedDelivery", testSkippedDelivery)
	run("French", testFrench)
	// What a review found (review_test.go).
	run("Framing", testFraming)
	run("SecretGuardAndRotate", testSecretGuard)
	run("FormGuardAndSignIn", testFormGuardAndSignIn)
	run("StatsBeyond500", testStatsBeyond500)
	run("LongNamesAndPhone", testLongNamesAndPhone)
	run("ToastsAndTestNotes", testToastsAndTestNotes)
}

func testSignIn(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	e.createWebhook("Slack notifications", "https://hooks.slack.com/services/T000/B000/XXXX", []string{"thread.created"}, nil)
	tb := newTab(t, b, e, desktop)
	tb.open("")
	tb.do("the sign-in form shows", chromedp.WaitVisible(chromedp.ID("signin-form")))

	// A wrong token says so, and stays on the sign-in form.
	tb.do("signing in with a wrong token",
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token"),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.CSS("#signin-error:not(:empty)")))
	if msg := tb.text("#signin-error"); !strings.HasPrefix(msg, "Wrong token") {
		t.Fatalf("wrong token message = %q", msg)
	}
	if got := eval[string](tb, `document.getElementById('token').getAttribute('aria-invalid')`); got != "true" {
		t.Errorf("token input aria-invalid = %q", got)
	}
	tb.screenshot("wrong-token")
	if eval[bool](tb, `!document.getElementById('shell').hidden`) {
		t.Fatal("the console shows after a wrong token")
	}

	// The operator token works; it is kept in sessionStorage only.
	tb.do("signing in with the operator token",
		setValue("#token", ""),
		chromedp.SendKeys(chromedp.ID("token"), opToken),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.ID("shell")),
		chromedp.WaitVisible(chromedp.CSS(`tr.webhook-row`)))
	if who := tb.text("#whoami"); who != "Operator" {
		t.Errorf("whoami = %q", who)
	}
	if got := eval[string](tb, `sessionStorage.getItem('relay.token')`); got != opToken {
		t.Errorf("sessionStorage token = %q", got)
	}
	if got := eval[bool](tb, `localStorage.getItem('relay.token') === null`); !got {
		t.Error("the token leaked into localStorage")
	}
	if !eval[bool](tb, `!document.getElementById('nav-settings').hidden`) {
		t.Error("the operator does not see the Settings link")
	}
	tb.screenshot("signed-in")

	// A reload keeps the session of this tab.
	tb.do("reloading", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`tr.webhook-row`)))

	// Signing out forgets the token.
	tb.do("signing out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("signin-form")))
	if got := eval[bool](tb, `sessionStorage.getItem('relay.token') === null`); !got {
		t.Error("the token is still stored after signing out")
	}
}

func testCreateWebhook(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	for _, ty := range []string{"thread.created", "thread.archived", "message.sent", "analysis.completed"} {
		e.emit(ty, nil)
	}
	tb := newTab(t, b, e, desktop)
	origin := strings.TrimSuffix(e.base, "/")
	// Let the page read the clipboard back, to check what Copy put there.
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(tb.ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name, AllowWithoutSanitization: true},
			Setting:    browser.PermissionSettingGranted, Origin: origin,
			BrowserContextID: chromedp.FromContext(tb.ctx).BrowserContextID,
		}); err != nil {
			t.Fatalf("granting %s: %v", name, err)
		}
	}
	tb.signIn(opToken)
	tb.do("the empty list shows", chromedp.WaitVisible(chromedp.ID("webhooks-empty")))

	tb.do("opening the modal",
		chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.ID("create-form")),
		// Event checkboxes come from /api/event-types.
		chromedp.WaitVisible(chromedp.CSS(`#create-event-options input[value="thread.created"]`)))
	if got := eval[string](tb, `document.activeElement.id`); got != "create-name" {
		t.Errorf("focus in the new modal is on %q, want create-name", got)
	}
	if got := eval[[]bool](tb, `['create','edit','stats'].map(k => document.getElementById('wh-tab-'+k).disabled)`); fmt.Sprint(got) != "[false true true]" {
		t.Errorf("tabs disabled = %v, want Create enabled only", got)
	}
	// Submitting empty shows errors next to the fields.
	tb.do("submitting an empty form",
		chromedp.Click(chromedp.ID("create-submit")),
		chromedp.WaitVisible(chromedp.CSS("#create-name-error:not(:empty)")),
		chromedp.WaitVisible(chromedp.CSS("#create-events-error:not(:empty)")))

	tb.do("filling in the form",
		chromedp.SendKeys(chromedp.ID("create-name"), "Team Slack"),
		chromedp.SendKeys(chromedp.ID("create-url"), "https://hooks.slack.com/services/T0001/B0002/abcdefghijklmnopqrstuvwx"),
		chromedp.Click(chromedp.CSS(`#create-event-options input[value="thread.created"]`)),
		chromedp.SendKeys(chromedp.ID("create-pattern"), "message.*"),
		chromedp.Click(chromedp.ID("create-add-pattern")),
		chromedp.WaitVisible(chromedp.CSS(`#create-event-options input[value="message.*"]:checked`)),
		chromedp.Click(chromedp.ID("create-format-slack")),
	)
	tb.screenshot("form")
	tb.do("creating", chromedp.Click(chromedp.ID("create-submit")), chromedp.WaitVisible(chromedp.ID("secret-box")))

	// The secret shown is the one in the database, and it is copyable.
	secret := eval[string](tb, `document.getElementById('secret-value').value`)
	var dbSecret, format string
	var events []string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT secret, format, event_types FROM relay.subscriptions WHERE name = 'Team Slack'`).Scan(&dbSecret, &format, &events); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "whsec_") || secret != dbSecret {
		t.Fatalf("secret shown %q, stored %q", secret, dbSecret)
	}
	if format != "slack" || strings.Join(events, ",") != "thread.created,message.*" {
		t.Errorf("stored format %q events %v", format, events)
	}
	tb.do("copying the secret",
		chromedp.Click(chromedp.ID("copy-secret")),
		chromedp.WaitVisible(chromedp.CSS("#copy-secret.copied")))
	if got := tb.text("#copy-status"); got != "Copied!" {
		t.Errorf("copy status = %q", got)
	}
	if clip := eval[string](tb, `navigator.clipboard.readText()`); clip != secret {
		t.Errorf("clipboard holds %q, want the secret", clip)
	}
	tb.screenshot("secret")
	if got := eval[[]bool](tb, `['edit','stats'].map(k => document.getElementById('wh-tab-'+k).disabled)`); fmt.Sprint(got) != "[false false]" {
		t.Errorf("after creation Edit/Stats disabled = %v", got)
	}

	// Closing shows the list with the new row and one badge per event,
	// coloured by family.
	tb.do("closing the modal",
		chromedp.Click(chromedp.ID("secret-done")),
		chromedp.WaitNotPresent(chromedp.CSS("dialog.modal")),
		chromedp.WaitVisible(chromedp.CSS(`tr.webhook-row`)))
	// The list may render twice (after the create, then after the close);
	// wait for the settled row rather than read the first paint.
	tb.waitJS("the new row's name", `document.querySelector('tr.webhook-row .name-text')?.textContent === 'Team Slack'`)
	if name := tb.text("tr.webhook-row .name-text"); name != "Team Slack" {
		t.Errorf("row name = %q", name)
	}
	badges := eval[[]string](tb, `[...document.querySelectorAll('tr.webhook-row .badge')].map(b => b.textContent + '|' + b.className)`)
	if fmt.Sprint(badges) != "[thread.created|badge fam-0 message.*|badge fam-1]" {
		t.Errorf("badges = %v", badges)
	}
	// The URL is truncated, with the full URL in its tooltip.
	full := eval[string](tb, `document.querySelector('tr.webhook-row .tip').textContent`)
	shown := eval[string](tb, `document.querySelector('tr.webhook-row .url-text').textContent`)
	if full != "https://hooks.slack.com/services/T0001/B0002/abcdefghijklmnopqrstuvwx" || !strings.Contains(shown, "…") || len(shown) >= len(full) {
		t.Errorf("url shown %q, tooltip %q", shown, full)
	}
	tb.screenshot("list")

	// The secret is shown once: reopening the webhook does not show it.
	tb.do("reopening the webhook",
		chromedp.Click(chromedp.CSS(`tr.webhook-row [data-action="edit"]`)),
		chromedp.WaitVisible(chromedp.ID("edit-form")))
	if eval[bool](tb, fmt.Sprintf(`document.body.innerHTML.includes(%q) || [...document.querySelectorAll('input')].some(i => i.value === %q)`, secret, secret)) {
		t.Error("the secret is shown again after creation")
	}
	var got webhook
	e.call("GET", "/api/webhooks/"+strconv.FormatInt(eval[int64](tb, `+document.querySelector('tr.webhook-row').dataset.id`), 10), opToken, nil, &got)
	if got.Secret != "" {
		t.Error("the API returns the secret after creation")
	}

	// The modal is keyboard-usable: Tab wraps inside it, Escape closes it
	// and focus goes back to the button that opened it.
	tb.do("tabbing past the last control",
		chromedp.Focus(chromedp.ID("edit-submit")),
		chromedp.KeyEvent(kb.Tab))
	if got := eval[bool](tb, `document.querySelector('dialog.modal').contains(document.activeElement)`); !got {
		t.Error("Tab left the modal")
	}
	if got := eval[string](tb, `document.activeElement.className`); got != "modal-close" {
		t.Errorf("Tab from the last control went to %q, want the first (close button)", got)
	}
	tb.do("Shift+Tab from the first control",
		chromedp.KeyEvent(kb.Tab, chromedp.KeyModifiers(chromedp.ModifierShift)))
	if got := eval[string](tb, `document.activeElement.id`); got != "edit-submit" {
		t.Errorf("Shift+Tab from the first control went to %q, want edit-submit", got)
	}
	tb.do("pressing Escape", chromedp.KeyEvent(kb.Escape), chromedp.WaitNotPresent(chromedp.CSS("dialog.modal")))
	if got := eval[string](tb, `document.activeElement.dataset.action || ''`); got != "edit" {
		t.Errorf("focus after Escape is on %q, want the Edit button", got)
	}

	// Editing through the Edit tab.
	tb.do("editing",
		chromedp.Click(chromedp.CSS(`tr.webhook-row [data-action="edit"]`)),
		chromedp.WaitVisible(chromedp.ID("edit-form")),
		setValue("#edit-name", ""),
		chromedp.SendKeys(chromedp.ID("edit-name"), "Team Slack (prod)"),
		chromedp.Click(chromedp.ID("edit-submit")),
		chromedp.WaitNotPresent(chromedp.CSS("dialog.modal")))
	tb.waitJS("the renamed row", `document.querySelector('tr.webhook-row .name-text')?.textContent === 'Team Slack (prod)'`)

	// Inline rename from the table.
	tb.do("renaming inline",
		chromedp.Click(chromedp.CSS("tr.webhook-row .name-edit")),
		chromedp.WaitVisible(chromedp.CSS("tr.webhook-row .name-input")),
		setValue("tr.webhook-row .name-input", ""),
		chromedp.SendKeys(chromedp.CSS("tr.webhook-row .name-input"), "Alerts"+kb.Enter),
		chromedp.WaitVisible(chromedp.CSS("tr.webhook-row .name-edit")))
	tb.waitJS("the inline rename", `document.querySelector('tr.webhook-row .name-text')?.textContent === 'Alerts'`)
	var name string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT name FROM relay.subscriptions`).Scan(&name); err != nil || name != "Alerts" {
		t.Errorf("stored name %q (%v), want Alerts", name, err)
	}
}

func testHTTPSValidation(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{}) // allow_http is off
	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	tb.do("opening the modal",
		chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.ID("create-form")),
		chromedp.SendKeys(chromedp.ID("create-name"), "Plain HTTP"),
		chromedp.SendKeys(chromedp.ID("create-pattern"), "thread.*"+kb.Enter),
		// Checked as you type: the error shows before leaving the field.
		chromedp.SendKeys(chromedp.ID("create-url"), "http://hooks.example.com/x"),
		chromedp.WaitVisible(chromedp.CSS("#create-url-error:not(:empty)")))
	if msg := tb.text("#create-url-error"); !strings.Contains(msg, "https://") {
		t.Errorf("url error = %q", msg)
	}
	if got := eval[string](tb, `document.getElementById('create-url').getAttribute('aria-invalid')`); got != "true" {
		t.Errorf("aria-invalid = %q", got)
	}
	tb.screenshot("http-refused")
	// Submitting is blocked: nothing reaches the API.
	tb.do("submitting", chromedp.Click(chromedp.ID("create-submit")), chromedp.WaitVisible(chromedp.CSS("#create-form-error:not(:empty)")))
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.subscriptions`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("subscriptions after a blocked submit: %d (%v)", n, err)
	}
	if got := eval[string](tb, `document.activeElement.id`); got != "create-url" {
		t.Errorf("focus after a blocked submit on %q, want create-url", got)
	}

	// Fixing the scheme clears the error as you type.
	tb.do("fixing the URL",
		setValue("#create-url", ""),
		chromedp.SendKeys(chromedp.ID("create-url"), "https://10.1.2.3/hook"),
		chromedp.WaitNotVisible(chromedp.ID("create-url-error")))

	// A server-side validation error appears next to the field it names:
	// the API refuses a private address.
	tb.do("submitting a private address",
		chromedp.Click(chromedp.ID("create-submit")),
		chromedp.WaitVisible(chromedp.CSS("#create-url-error:not(:empty)")))
	if msg := tb.text("#create-url-error"); !strings.Contains(msg, "private") {
		t.Errorf("server error next to url = %q", msg)
	}
	tb.screenshot("server-error")
}

func testToggle(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	w := e.createWebhook("Make scenario", "https://hook.eu1.make.com/abcdef", []string{"thread.*"}, nil)
	gone := e.createWebhook("Gone endpoint", "https://example.com/gone", []string{"message.sent"}, nil)
	e.db.Exec(t, `UPDATE relay.subscriptions SET enabled = false, disabled_reason = 'endpoint answered 410 Gone' WHERE id = $1`, gone.ID)
	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	row := fmt.Sprintf(`tr.webhook-row[data-id="%d"]`, w.ID)
	tb.do("the list shows", chromedp.WaitVisible(chromedp.CSS(row)))

	// A webhook disabled by failure shows why.
	if msg := tb.text(fmt.Sprintf(`tr.webhook-row[data-id="%d"] .disabled-reason`, gone.ID)); msg != "Disabled: endpoint answered 410 Gone" {
		t.Errorf("disabled reason = %q", msg)
	}

	tb.do("switching off",
		chromedp.Click(chromedp.CSS(row+" .switch-input")),
		chromedp.WaitVisible(chromedp.CSS(row+`[data-enabled="false"]`)))
	if got, _ := e.getWebhook(w.ID); got.Enabled {
		t.Fatal("the API still says enabled after switching off")
	}
	tb.screenshot("off")
	// It persists across a reload.
	tb.do("reloading", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(row+`[data-enabled="false"]`)))
	if eval[bool](tb, fmt.Sprintf(`document.querySelector('%s .switch-input').checked`, row)) {
		t.Error("the switch is on after a reload")
	}
	tb.do("switching on",
		chromedp.Click(chromedp.CSS(row+" .switch-input")),
		chromedp.WaitVisible(chromedp.CSS(row+`[data-enabled="true"]`)))
	if got, _ := e.getWebhook(w.ID); !got.Enabled {
		t.Fatal("the API still says disabled after switching on")
	}
	// The switch is keyboard-operable (Space on the focused checkbox).
	tb.do("switching off with the keyboard",
		chromedp.Focus(chromedp.CSS(row+" .switch-input")),
		chromedp.KeyEvent(" "),
		chromedp.WaitVisible(chromedp.CSS(row+`[data-enabled="false"]`)))
	if got, _ := e.getWebhook(w.ID); got.Enabled {
		t.Fatal("the keyboard toggle did not persist")
	}
}

func testTestButton(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{allowHTTP: true})
	var hits atomic.Int32
	var gotID atomic.Value
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		gotID.Store(r.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(receiver.Close)
	// A closed port on 127.0.0.1: the connection is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/hook"
	ln.Close()
	ok := e.createWebhook("Local receiver", receiver.URL+"/hook", []string{"thread.*"}, nil)
	bad := e.createWebhook("Nobody listens", closed, []string{"thread.*"}, nil)

	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	tb.do("the list shows", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr.webhook-row[data-id="%d"]`, bad.ID))))

	tb.do("testing the live receiver", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr.webhook-row[data-id="%d"] [data-action="test"]`, ok.ID))))
	msg := tb.waitToast("success")
	if !regexp.MustCompile(`^Test of “Local receiver” sent — 200 in \d+ ms\.$`).MatchString(msg) {
		t.Errorf("success toast = %q", msg)
	}
	if hits.Load() != 1 || gotID.Load() == "" {
		t.Errorf("receiver got %d requests (webhook-id %v)", hits.Load(), gotID.Load())
	}
	tb.screenshot("success")

	tb.clearToasts()
	tb.do("testing the refused target", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr.webhook-row[data-id="%d"] [data-action="test"]`, bad.ID))))
	msg = tb.waitToast("error")
	if !strings.HasPrefix(msg, "Test of “Nobody listens” failed: ") || len(msg) < len("Test of “Nobody listens” failed: ")+5 {
		t.Errorf("failure toast = %q", msg)
	}
	if !strings.Contains(strings.ToLower(msg), "refused") {
		t.Errorf("failure toast %q does not give the reason (connection refused)", msg)
	}
	if role := eval[string](tb, `document.querySelector('.toast.toast-error').getAttribute('role')`); role != "alert" {
		t.Errorf("error toast role = %q, want alert", role)
	}
	tb.screenshot("failure")
}

func testDelete(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	keep := e.createWebhook("Keep me", "https://example.com/keep", []string{"thread.created"}, nil)
	del := e.createWebhook("Delete me", "https://example.com/delete", []string{"message.sent"}, nil)
	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	delBtn := fmt.Sprintf(`tr.webhook-row[data-id="%d"] [data-action="delete"]`, del.ID)
	tb.do("asking to delete", chromedp.Click(chromedp.CSS(delBtn)), chromedp.WaitVisible(chromedp.CSS(".confirm-modal")))
	if msg := tb.text(".confirm-message"); !strings.HasPrefix(msg, "Are you sure?") || !strings.Contains(msg, "Delete me") {
		t.Errorf("confirmation = %q", msg)
	}
	if got := eval[string](tb, `document.activeElement.id`); got != "confirm-cancel" {
		t.Errorf("focus in the confirmation on %q, want Cancel", got)
	}
	tb.screenshot("confirm")
	// Cancel keeps it.
	tb.do("cancelling", chromedp.Click(chromedp.ID("confirm-cancel")), chromedp.WaitNotPresent(chromedp.CSS(".confirm-modal")))
	if _, code := e.getWebhook(del.ID); code != http.StatusOK {
		t.Fatalf("webhook gone after Cancel: %d", code)
	}
	// Escape also cancels.
	tb.do("escaping", chromedp.Click(chromedp.CSS(delBtn)), chromedp.WaitVisible(chromedp.CSS(".confirm-modal")),
		chromedp.KeyEvent(kb.Escape), chromedp.WaitNotPresent(chromedp.CSS(".confirm-modal")))
	if _, code := e.getWebhook(del.ID); code != http.StatusOK {
		t.Fatalf("webhook gone after Escape: %d", code)
	}
	// Confirming deletes and reloads the list.
	tb.do("confirming",
		chromedp.Click(chromedp.CSS(delBtn)),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitNotPresent(chromedp.CSS(fmt.Sprintf(`tr.webhook-row[data-id="%d"]`, del.ID))))
	if msg := tb.waitToast("success"); msg != "“Delete me” was deleted." {
		t.Errorf("toast = %q", msg)
	}
	if _, code := e.getWebhook(del.ID); code != http.StatusNotFound {
		t.Fatalf("deleted webhook answers %d", code)
	}
	if n := eval[int](tb, `document.querySelectorAll('tr.webhook-row').length`); n != 1 {
		t.Errorf("%d rows after delete, want 1", n)
	}
	if _, code := e.getWebhook(keep.ID); code != http.StatusOK {
		t.Errorf("the other webhook answers %d", code)
	}
}

func testStats(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	w := e.createWebhook("Stats hook", "https://example.com/stats", []string{"thread.*"}, nil)
	other := e.createWebhook("Other", "https://example.com/other", []string{"thread.*"}, nil)
	ok := func(ago time.Duration, ms int) attempt {
		return attempt{ago: ago, ms: ms, code: 200, outcome: "succeeded", response: "ok"}
	}
	// Within 24 hours: 3 succeeded, 1 failed (two attempts), 1 pending.
	e.delivery(w, "thread.created", "succeeded", 30*time.Minute, ok(30*time.Minute, 40))
	e.delivery(w, "thread.created", "succeeded", 2*time.Hour, ok(2*time.Hour, 60))
	e.delivery(w, "thread.updated", "succeeded", 5*time.Hour, ok(5*time.Hour, 80))
	e.delivery(w, "thread.created", "failed", 3*time.Hour,
		attempt{ago: 3 * time.Hour, ms: 100, code: 503, outcome: "retry", err: "HTTP 503"},
		attempt{ago: 2*time.Hour + 50*time.Minute, ms: 120, code: 500, outcome: "failed", err: "HTTP 500", response: "boom"})
	e.delivery(w, "thread.created", "pending", 10*time.Minute)
	// 3 days ago: 2 more, 1 failed: they count in 7 days only.
	e.delivery(w, "thread.created", "succeeded", 72*time.Hour, ok(72*time.Hour, 300))
	e.delivery(w, "thread.created", "failed", 73*time.Hour, attempt{ago: 73 * time.Hour, ms: 900, outcome: "failed", err: "timeout after 10s"})
	// Another webhook's deliveries must not leak into these numbers.
	e.delivery(other, "thread.created", "failed", time.Hour, attempt{ago: time.Hour, ms: 5000, code: 500, outcome: "failed", err: "HTTP 500"})

	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	row := fmt.Sprintf(`tr.webhook-row[data-id="%d"]`, w.ID)
	tb.do("opening Stats",
		chromedp.Click(chromedp.CSS(row+` [data-action="edit"]`)),
		chromedp.WaitVisible(chromedp.ID("wh-tab-stats")),
		chromedp.Click(chromedp.ID("wh-tab-stats")),
		chromedp.WaitVisible(chromedp.CSS(`[data-stat="24h-deliveries"]`)),
		chromedp.WaitVisible(chromedp.ID("stats-chart")))
	tb.screenshot("stats")

	var detail struct {
		Stats map[string]*float64 `json:"stats"`
	}
	e.call("GET", fmt.Sprintf("/api/webhooks/%d", w.ID), opToken, nil, &detail)
	var week struct {
		Webhooks []map[string]any `json:"webhooks"`
	}
	e.call("GET", "/api/stats?days=7", opToken, nil, &week)
	var w7 map[string]any
	for _, x := range week.Webhooks {
		if int64(x["webhook_id"].(float64)) == w.ID {
			w7 = x
		}
	}
	if w7 == nil {
		t.Fatalf("webhook %d missing from /api/stats", w.ID)
	}
	num := func(v any) string {
		switch v := v.(type) {
		case nil:
			return ""
		case *float64:
			if v == nil {
				return ""
			}
			return strconv.FormatFloat(*v, 'f', -1, 64)
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
		return fmt.Sprint(v)
	}
	want := map[string]string{
		"24h-deliveries": num(detail.Stats["deliveries_24h"]),
		"24h-success":    num(detail.Stats["success_rate_24h"]),
		"24h-p50":        num(detail.Stats["p50_ms"]),
		"24h-p95":        num(detail.Stats["p95_ms"]),
		"7d-deliveries":  num(w7["deliveries"]),
		"7d-success":     num(w7["success_rate"]),
		"7d-p50":         num(w7["p50_duration_ms"]),
		"7d-p95":         num(w7["p95_duration_ms"]),
	}
	// Sanity: the fixtures give these counts.
	if want["24h-deliveries"] != "5" || want["7d-deliveries"] != "7" || want["24h-success"] != "0.75" {
		t.Fatalf("API stats unexpected: %v", want)
	}
	for stat, v := range want {
		got := eval[string](tb, fmt.Sprintf(`document.querySelector('[data-stat=%q]').dataset.value`, stat))
		if js, _ := strconv.ParseFloat(got, 64); got != v {
			if f, _ := strconv.ParseFloat(v, 64); f != js {
				t.Errorf("%s shows %q, API says %q", stat, got, v)
			}
		}
	}
	// The visible figures are the API's, formatted.
	for stat, text := range map[string]string{
		"24h-deliveries": "5", "7d-deliveries": "7", "24h-success": "75%",
		"24h-p50": fmt.Sprintf("%s ms", roundMS(want["24h-p50"])),
	} {
		if got := tb.text(fmt.Sprintf(`[data-stat=%q] .stat-value`, stat)); got != text {
			t.Errorf("%s text = %q, want %q", stat, got, text)
		}
	}
	// The chart counts the 24 hours' deliveries by outcome.
	counts := eval[map[string]int](tb, `(() => { const c = {}; for (const r of document.querySelectorAll('#stats-chart rect.seg')) { const k = r.classList[1].slice(4); c[k] = (c[k] || 0) + +r.dataset.count; } return c; })()`)
	if counts["succeeded"] != 3 || counts["failed"] != 1 || counts["pending"] != 1 {
		t.Errorf("chart counts = %v, want 3 succeeded, 1 failed, 1 pending", counts)
	}
	// Latest attempts: code, duration and error.
	rows := eval[[]string](tb, `[...document.querySelectorAll('#stats-latest tbody tr')].map(r => [...r.cells].slice(1).map(c => c.textContent).join('|'))`)
	if len(rows) != 4 {
		t.Fatalf("latest attempts rows = %v", rows)
	}
	found := false
	for _, r := range rows {
		if r == "thread.created|Failed|500|120 ms|HTTP 500" {
			found = true
		}
	}
	if !found {
		t.Errorf("latest attempts %v lack the failed one", rows)
	}
}

// roundMS formats a millisecond value the way the page does (no decimals).
func roundMS(v string) string {
	f, _ := strconv.ParseFloat(v, 64)
	return strconv.FormatFloat(f+0.0000001, 'f', 0, 64)
}

func testDeliveries(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	w := e.createWebhook("Log hook", "https://example.com/log", []string{"*"}, nil)
	for i := range 3 {
		e.delivery(w, "message.sent", "succeeded", time.Duration(i+1)*time.Minute, attempt{ago: time.Minute, ms: 30 + i, code: 200, outcome: "succeeded", response: "ok"})
	}
	failed := e.delivery(w, "thread.created", "failed", 20*time.Minute,
		attempt{ago: 20 * time.Minute, ms: 50, code: 503, outcome: "retry", err: "HTTP 503", response: "try later"},
		attempt{ago: 15 * time.Minute, ms: 70, code: 500, outcome: "failed", err: "HTTP 500", response: `{"error":"database is down"}`})
	e.delivery(w, "thread.archived", "failed", 25*time.Minute, attempt{ago: 25 * time.Minute, ms: 10000, outcome: "failed", err: "timeout after 10s"})
	e.delivery(w, "thread.created", "pending", 2*time.Minute)
	e.delivery(w, "thread.created", "failed", 10*24*time.Hour, attempt{ago: 10 * 24 * time.Hour, ms: 5, code: 404, outcome: "failed", err: "HTTP 404"})

	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	tb.do("opening the log", chromedp.Click(chromedp.ID("nav-deliveries")), chromedp.WaitVisible(chromedp.ID("deliveries-table")))
	countRows := func() int { return eval[int](tb, `document.querySelectorAll('tr.delivery-row').length`) }
	if n := countRows(); n != 6 {
		t.Fatalf("%d rows over 7 days, want 6", n)
	}

	// Filter by status.
	tb.selectValue("#f-status", "failed")
	tb.waitJS("only failed rows", `(() => { const r = document.querySelectorAll('tr.delivery-row'); return r.length === 2 && [...r].every(x => x.dataset.status === 'failed'); })()`)
	if h := eval[string](tb, `location.hash`); h != "#/deliveries?status=failed" {
		t.Errorf("hash = %q", h)
	}
	tb.screenshot("failed")
	// The period widens to 30 days: the old failure appears.
	tb.selectValue("#f-days", "30")
	tb.waitJS("three failed rows over 30 days", `document.querySelectorAll('tr.delivery-row[data-status="failed"]').length === 3`)
	tb.selectValue("#f-days", "7")
	tb.waitJS("back to 7 days", `document.querySelectorAll('tr.delivery-row').length === 2`)
	// Event type filter (a pattern).
	tb.do("filtering by event type",
		chromedp.SendKeys(chromedp.ID("f-event"), "thread.archived"+kb.Enter))
	tb.waitJS("one archived row", `document.querySelectorAll('tr.delivery-row').length === 1`)
	tb.do("clearing the event type", setValue("#f-event", ""), chromedp.SendKeys(chromedp.ID("f-event"), kb.Enter))
	tb.waitJS("two failed rows again", `document.querySelectorAll('tr.delivery-row').length === 2`)

	// A row expands to its attempts and response excerpt.
	row := fmt.Sprintf(`tr.delivery-row[data-id="%d"]`, failed)
	tb.do("expanding", chromedp.Click(chromedp.CSS(row+" .expand")),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf("#detail-%d .attempts-table", failed))))
	attempts := eval[[]string](tb, fmt.Sprintf(`[...document.querySelectorAll('#detail-%d .attempt-row')].map(r => r.cells[2].textContent + ' ' + r.cells[5].textContent)`, failed))
	if fmt.Sprint(attempts) != "[503 HTTP 503 500 HTTP 500]" {
		t.Errorf("attempts = %v", attempts)
	}
	if resp := tb.text(fmt.Sprintf("#detail-%d pre.response", failed)); resp != `{"error":"database is down"}` {
		t.Errorf("response excerpt = %q", resp)
	}
	if got := eval[string](tb, fmt.Sprintf(`document.querySelector('%s .expand').getAttribute('aria-expanded')`, row)); got != "true" {
		t.Errorf("aria-expanded = %q", got)
	}
	tb.screenshot("expanded")

	// New deliveries are found by polling. While a row is open they wait
	// behind a button rather than push the row being read down.
	rowTop := fmt.Sprintf(`document.querySelector('%s').getBoundingClientRect().top`, row)
	before := eval[float64](tb, rowTop)
	newID := e.delivery(w, "thread.created", "failed", 0, attempt{ms: 12, code: 502, outcome: "failed", err: "HTTP 502"})
	tb.do("the new delivery is announced", chromedp.WaitVisible(chromedp.ID("deliveries-new")))
	if got := tb.text("#deliveries-new"); got != "1 new — show them" {
		t.Errorf("new deliveries button = %q", got)
	}
	if eval[bool](tb, fmt.Sprintf(`!!document.querySelector('tr.delivery-row[data-id="%d"]')`, newID)) {
		t.Error("the new delivery was inserted while a row is open")
	}
	if after := eval[float64](tb, rowTop); after != before {
		t.Errorf("the open row moved from %v to %v", before, after)
	}
	tb.screenshot("new-waiting")
	tb.do("showing the new delivery",
		chromedp.Click(chromedp.ID("deliveries-new")),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr.delivery-row[data-id="%d"]`, newID))),
		chromedp.WaitNotVisible(chromedp.ID("deliveries-new")))
	// New attempts of an open row appear too.
	e.db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, error)
		VALUES ($1, 3, now(), 33, 504, 'failed', 'HTTP 504')`, failed)
	e.db.Exec(t, `UPDATE relay.deliveries SET attempts = 3, last_status_code = 504, last_error = 'HTTP 504' WHERE id = $1`, failed)
	tb.waitJS("the third attempt", fmt.Sprintf(`document.querySelectorAll('#detail-%d .attempt-row').length === 3`, failed))

	// Redeliver queues it again; under the failed filter it leaves the list.
	tb.do("redelivering", chromedp.Click(chromedp.CSS(row+` [data-action="redeliver"]`)))
	if msg := tb.waitToast("success"); msg != fmt.Sprintf("Delivery %d to “Log hook” is queued again.", failed) {
		t.Errorf("redeliver toast = %q", msg)
	}
	tb.do("the redelivered row leaves the failed list", chromedp.WaitNotPresent(chromedp.CSS(row)))
	var status string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT status FROM relay.deliveries WHERE id = $1`, failed).Scan(&status); err != nil || status != "pending" {
		t.Errorf("status after redeliver = %q (%v)", status, err)
	}
}

func testLayout(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	alice := ptr("alice")
	e.createWebhook("Slack — #support", "https://hooks.slack.com/services/T024BE7LD/B08ABCDEF/x9Yz3kQ7rLmN2pV", []string{"thread.created", "message.sent"}, nil)
	e.createWebhook("Zapier CRM sync", "https://hooks.zapier.com/hooks/catch/123456/abcdef/", []string{"thread.*", "concept.created"}, alice)
	disc := e.createWebhook("Discord #ops", "https://discord.com/api/webhooks/1187/AbCdEf-ghIJkl", []string{"analysis.completed"}, nil)
	n8n := e.createWebhook("n8n workflow", "https://n8n.example.org/webhook/relay-events", []string{"*"}, alice)
	e.db.Exec(t, `UPDATE relay.subscriptions SET enabled = false, disabled_reason = 'endpoint answered 410 Gone' WHERE id = $1`, disc.ID)
	e.db.Exec(t, `UPDATE relay.subscriptions SET consecutive_failures = 3, last_error = 'HTTP 502' WHERE id = $1`, n8n.ID)

	// Desktop: a table.
	tb := newTab(t, b, e, viewport{1280, 600, 1, false})
	tb.signIn(opToken)
	tb.do("the table shows", chromedp.WaitVisible(chromedp.CSS(`tr.webhook-row[data-id="`+strconv.FormatInt(n8n.ID, 10)+`"]`)))
	if d := eval[string](tb, `getComputedStyle(document.querySelector('#webhooks-table thead')).display`); d != "table-header-group" {
		t.Errorf("desktop thead display = %q", d)
	}
	tb.mouseAway()
	saveDoc(t, "console-desktop.png", tb.screenshot("desktop"))

	// Phone (390 px): cards.
	ph := newTab(t, b, e, phone)
	ph.signIn(opToken)
	ph.do("the cards show", chromedp.WaitVisible(chromedp.CSS(`tr.webhook-row[data-id="`+strconv.FormatInt(n8n.ID, 10)+`"]`)))
	if w := eval[int](ph, `window.innerWidth`); w != 390 {
		t.Errorf("phone viewport width = %d", w)
	}
	layout := eval[map[string]any](ph, `(() => {
		const row = document.querySelector('tr.webhook-row');
		const cs = getComputedStyle(row);
		return {
			thead: getComputedStyle(document.querySelector('#webhooks-table thead')).display,
			row: cs.display, radius: cs.borderTopLeftRadius,
			label: getComputedStyle(row.querySelector('.cell-url'), '::before').content,
			overflow: document.documentElement.scrollWidth > window.innerWidth,
		};
	})()`)
	if layout["thead"] != "none" || layout["row"] != "block" || layout["radius"] == "0px" || layout["label"] != `"URL"` || layout["overflow"] != false {
		t.Errorf("phone layout = %v, want cards (no header, block rows with labels, no horizontal scroll)", layout)
	}
	ph.mouseAway()
	saveDoc(t, "console-phone.png", ph.screenshot("phone"))

	// The delivery log is cards too, without sideways scrolling.
	e.delivery(n8n, "thread.created", "failed", 5*time.Minute, attempt{ago: 5 * time.Minute, ms: 812, code: 502, outcome: "failed", err: "HTTP 502", response: "Bad Gateway"})
	e.delivery(disc, "analysis.completed", "succeeded", 9*time.Minute, attempt{ago: 9 * time.Minute, ms: 95, code: 204, outcome: "succeeded"})
	ph.do("opening the log on the phone",
		chromedp.Click(chromedp.ID("nav-deliveries")),
		chromedp.WaitVisible(chromedp.CSS("tr.delivery-row")))
	cards := eval[map[string]any](ph, `({
		row: getComputedStyle(document.querySelector('tr.delivery-row')).display,
		overflow: document.documentElement.scrollWidth > window.innerWidth,
	})`)
	if cards["row"] != "flex" || cards["overflow"] != false {
		t.Errorf("phone delivery log = %v, want cards without horizontal scroll", cards)
	}
	ph.mouseAway()
	ph.screenshot("phone-deliveries")
	ph.do("back to the list", chromedp.Click(chromedp.ID("nav-webhooks")), chromedp.WaitVisible(chromedp.ID("new-webhook")))

	// The modal fills the phone screen and still works.
	ph.do("opening the modal on the phone", chromedp.Click(chromedp.ID("new-webhook")), chromedp.WaitVisible(chromedp.ID("create-form")))
	// (The opening animation scales it for a moment: wait for it to end.)
	ph.waitJS("a full-width modal", `Math.round(document.querySelector('dialog.modal').getBoundingClientRect().width) === 390`)
	ph.screenshot("phone-modal")
}

func testOwnerScoped(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	alice, bob := ptr("alice"), ptr("bob")
	a1 := e.createWebhook("Alice Slack", "https://example.com/a1", []string{"thread.created"}, alice)
	a2 := e.createWebhook("Alice Zapier", "https://example.com/a2", []string{"message.*"}, alice)
	b1 := e.createWebhook("Bob Discord", "https://example.com/b1", []string{"thread.created"}, bob)
	op := e.createWebhook("Operator audit", "https://example.com/op", []string{"*"}, nil)
	e.delivery(a1, "thread.created", "succeeded", time.Minute, attempt{ms: 20, code: 200, outcome: "succeeded"})
	e.delivery(b1, "thread.created", "failed", time.Minute, attempt{ms: 20, code: 500, outcome: "failed", err: "HTTP 500"})
	token := e.ownerToken("alice")

	tb := newTab(t, b, e, desktop)
	tb.signIn(token)
	tb.do("alice's list", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr.webhook-row[data-id="%d"]`, a2.ID))))
	ids := eval[[]int64](tb, `[...document.querySelectorAll('tr.webhook-row')].map(r => +r.dataset.id)`)
	if fmt.Sprint(ids) != fmt.Sprint([]int64{a1.ID, a2.ID}) {
		t.Errorf("alice sees webhooks %v, want %v (not bob's %d nor the operator's %d)", ids, []int64{a1.ID, a2.ID}, b1.ID, op.ID)
	}
	tb.waitJS("the owner badge", `document.getElementById('whoami').textContent === 'Owner: alice'`)
	if eval[bool](tb, `!document.getElementById('nav-settings').hidden`) {
		t.Error("an owner token sees the Settings link")
	}
	tb.screenshot("owner")
	// Settings cannot be reached by hand either.
	tb.do("going to #/settings", chromedp.Navigate(e.base+"/#/settings"), chromedp.WaitVisible(chromedp.CSS("tr.webhook-row")))
	if eval[bool](tb, `!document.getElementById('view-settings').hidden`) {
		t.Error("an owner token opened the settings view")
	}
	// Deliveries: only alice's.
	tb.do("alice's deliveries", chromedp.Click(chromedp.ID("nav-deliveries")), chromedp.WaitVisible(chromedp.ID("deliveries-table")))
	names := eval[[]string](tb, `[...document.querySelectorAll('tr.delivery-row')].map(r => r.cells[2].textContent)`)
	if fmt.Sprint(names) != "[Alice Slack]" {
		t.Errorf("alice sees deliveries of %v", names)
	}
	// Creating as alice makes an alice webhook (no owner field sent).
	tb.do("creating as alice",
		chromedp.Click(chromedp.ID("nav-webhooks")),
		chromedp.WaitVisible(chromedp.ID("new-webhook")),
		chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.ID("create-form")),
		chromedp.SendKeys(chromedp.ID("create-name"), "Alice n8n"),
		chromedp.SendKeys(chromedp.ID("create-url"), "https://n8n.example.com/hook"),
		chromedp.SendKeys(chromedp.ID("create-pattern"), "thread.*"+kb.Enter),
		chromedp.Click(chromedp.ID("create-submit")),
		chromedp.WaitVisible(chromedp.ID("secret-box")))
	var owner string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT owner FROM relay.subscriptions WHERE name = 'Alice n8n'`).Scan(&owner); err != nil || owner != "alice" {
		t.Errorf("owner of the new webhook = %q (%v)", owner, err)
	}
}

func testSettings(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	tb.do("opening settings", chromedp.Click(chromedp.ID("nav-settings")), chromedp.WaitVisible(chromedp.ID("settings-form")))

	// Pause with a reason: the banner says so; resume clears it.
	tb.do("pausing",
		chromedp.SendKeys(chromedp.ID("pause-reason"), "maintenance"),
		chromedp.Click(chromedp.ID("pause-toggle")),
		chromedp.WaitVisible(chromedp.ID("paused-banner")))
	var settings struct {
		Paused       bool    `json:"paused"`
		PausedReason *string `json:"paused_reason"`
		AbsenceDays  []string
		Window       *struct {
			Start    string `json:"start"`
			End      string `json:"end"`
			TimeZone string `json:"time_zone"`
		} `json:"window"`
		Threshold int     `json:"failure_alert_threshold"`
		Retention float64 `json:"retention_seconds"`
	}
	e.call("GET", "/api/settings", opToken, nil, &settings)
	if !settings.Paused || settings.PausedReason == nil || *settings.PausedReason != "maintenance" {
		t.Fatalf("after pause: %+v", settings)
	}
	if msg := tb.text("#paused-banner"); !strings.Contains(msg, "paused (maintenance)") {
		t.Errorf("banner = %q", msg)
	}
	tb.screenshot("paused")
	tb.do("resuming", chromedp.Click(chromedp.ID("pause-toggle")), chromedp.WaitNotVisible(chromedp.ID("paused-banner")))
	e.call("GET", "/api/settings", opToken, nil, &settings)
	if settings.Paused {
		t.Fatal("still paused after resume")
	}

	// Absence days, window with time zone, threshold, retention.
	tb.clearToasts()
	tb.do("editing the settings",
		chromedp.Click(chromedp.ID("s-day-saturday")),
		chromedp.Click(chromedp.ID("s-day-sunday")),
		chromedp.Click(chromedp.ID("s-window-on")),
		chromedp.WaitVisible(chromedp.ID("s-window-start")),
		setValue("#s-window-start", "08:00"),
		setValue("#s-window-end", "20:30"),
		setValue("#s-window-tz", "Europe/Paris"),
		setValue("#s-threshold", "3"),
		setValue("#s-retention", "14"),
		chromedp.Click(chromedp.ID("settings-save")))
	if msg := tb.waitToast("success"); msg != "Settings saved." {
		t.Errorf("toast = %q", msg)
	}
	e.call("GET", "/api/settings", opToken, nil, &settings)
	var days []string
	_ = e.db.Pool.QueryRow(context.Background(), `SELECT absence_days FROM relay.settings`).Scan(&days)
	if fmt.Sprint(days) != "[saturday sunday]" || settings.Window == nil || settings.Window.Start != "08:00" ||
		settings.Window.End != "20:30" || settings.Window.TimeZone != "Europe/Paris" || settings.Threshold != 3 || settings.Retention != 14*86400 {
		t.Errorf("settings after save: days %v %+v window %+v", days, settings, settings.Window)
	}
	tb.screenshot("saved")

	// A bad time zone is refused next to the window fields.
	tb.do("saving a bad time zone",
		chromedp.WaitVisible(chromedp.ID("s-window-tz")),
		setValue("#s-window-tz", "Mars/Olympus"),
		chromedp.Click(chromedp.ID("settings-save")),
		chromedp.WaitVisible(chromedp.CSS("#s-window-error:not(:empty)")))
}

func testFrench(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	e.createWebhook("Notifications Slack", "https://hooks.slack.com/services/T/B/X", []string{"thread.created"}, nil)
	tb := newTab(t, b, e, desktop)
	// A browser that prefers French gets French.
	if _, err := chromedp.Call(tb.ctx, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{
		UserAgent: "Mozilla/5.0 (X11; Linux x86_64) relay-console-test", AcceptLanguage: "fr-FR,fr",
	}); err != nil {
		t.Fatal(err)
	}
	tb.open("")
	tb.do("the sign-in form shows", chromedp.WaitVisible(chromedp.ID("signin-form")))
	if got := tb.text("#signin-form h1"); got != "Connexion" {
		t.Errorf("sign-in title = %q, want Connexion", got)
	}
	if got := eval[string](tb, `document.documentElement.lang`); got != "fr" {
		t.Errorf("html lang = %q", got)
	}
	tb.do("signing in with a wrong token",
		chromedp.SendKeys(chromedp.ID("token"), "nope"),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.CSS("#signin-error:not(:empty)")))
	if msg := tb.text("#signin-error"); !strings.HasPrefix(msg, "Jeton incorrect") {
		t.Errorf("wrong token message = %q", msg)
	}
	tb.do("signing in",
		setValue("#token", ""),
		chromedp.SendKeys(chromedp.ID("token"), opToken),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.CSS("tr.webhook-row")))
	if got := tb.text("#webhooks-title"); got != "Webhooks" {
		t.Errorf("title = %q", got)
	}
	if got := tb.text(`tr.webhook-row [data-action="delete"]`); got != "Supprimer" {
		t.Errorf("delete button = %q", got)
	}
	tb.screenshot("fr")
	// The switch changes the language at once, and is remembered.
	tb.selectValue("#lang", "en")
	tb.waitJS("English", `document.querySelector('tr.webhook-row [data-action="delete"]')?.textContent === 'Delete'`)
	if got := tb.text("#nav-deliveries"); got != "Deliveries" {
		t.Errorf("nav after switching = %q", got)
	}
	tb.do("reloading", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("tr.webhook-row")))
	if got := tb.text(`tr.webhook-row [data-action="delete"]`); got != "Delete" {
		t.Errorf("after reload = %q, want the chosen English", got)
	}
	// Both languages have every key.
	missing := eval[[]string](tb, `import('./js/i18n.js').then(m => {
		const {en, fr} = m.DICTIONARIES;
		return [...Object.keys(en).filter(k => !(k in fr)).map(k => 'fr lacks ' + k), ...Object.keys(fr).filter(k => !(k in en)).map(k => 'en lacks ' + k)];
	})`)
	if len(missing) > 0 {
		t.Errorf("dictionaries differ: %v", missing)
	}
}
