package admin

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/portal"
)

// This file is the HTTP side of the owner portal (package portal keeps the
// sessions): the operator's routes that make, list and revoke sessions, the
// exchange of a one-time code for the session cookie, the cookie's
// authentication and CSRF checks, and the framable portal page.
//
// The cookie. The portal is meant to live in an iframe of the application,
// usually on another site than relay (app.example.com framing
// relay.example.net), where a SameSite=Lax or Strict cookie would not be
// sent at all: the cookie is therefore SameSite=None, which browsers accept
// only with Secure, and Partitioned (CHIPS), so that browsers that block
// third-party cookies still keep it, in a jar of its own for the
// application's site. HttpOnly keeps it from the page's JavaScript (an XSS
// in the page cannot read it), and the __Host- prefix forbids a Domain
// attribute and a Path other than /, so a sibling subdomain cannot plant
// one. Browsers treat http://127.0.0.1 and http://localhost as secure
// contexts and accept Secure cookies from them, which is how the tests and
// a local trial work without TLS; any other http:// origin drops the
// cookie, so a portal served over plain HTTP elsewhere cannot sign in.
//
// CSRF. SameSite=None means the browser attaches the cookie to requests
// that other sites make, so SameSite gives no protection: every request
// with the cookie whose method is not GET, HEAD or OPTIONS must carry the
// session's CSRF token in X-Relay-CSRF (the page gets it from the exchange
// and from GET /api/portal/session, which other origins cannot read), and
// must not be cross-origin by its Sec-Fetch-Site or Origin headers
// (http.CrossOriginProtection).

// PortalCookie is the name of the session cookie.
const PortalCookie = "__Host-relay_portal"

// CSRFHeader carries the CSRF token of a portal session.
const CSRFHeader = "X-Relay-CSRF"

// portalPath is the framable portal page.
const portalPath = "/portal"

var crossOrigin = http.NewCrossOriginProtection()

// --- operator routes ---

// portalSessionRequest is the body of POST /api/portal-sessions.
type portalSessionRequest struct {
	Owner     string `json:"owner"`
	TTL       string `json:"ttl"`
	ReturnURL string `json:"return_url"`
	User      string `json:"user"`
}

// portalSessionCreated is the answer to POST /api/portal-sessions: the
// session's record plus the one-time URL, shown this once.
type portalSessionCreated struct {
	portal.Session
	URL string `json:"url"`
}

func (s *Server) createPortalSession(w http.ResponseWriter, r *http.Request) {
	var req portalSessionRequest
	if !decodeBody(w, r, &req, false) {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, r, http.StatusBadRequest, "invalid_field", fmt.Sprintf("ttl %q is not a duration such as 15m or 1h", req.TTL), "ttl")
			return
		}
		ttl = d
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	code, sess, err := s.portal.Create(r.Context(), portal.CreateParams{
		Owner: req.Owner, TTL: ttl, ReturnURL: req.ReturnURL, User: req.User,
		CreatedBy: "operator", ClientAddr: host,
	})
	var ve *portal.ValidationError
	var rl *portal.RateLimitedError
	switch {
	case errors.As(err, &ve):
		writeError(w, r, http.StatusBadRequest, "invalid_field", ve.Message, ve.Field)
		return
	case errors.As(err, &rl):
		w.Header().Set("Retry-After", strconv.Itoa(int((rl.RetryAfter+time.Second-1)/time.Second)))
		writeError(w, r, http.StatusTooManyRequests, "rate_limited", strings.TrimPrefix(err.Error(), "creating portal session: "), "")
		return
	case err != nil:
		s.internalError(w, r, err)
		return
	}
	zerolog.Ctx(r.Context()).Info().Int64("portal_session", sess.ID).Str("for_owner", sess.Owner).
		Time("expires_at", sess.ExpiresAt).Msg("portal session created")
	writeJSON(w, r, http.StatusCreated, portalSessionCreated{Session: sess, URL: s.portalBase(r) + portalPath + "?code=" + code})
}

// portalBase is the origin the one-time URL names: Config.PublicURL, or
// the scheme and Host of the request (right when the application's backend
// reaches relay by the name browsers use).
func (s *Server) portalBase(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) listPortalSessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := queryInt(w, r, q, "limit", 100, 1, 1000)
	if !ok {
		return
	}
	active := false
	switch q.Get("active") {
	case "", "false":
	case "true":
		active = true
	default:
		writeError(w, r, http.StatusBadRequest, "invalid_field", "active must be true or false", "active")
		return
	}
	list, err := s.portal.List(r.Context(), portal.ListParams{Owner: q.Get("owner"), Active: active, Limit: int(limit)})
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if list == nil {
		list = []portal.Session{}
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"portal_sessions": list})
}

func (s *Server) revokePortalSession(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "portal session")
	if !ok {
		return
	}
	sess, err := s.portal.Revoke(r.Context(), id)
	if errors.Is(err, portal.ErrNotFound) {
		writeError(w, r, http.StatusNotFound, "not_found", "portal session not found", "")
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	zerolog.Ctx(r.Context()).Info().Int64("portal_session", sess.ID).Str("for_owner", sess.Owner).Msg("portal session revoked")
	writeJSON(w, r, http.StatusOK, sess)
}

// --- the page's routes ---

// portalInfo is what the page learns about its session: enough to show
// whose webhooks these are, to send state-changing requests, and to talk to
// its parent frame.
type portalInfo struct {
	Owner     string    `json:"owner"`
	ExpiresAt time.Time `json:"expires_at"`
	CSRFToken string    `json:"csrf_token"`
	ReturnURL *string   `json:"return_url"`
	// FrameOrigins are the origins allowed to frame the page
	// (--portal-origins): the page posts its height to each of them, never
	// to "*", and the browser delivers it only to the one that is its parent.
	FrameOrigins []string `json:"frame_origins"`
}

func (s *Server) portalInfo(sess portal.Session, secret string) portalInfo {
	fo := s.cfg.FrameAncestors
	if fo == nil {
		fo = []string{}
	}
	return portalInfo{Owner: sess.Owner, ExpiresAt: sess.ExpiresAt, CSRFToken: portal.CSRFToken(secret),
		ReturnURL: sess.ReturnURL, FrameOrigins: fo}
}

// exchangePortalCode is POST /api/portal/exchange {"code": …}: the page
// trades the one-time code of its URL for the session cookie. It needs no
// token (the code is the credential), but a cross-origin request is
// refused, so another site cannot sign a visitor into a session of its
// choosing.
func (s *Server) exchangePortalCode(w http.ResponseWriter, r *http.Request) {
	if err := crossOrigin.Check(r); err != nil {
		writeError(w, r, http.StatusForbidden, "cross_origin", "cross-origin request refused: the portal page exchanges its code itself", "")
		return
	}
	var req struct {
		Code string `json:"code"`
	}
	if !decodeBody(w, r, &req, false) {
		return
	}
	secret, sess, err := s.portal.Exchange(r.Context(), req.Code)
	if errors.Is(err, portal.ErrInvalid) {
		code, msg := "code_invalid", "this portal link is not valid; open the page again from the application"
		switch {
		case errors.Is(err, portal.ErrUsed):
			code, msg = "code_used", "this portal link was already used; open the page again from the application"
		case errors.Is(err, portal.ErrExpired):
			code, msg = "code_expired", "this portal link has expired; open the page again from the application"
		case errors.Is(err, portal.ErrRevoked):
			code, msg = "session_revoked", "this portal session was revoked"
		}
		zerolog.Ctx(r.Context()).Info().Str("reason", code).Msg("portal code refused")
		writeError(w, r, http.StatusUnauthorized, code, msg, "")
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: PortalCookie, Value: secret, Path: "/", Expires: sess.ExpiresAt,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteNoneMode, Partitioned: true,
	})
	if h, ok := r.Context().Value(callerHolderKey{}).(*caller); ok {
		*h = caller{owner: sess.Owner, portalSession: sess.ID}
	}
	zerolog.Ctx(r.Context()).Info().Int64("portal_session", sess.ID).Msg("portal code exchanged")
	writeJSON(w, r, http.StatusOK, s.portalInfo(sess, secret))
}

// portalSession is GET /api/portal/session: the page, reloaded after its
// code was used, learns its session (and CSRF token) again from the cookie.
func (s *Server) portalSession(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	if c.portalSession == 0 {
		writeError(w, r, http.StatusNotFound, "not_found", "no portal session: this route answers the portal page's session cookie", "")
		return
	}
	writeJSON(w, r, http.StatusOK, s.portalInfo(c.portal, c.portalSecret))
}

// endPortalSession is DELETE /api/portal/session: the page signs out (its
// session is revoked and the cookie removed).
func (s *Server) endPortalSession(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	if c.portalSession == 0 {
		writeError(w, r, http.StatusNotFound, "not_found", "no portal session: this route answers the portal page's session cookie", "")
		return
	}
	if _, err := s.portal.Revoke(r.Context(), c.portalSession); err != nil {
		s.internalError(w, r, err)
		return
	}
	clearPortalCookie(w)
	w.WriteHeader(http.StatusNoContent)
}

func clearPortalCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{
		Name: PortalCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteNoneMode, Partitioned: true,
	})
}

// authenticatePortal authenticates a request by its portal cookie. It
// returns false after answering 401 (ended session) or 403 (a
// state-changing request without the CSRF token, or cross-origin).
func (s *Server) authenticatePortal(w http.ResponseWriter, r *http.Request, secret string) (caller, bool) {
	log := zerolog.Ctx(r.Context())
	sess, err := s.portal.Authenticate(r.Context(), secret)
	if errors.Is(err, portal.ErrInvalid) {
		code, msg := "session_invalid", "no valid portal session: open the page again from the application"
		switch {
		case errors.Is(err, portal.ErrExpired):
			code, msg = "session_expired", "your portal session has expired: open the page again from the application"
		case errors.Is(err, portal.ErrRevoked):
			code, msg = "session_revoked", "your portal session was revoked: open the page again from the application"
		}
		log.Info().Str("reason", code).Msg("portal session refused")
		clearPortalCookie(w)
		writeError(w, r, http.StatusUnauthorized, code, msg, "")
		return caller{}, false
	}
	if err != nil {
		s.internalError(w, r, err)
		return caller{}, false
	}
	c := caller{owner: sess.Owner, portalSession: sess.ID, portal: sess, portalSecret: secret}
	if h, ok := r.Context().Value(callerHolderKey{}).(*caller); ok {
		*h = c
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return c, true
	}
	if err := crossOrigin.Check(r); err != nil {
		log.Info().Int64("portal_session", sess.ID).Msg("cross-origin request with a portal session refused")
		writeError(w, r, http.StatusForbidden, "cross_origin", "cross-origin request refused", "")
		return caller{}, false
	}
	want := portal.CSRFToken(secret)
	if got := r.Header.Get(CSRFHeader); subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		log.Info().Int64("portal_session", sess.ID).Msg("portal request without its CSRF token refused")
		writeError(w, r, http.StatusForbidden, "csrf", "missing or wrong "+CSRFHeader+" header: state-changing requests of the portal carry the session's CSRF token", "")
		return caller{}, false
	}
	return c, true
}

// portalPage serves the portal page, the one page relay lets the origins
// of --portal-origins frame.
func (s *Server) portalPage(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Static == nil {
		writeError(w, r, http.StatusNotFound, "not_found", "not found", "")
		return
	}
	page, err := fs.ReadFile(s.cfg.Static, "portal.html")
	if err != nil {
		writeError(w, r, http.StatusNotFound, "not_found", "not found", "")
		return
	}
	s.AllowFraming(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The URL carries a one-time code: keep the page out of caches.
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(page)
}
