package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/subscriptions"
)

// windowJSON is a delivery window: {"start": "22:00", "end": "06:00",
// "time_zone": "Europe/Paris"}.
type windowJSON struct {
	Start    string `json:"start"`
	End      string `json:"end"`
	TimeZone string `json:"time_zone"`
}

func toWindowJSON(w *subscriptions.Window) *windowJSON {
	if w == nil {
		return nil
	}
	return &windowJSON{Start: w.Start, End: w.End, TimeZone: w.TimeZone}
}

type healthJSON struct {
	ConsecutiveFailures int        `json:"consecutive_failures"`
	FailingSince        *time.Time `json:"failing_since"`
	LastSuccessAt       *time.Time `json:"last_success_at"`
	LastFailureAt       *time.Time `json:"last_failure_at"`
	LastError           *string    `json:"last_error"`
	DisabledReason      *string    `json:"disabled_reason"`
}

// webhookJSON is a subscription as the API shows it. retry_schedule is in
// seconds. secret appears only in the answers of create and rotate-secret.
type webhookJSON struct {
	ID                 int64             `json:"id"`
	Owner              *string           `json:"owner"`
	Name               string            `json:"name"`
	URL                string            `json:"url"`
	Events             []string          `json:"events"`
	Enabled            bool              `json:"enabled"`
	Format             string            `json:"format"`
	Template           *string           `json:"template"`
	Headers            map[string]string `json:"headers"`
	TimeoutMS          int               `json:"timeout_ms"`
	RetrySchedule      []float64         `json:"retry_schedule"`
	MaxInFlight        int               `json:"max_in_flight"`
	Window             *windowJSON       `json:"window"`
	IgnoreGlobalWindow bool              `json:"ignore_global_window"`
	OutsideWindow      string            `json:"outside_window"`
	Filter             *string           `json:"filter"`
	RateLimit          *float64          `json:"rate_limit"`
	RateBurst          *int              `json:"rate_burst"`
	Ordering           string            `json:"ordering"`
	Flow               flowJSON          `json:"flow"`
	Health             healthJSON        `json:"health"`
	CreatedAt          time.Time         `json:"created_at"`
	UpdatedAt          time.Time         `json:"updated_at"`
	Secret             string            `json:"secret,omitempty"`
	Stats              *webhookStatsJSON `json:"stats,omitempty"`
}

// flowJSON is where a webhook stands on flow control: held_until (with
// its reason: throttled, rate limit headers, circuit open) is set while
// no request may go to it.
type flowJSON struct {
	HeldUntil       *time.Time `json:"held_until"`
	HoldReason      *string    `json:"hold_reason"`
	CircuitOpen     bool       `json:"circuit_open"`
	CircuitOpenedAt *time.Time `json:"circuit_opened_at"`
	ThrottledSince  *time.Time `json:"throttled_since"`
}

// webhookStatsJSON are the last 24 hours of one webhook.
type webhookStatsJSON struct {
	Deliveries24h        int64      `json:"deliveries_24h"`
	Succeeded24h         int64      `json:"succeeded_24h"`
	Failed24h            int64      `json:"failed_24h"`
	Pending24h           int64      `json:"pending_24h"`
	SuccessRate24h       *float64   `json:"success_rate_24h"`
	Attempts24h          int64      `json:"attempts_24h"`
	TimeoutRate24h       *float64   `json:"timeout_rate_24h"`
	AvgMS                *float64   `json:"avg_ms"`
	P50MS                *float64   `json:"p50_ms"`
	P95MS                *float64   `json:"p95_ms"`
	Backlog              int64      `json:"backlog"`
	OldestPendingSeconds *float64   `json:"oldest_pending_seconds"`
	ConsecutiveFailures  int        `json:"consecutive_failures"`
	LastSuccessAt        *time.Time `json:"last_success_at"`
	LastFailureAt        *time.Time `json:"last_failure_at"`
}

func toWebhookJSON(s subscriptions.Subscription) webhookJSON {
	headers := s.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	events := s.EventTypes
	if events == nil {
		events = []string{}
	}
	sched := make([]float64, len(s.RetrySchedule))
	for i, d := range s.RetrySchedule {
		sched[i] = d.Seconds()
	}
	wj := webhookJSON{
		ID: s.ID, Owner: s.Owner, Name: s.Name, URL: s.URL, Events: events, Enabled: s.Enabled,
		Format: s.Format, Template: s.Template, Headers: headers, TimeoutMS: s.TimeoutMS,
		RetrySchedule: sched, MaxInFlight: s.MaxInFlight, Window: toWindowJSON(s.Window()),
		IgnoreGlobalWindow: s.IgnoreGlobalWindow, OutsideWindow: s.OutsideWindow, Filter: s.Filter,
		RateLimit: s.RateLimit, RateBurst: s.RateBurst, Ordering: s.Ordering,
		Flow: flowJSON{CircuitOpen: s.CircuitOpenedAt != nil, CircuitOpenedAt: s.CircuitOpenedAt, ThrottledSince: s.ThrottledSince},
		Health: healthJSON{
			ConsecutiveFailures: s.ConsecutiveFailures, FailingSince: s.FailingSince,
			LastSuccessAt: s.LastSuccessAt, LastFailureAt: s.LastFailureAt,
			LastError: s.LastError, DisabledReason: s.DisabledReason,
		},
		CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt,
	}
	if s.HeldUntil != nil && s.HeldUntil.After(time.Now()) {
		wj.Flow.HeldUntil, wj.Flow.HoldReason = s.HeldUntil, s.HoldReason
	}
	return wj
}

func toWebhookStatsJSON(st subscriptions.SubscriptionStats) *webhookStatsJSON {
	return &webhookStatsJSON{
		Deliveries24h: st.Deliveries, Succeeded24h: st.Succeeded, Failed24h: st.Failed, Pending24h: st.Pending,
		SuccessRate24h: st.SuccessRate, Attempts24h: st.Attempts, TimeoutRate24h: st.TimeoutRate,
		AvgMS: st.AvgDurationMS, P50MS: st.P50DurationMS, P95MS: st.P95DurationMS,
		Backlog: st.Backlog, OldestPendingSeconds: st.OldestPendingSeconds,
		ConsecutiveFailures: st.ConsecutiveFailures, LastSuccessAt: st.LastSuccessAt, LastFailureAt: st.LastFailureAt,
	}
}

// secondsToDurations converts the API's retry schedule (seconds) to
// durations; values out of range become durations the validation refuses.
func secondsToDurations(secs []float64) []time.Duration {
	out := make([]time.Duration, len(secs))
	for i, s := range secs {
		switch {
		case s > float64(subscriptions.MaxRetryDelay/time.Second):
			out[i] = math.MaxInt64
		case s <= 0:
			out[i] = 0
		default:
			out[i] = time.Duration(math.Round(s * float64(time.Second)))
		}
	}
	return out
}

// createWebhookRequest is the body of POST /api/webhooks.
type createWebhookRequest struct {
	// Owner: the operator may create a webhook for any owner (null: an
	// operator webhook); an owner token creates for its own owner.
	Owner              *string           `json:"owner"`
	Name               string            `json:"name"`
	URL                string            `json:"url"`
	Events             []string          `json:"events"`
	Enabled            *bool             `json:"enabled"`
	Format             string            `json:"format"`
	Template           *string           `json:"template"`
	Headers            map[string]string `json:"headers"`
	TimeoutMS          int               `json:"timeout_ms"`
	RetrySchedule      *[]float64        `json:"retry_schedule"`
	MaxInFlight        int               `json:"max_in_flight"`
	Window             *windowJSON       `json:"window"`
	IgnoreGlobalWindow bool              `json:"ignore_global_window"`
	OutsideWindow      string            `json:"outside_window"`
	Filter             *string           `json:"filter"`
	Secret             string            `json:"secret"`
	// RateLimit null or absent: the format's default (slack 1/s).
	RateLimit *float64 `json:"rate_limit"`
	RateBurst *int     `json:"rate_burst"`
	Ordering  string   `json:"ordering"`
}

// checkURL runs the SSRF pre-check with the current allow_http setting.
func (s *Server) checkURL(ctx context.Context, raw string) error {
	allowHTTP, err := s.store.AllowHTTP(ctx)
	if err != nil {
		return err
	}
	return subscriptions.ValidateURL(raw, allowHTTP, s.guard.Check)
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) {
	var req createWebhookRequest
	if !decodeBody(w, r, &req, false) {
		return
	}
	c := callerOf(r)
	owner := req.Owner
	if !c.operator {
		if owner != nil && *owner != c.owner {
			writeError(w, r, http.StatusBadRequest, "invalid_field", "an owner token creates webhooks for its own owner only; leave owner out", "owner")
			return
		}
		owner = c.scope()
	}
	if req.Name == "" {
		writeError(w, r, http.StatusBadRequest, "invalid_field", "name must not be empty", "name")
		return
	}
	if req.URL == "" {
		writeError(w, r, http.StatusBadRequest, "invalid_field", "url must not be empty", "url")
		return
	}
	if err := s.checkURL(r.Context(), req.URL); err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	p := subscriptions.CreateParams{
		Owner: owner, Name: req.Name, URL: req.URL, EventTypes: req.Events, Secret: req.Secret,
		Enabled: req.Enabled, Format: req.Format, Template: req.Template, Headers: req.Headers,
		TimeoutMS: req.TimeoutMS, MaxInFlight: req.MaxInFlight, IgnoreGlobalWindow: req.IgnoreGlobalWindow,
		OutsideWindow: req.OutsideWindow, RateLimit: req.RateLimit, RateBurst: req.RateBurst, Ordering: req.Ordering,
	}
	if req.Filter != nil {
		p.Filter = *req.Filter
	}
	if req.RetrySchedule != nil {
		p.RetrySchedule = secondsToDurations(*req.RetrySchedule)
	}
	if req.Window != nil {
		p.Window = toWindow(req.Window)
	}
	sub, err := s.store.Create(r.Context(), p)
	if err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	zerolog.Ctx(r.Context()).Info().Int64("subscription_id", sub.ID).Str("url", maskURL(sub.URL)).
		Strs("event_types", sub.EventTypes).Msg("webhook created")
	out := toWebhookJSON(sub)
	out.Secret = sub.Secret
	w.Header().Set("Location", fmt.Sprintf("/api/webhooks/%d", sub.ID))
	writeJSON(w, r, http.StatusCreated, out)
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	q := r.URL.Query()
	p := subscriptions.ListParams{Owner: c.scope()}
	if o := q.Get("owner"); o != "" && c.operator {
		p.Owner = &o
	}
	switch q.Get("enabled") {
	case "":
	case "true":
		p.Enabled = ptr(true)
	case "false":
		p.Enabled = ptr(false)
	default:
		writeError(w, r, http.StatusBadRequest, "invalid_field", "enabled must be true or false", "enabled")
		return
	}
	if et := q.Get("event_type"); et != "" {
		if !subscriptions.ValidEventType(et) {
			writeError(w, r, http.StatusBadRequest, "invalid_field", "event_type must be an event type such as thread.created", "event_type")
			return
		}
		p.EventType = et
	}
	subs, err := s.store.List(r.Context(), p)
	if err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	out := make([]webhookJSON, len(subs))
	for i, sub := range subs {
		out[i] = toWebhookJSON(sub)
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"webhooks": out})
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "webhook")
	if !ok {
		return
	}
	scope := callerOf(r).scope()
	sub, err := s.store.Get(r.Context(), id, scope)
	if err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	st, err := s.store.Stats(r.Context(), id, scope, 24*time.Hour)
	if err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	out := toWebhookJSON(sub)
	out.Stats = toWebhookStatsJSON(st)
	writeJSON(w, r, http.StatusOK, out)
}

// updateWebhookRequest is the body of PATCH /api/webhooks/{id}: absent
// fields keep their value. window null removes the window; template ""
// removes the template.
type updateWebhookRequest struct {
	Name               *string            `json:"name"`
	URL                *string            `json:"url"`
	Events             *[]string          `json:"events"`
	Enabled            *bool              `json:"enabled"`
	DisabledReason     *string            `json:"disabled_reason"`
	Format             *string            `json:"format"`
	Template           *string            `json:"template"`
	Headers            *map[string]string `json:"headers"`
	TimeoutMS          *int               `json:"timeout_ms"`
	RetrySchedule      *[]float64         `json:"retry_schedule"`
	MaxInFlight        *int               `json:"max_in_flight"`
	Window             json.RawMessage    `json:"window"`
	IgnoreGlobalWindow *bool              `json:"ignore_global_window"`
	OutsideWindow      *string            `json:"outside_window"`
	// Filter null or "" removes the filter.
	Filter json.RawMessage `json:"filter"`
	// RateLimit null removes the limit; RateBurst null goes back to one
	// second of rate_limit.
	RateLimit json.RawMessage `json:"rate_limit"`
	RateBurst json.RawMessage `json:"rate_burst"`
	Ordering  *string         `json:"ordering"`
}

// decodeNullable reads a number field that may be null (0 in the store
// params: remove it).
func decodeNullable[T float64 | int](w http.ResponseWriter, r *http.Request, raw json.RawMessage, field, what string) (*T, bool) {
	if len(raw) == 0 {
		return nil, true
	}
	var v T
	if string(raw) == "null" {
		return &v, true
	}
	if err := json.Unmarshal(raw, &v); err != nil || v == 0 {
		writeError(w, r, http.StatusBadRequest, "invalid_field", field+" must be "+what+", or null", field)
		return nil, false
	}
	return &v, true
}

// decodeWindow reads a window that may be null (remove it).
func decodeWindow(w http.ResponseWriter, r *http.Request, raw json.RawMessage) (*subscriptions.Window, bool) {
	if len(raw) == 0 {
		return nil, true
	}
	if string(raw) == "null" {
		return &subscriptions.Window{}, true
	}
	var wj windowJSON
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wj); err != nil {
		writeError(w, r, http.StatusBadRequest, "invalid_field",
			`window must be null or {"start": "HH:MM", "end": "HH:MM", "time_zone": "Area/City"}`, "window")
		return nil, false
	}
	if wj.Start == "" || wj.End == "" {
		writeError(w, r, http.StatusBadRequest, "invalid_field", "window needs both start and end (or null to remove it)", "window")
		return nil, false
	}
	return toWindow(&wj), true
}

// toWindow converts an API window; a window given without time_zone is in
// UTC (it replaces the whole window, so an older time zone is not kept).
func toWindow(wj *windowJSON) *subscriptions.Window {
	tz := wj.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	return &subscriptions.Window{Start: wj.Start, End: wj.End, TimeZone: tz}
}

func (s *Server) updateWebhook(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "webhook")
	if !ok {
		return
	}
	var req updateWebhookRequest
	if !decodeBody(w, r, &req, false) {
		return
	}
	p := subscriptions.UpdateParams{
		Name: req.Name, URL: req.URL, EventTypes: req.Events, Enabled: req.Enabled, DisabledReason: req.DisabledReason,
		Format: req.Format, Template: req.Template, Headers: req.Headers, TimeoutMS: req.TimeoutMS,
		MaxInFlight: req.MaxInFlight, IgnoreGlobalWindow: req.IgnoreGlobalWindow, OutsideWindow: req.OutsideWindow,
		Ordering: req.Ordering,
	}
	if req.RetrySchedule != nil {
		d := secondsToDurations(*req.RetrySchedule)
		p.RetrySchedule = &d
	}
	var ok2 bool
	if p.RateLimit, ok2 = decodeNullable[float64](w, r, req.RateLimit, "rate_limit", "a number of requests per second above 0"); !ok2 {
		return
	}
	if p.RateBurst, ok2 = decodeNullable[int](w, r, req.RateBurst, "rate_burst", "a whole number of requests of at least 1"); !ok2 {
		return
	}
	if len(req.Filter) > 0 {
		f := ""
		if string(req.Filter) != "null" {
			if err := json.Unmarshal(req.Filter, &f); err != nil {
				writeError(w, r, http.StatusBadRequest, "invalid_field", "filter must be a jsonpath string, or null to remove it", "filter")
				return
			}
		}
		p.Filter = &f
	}
	if p.Window, ok = decodeWindow(w, r, req.Window); !ok {
		return
	}
	scope := callerOf(r).scope()
	if req.URL != nil {
		// Check ownership first so another owner's id answers 404, not a
		// validation error.
		if _, err := s.store.Get(r.Context(), id, scope); err != nil {
			s.storeError(w, r, err, "webhook")
			return
		}
		if err := s.checkURL(r.Context(), *req.URL); err != nil {
			s.storeError(w, r, err, "webhook")
			return
		}
	}
	sub, err := s.store.Update(r.Context(), id, scope, p)
	if err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	ev := zerolog.Ctx(r.Context()).Info().Int64("subscription_id", id)
	if req.Enabled != nil {
		ev = ev.Bool("enabled", *req.Enabled)
	}
	ev.Msg("webhook updated")
	writeJSON(w, r, http.StatusOK, toWebhookJSON(sub))
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "webhook")
	if !ok {
		return
	}
	if err := s.store.Delete(r.Context(), id, callerOf(r).scope()); err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	zerolog.Ctx(r.Context()).Info().Int64("subscription_id", id).Msg("webhook deleted")
	w.WriteHeader(http.StatusNoContent)
}

// testGrace is how long a test may wait beyond the subscription's timeout
// (for a free dispatch slot, DNS, recording the attempt).
const testGrace = 30 * time.Second

func (s *Server) testWebhook(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "webhook")
	if !ok {
		return
	}
	sub, err := s.store.Get(r.Context(), id, callerOf(r).scope())
	if err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	if s.cfg.Tester == nil {
		writeError(w, r, http.StatusServiceUnavailable, "unavailable", "test deliveries are not available in this process", "")
		return
	}
	limit := time.Duration(sub.TimeoutMS)*time.Millisecond + testGrace
	// The answer comes after the attempt: let it outlive WriteTimeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(limit + 5*time.Second))
	ctx, cancel := context.WithTimeout(r.Context(), limit)
	defer cancel()
	res, err := s.cfg.Tester.Test(ctx, id)
	switch {
	case errors.Is(err, subscriptions.ErrNotFound):
		writeError(w, r, http.StatusNotFound, "not_found", "webhook not found", "")
		return
	case err != nil && errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		writeError(w, r, http.StatusGatewayTimeout, "test_timeout", fmt.Sprintf("the test delivery did not finish within %s", limit), "")
		return
	case err != nil:
		s.internalError(w, r, err)
		return
	}
	zerolog.Ctx(r.Context()).Info().Int64("subscription_id", id).Bool("delivered", res.Delivered).
		Int("status_code", res.StatusCode).Int64("duration_ms", res.DurationMS).Msg("webhook tested")
	out := testResponse{TestResult: res, WebhookEnabled: sub.Enabled, Notes: []string{}}
	if !sub.Enabled {
		out.Notes = append(out.Notes, "the webhook is disabled: this test was sent, but events are not delivered to it until it is enabled")
	}
	if paused, err := s.store.GetSettings(r.Context()); err == nil && paused.Paused {
		out.RelayPaused = true
		out.Notes = append(out.Notes, "relay is paused: this test was sent, but deliveries wait until it is resumed")
	}
	writeJSON(w, r, http.StatusOK, out)
}

// testResponse is the answer of POST /api/webhooks/{id}/test: the attempt,
// and what the caller should know about it. A test is sent even to a
// disabled webhook and while relay is paused (that is often why one tests),
// but then real events are not, which notes says.
type testResponse struct {
	TestResult
	WebhookEnabled bool     `json:"webhook_enabled"`
	RelayPaused    bool     `json:"relay_paused"`
	Notes          []string `json:"notes"`
}

type rotateRequest struct {
	// GraceSeconds is how long the old secret keeps signing; default 86400.
	GraceSeconds *float64 `json:"grace_seconds"`
}

type rotateResponse struct {
	ID           int64   `json:"id"`
	Secret       string  `json:"secret"`
	GraceSeconds float64 `json:"grace_seconds"`
}

func (s *Server) rotateSecret(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "webhook")
	if !ok {
		return
	}
	var req rotateRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	grace := subscriptions.DefaultRotationGrace
	if req.GraceSeconds != nil {
		g := *req.GraceSeconds
		if g < 0 || g > 30*24*3600 {
			writeError(w, r, http.StatusBadRequest, "invalid_field", "grace_seconds must be between 0 and 2592000 (30 days)", "grace_seconds")
			return
		}
		grace = time.Duration(g * float64(time.Second))
	}
	secret, err := s.store.RotateSecret(r.Context(), id, callerOf(r).scope(), grace)
	if err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	zerolog.Ctx(r.Context()).Info().Int64("subscription_id", id).Dur("grace", grace).Msg("webhook secret rotated")
	writeJSON(w, r, http.StatusOK, rotateResponse{ID: id, Secret: secret, GraceSeconds: grace.Seconds()})
}

type replayRequest struct {
	Since string `json:"since"`
	Until string `json:"until"`
}

// parseTime reads an RFC 3339 time field; "" gives def.
func parseTime(w http.ResponseWriter, r *http.Request, field, v string, def time.Time) (time.Time, bool) {
	if v == "" {
		return def, true
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, "invalid_field", field+" must be an RFC 3339 time such as 2025-10-24T08:00:00Z", field)
		return time.Time{}, false
	}
	return t, true
}

func (s *Server) replay(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "webhook")
	if !ok {
		return
	}
	var req replayRequest
	if !decodeBody(w, r, &req, false) {
		return
	}
	if req.Since == "" {
		writeError(w, r, http.StatusBadRequest, "invalid_field", "since is required (an RFC 3339 time)", "since")
		return
	}
	since, ok := parseTime(w, r, "since", req.Since, time.Time{})
	if !ok {
		return
	}
	until, ok := parseTime(w, r, "until", req.Until, time.Now())
	if !ok {
		return
	}
	n, err := s.store.Replay(r.Context(), id, callerOf(r).scope(), since, until)
	if err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	zerolog.Ctx(r.Context()).Info().Int64("subscription_id", id).Int("num_deliveries", n).Msg("failed deliveries replayed")
	writeJSON(w, r, http.StatusOK, map[string]any{"webhook_id": id, "queued": n, "since": since, "until": until})
}

func ptr[T any](v T) *T { return &v }
