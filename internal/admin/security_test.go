package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/pgoutbox/relay/internal/admin"
)

// consoleFiles is a stand-in console for the static file server.
var consoleFiles = fstest.MapFS{
	"index.html":      {Data: []byte("<!doctype html><title>relay</title>")},
	"js/app.js":       {Data: []byte("console.log('hi')")},
	"js/api.js":       {Data: []byte("export {}")},
	"css/console.css": {Data: []byte("body{}")},
}

// get sends a GET with an optional Host header and token.
func (e *env) get(path, host, token string) resp {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.base+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, raw: raw}
}

// TestSecurityHeaders checks that every kind of response (console page and
// files, API answers and errors, probes, metrics, directory 404s) carries
// the headers that keep the console out of frames on other sites: a CSP
// header (frame-ancestors is ignored in <meta>), X-Frame-Options for older
// browsers, Referrer-Policy and nosniff.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, &envOpts{configure: func(c *admin.Config) { c.Static = consoleFiles }})
	id := e.hook(operatorToken, "h")
	for _, c := range []struct {
		path, token string
		status      int
	}{
		{"/", "", 200},
		{"/js/app.js", "", 200},
		{"/css/console.css", "", 200},
		{"/js/", "", 404},
		{"/healthz", "", 200},
		{"/readyz", "", 200},
		{"/metrics", "", 200},
		{"/api/openapi.json", "", 200},
		{"/api/webhooks", operatorToken, 200},
		{fmt.Sprintf("/api/webhooks/%d", id), operatorToken, 200},
		{"/api/webhooks", "", 401},
		{"/api/webhooks/999999", operatorToken, 404},
		{"/api/nothing", operatorToken, 404},
		{"/api/deliveries?status=failed;days=1", operatorToken, 400},
	} {
		r := e.get(c.path, "", c.token)
		if r.status != c.status {
			t.Errorf("GET %s: status %d, want %d", c.path, r.status, c.status)
		}
		h := r.header
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", c.path, csp)
		}
		for name, want := range map[string]string{
			"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
		} {
			if got := h.Get(name); got != want {
				t.Errorf("GET %s: %s = %q, want %q", c.path, name, got, want)
			}
		}
	}
}

// TestAllowFraming checks the hook the owner portal uses: a page that
// opts in may be framed by the configured origins, and by no other; with
// no origins configured it stays unframeable.
func TestAllowFraming(t *testing.T) {
	t.Parallel()
	if _, err := admin.ParseOrigins([]string{"https://app.example.com/path"}); err == nil {
		t.Error("an origin with a path was accepted")
	}
	if _, err := admin.ParseOrigins([]string{"https://a.example.com; script-src *"}); err == nil {
		t.Error("an origin smuggling a directive was accepted")
	}
	got, err := admin.ParseOrigins([]string{" https://App.Example.com/ ", "http://localhost:3000", ""})
	if err != nil || fmt.Sprint(got) != "[https://app.example.com http://localhost:3000]" {
		t.Fatalf("ParseOrigins = %v, %v", got, err)
	}
	e := newEnv(t, nil)
	for _, c := range []struct {
		origins []string
		want    string
		xfo     string
	}{
		{nil, "frame-ancestors 'none'", "DENY"},
		{[]string{"https://app.example.com", "https://admin.example.com"}, "frame-ancestors https://app.example.com https://admin.example.com", ""},
	} {
		srv, err := admin.New(admin.Config{Pool: e.db.Pool, FrameAncestors: c.origins})
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.Handle("/api/", srv.Handler())
		mux.HandleFunc("/portal", func(w http.ResponseWriter, r *http.Request) {
			srv.AllowFraming(w)
			_, _ = io.WriteString(w, "portal")
		})
		rec := httptest.NewRecorder()
		// The server's middleware sets the defaults; the handler relaxes them.
		srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.HasSuffix(csp, "frame-ancestors 'none'") {
			t.Errorf("healthz CSP %q", csp)
		}
		rec = httptest.NewRecorder()
		h := rec.Header()
		h.Set("Content-Security-Policy", admin.ContentSecurityPolicy(nil))
		h.Set("X-Frame-Options", "DENY")
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/portal", nil))
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.HasSuffix(csp, c.want) {
			t.Errorf("origins %v: CSP %q, want it to end with %q", c.origins, csp, c.want)
		}
		if xfo := rec.Header().Get("X-Frame-Options"); xfo != c.xfo {
			t.Errorf("origins %v: X-Frame-Options %q, want %q", c.origins, xfo, c.xfo)
		}
	}
	if _, err := admin.New(admin.Config{Pool: e.db.Pool, FrameAncestors: []string{"javascript:alert(1)"}}); err == nil {
		t.Error("admin.New accepted a bad frame ancestor")
	}
}

// TestHostCheck checks that /metrics and /api/openapi.json answer only to
// the server's own names (DNS rebinding), while the rest is unaffected.
func TestHostCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t, &envOpts{configure: func(c *admin.Config) { c.AllowedHosts = []string{"Relay.Internal"} }})
	port := e.srv.Addr()[strings.LastIndex(e.srv.Addr(), ":"):]
	for _, path := range []string{"/metrics", "/api/openapi.json"} {
		for host, want := range map[string]int{
			"":                           200, // the listen address
			"localhost" + port:           200,
			"[::1]" + port:               200,
			"10.1.2.3" + port:            200,
			"relay.internal" + port:      200,
			"relay.internal.":            200,
			"attacker.example" + port:    421,
			"relay.internal.evil" + port: 421,
			"localhost.evil.example":     421,
		} {
			r := e.get(path, host, "")
			if r.status != want {
				t.Errorf("GET %s with Host %q: %d, want %d (%s)", path, host, r.status, want, r.raw)
			}
			if want == 421 && !strings.Contains(string(r.raw), "--admin-host") {
				t.Errorf("GET %s with Host %q: the refusal does not say what to do: %s", path, host, r.raw)
			}
		}
	}
	// Probes and the token-protected API answer any Host.
	if r := e.get("/healthz", "attacker.example", ""); r.status != 200 {
		t.Errorf("healthz with a foreign Host: %d", r.status)
	}
	if r := e.get("/api/webhooks", "attacker.example", operatorToken); r.status != 200 {
		t.Errorf("API with a foreign Host: %d", r.status)
	}
}

// TestMalformedQuery checks that a ";" (or bad escape) in a query string is
// refused instead of silently dropping the filter it belongs to.
func TestMalformedQuery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, q := range []string{"status=failed;days=1", "status=failed&webhook_id=1;2", "event_type=%zz"} {
		r := e.get("/api/deliveries?"+q, "", operatorToken)
		if r.status != 400 || !strings.Contains(string(r.raw), `"malformed_query"`) {
			t.Errorf("?%s: %d %s, want 400 malformed_query", q, r.status, r.raw)
		}
	}
	if r := e.get("/api/deliveries?status=failed%3Bdays%3D1", "", operatorToken); r.status != 400 || !strings.Contains(string(r.raw), `"status"`) {
		t.Errorf("an encoded ; is an ordinary character of the value: %d %s", r.status, r.raw)
	}
	e.get("/api/deliveries?status=failed&days=1", "", operatorToken).want(t, 200)
}

// TestStaticDirectories checks that the console's folders are not listed.
func TestStaticDirectories(t *testing.T) {
	t.Parallel()
	e := newEnv(t, &envOpts{configure: func(c *admin.Config) { c.Static = consoleFiles }})
	for path, want := range map[string]int{
		"/": 200, "/index.html": 200, "/js/app.js": 200, "/css/console.css": 200,
		"/js/": 404, "/js": 404, "/css/": 404, "/css": 404, "/js/../css/": 404, "/nothing.js": 404,
	} {
		r := e.get(path, "", "")
		if r.status != want {
			t.Errorf("GET %s: %d, want %d", path, r.status, want)
		}
		if strings.Contains(string(r.raw), "app.js") && strings.Contains(string(r.raw), "api.js") {
			t.Errorf("GET %s lists the directory: %s", path, r.raw)
		}
	}
}

// TestTextInputRefused checks the API end to end on names, headers and
// templates with control characters or past their limits: 400 naming the
// field, never 500, nothing stored.
func TestTextInputRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	body := func(k string, v any) map[string]any {
		b := map[string]any{"name": "n", "url": "https://hooks.example.com/x", "events": []string{"*"}}
		b[k] = v
		return b
	}
	many := map[string]string{}
	for i := range 21 {
		many[fmt.Sprintf("X-H%02d", i)] = "v"
	}
	for _, c := range []struct {
		name, field, msg string
		body             map[string]any
	}{
		{"ESC and BEL in name", "name", "name must not contain control characters (found U+0007)", body("name", "bell\u0007esc\u001b[31mred")},
		{"NUL in name", "name", "found U+0000", body("name", "a\u0000b")},
		{"C1 in name", "name", "found U+009B", body("name", "a\u009b31mb")},
		{"NUL in owner", "owner", "found U+0000", body("owner", "al\u0000ice")},
		{"ESC in header", "headers", `headers: the value of "X-A" must not contain control characters (found U+001B)`, body("headers", map[string]string{"X-A": "a\u001b"})},
		{"NUL in header", "headers", "found U+0000", body("headers", map[string]string{"X-A": "\u0000"})},
		{"too many headers", "headers", "at most 20 headers", body("headers", many)},
		{"long header", "headers", "at most 4096 characters", body("headers", map[string]string{"X-A": strings.Repeat("v", 4097)})},
		{"ESC in template", "template", "template must not contain control characters (found U+001B)", body("template", "hi \u001b]0;x\u0007")},
		{"long template", "template", "at most 10000 characters", body("template", strings.Repeat("x", 10001))},
	} {
		r := e.do("POST", "/api/webhooks", operatorToken, c.body)
		r.wantError(t, 400, "invalid_field", c.field)
		if msg := obj(t, r.obj["error"])["message"].(string); !strings.Contains(msg, c.msg) {
			t.Errorf("%s: message %q, want %q", c.name, msg, c.msg)
		}
		if strings.ContainsAny(string(r.raw), "\u0007\u001b") {
			t.Errorf("%s: the answer echoes the control characters: %q", c.name, r.raw)
		}
	}
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.subscriptions`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d subscriptions after refused creates (%v)", n, err)
	}
	id := e.hook(operatorToken, "ok")
	p := fmt.Sprintf("/api/webhooks/%d", id)
	e.do("PATCH", p, operatorToken, map[string]any{"name": "x\u001b[2J"}).wantError(t, 400, "invalid_field", "name")
	e.do("PATCH", p, operatorToken, map[string]any{"headers": map[string]string{"X-A": "\u0000"}}).wantError(t, 400, "invalid_field", "headers")
	e.do("PATCH", p, operatorToken, map[string]any{"template": "\u0000"}).wantError(t, 400, "invalid_field", "template")
	e.do("PATCH", p, operatorToken, map[string]any{"enabled": false, "disabled_reason": "gone\u001b[2J"}).wantError(t, 400, "invalid_field", "disabled_reason")
	e.do("PUT", "/api/settings", operatorToken, map[string]any{"paused": true, "paused_reason": "x\u0007"}).wantError(t, 400, "invalid_field", "paused_reason")
	// Tabs in a header value and line breaks in a template are fine.
	e.do("PATCH", p, operatorToken, map[string]any{"headers": map[string]string{"X-A": "a\tb"}, "template": "New:\n\t{{data.title}}"}).want(t, 200)
	// A NUL in a query parameter is a 400 too, not a 500.
	if r := e.get("/api/webhooks?owner=a%00b", "", operatorToken); r.status != 400 {
		t.Errorf("NUL in ?owner: %d %s", r.status, r.raw)
	}
}

// TestMessagesNameAPIFields checks that validation messages use the API's
// field names (events), not the SQL columns (event_types).
func TestMessagesNameAPIFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, events := range []any{[]string{}, []string{"thread.*.x"}} {
		r := e.do("POST", "/api/webhooks", operatorToken, map[string]any{"name": "n", "url": "https://hooks.example.com/x", "events": events})
		r.wantError(t, 400, "invalid_field", "events")
		msg := obj(t, r.obj["error"])["message"].(string)
		if strings.Contains(msg, "event_types") || !strings.HasPrefix(msg, "events") {
			t.Errorf("message %q names the column, not the field events", msg)
		}
	}
	r := e.do("POST", "/api/webhooks", operatorToken, map[string]any{"name": "n", "url": "https://hooks.example.com/x", "events": []string{"*"},
		"window": map[string]string{"start": "22:00", "end": "6h"}})
	r.wantError(t, 400, "invalid_field", "window.end")
	if msg := obj(t, r.obj["error"])["message"].(string); strings.Contains(msg, "window_end") {
		t.Errorf("message %q names the column window_end", msg)
	}
}

// TestNumericHostsAtCreation checks that the shorthand IPv4 forms browsers
// accept are read as the address they name: private ones are refused like
// their dotted form, allowed ones are accepted.
func TestNumericHostsAtCreation(t *testing.T) {
	t.Parallel()
	strict := newEnv(t, &envOpts{configure: func(c *admin.Config) { c.AllowCIDRs = nil }})
	for _, u := range []string{"https://127.1/x", "https://2130706433/x", "https://0x7f000001/x", "https://0177.0.0.1/x",
		"https://0/x", "https://127.0.0.1./x", "https://0xa9fea9fe/latest", "https://10.258/x", "https://192.168.257/x"} {
		r := strict.do("POST", "/api/webhooks", operatorToken, map[string]any{"name": "n", "url": u, "events": []string{"*"}})
		r.wantError(t, 400, "invalid_field", "url")
		if msg := obj(t, r.obj["error"])["message"].(string); !strings.Contains(msg, "address") || !strings.Contains(msg, "--allow-cidr") {
			t.Errorf("%s: message %q", u, msg)
		}
	}
	strict.do("POST", "/api/webhooks", operatorToken, map[string]any{"name": "n", "url": "https://1.2.3.4.5/x", "events": []string{"*"}}).
		wantError(t, 400, "invalid_field", "url")
	strict.do("POST", "/api/webhooks", operatorToken, map[string]any{"name": "n", "url": "https://134744072/x", "events": []string{"*"}}).want(t, 201)
	// With 127.0.0.0/8 allowed, 127.1 is a loopback receiver like 127.0.0.1.
	allowed := newEnv(t, nil)
	allowed.do("POST", "/api/webhooks", operatorToken, map[string]any{"name": "n", "url": "https://127.1:8443/x", "events": []string{"*"}}).want(t, 201)
}
