package console_test

// The harness of the browser tests: one headless Chromium for the whole
// package (each test gets its own tab in its own browser context), and per
// test a fresh database, the real admin server serving the embedded console,
// and the real test-delivery sender.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/pgoutbox/relay/internal/admin"
	"github.com/pgoutbox/relay/internal/console"
	"github.com/pgoutbox/relay/internal/metrics"
	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/internal/tokens"
	"github.com/pgoutbox/relay/sink/dispatch"
	"github.com/pgoutbox/relay/sink/send"
	"github.com/pgoutbox/relay/subscriptions"
)

var updateDocs = flag.Bool("update-docs", false, "write the desktop and phone screenshots into docs/")

const opToken = "op-token"

// Viewports: a laptop, and an iPhone 12–15 sized phone (390 px wide).
var (
	desktop = viewport{1280, 860, 1, false}
	phone   = viewport{390, 844, 2, true}
)

type viewport struct {
	w, h   int64
	scale  float64
	mobile bool
}

// findChromium returns the browser binary, "" when there is none.
func findChromium() string {
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// startBrowser starts the shared headless Chromium for the tests of parent
// and stops it (and removes its profile) when parent ends.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := findChromium()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium binary found (looked for /usr/bin/chromium, chromium, chromium-browser, google-chrome): " +
				"the browser tests must run in CI; install it with apt-get install chromium (make deps does)")
		}
		t.Skip("browser tests skipped: no Chromium binary (apt-get install chromium, or run make deps)")
	}
	profile, err := os.MkdirTemp("", "relay-console-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(profile),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.Flag("accept-lang", "en-US,en"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("font-render-hinting", "none"),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx,
		chromedp.WithErrorf(func(format string, args ...any) { t.Logf("chromedp: "+format, args...) }))
	// Start the browser now, without a timeout (a timeout would stop it).
	if err := chromedp.Do(browserCtx); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("starting %s: %v", path, err)
	}
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		// Chromium's helpers may still write for a moment after it stops.
		for range 50 {
			if err := os.RemoveAll(profile); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return browserCtx
}

// env is one test's relay: database, admin server, console.
type env struct {
	t    *testing.T
	db   *pgtest.DB
	srv  *admin.Server
	base string // http://127.0.0.1:port
}

// dispatcherTester adapts the real dispatch.Dispatcher to admin.Tester.
type dispatcherTester struct{ d *dispatch.Dispatcher }

func (a dispatcherTester) Test(ctx context.Context, id int64) (admin.TestResult, error) {
	r, err := a.d.Test(ctx, id)
	if errors.Is(err, dispatch.ErrSubscriptionNotFound) {
		return admin.TestResult{}, subscriptions.ErrNotFound
	}
	if err != nil {
		return admin.TestResult{}, err
	}
	return admin.TestResult{Delivered: r.Delivered, StatusCode: r.StatusCode, DurationMS: r.DurationMS, Error: r.Error}, nil
}

type envOptions struct {
	allowHTTP bool
	// portalOrigins may frame the owner portal (--portal-origins).
	portalOrigins []string
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	db := pgtest.NewDB(t)
	if o.allowHTTP {
		db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
	}
	guard, err := send.NewAddressGuard([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dispatch.New(dispatch.Config{Pool: db.Pool, Sender: send.New(send.Config{Guard: guard})})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := admin.New(admin.Config{
		Addr:           "127.0.0.1:0",
		Pool:           db.Pool,
		OperatorToken:  opToken,
		Static:         console.Files(),
		Tester:         dispatcherTester{d},
		AllowCIDRs:     []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Metrics:        metrics.New(db.Pool, ""),
		FrameAncestors: o.portalOrigins,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return &env{t: t, db: db, srv: srv, base: "http://" + srv.Addr()}
}

// call calls the admin API with token and decodes the answer into out (when
// not nil); it returns the status code.
func (e *env) call(method, path, token string, body, out any) int {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if out != nil && res.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decoding %q: %v", method, path, data, err)
		}
	}
	return res.StatusCode
}

// webhook is the part of the API's webhook object the tests read.
type webhook struct {
	ID      int64    `json:"id"`
	Owner   *string  `json:"owner"`
	Name    string   `json:"name"`
	URL     string   `json:"url"`
	Events  []string `json:"events"`
	Enabled bool     `json:"enabled"`
	Format  string   `json:"format"`
	Secret  string   `json:"secret"`
}

// createWebhook creates a webhook through the API as the operator.
func (e *env) createWebhook(name, url string, events []string, owner *string) webhook {
	e.t.Helper()
	var w webhook
	body := map[string]any{"name": name, "url": url, "events": events}
	if owner != nil {
		body["owner"] = *owner
	}
	if code := e.call("POST", "/api/webhooks", opToken, body, &w); code != http.StatusCreated {
		e.t.Fatalf("creating webhook %q: status %d", name, code)
	}
	return w
}

func (e *env) getWebhook(id int64) (webhook, int) {
	e.t.Helper()
	var w webhook
	code := e.call("GET", fmt.Sprintf("/api/webhooks/%d", id), opToken, nil, &w)
	return w, code
}

// ownerToken makes an owner-scoped API token.
func (e *env) ownerToken(owner string) string {
	e.t.Helper()
	tok, _, err := tokens.NewStore(e.db.Pool).Create(context.Background(), owner, "console test")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// emit adds an event to the outbox and returns its id.
func (e *env) emit(eventType string, owner *string) string {
	e.t.Helper()
	var id string
	if err := e.db.Pool.QueryRow(context.Background(),
		`SELECT relay.emit($1, '{"title":"Hello"}'::jsonb, $2::text)::text`, eventType, owner).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// attempt is one relay.delivery_attempts fixture.
type attempt struct {
	ago      time.Duration // started this long ago
	ms       int
	code     int // 0: no HTTP answer
	outcome  string
	err      string
	response string
}

// delivery inserts an event of eventType and one delivery of it to sub
// with status, created ago, and its attempts (the last one fills the
// delivery's last_* columns). It returns the delivery id.
func (e *env) delivery(sub webhook, eventType, status string, ago time.Duration, attempts ...attempt) int64 {
	e.t.Helper()
	ctx := context.Background()
	eventID := e.emit(eventType, sub.Owner)
	var code, ms *int
	var lastErr, lastResp *string
	if n := len(attempts); n > 0 {
		a := attempts[n-1]
		if a.code != 0 {
			code = &a.code
		}
		ms = &a.ms
		if a.err != "" {
			lastErr = &a.err
		}
		if a.response != "" {
			lastResp = &a.response
		}
	}
	var id int64
	err := e.db.Pool.QueryRow(ctx, `
		INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts, last_status_code, last_error,
			last_response, last_duration_ms, created_at, completed_at, next_attempt_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() - $9::interval,
			CASE WHEN $3 IN ('succeeded', 'failed', 'skipped') THEN now() - $9::interval + interval '1 second' END,
			CASE WHEN $3 = 'pending' THEN now() + interval '1 hour' ELSE now() END)
		RETURNING id`,
		eventID, sub.ID, status, len(attempts), code, lastErr, lastResp, ms, ago).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	for i, a := range attempts {
		var c *int
		if a.code != 0 {
			c = &a.code
		}
		var errText, resp *string
		if a.err != "" {
			errText = &a.err
		}
		if a.response != "" {
			resp = &a.response
		}
		if _, err := e.db.Pool.Exec(ctx, `
			INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, error, response_body)
			VALUES ($1, $2, now() - $3::interval, $4, $5, $6, $7, $8)`,
			id, i+1, a.ago, a.ms, c, a.outcome, errText, resp); err != nil {
			e.t.Fatal(err)
		}
	}
	return id
}

// --- the browser side ---

// tab is one test's browser tab, in a browser context of its own (its own
// storage), with a time limit. JavaScript exceptions fail the test.
type tab struct {
	t    *testing.T
	ctx  context.Context // the tab, limited to the test's time
	raw  context.Context // the tab without the limit, for the failure screenshot
	e    *env
	name string

	mu     sync.Mutex
	errors []string
}

func newTab(t *testing.T, browser context.Context, e *env, vp viewport) *tab {
	t.Helper()
	tabCtx, cancelTab := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	tb := &tab{t: t, e: e, name: strings.ReplaceAll(t.Name(), "/", "_")}
	if err := chromedp.Listen(tabCtx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
			tb.mu.Lock()
			tb.errors = append(tb.errors, msg)
			tb.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				tb.mu.Lock()
				tb.errors = append(tb.errors, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
				tb.mu.Unlock()
			}
		}
	}); err != nil {
		cancelTab()
		t.Fatalf("opening a tab: %v", err)
	}
	opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(vp.scale)}
	if vp.mobile {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	if err := chromedp.Do(tabCtx, chromedp.EmulateViewport(vp.w, vp.h, opts...)); err != nil {
		cancelTab()
		t.Fatalf("setting the viewport: %v", err)
	}
	ctx, cancel := context.WithTimeout(tabCtx, 90*time.Second)
	tb.ctx = ctx
	tb.raw = tabCtx
	t.Cleanup(func() {
		if t.Failed() {
			shotCtx, stop := context.WithTimeout(tb.raw, 5*time.Second)
			tb.ctx = shotCtx
			tb.screenshot("failed")
			stop()
		}
		cancel()
		cancelTab()
		tb.mu.Lock()
		defer tb.mu.Unlock()
		for _, m := range tb.errors {
			t.Errorf("browser reported: %s", m)
		}
	})
	return tb
}

// stepTimeout bounds one step, so a failing wait leaves time for the
// failure screenshot.
const stepTimeout = 30 * time.Second

// do runs actions and fails the test on error, naming the step.
func (tb *tab) do(step string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %v", step, err)
	}
}

// text returns the rendered text of the first element matching sel, once
// there is one. It finds and reads the element in one evaluation: the
// console re-renders its lists, and a node found by one call and read by
// the next may already be gone from the page.
func (tb *tab) text(sel string) string {
	tb.t.Helper()
	quoted, err := json.Marshal(sel)
	if err != nil {
		tb.t.Fatalf("quoting %s: %v", sel, err)
	}
	read := `(() => { const e = document.querySelector(` + string(quoted) + `);` +
		` return e ? e.innerText : null })()`
	deadline := time.Now().Add(stepTimeout)
	for {
		s := eval[*string](tb, read)
		if s != nil {
			return strings.TrimSpace(*s)
		}
		if time.Now().After(deadline) {
			tb.t.Fatalf("reading text of %s: no such element after %v", sel, stepTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eval evaluates JavaScript and decodes its result.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitJS waits until the JavaScript expression is truthy.
func (tb *tab) waitJS(what, expr string) {
	tb.t.Helper()
	if _, err := chromedp.Run(tb.ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		tb.t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// selectValue picks an option of a <select> as a user would (firing change).
func (tb *tab) selectValue(sel, value string) {
	tb.t.Helper()
	js := fmt.Sprintf(`(() => { const s = document.querySelector(%q); s.value = %q; s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()`, sel, value)
	if got := eval[string](tb, js); got != value {
		tb.t.Fatalf("selecting %q in %s: got %q", value, sel, got)
	}
}

// setValue sets an input's value as typing would (input and change events
// fire), waiting for the element first.
func setValue(sel, v string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitVisible(chromedp.CSS(sel)),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
			const el = document.querySelector(%q);
			el.value = %q;
			el.dispatchEvent(new Event('input', {bubbles: true}));
			el.dispatchEvent(new Event('change', {bubbles: true}));
		})()`, sel, v)))
}

// clearToasts removes the toasts on screen, so the next one read is new.
func (tb *tab) clearToasts() {
	tb.t.Helper()
	tb.do("clearing toasts", chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('.toast').forEach(t => t.remove())`))
}

// mouseAway moves the mouse to a corner so no hover state shows.
func (tb *tab) mouseAway() {
	tb.t.Helper()
	if _, err := chromedp.Call(tb.ctx, input.DispatchMouseEvent, input.DispatchMouseEventParams{Type: input.DispatchMouseEventTypeMouseMoved, X: 1, Y: 1}); err != nil {
		tb.t.Fatalf("moving the mouse: %v", err)
	}
}

// open loads the console (optionally at a hash route).
func (tb *tab) open(hash string) {
	tb.t.Helper()
	tb.do("opening the console", chromedp.Navigate(tb.e.base+"/"+hash))
}

// signIn opens the console and signs in with token.
func (tb *tab) signIn(token string) {
	tb.t.Helper()
	tb.open("")
	tb.do("signing in",
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.ID("shell")),
	)
}

// waitToast waits for a toast of kind and returns its text.
func (tb *tab) waitToast(kind string) string {
	tb.t.Helper()
	sel := ".toast.toast-" + kind + " .toast-text"
	tb.do("waiting for a "+kind+" toast", chromedp.WaitVisible(chromedp.CSS(sel)))
	return tb.text(sel)
}

// screenshotDir is where every test's screenshot goes.
func screenshotDir() string {
	if d := os.Getenv("RELAY_SCREENSHOT_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "relay-console-screenshots")
}

// screenshot saves the viewport as <test>-<label>.png and returns the PNG.
func (tb *tab) screenshot(label string) []byte {
	tb.t.Helper()
	png, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Logf("screenshot %s: %v", label, err)
		return nil
	}
	dir := screenshotDir()
	if err := os.MkdirAll(dir, 0o755); err == nil {
		p := filepath.Join(dir, tb.name+"-"+label+".png")
		if err := os.WriteFile(p, png, 0o644); err == nil {
			tb.t.Logf("screenshot: %s", p)
		}
	}
	return png
}

// saveDoc writes a screenshot into docs/ when -update-docs is given.
func saveDoc(t *testing.T, name string, png []byte) {
	t.Helper()
	if !*updateDocs || png == nil {
		return
	}
	p := filepath.Join("..", "..", "docs", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", p)
}

func ptr[T any](v T) *T { return &v }
