package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/portal"
	"github.com/pgoutbox/relay/internal/tokens"
	"github.com/pgoutbox/relay/subscriptions"
)

// access says who is calling.
type access int

const (
	public access = iota
	// publicHostChecked routes need no token but tell something about the
	// server: they answer only requests whose Host is one of its names
	// (see hostAllowed).
	publicHostChecked
	authenticated
	operatorOnly
	// portalExchange is the portal page's exchange of its one-time code:
	// no token, the code in the body is the credential.
	portalExchange
)

// route is one entry of the API; routes is also checked against
// openapi.json by a test.
type route struct {
	method, pattern string
	access          access
	handle          func(s *Server, w http.ResponseWriter, r *http.Request)
}

var routes = []route{
	{"GET", "/healthz", public, (*Server).healthz},
	{"GET", "/readyz", public, (*Server).readyz},
	{"GET", "/metrics", publicHostChecked, (*Server).metrics},
	{"GET", "/api/openapi.json", publicHostChecked, (*Server).openapi},

	{"GET", "/api/webhooks", authenticated, (*Server).listWebhooks},
	{"POST", "/api/webhooks", authenticated, (*Server).createWebhook},
	{"GET", "/api/webhooks/{id}", authenticated, (*Server).getWebhook},
	{"PATCH", "/api/webhooks/{id}", authenticated, (*Server).updateWebhook},
	{"DELETE", "/api/webhooks/{id}", authenticated, (*Server).deleteWebhook},
	{"POST", "/api/webhooks/{id}/test", authenticated, (*Server).testWebhook},
	{"POST", "/api/webhooks/{id}/rotate-secret", authenticated, (*Server).rotateSecret},
	{"POST", "/api/webhooks/{id}/replay", authenticated, (*Server).replay},

	{"GET", "/api/deliveries", authenticated, (*Server).listDeliveries},
	{"GET", "/api/deliveries/{id}", authenticated, (*Server).getDelivery},
	{"POST", "/api/deliveries/{id}/redeliver", authenticated, (*Server).redeliver},

	{"GET", "/api/stats", authenticated, (*Server).stats},
	{"GET", "/api/event-types", authenticated, (*Server).eventTypes},
	{"GET", "/api/event-types/{name}", authenticated, (*Server).getEventType},
	{"PUT", "/api/event-types/{name}", operatorOnly, (*Server).putEventType},
	{"DELETE", "/api/event-types/{name}", operatorOnly, (*Server).deleteEventType},
	{"POST", "/api/filters/check", authenticated, (*Server).checkFilter},
	{"GET", "/api/me", authenticated, (*Server).me},
	{"GET", "/api/settings", operatorOnly, (*Server).getSettings},
	{"PUT", "/api/settings", operatorOnly, (*Server).putSettings},

	{"POST", "/api/portal-sessions", operatorOnly, (*Server).createPortalSession},
	{"GET", "/api/portal-sessions", operatorOnly, (*Server).listPortalSessions},
	{"DELETE", "/api/portal-sessions/{id}", operatorOnly, (*Server).revokePortalSession},
	{"POST", "/api/portal/exchange", portalExchange, (*Server).exchangePortalCode},
	{"GET", "/api/portal/session", authenticated, (*Server).portalSession},
	{"DELETE", "/api/portal/session", authenticated, (*Server).endPortalSession},
}

// Handler returns the server's HTTP handler, for tests and for embedding.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routes {
		h := rt.handle
		var hf http.HandlerFunc = func(w http.ResponseWriter, r *http.Request) { h(s, w, r) }
		switch rt.access {
		case public, portalExchange:
		case publicHostChecked:
			hf = s.checkHost(hf)
		default:
			hf = s.authenticate(rt.access == operatorOnly, hf)
		}
		mux.Handle(rt.method+" "+rt.pattern, hf)
	}
	// Unknown API paths answer JSON, after authentication so that they
	// reveal nothing either.
	mux.Handle("/api/", s.authenticate(false, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, http.StatusNotFound, "not_found", "no such API route: "+r.Method+" "+r.URL.Path, "")
	}))
	if s.cfg.Static != nil {
		// "/" rather than "GET /": a method-only pattern would conflict with
		// the less specific-by-method "/api/" catch-all above.
		mux.Handle("/", staticFiles(s.cfg.Static))
		mux.HandleFunc("GET "+portalPath, s.portalPage)
	} else {
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, r, http.StatusOK, map[string]string{
				"name": "relay", "api": "/api/webhooks", "openapi": "/api/openapi.json",
			})
		})
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, r, http.StatusNotFound, "not_found", "not found", "")
		})
	}
	return s.middleware(mux)
}

// --- request context ---

type ctxKey int

const (
	callerKey ctxKey = iota
	requestIDKey
)

// caller is an authenticated client: the operator, an owner token's owner,
// or a portal session's owner (portalSession its id, portal and
// portalSecret the session and the cookie's secret).
type caller struct {
	operator      bool
	owner         string
	portalSession int64
	portal        portal.Session
	portalSecret  string
}

// scope is the owner filter for the stores: nil for the operator.
func (c caller) scope() *string {
	if c.operator {
		return nil
	}
	o := c.owner
	return &o
}

func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey).(caller)
	return c
}

// RequestID returns the id of the request ctx belongs to, "" outside one.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// --- middleware ---

// statusWriter records what a handler answered, for the request log. It
// unwraps for http.ResponseController (the test endpoint extends its write
// deadline).
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// validRequestID accepts a client's X-Request-Id when it is short and
// plain, so it can go into logs as is.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// middleware gives every request an id (X-Request-Id in and out), a body
// limit, panic recovery and one log line when it ends. The line never holds
// the Authorization header, the query string or a body.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		setSecurityHeaders(w.Header())
		sw := &statusWriter{ResponseWriter: w}
		l := s.log.With().Str("request_id", id).Logger()
		// authenticate fills in the caller through holder, so the log line
		// can name it.
		holder := &caller{}
		ctx := context.WithValue(r.Context(), requestIDKey, id)
		ctx = context.WithValue(ctx, callerHolderKey{}, holder)
		ctx = l.WithContext(ctx)
		r = r.WithContext(ctx)
		if r.Body != nil {
			r.Body = http.MaxBytesReader(sw, r.Body, s.cfg.MaxBodyBytes)
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				l.Error().Str("panic", fmt.Sprint(p)).Str("method", r.Method).Str("path", r.URL.Path).Msg("handler panicked")
				if sw.status == 0 {
					writeError(sw, r, http.StatusInternalServerError, "internal", "internal error (request id "+id+")", "")
				}
			}
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			ev := l.Info()
			switch {
			case status >= 500:
				ev = l.Error()
			case r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics":
				ev = l.Debug()
			}
			if c := *holder; c.operator {
				ev = ev.Bool("operator", true)
			} else if c.owner != "" {
				ev = ev.Str("owner", c.owner)
				if c.portalSession != 0 {
					ev = ev.Int64("portal_session", c.portalSession)
				}
			}
			ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", status).
				Int64("bytes", sw.bytes).Dur("duration_ms", time.Since(start)).
				Str("remote_addr", r.RemoteAddr).Msg("request")
		}()
		// r.URL.Query() drops what it cannot parse: a ";" would silently
		// remove a filter and widen the answer. Refuse instead.
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			writeError(sw, r, http.StatusBadRequest, "malformed_query",
				"the query string is malformed ("+err.Error()+"): separate parameters with & and percent-encode the others (; is %3B)", "")
			return
		}
		next.ServeHTTP(sw, r)
	})
}

type callerHolderKey struct{}

// bearer extracts the token of "Authorization: Bearer <token>".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// authenticate lets through requests with the operator token, a valid
// owner token or, without an Authorization header, a valid portal session
// cookie (operator only when operatorOnly), and answers 401 (403 for an
// owner on an operator route) otherwise.
func (s *Server) authenticate(operatorOnly bool, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		log := zerolog.Ctx(r.Context())
		tok := bearer(r)
		if tok == "" && r.Header.Get("Authorization") == "" {
			if ck, err := r.Cookie(PortalCookie); err == nil && ck.Value != "" {
				c, ok := s.authenticatePortal(w, r, ck.Value)
				if !ok {
					return
				}
				if operatorOnly {
					writeError(w, r, http.StatusForbidden, "forbidden", "this route needs the operator token", "")
					return
				}
				next(w, r.WithContext(context.WithValue(r.Context(), callerKey, c)))
				return
			}
		}
		if tok == "" {
			unauthorized(w, r, "missing bearer token: send Authorization: Bearer <token> (the operator token set with --admin-token, or an owner token from 'relay tokens create')")
			return
		}
		var c caller
		sum := sha256.Sum256([]byte(tok))
		switch {
		case s.opHash != nil && subtle.ConstantTimeCompare(sum[:], s.opHash) == 1:
			c.operator = true
		case strings.HasPrefix(tok, tokens.Prefix):
			owner, err := s.tokens.Authenticate(r.Context(), tok)
			if errors.Is(err, tokens.ErrInvalidToken) {
				log.Info().Str("reason", strings.TrimPrefix(err.Error(), tokens.ErrInvalidToken.Error()+": ")).Msg("owner token refused")
				unauthorized(w, r, "invalid or revoked token")
				return
			}
			if err != nil {
				s.internalError(w, r, err)
				return
			}
			c.owner = owner
		default:
			log.Info().Str("reason", "not the operator token").Msg("token refused")
			unauthorized(w, r, "invalid token")
			return
		}
		if h, ok := r.Context().Value(callerHolderKey{}).(*caller); ok {
			*h = c
		}
		if operatorOnly && !c.operator {
			writeError(w, r, http.StatusForbidden, "forbidden", "this route needs the operator token", "")
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), callerKey, c)))
	}
}

func unauthorized(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="relay"`)
	writeError(w, r, http.StatusUnauthorized, "unauthorized", msg, "")
}

// --- JSON in and out ---

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Field   *string `json:"field"`
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		zerolog.Ctx(r.Context()).Debug().Err(err).Msg("writing response")
	}
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg, field string) {
	d := errorDetail{Code: code, Message: msg}
	if field != "" {
		d.Field = &field
	}
	writeJSON(w, r, status, errorBody{Error: d})
}

func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		zerolog.Ctx(r.Context()).Debug().Err(err).Msg("request canceled")
		w.WriteHeader(499)
		return
	}
	zerolog.Ctx(r.Context()).Error().Err(err).Msg("request failed")
	writeError(w, r, http.StatusInternalServerError, "internal", "internal error (request id "+RequestID(r.Context())+")", "")
}

// apiField maps a column named by a validation error to the API's name.
func apiField(col string) string {
	switch col {
	case "event_types":
		return "events"
	case "window_start":
		return "window.start"
	case "window_end":
		return "window.end"
	case "window_time_zone":
		return "window.time_zone"
	case "disable_after":
		return "disable_after_seconds"
	case "retention":
		return "retention_seconds"
	case "payload_retention":
		return "payload_retention_seconds"
	case "grace":
		return "grace_seconds"
	}
	return col
}

// apiNames are the column names whose API field is spelled otherwise, as
// they appear in validation messages.
var apiNames = strings.NewReplacer(
	"event_types", "events",
	"window_start", "window.start",
	"window_end", "window.end",
	"window_time_zone", "window.time_zone",
)

// apiMessage rewrites a validation message written for SQL users (it names
// the columns: event_types) for API users, who send the field events.
func apiMessage(msg string) string { return apiNames.Replace(msg) }

// storeError answers an error from a store call: 400 for a validation
// error (naming the field), 404 for not found, 409 for a conflict, 500
// otherwise. what names the object for the 404 message.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error, what string) {
	var ve *subscriptions.ValidationError
	switch {
	case errors.As(err, &ve):
		msg := ve.Message
		if ve.Hint != "" {
			msg += " (" + ve.Hint + ")"
		}
		writeError(w, r, http.StatusBadRequest, "invalid_field", apiMessage(msg), apiField(ve.Field))
	case errors.Is(err, subscriptions.ErrNotFound):
		writeError(w, r, http.StatusNotFound, "not_found", what+" not found", "")
	case errors.Is(err, subscriptions.ErrConflict):
		msg := err.Error()
		if i := strings.Index(msg, subscriptions.ErrConflict.Error()+": "); i >= 0 {
			msg = msg[i+len(subscriptions.ErrConflict.Error())+2:]
		}
		writeError(w, r, http.StatusConflict, "conflict", msg, "")
	default:
		s.internalError(w, r, err)
	}
}

// decodeBody reads a JSON object into v, refusing unknown fields and
// trailing data. An empty body is an error unless optional. It answers the
// request itself and returns false on error.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.More() {
			err = errors.New("trailing data after the JSON object")
		} else if _, e := dec.Token(); e != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	if err == nil || (optional && errors.Is(err, io.EOF)) {
		return true
	}
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		big *http.MaxBytesError
	)
	switch {
	case errors.As(err, &big):
		writeError(w, r, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", big.Limit), "")
	case errors.Is(err, io.EOF):
		writeError(w, r, http.StatusBadRequest, "malformed_json", "request body must be a JSON object", "")
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		writeError(w, r, http.StatusBadRequest, "malformed_json", "request body is not valid JSON: "+err.Error(), "")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			writeError(w, r, http.StatusBadRequest, "malformed_json", "request body must be a JSON object", "")
			return false
		}
		writeError(w, r, http.StatusBadRequest, "invalid_field", fmt.Sprintf("%s must be %s, not %s", field, jsonKind(typ.Type.String()), typ.Value), field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		writeError(w, r, http.StatusBadRequest, "unknown_field", fmt.Sprintf("unknown field %q", field), field)
	default:
		writeError(w, r, http.StatusBadRequest, "malformed_json", err.Error(), "")
	}
	return false
}

// jsonKind names a Go type the way a JSON client thinks of it.
func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case strings.HasPrefix(goType, "map["):
		return "an object"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "a boolean"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "float"):
		return "a number"
	}
	return "an object"
}

// pathID parses the {id} path value; it answers 404 and returns false when
// it is not a positive integer (no such object can exist).
func pathID(w http.ResponseWriter, r *http.Request, what string) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, r, http.StatusNotFound, "not_found", what+" not found", "")
		return 0, false
	}
	return id, true
}

// queryInt reads an optional integer query parameter within [lo, hi].
func queryInt(w http.ResponseWriter, r *http.Request, q url.Values, name string, def, lo, hi int64) (int64, bool) {
	v := q.Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		writeError(w, r, http.StatusBadRequest, "invalid_field", fmt.Sprintf("%s must be an integer between %d and %d", name, lo, hi), name)
		return 0, false
	}
	return n, true
}
