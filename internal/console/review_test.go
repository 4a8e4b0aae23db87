package console_test

// Browser tests of what a review of the console found (issue 16): framing
// by other origins, the show-once secret and Rotate, half-filled forms,
// the hourly chart past 500 deliveries, long names, the phone layout of a
// delivery's attempts, toasts, the tooltip after a tap, the test button on
// a disabled webhook, and what the sign-in page says.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// grantClipboard lets the page write and read the clipboard.
func (tb *tab) grantClipboard() {
	tb.t.Helper()
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(tb.ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name, AllowWithoutSanitization: true},
			Setting:    browser.PermissionSettingGranted, Origin: tb.e.base,
			BrowserContextID: chromedp.FromContext(tb.ctx).BrowserContextID,
		}); err != nil {
			tb.t.Fatalf("granting %s: %v", name, err)
		}
	}
}

// noOverflow fails when the page scrolls sideways.
func (tb *tab) noOverflow(where string) {
	tb.t.Helper()
	if w := eval[map[string]float64](tb, `({scroll: document.documentElement.scrollWidth, inner: window.innerWidth})`); w["scroll"] > w["inner"] {
		tb.t.Errorf("%s: the page is %v px wide in a %v px window", where, w["scroll"], w["inner"])
	}
}

// childFrames returns the URL (or the unreachable URL) of each frame of
// the page.
func (tb *tab) childFrames() []*cdp.Frame {
	tb.t.Helper()
	res, err := chromedp.Call(tb.ctx, page.GetFrameTree, cdp.Empty{})
	if err != nil {
		tb.t.Fatalf("reading the frame tree: %v", err)
	}
	var out []*cdp.Frame
	for _, c := range res.FrameTree.ChildFrames {
		out = append(out, c.Frame)
	}
	return out
}

// testFraming: a page on another origin cannot show the console in a
// frame, because the server sends frame-ancestors 'none' (the <meta> CSP
// the console had is ignored by browsers for that directive).
func testFraming(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	// The hostile site, on another port of 127.0.0.1 (another origin). It
	// also frames a page of its own, which proves a frame can load here.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/own" {
			fmt.Fprint(w, `<!doctype html><title>own</title><p id="own">own page</p>`)
			return
		}
		fmt.Fprintf(w, `<!doctype html><title>evil</title>
			<iframe id="own" src="/own"></iframe>
			<iframe id="console" src="%s/"></iframe>`, e.base)
	}))
	t.Cleanup(evil.Close)
	tb := newTab(t, b, e, desktop)
	tb.do("opening the framing page", chromedp.Navigate(evil.URL))
	// Wait until both frames have settled: the page's own, and the
	// console's, which the browser replaces with an error page.
	blocked := func(f *cdp.Frame) bool {
		return f.UnreachableURL != "" || strings.HasPrefix(f.URL, "chrome-error:")
	}
	var own, console *cdp.Frame
	deadline := time.Now().Add(20 * time.Second)
	for {
		own, console = nil, nil
		for _, f := range tb.childFrames() {
			if strings.HasSuffix(f.URL, "/own") {
				own = f
			} else {
				console = f
			}
		}
		if own != nil && console != nil && (blocked(console) || strings.HasPrefix(console.URL, e.base)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the frames did not load: own %+v, console %+v", own, console)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !blocked(console) {
		t.Fatalf("the console loaded inside another origin's frame: %+v", console)
	}
	if blocked(own) {
		t.Fatalf("the control frame did not load either: %+v", own)
	}
	tb.screenshot("framed")

	// The headers are on every response, the page as well as the API.
	for _, path := range []string{"/", "/js/app.js", "/api/webhooks"} {
		res, err := http.Get(e.base + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || res.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: CSP %q, X-Frame-Options %q", path, csp, res.Header.Get("X-Frame-Options"))
		}
	}
}

// testSecretGuard: the show-once secret cannot be lost to one keystroke,
// and Rotate shows a new one once, with the old one's grace period.
func testSecretGuard(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	tb := newTab(t, b, e, desktop)
	tb.grantClipboard()
	tb.signIn(opToken)
	tb.do("creating a webhook",
		chromedp.WaitVisible(chromedp.ID("new-webhook")),
		chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.ID("create-form")),
		chromedp.SendKeys(chromedp.ID("create-name"), "Secret keeper"),
		chromedp.SendKeys(chromedp.ID("create-url"), "https://hooks.example.com/keeper"),
		chromedp.SendKeys(chromedp.ID("create-pattern"), "thread.*"+kb.Enter),
		chromedp.Click(chromedp.ID("create-submit")),
		chromedp.WaitVisible(chromedp.ID("secret-box")))

	// Escape, ×, Done: each asks while the secret was not copied.
	for _, how := range []struct {
		name   string
		action chromedp.Action[chromedp.Void]
	}{
		{"Escape", chromedp.KeyEvent(kb.Escape)},
		{"the close button", chromedp.Click(chromedp.CSS("dialog.webhook-modal .modal-close"))},
		{"Done", chromedp.Click(chromedp.ID("secret-done"))},
	} {
		tb.do("closing with "+how.name, how.action, chromedp.WaitVisible(chromedp.CSS(".confirm-modal")))
		if msg := tb.text(".confirm-message"); !strings.Contains(msg, "has not been copied") {
			t.Errorf("%s: confirmation %q", how.name, msg)
		}
		if got := eval[string](tb, `document.activeElement.id`); got != "confirm-cancel" {
			t.Errorf("%s: focus on %q, want the safe choice", how.name, got)
		}
		tb.do("going back to the secret", chromedp.Click(chromedp.ID("confirm-cancel")),
			chromedp.WaitNotPresent(chromedp.CSS(".confirm-modal")))
		if !eval[bool](tb, `!!document.querySelector('dialog.webhook-modal #secret-box')`) {
			t.Fatalf("%s: the secret is gone after choosing to go back", how.name)
		}
	}
	tb.screenshot("secret-guard")
	// Closing anyway is possible.
	tb.do("closing without copying",
		chromedp.KeyEvent(kb.Escape),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitNotPresent(chromedp.CSS("dialog.modal")))

	// Rotate from the Edit tab, keeping the old secret for an hour.
	var id int64
	var oldSecret string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT id, secret FROM relay.subscriptions`).Scan(&id, &oldSecret); err != nil {
		t.Fatal(err)
	}
	row := fmt.Sprintf(`tr.webhook-row[data-id="%d"]`, id)
	tb.do("opening Edit", chromedp.WaitVisible(chromedp.CSS(row)), chromedp.Click(chromedp.CSS(row+` [data-action="edit"]`)),
		chromedp.WaitVisible(chromedp.ID("edit-rotate")))
	tb.selectValue("#edit-rotate-grace", "3600")
	tb.do("asking to rotate", chromedp.Click(chromedp.ID("edit-rotate")), chromedp.WaitVisible(chromedp.CSS(".confirm-modal")))
	if msg := tb.text(".confirm-message"); !strings.Contains(msg, "1 hour") || !strings.Contains(msg, "shown once") {
		t.Errorf("rotate confirmation %q", msg)
	}
	tb.do("rotating", chromedp.Click(chromedp.ID("confirm-ok")), chromedp.WaitVisible(chromedp.ID("secret-box")))
	shown := eval[string](tb, `document.getElementById('secret-value').value`)
	var newSecret string
	var graceLeft float64
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT secret,
		extract(epoch FROM (previous_secrets->0->>'expires_at')::timestamptz - now())
		FROM relay.subscriptions WHERE id = $1 AND previous_secrets->0->>'secret' = $2`, id, oldSecret).Scan(&newSecret, &graceLeft); err != nil {
		t.Fatalf("the old secret is not kept for its grace period: %v", err)
	}
	if shown != newSecret || shown == oldSecret || graceLeft < 3500 || graceLeft > 3700 {
		t.Errorf("shown %q, stored %q (old %q), grace left %v s", shown, newSecret, oldSecret, graceLeft)
	}
	if text := tb.text("#secret-text"); !strings.Contains(text, "The previous secret keeps signing until") {
		t.Errorf("rotated secret text %q", text)
	}
	tb.screenshot("rotated")
	tb.do("closing before copying asks", chromedp.Click(chromedp.ID("secret-done")), chromedp.WaitVisible(chromedp.CSS(".confirm-modal")),
		chromedp.Click(chromedp.ID("confirm-cancel")), chromedp.WaitNotPresent(chromedp.CSS(".confirm-modal")))
	// Once copied, Done closes at once.
	tb.do("copying, then Done",
		chromedp.Click(chromedp.ID("copy-secret")),
		chromedp.WaitVisible(chromedp.CSS("#copy-secret.copied")),
		chromedp.Click(chromedp.ID("secret-done")),
		chromedp.WaitNotPresent(chromedp.CSS("dialog.modal")))
	if clip := eval[string](tb, `navigator.clipboard.readText()`); clip != newSecret {
		t.Errorf("clipboard holds %q, want the new secret", clip)
	}
}

// testFormGuardAndSignIn: the sign-in page says where tokens come from,
// focus lands on the view after signing in, Escape does not silently drop
// a half-filled form, and the URL hint does not say "HTTPS only" on a
// server that accepts http://.
func testFormGuardAndSignIn(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{allowHTTP: true})
	tb := newTab(t, b, e, desktop)
	tb.open("")
	tb.do("the sign-in form shows", chromedp.WaitVisible(chromedp.ID("signin-help")))
	help := tb.text("#signin-form")
	for _, want := range []string{"relay-data/operator-token", "--admin-token", "relay tokens create --owner"} {
		if !strings.Contains(help, want) {
			t.Errorf("the sign-in page does not say %q:\n%s", want, help)
		}
	}
	tb.screenshot("signin-help")
	tb.do("signing in",
		chromedp.SendKeys(chromedp.ID("token"), opToken+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("shell")))
	tb.waitJS("focus on the view's heading", `document.activeElement && document.activeElement.id === 'webhooks-title'`)

	tb.do("typing a name in a new webhook",
		chromedp.WaitVisible(chromedp.ID("new-webhook")),
		chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.ID("create-form")),
		chromedp.SendKeys(chromedp.ID("create-name"), "Half done"))
	if hint := tb.text("#create-url-hint"); strings.Contains(hint, "HTTPS only") || !strings.Contains(hint, "http://") {
		t.Errorf("URL hint with allow_http on: %q", hint)
	}
	tb.do("pressing Escape", chromedp.KeyEvent(kb.Escape), chromedp.WaitVisible(chromedp.CSS(".confirm-modal")))
	if title := tb.text(".confirm-modal .modal-title"); title != "Discard your changes?" {
		t.Errorf("confirmation title %q", title)
	}
	tb.do("keeping on", chromedp.Click(chromedp.ID("confirm-cancel")), chromedp.WaitNotPresent(chromedp.CSS(".confirm-modal")))
	if v := eval[string](tb, `document.getElementById('create-name').value`); v != "Half done" {
		t.Fatalf("the name is %q after choosing to keep editing", v)
	}
	tb.do("discarding", chromedp.KeyEvent(kb.Escape), chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")), chromedp.WaitNotPresent(chromedp.CSS("dialog.modal")))
	// An untouched form closes at once.
	tb.do("an untouched form closes on Escape",
		chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.ID("create-form")),
		chromedp.KeyEvent(kb.Escape),
		chromedp.WaitNotPresent(chromedp.CSS("dialog.modal")))

	// Without allow_http the hint says HTTPS only, and means it.
	e2 := newEnv(t, envOptions{})
	tb2 := newTab(t, b, e2, desktop)
	tb2.signIn(opToken)
	tb2.do("opening a new webhook", chromedp.WaitVisible(chromedp.ID("new-webhook")), chromedp.Click(chromedp.ID("new-webhook")),
		chromedp.WaitVisible(chromedp.ID("create-url-hint")))
	if hint := tb2.text("#create-url-hint"); !strings.Contains(hint, "HTTPS only") {
		t.Errorf("URL hint with allow_http off: %q", hint)
	}
}

// testStatsBeyond500: the chart of a webhook with 1,022 deliveries in a
// day counts all of them (it bucketed the first 500 of the log before).
func testStatsBeyond500(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{})
	w := e.createWebhook("Busy", "https://example.com/busy", []string{"*"}, nil)
	e.db.Exec(t, `
		WITH o AS (
			INSERT INTO relay.outbox (event_type, payload)
			SELECT 'thread.created', jsonb_build_object('i', i) FROM generate_series(0, 1021) AS i
			RETURNING event_id, (payload->>'i')::int AS i)
		INSERT INTO relay.deliveries (event_id, subscription_id, status, created_at, completed_at)
		SELECT event_id, $1, CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END,
		       now() - (i % 20) * interval '1 hour', now()
		FROM o`, w.ID)
	var succeeded, failed int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE status = 'succeeded'),
		count(*) FILTER (WHERE status = 'failed') FROM relay.deliveries`).Scan(&succeeded, &failed); err != nil {
		t.Fatal(err)
	}
	tb := newTab(t, b, e, desktop)
	tb.signIn(opToken)
	row := fmt.Sprintf(`tr.webhook-row[data-id="%d"]`, w.ID)
	tb.do("opening Stats",
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.Click(chromedp.CSS(row+` [data-action="edit"]`)),
		chromedp.WaitVisible(chromedp.ID("wh-tab-stats")),
		chromedp.Click(chromedp.ID("wh-tab-stats")),
		chromedp.WaitVisible(chromedp.ID("stats-chart")))
	counts := eval[map[string]int](tb, `(() => { const c = {bars: document.querySelectorAll('#stats-chart g.bar').length}; for (const r of document.querySelectorAll('#stats-chart rect.seg')) { const k = r.classList[1].slice(4); c[k] = (c[k] || 0) + +r.dataset.count; } return c; })()`)
	if counts["succeeded"] != succeeded || counts["failed"] != failed || counts["bars"] != 24 {
		t.Errorf("chart %v, want %d succeeded and %d failed in 24 bars", counts, succeeded, failed)
	}
	if got := tb.text(`[data-stat="24h-deliveries"] .stat-value`); got != "1,022" {
		t.Errorf("24h deliveries shows %q", got)
	}
	tb.screenshot("stats-1022")
}

// testLongNamesAndPhone: a 200-character unbroken name wraps instead of
// widening the page; on a phone a delivery's attempts are labelled, the
// URL tooltip does not stick after a tap, and toasts leave the cards'
// buttons free.
func testLongNamesAndPhone(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{allowHTTP: true})
	long := strings.Repeat("W", 200)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	t.Cleanup(recv.Close)
	w := e.createWebhook(long, recv.URL+"/a-rather-long-path/that/needs/a/tooltip/to/read/it/all", []string{"thread.*"}, nil)
	e.delivery(w, "thread.created", "failed", 5*time.Minute,
		attempt{ago: 5 * time.Minute, ms: 40, code: 503, outcome: "retry", err: "HTTP 503"},
		attempt{ago: 4 * time.Minute, ms: 70, code: 500, outcome: "failed", err: "HTTP 500", response: "boom"})

	for _, vp := range []struct {
		name string
		v    viewport
	}{{"desktop", desktop}, {"phone", phone}} {
		tb := newTab(t, b, e, vp.v)
		tb.signIn(opToken)
		tb.do("the list shows", chromedp.WaitVisible(chromedp.CSS("tr.webhook-row .name-text")))
		if got := tb.text("tr.webhook-row .name-text"); got != long {
			t.Errorf("%s: the name is cut: %d characters", vp.name, len(got))
		}
		tb.noOverflow(vp.name + " webhooks")
		tb.do("the log", chromedp.Click(chromedp.ID("nav-deliveries")), chromedp.WaitVisible(chromedp.CSS("tr.delivery-row")))
		tb.noOverflow(vp.name + " deliveries")
		tb.do("opening the attempts", chromedp.Click(chromedp.CSS("tr.delivery-row .expand")),
			chromedp.WaitVisible(chromedp.CSS(".attempts-table .attempt-row")))
		tb.noOverflow(vp.name + " attempts")
		if vp.v.mobile {
			labels := eval[[]string](tb, `[...document.querySelectorAll('.attempts-table .attempt-row')[1].cells].map(c => getComputedStyle(c, '::before').content + '=' + c.textContent)`)
			want := []string{`"Attempt"=2`, `"Time"=`, `"Code"=500`, `"Duration"=70 ms`, `"Outcome"=failed`, `"Error"=HTTP 500`}
			if len(labels) != len(want) {
				t.Errorf("phone attempt cells %v", labels)
			}
			for i := range min(len(labels), len(want)) {
				if !strings.HasPrefix(labels[i], want[i]) {
					t.Errorf("phone attempt cell %d is %q, want %q…", i, labels[i], want[i])
				}
			}
			if d := eval[string](tb, `getComputedStyle(document.querySelector('.attempts-table thead')).display`); d != "none" {
				t.Errorf("phone attempts header display %q", d)
			}
			tb.screenshot("phone-attempts")
		}
		tb.do("back to the list", chromedp.Click(chromedp.ID("nav-webhooks")), chromedp.WaitVisible(chromedp.CSS("tr.webhook-row .url")))
		if !vp.v.mobile {
			tb.do("opening the modal", chromedp.Click(chromedp.CSS(`tr.webhook-row [data-action="edit"]`)), chromedp.WaitVisible(chromedp.ID("edit-form")))
			tb.noOverflow("desktop modal")
			if wide := eval[bool](tb, `document.querySelector('dialog.modal').scrollWidth > document.querySelector('dialog.modal').clientWidth`); wide {
				t.Error("the modal scrolls sideways with a long name")
			}
			tb.do("closing", chromedp.KeyEvent(kb.Escape), chromedp.WaitNotPresent(chromedp.CSS("dialog.modal")))
			continue
		}

		// A tap on the URL does not leave its tooltip open.
		rect := eval[map[string]float64](tb, `(() => { const r = document.querySelector('tr.webhook-row .url').getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()`)
		for _, typ := range []input.DispatchTouchEventType{input.DispatchTouchEventTypeTouchStart, input.DispatchTouchEventTypeTouchEnd} {
			p := input.DispatchTouchEventParams{Type: typ, TouchPoints: []*input.TouchPoint{}}
			if typ == input.DispatchTouchEventTypeTouchStart {
				p.TouchPoints = []*input.TouchPoint{{X: rect["x"], Y: rect["y"]}}
			}
			if _, err := chromedp.Call(tb.ctx, input.DispatchTouchEvent, p); err != nil {
				t.Fatalf("tapping the URL: %v", err)
			}
		}
		tb.waitJS("the tap focused the URL", `document.activeElement && document.activeElement.classList.contains('url')`)
		if d := eval[string](tb, `getComputedStyle(document.querySelector('tr.webhook-row .tip')).display`); d != "none" {
			t.Errorf("the URL tooltip shows (%s) after a tap", d)
		}

		// Test from a card: the toast names the webhook and leaves the
		// card's buttons free.
		tb.do("testing from the card", chromedp.Click(chromedp.CSS(`tr.webhook-row [data-action="test"]`)))
		msg := tb.waitToast("success")
		if !strings.HasPrefix(msg, "Test of “"+long[:20]) {
			t.Errorf("toast %q does not name the webhook", msg)
		}
		tb.waitJS("the toast's entrance to end", `document.querySelector('.toast').getAnimations().length === 0`)
		tb.screenshot("phone-toast")
		overlaps := eval[[]string](tb, `(() => {
			const t = document.querySelector('.toast').getBoundingClientRect();
			return [...document.querySelectorAll('main button')].filter(b => {
				const r = b.getBoundingClientRect();
				return r.width > 0 && r.left < t.right && r.right > t.left && r.top < t.bottom && r.bottom > t.top;
			}).map(b => b.textContent);
		})()`)
		if len(overlaps) > 0 {
			t.Errorf("the toast covers %v", overlaps)
		}
		tb.noOverflow("phone with a toast")
	}
}

// testToastsAndTestNotes: on a desktop the toasts leave Redeliver free
// and name the webhook; Test on a disabled webhook while paused says the
// test went out but events would not; and a relative time ends with one
// period, not two.
func testToastsAndTestNotes(t *testing.T, b context.Context) {
	e := newEnv(t, envOptions{allowHTTP: true})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }))
	t.Cleanup(recv.Close)
	w := e.createWebhook("Quiet hook", recv.URL+"/hook", []string{"*"}, nil)
	var last int64
	for i := range 8 {
		last = e.delivery(w, "message.sent", "failed", time.Duration(i+1)*time.Minute, attempt{ago: time.Minute, ms: 30, code: 500, outcome: "failed", err: "HTTP 500"})
	}
	pending := e.delivery(w, "thread.created", "pending", 30*time.Second, attempt{ago: 30 * time.Second, ms: 20, code: 503, outcome: "retry", err: "HTTP 503"})
	e.db.Exec(t, `UPDATE relay.deliveries SET next_attempt_at = now() + interval '90 seconds' WHERE id = $1`, pending)

	tb := newTab(t, b, e, viewport{1280, 700, 1, false})
	tb.signIn(opToken)
	tb.do("the log", chromedp.Click(chromedp.ID("nav-deliveries")), chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr.delivery-row[data-id="%d"]`, last))))

	// One period after a relative time.
	tb.do("opening the pending delivery", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr.delivery-row[data-id="%d"] .expand`, pending))),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#detail-%d .detail-meta`, pending))))
	if meta := tb.text(fmt.Sprintf(`#detail-%d .detail-meta`, pending)); strings.Contains(meta, "..") || !strings.Contains(meta, "Next attempt: in ") {
		t.Errorf("detail meta %q", meta)
	}

	tb.do("redelivering", chromedp.Click(chromedp.CSS(`tr.delivery-row [data-action="redeliver"]`)))
	msg := tb.waitToast("success")
	tb.waitJS("the toast's entrance to end", `document.querySelector('.toast').getAnimations().length === 0`)
	if !strings.Contains(msg, "to “Quiet hook” is queued again") {
		t.Errorf("redeliver toast %q does not name the webhook", msg)
	}
	free := eval[map[string]any](tb, `(() => {
		const t = document.querySelector('.toast').getBoundingClientRect();
		const covered = [...document.querySelectorAll('main button')].filter(b => {
			const r = b.getBoundingClientRect();
			return r.width > 0 && r.left < t.right && r.right > t.left && r.top < t.bottom && r.bottom > t.top;
		}).map(b => b.textContent);
		const reachable = [...document.querySelectorAll('[data-action="redeliver"]')].every(b => {
			const r = b.getBoundingClientRect();
			if (r.bottom < 0 || r.top > innerHeight) return true;
			return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === b;
		});
		return {covered, reachable};
	})()`)
	if covered, _ := free["covered"].([]any); len(covered) > 0 || free["reachable"] != true {
		t.Errorf("the toast covers buttons: %v", free)
	}
	tb.screenshot("toast")

	// Test on a disabled webhook while paused.
	e.db.Exec(t, `UPDATE relay.subscriptions SET enabled = false WHERE id = $1`, w.ID)
	e.db.Exec(t, `UPDATE relay.settings SET paused = true, paused_at = now()`)
	tb.clearToasts()
	tb.do("testing the disabled webhook",
		chromedp.Click(chromedp.ID("nav-webhooks")),
		chromedp.WaitVisible(chromedp.CSS(`tr.webhook-row[data-enabled="false"] [data-action="test"]`)),
		chromedp.Click(chromedp.CSS(`tr.webhook-row [data-action="test"]`)))
	msg = tb.waitToast("info")
	for _, want := range []string{"Test of “Quiet hook” sent — 200", "disabled: events are not sent to it", "paused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("test toast %q lacks %q", msg, want)
		}
	}
	tb.screenshot("test-notes")
}
