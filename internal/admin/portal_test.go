package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/pgoutbox/relay/internal/admin"
)

const appOrigin = "https://app.example.com"

// portalEnv is an admin server that lets appOrigin frame the portal and
// serves a stand-in portal page.
func portalEnv(t *testing.T, configure func(*admin.Config)) *env {
	return newEnv(t, &envOpts{configure: func(c *admin.Config) {
		c.FrameAncestors = []string{appOrigin}
		c.Static = fstest.MapFS{
			"index.html":  {Data: []byte("<!doctype html><title>console</title>")},
			"portal.html": {Data: []byte("<!doctype html><title>portal</title>")},
		}
		if configure != nil {
			configure(c)
		}
	}})
}

// newPortalSession makes a session for owner as the operator and returns
// its id and one-time code.
func (e *env) newPortalSession(owner string) (int64, string) {
	e.t.Helper()
	r := e.do("POST", "/api/portal-sessions", operatorToken, map[string]any{"owner": owner, "ttl": "1h"}).want(e.t, http.StatusCreated)
	u, err := url.Parse(r.obj["url"].(string))
	if err != nil {
		e.t.Fatal(err)
	}
	return int64(num(e.t, r.obj["id"])), u.Query().Get("code")
}

// browserReq is a request as the portal page's fetch sends it: the session
// cookie (when not empty), the page's own Origin and Sec-Fetch-Site, and
// extra headers.
func (e *env) browserReq(method, path, cookie string, body any, header map[string]string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method != "GET" {
		req.Header.Set("Origin", e.base)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: admin.PortalCookie, Value: cookie})
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.obj)
	return r
}

// exchange trades code for the session cookie and returns the cookie's
// value and the CSRF token.
func (e *env) exchange(code string) (string, string, resp) {
	e.t.Helper()
	r := e.browserReq("POST", "/api/portal/exchange", "", map[string]any{"code": code}, nil)
	if r.status != http.StatusOK {
		return "", "", r
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == admin.PortalCookie {
			cookie = c
		}
	}
	if cookie == nil {
		e.t.Fatalf("exchange set no %s cookie: %v", admin.PortalCookie, r.header["Set-Cookie"])
	}
	return cookie.Value, r.obj["csrf_token"].(string), r
}

func TestPortalSessionFlow(t *testing.T) {
	t.Parallel()
	e := portalEnv(t, nil)
	aliceHook := e.createWebhook(e.alice, map[string]any{"name": "alice hook", "url": "https://a.example.com/h", "events": []string{"*"}})
	bobHook := e.createWebhook(e.bob, map[string]any{"name": "bob hook", "url": "https://b.example.com/h", "events": []string{"*"}})

	// Only the operator makes sessions, with a valid body.
	body := map[string]any{"owner": "alice", "ttl": "30m", "return_url": appOrigin + "/settings", "user": "alice@example.com"}
	e.do("POST", "/api/portal-sessions", e.alice, body).wantError(t, http.StatusForbidden, "forbidden", "")
	e.do("POST", "/api/portal-sessions", "", body).wantError(t, http.StatusUnauthorized, "unauthorized", "")
	e.do("POST", "/api/portal-sessions", operatorToken, map[string]any{"ttl": "1h"}).wantError(t, http.StatusBadRequest, "invalid_field", "owner")
	e.do("POST", "/api/portal-sessions", operatorToken, map[string]any{"owner": "alice", "ttl": "soon"}).wantError(t, http.StatusBadRequest, "invalid_field", "ttl")
	e.do("POST", "/api/portal-sessions", operatorToken, map[string]any{"owner": "alice", "ttl": "48h"}).wantError(t, http.StatusBadRequest, "invalid_field", "ttl")
	e.do("POST", "/api/portal-sessions", operatorToken, map[string]any{"owner": "alice", "return_url": "javascript:alert(1)"}).wantError(t, http.StatusBadRequest, "invalid_field", "return_url")
	e.do("POST", "/api/portal-sessions", operatorToken, map[string]any{"owner": "alice", "user": "a\x1b[31m"}).wantError(t, http.StatusBadRequest, "invalid_field", "user")

	before := time.Now()
	created := e.do("POST", "/api/portal-sessions", operatorToken, body).want(t, http.StatusCreated)
	wantKeys(t, created.obj, "id", "owner", "created_by", "client_addr", "user", "return_url", "created_at", "code_expires_at",
		"expires_at", "exchanged_at", "last_used_at", "revoked_at", "url")
	if created.obj["owner"] != "alice" || created.obj["created_by"] != "operator" || created.obj["user"] != "alice@example.com" ||
		created.obj["client_addr"] != "127.0.0.1" {
		t.Fatalf("recorded: %s", created.raw)
	}
	exp, _ := time.Parse(time.RFC3339Nano, created.obj["expires_at"].(string))
	codeExp, _ := time.Parse(time.RFC3339Nano, created.obj["code_expires_at"].(string))
	if exp.Before(before.Add(29*time.Minute)) || exp.After(before.Add(31*time.Minute)) || codeExp.After(before.Add(6*time.Minute)) {
		t.Fatalf("expires_at %s, code_expires_at %s", exp, codeExp)
	}
	u, err := url.Parse(created.obj["url"].(string))
	if err != nil || u.Scheme+"://"+u.Host != e.base || u.Path != "/portal" || !strings.HasPrefix(u.Query().Get("code"), "rlyc_") {
		t.Fatalf("url %v: %v", created.obj["url"], err)
	}
	code := u.Query().Get("code")
	id := int64(num(t, created.obj["id"]))

	// The page is framable by the application only.
	page, err := e.client.Get(created.obj["url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if csp := page.Header.Get("Content-Security-Policy"); !strings.HasSuffix(csp, "frame-ancestors "+appOrigin) ||
		page.Header.Get("X-Frame-Options") != "" || page.StatusCode != http.StatusOK {
		t.Fatalf("portal page: %d, CSP %q, X-Frame-Options %q", page.StatusCode, csp, page.Header.Get("X-Frame-Options"))
	}

	// A cross-origin exchange is refused (another site cannot sign a
	// visitor into a session of its choosing), and does not use the code.
	e.browserReq("POST", "/api/portal/exchange", "", map[string]any{"code": code},
		map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}).wantError(t, http.StatusForbidden, "cross_origin", "")

	cookie, csrf, ex := e.exchange(code)
	if cookie == "" {
		t.Fatalf("exchange: %d %s", ex.status, ex.raw)
	}
	wantKeys(t, ex.obj, "owner", "expires_at", "csrf_token", "return_url", "frame_origins")
	if ex.obj["owner"] != "alice" || csrf == "" || fmt.Sprint(ex.obj["frame_origins"]) != "["+appOrigin+"]" {
		t.Fatalf("exchange answer: %s", ex.raw)
	}
	sc := strings.Join(ex.header["Set-Cookie"], "\n")
	for _, attr := range []string{admin.PortalCookie + "=", "Path=/", "HttpOnly", "Secure", "SameSite=None", "Partitioned", "Expires="} {
		if !strings.Contains(sc, attr) {
			t.Errorf("Set-Cookie %q lacks %s", sc, attr)
		}
	}
	if strings.Contains(sc, "Domain=") {
		t.Errorf("Set-Cookie %q has a Domain", sc)
	}

	// The code works once.
	_, _, again := e.exchange(code)
	again.wantError(t, http.StatusUnauthorized, "code_used", "")
	_, _, bogus := e.exchange("rlyc_nothing")
	bogus.wantError(t, http.StatusUnauthorized, "code_invalid", "")

	// The session sees alice's webhooks only; bob's ids answer 404.
	list := e.browserReq("GET", "/api/webhooks", cookie, nil, nil).want(t, http.StatusOK)
	hooks := arr(t, list.obj["webhooks"])
	if len(hooks) != 1 || num(t, obj(t, hooks[0])["id"]) != float64(aliceHook) {
		t.Fatalf("portal list: %s", list.raw)
	}
	e.browserReq("GET", fmt.Sprintf("/api/webhooks/%d", bobHook), cookie, nil, nil).wantError(t, http.StatusNotFound, "not_found", "")
	e.browserReq("DELETE", fmt.Sprintf("/api/webhooks/%d", bobHook), cookie, nil, map[string]string{admin.CSRFHeader: csrf}).
		wantError(t, http.StatusNotFound, "not_found", "")
	e.browserReq("GET", "/api/settings", cookie, nil, nil).wantError(t, http.StatusForbidden, "forbidden", "")
	e.browserReq("GET", "/api/portal-sessions", cookie, nil, nil).wantError(t, http.StatusForbidden, "forbidden", "")

	// State-changing requests need the CSRF token and the page's origin.
	newHook := map[string]any{"name": "from the portal", "url": "https://a.example.com/p", "events": []string{"*"}}
	e.browserReq("POST", "/api/webhooks", cookie, newHook, nil).wantError(t, http.StatusForbidden, "csrf", "")
	e.browserReq("POST", "/api/webhooks", cookie, newHook, map[string]string{admin.CSRFHeader: csrf + "x"}).wantError(t, http.StatusForbidden, "csrf", "")
	e.browserReq("POST", "/api/webhooks", cookie, newHook, map[string]string{admin.CSRFHeader: csrf, "Sec-Fetch-Site": "cross-site"}).
		wantError(t, http.StatusForbidden, "cross_origin", "")
	e.browserReq("POST", "/api/webhooks", cookie, newHook, map[string]string{admin.CSRFHeader: csrf, "Sec-Fetch-Site": "", "Origin": "https://evil.example"}).
		wantError(t, http.StatusForbidden, "cross_origin", "")
	e.browserReq("PATCH", fmt.Sprintf("/api/webhooks/%d", aliceHook), cookie, map[string]any{"enabled": false}, nil).wantError(t, http.StatusForbidden, "csrf", "")
	if countRows(t, e, `SELECT count(*) FROM relay.subscriptions WHERE name = 'from the portal'`) != 0 {
		t.Fatal("a refused request created a webhook")
	}
	made := e.browserReq("POST", "/api/webhooks", cookie, newHook, map[string]string{admin.CSRFHeader: csrf}).want(t, http.StatusCreated)
	if made.obj["owner"] != "alice" || !strings.HasPrefix(fmt.Sprint(made.obj["secret"]), "whsec_") {
		t.Fatalf("created through the portal: %s", made.raw)
	}

	// After a reload the page reads its session (and CSRF token) again.
	info := e.browserReq("GET", "/api/portal/session", cookie, nil, nil).want(t, http.StatusOK)
	if info.obj["csrf_token"] != csrf || info.obj["owner"] != "alice" {
		t.Fatalf("session info: %s", info.raw)
	}
	e.do("GET", "/api/portal/session", e.alice, nil).wantError(t, http.StatusNotFound, "not_found", "")

	// Owner tokens keep working beside the sessions.
	e.do("GET", "/api/webhooks", e.alice, nil).want(t, http.StatusOK)

	// Recorded, listed, revoked: the cookie then answers 401.
	listed := e.do("GET", "/api/portal-sessions?owner=alice&active=true", operatorToken, nil).want(t, http.StatusOK)
	ss := arr(t, listed.obj["portal_sessions"])
	if len(ss) != 1 || num(t, obj(t, ss[0])["id"]) != float64(id) || obj(t, ss[0])["exchanged_at"] == nil || obj(t, ss[0])["last_used_at"] == nil {
		t.Fatalf("listed: %s", listed.raw)
	}
	e.do("DELETE", fmt.Sprintf("/api/portal-sessions/%d", id), operatorToken, nil).want(t, http.StatusOK)
	e.do("DELETE", "/api/portal-sessions/999999", operatorToken, nil).wantError(t, http.StatusNotFound, "not_found", "")
	gone := e.browserReq("GET", "/api/webhooks", cookie, nil, nil).wantError(t, http.StatusUnauthorized, "session_revoked", "")
	if sc := strings.Join(gone.header["Set-Cookie"], ""); !strings.Contains(sc, "Max-Age=0") {
		t.Errorf("a revoked session's cookie is not cleared: %q", sc)
	}
	if ss := arr(t, e.do("GET", "/api/portal-sessions?owner=alice&active=true", operatorToken, nil).want(t, http.StatusOK).obj["portal_sessions"]); len(ss) != 0 {
		t.Fatalf("revoked session still active: %v", ss)
	}

	// Only hashes are stored, and no log line holds a secret.
	hits := countRows(t, e, `SELECT count(*) FROM relay.portal_sessions
		WHERE position(convert_to($1, 'UTF8') IN code_hash) > 0 OR position(convert_to($2, 'UTF8') IN coalesce(session_hash, ''::bytea)) > 0
		   OR concat_ws(' ', owner, created_by, client_addr, app_user, return_url) LIKE '%rly%'`, code, cookie)
	if hits != 0 {
		t.Fatal("a plaintext code or secret is in relay.portal_sessions")
	}
	logs := e.logs.String()
	for what, secret := range map[string]string{"code": code, "secret": cookie, "csrf token": csrf} {
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the logs", what)
		}
	}
	if !strings.Contains(logs, `"portal_session":`+strconv.FormatInt(id, 10)) {
		t.Errorf("requests with the session are not logged with its id")
	}
}

func TestPortalSessionEnds(t *testing.T) {
	t.Parallel()
	e := portalEnv(t, nil)

	// An expired code is refused.
	_, code := e.newPortalSession("alice")
	e.db.Exec(t, `UPDATE relay.portal_sessions SET created_at = now() - interval '10 minutes', code_expires_at = now() - interval '1 second'`)
	if _, _, r := e.exchange(code); r.status != http.StatusUnauthorized || obj(t, r.obj["error"])["code"] != "code_expired" {
		t.Fatalf("expired code: %d %s", r.status, r.raw)
	}

	// An expired session answers 401 session_expired, and so does a
	// request with a cookie that never was one.
	id, code := e.newPortalSession("alice")
	cookie, csrf, r := e.exchange(code)
	if cookie == "" {
		t.Fatalf("exchange: %s", r.raw)
	}
	e.browserReq("GET", "/api/webhooks", cookie, nil, nil).want(t, http.StatusOK)
	e.db.Exec(t, `UPDATE relay.portal_sessions SET created_at = now() - interval '2 hours', code_expires_at = now() - interval '2 hours',
		expires_at = now() - interval '1 second' WHERE id = `+strconv.FormatInt(id, 10))
	e.browserReq("GET", "/api/webhooks", cookie, nil, nil).wantError(t, http.StatusUnauthorized, "session_expired", "")
	e.browserReq("POST", "/api/webhooks", cookie, map[string]any{"name": "x", "url": "https://a.example.com/", "events": []string{"*"}},
		map[string]string{admin.CSRFHeader: csrf}).wantError(t, http.StatusUnauthorized, "session_expired", "")
	e.browserReq("GET", "/api/webhooks", "rlys_forged", nil, nil).wantError(t, http.StatusUnauthorized, "session_invalid", "")

	// A session revoked before its code is used: the code is refused.
	id, code = e.newPortalSession("alice")
	e.do("DELETE", fmt.Sprintf("/api/portal-sessions/%d", id), operatorToken, nil).want(t, http.StatusOK)
	if _, _, r := e.exchange(code); r.status != http.StatusUnauthorized || obj(t, r.obj["error"])["code"] != "session_revoked" {
		t.Fatalf("code of a revoked session: %d %s", r.status, r.raw)
	}

	// The page signs out: the session is revoked.
	_, code = e.newPortalSession("alice")
	cookie, csrf, _ = e.exchange(code)
	e.browserReq("DELETE", "/api/portal/session", cookie, nil, nil).wantError(t, http.StatusForbidden, "csrf", "")
	e.browserReq("DELETE", "/api/portal/session", cookie, nil, map[string]string{admin.CSRFHeader: csrf}).want(t, http.StatusNoContent)
	e.browserReq("GET", "/api/portal/session", cookie, nil, nil).wantError(t, http.StatusUnauthorized, "session_revoked", "")
}

// TestPortalCodeOnce exchanges one code from many requests at once: exactly
// one gets a session.
func TestPortalCodeOnce(t *testing.T) {
	t.Parallel()
	e := portalEnv(t, nil)
	_, code := e.newPortalSession("alice")
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, _, r := e.exchange(code)
			mu.Lock()
			statuses[r.status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if statuses[http.StatusOK] != 1 || statuses[http.StatusUnauthorized] != 7 {
		t.Fatalf("statuses %v, want one 200 and seven 401", statuses)
	}
}

func TestPortalRateLimit(t *testing.T) {
	t.Parallel()
	e := portalEnv(t, func(c *admin.Config) { c.PortalRateLimit = 3 })
	for range 3 {
		e.newPortalSession("alice")
	}
	r := e.do("POST", "/api/portal-sessions", operatorToken, map[string]any{"owner": "alice"}).wantError(t, http.StatusTooManyRequests, "rate_limited", "")
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Another owner is not held back; the limit is per owner.
	e.newPortalSession("bob")
	if n := countRows(t, e, `SELECT count(*) FROM relay.portal_sessions WHERE owner = 'alice'`); n != 3 {
		t.Fatalf("%d sessions for alice, want 3", n)
	}
}

// TestPortalFraming: only /portal may be framed, only by the configured
// origins; without any, nothing may.
func TestPortalFraming(t *testing.T) {
	t.Parallel()
	e := portalEnv(t, func(c *admin.Config) { c.FrameAncestors = []string{appOrigin, "http://localhost:3000"} })
	get := func(e *env, path string) http.Header {
		t.Helper()
		res, err := e.client.Get(e.base + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.Header
	}
	h := get(e, "/portal")
	if csp := h.Get("Content-Security-Policy"); !strings.HasSuffix(csp, "; frame-ancestors "+appOrigin+" http://localhost:3000") || h.Get("X-Frame-Options") != "" {
		t.Fatalf("/portal: CSP %q, X-Frame-Options %q", csp, h.Get("X-Frame-Options"))
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Errorf("/portal Cache-Control %q", h.Get("Cache-Control"))
	}
	for _, p := range []string{"/", "/index.html", "/portal.html", "/api/webhooks", "/healthz"} {
		h := get(e, p)
		if csp := h.Get("Content-Security-Policy"); !strings.HasSuffix(csp, "frame-ancestors 'none'") || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s may be framed: CSP %q, X-Frame-Options %q", p, csp, h.Get("X-Frame-Options"))
		}
	}

	closed := newEnv(t, &envOpts{configure: func(c *admin.Config) {
		c.Static = fstest.MapFS{"portal.html": {Data: []byte("<!doctype html>")}}
	}})
	h = get(closed, "/portal")
	if csp := h.Get("Content-Security-Policy"); !strings.HasSuffix(csp, "frame-ancestors 'none'") || h.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("/portal without --portal-origins: CSP %q, X-Frame-Options %q", csp, h.Get("X-Frame-Options"))
	}

	if _, err := admin.New(admin.Config{Pool: e.db.Pool, PublicURL: "relay.example.com"}); err == nil {
		t.Error("a public URL without a scheme was accepted")
	}
}

// countRows runs a count query.
func countRows(t *testing.T, e *env, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
