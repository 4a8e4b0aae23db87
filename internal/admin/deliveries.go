package admin

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/subscriptions"
)

// deliveryJSON is one line of the delivery log; url is masked.
type deliveryJSON struct {
	ID             int64      `json:"id"`
	EventID        string     `json:"event_id"`
	EventType      string     `json:"event_type"`
	Owner          *string    `json:"owner"`
	WebhookID      int64      `json:"webhook_id"`
	WebhookName    string     `json:"webhook_name"`
	URL            string     `json:"url"`
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	LastStatusCode *int       `json:"last_status_code"`
	LastError      *string    `json:"last_error"`
	LastDurationMS *int       `json:"last_duration_ms"`
	CreatedAt      time.Time  `json:"created_at"`
	CompletedAt    *time.Time `json:"completed_at"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
}

func toDeliveryJSON(d subscriptions.Delivery) deliveryJSON {
	return deliveryJSON{
		ID: d.ID, EventID: d.EventID, EventType: d.EventType, Owner: d.Owner, WebhookID: d.SubscriptionID,
		WebhookName: d.SubscriptionName, URL: d.URL, Status: d.Status, Attempts: d.Attempts,
		LastStatusCode: d.LastStatusCode, LastError: d.LastError, LastDurationMS: d.LastDurationMS,
		CreatedAt: d.CreatedAt, CompletedAt: d.CompletedAt, NextAttemptAt: d.NextAttemptAt,
	}
}

// deliveryDetailJSON is a delivery with its event and attempts.
type deliveryDetailJSON struct {
	deliveryJSON
	Key          *string                 `json:"key"`
	Payload      json.RawMessage         `json:"payload"`
	LastResponse *string                 `json:"last_response"`
	AttemptLog   []subscriptions.Attempt `json:"attempt_log"`
}

// Limits of GET /api/deliveries.
const (
	defaultDeliveryDays  = 7
	maxDeliveryDays      = 366
	defaultDeliveryLimit = 50
	maxDeliveryLimit     = 500
)

// encodeCursor and decodeCursor make the opaque keyset cursor: base64url of
// the last id returned.
func encodeCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(id, 10)))
}

func decodeCursor(c string) (int64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, false
	}
	id, err := strconv.ParseInt(string(b), 10, 64)
	return id, err == nil && id > 0
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	scope := callerOf(r).scope()
	p := subscriptions.DeliveryListParams{Owner: scope}
	switch st := q.Get("status"); st {
	case "":
	case "success": // the brief's name
		p.Status = subscriptions.StatusSucceeded
	default:
		if !subscriptions.ValidStatus(st) {
			writeError(w, r, http.StatusBadRequest, "invalid_field", "status must be one of pending, delivering, succeeded, failed, skipped", "status")
			return
		}
		p.Status = st
	}
	days, ok := queryInt(w, r, q, "days", defaultDeliveryDays, 1, maxDeliveryDays)
	if !ok {
		return
	}
	p.Since = time.Now().Add(-time.Duration(days) * 24 * time.Hour)
	limit, ok := queryInt(w, r, q, "limit", defaultDeliveryLimit, 1, maxDeliveryLimit)
	if !ok {
		return
	}
	if v := q.Get("webhook_id"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id <= 0 {
			writeError(w, r, http.StatusBadRequest, "invalid_field", "webhook_id must be a webhook's id", "webhook_id")
			return
		}
		// Another owner's webhook answers 404, like a missing one.
		if _, err := s.store.Get(r.Context(), id, scope); err != nil {
			s.storeError(w, r, err, "webhook")
			return
		}
		p.SubscriptionID = id
	}
	if et := q.Get("event_type"); et != "" {
		if !subscriptions.ValidEventPattern(et) {
			writeError(w, r, http.StatusBadRequest, "invalid_field", "event_type must be an event type (thread.created) or a pattern (thread.*)", "event_type")
			return
		}
		p.EventType = et
	}
	if c := q.Get("cursor"); c != "" {
		id, ok := decodeCursor(c)
		if !ok {
			writeError(w, r, http.StatusBadRequest, "invalid_field", "cursor is not one this server returned", "cursor")
			return
		}
		p.BeforeID = id
	}
	p.Limit = int(limit) + 1 // one more tells whether a next page exists
	ds, err := s.store.ListDeliveries(r.Context(), p)
	if err != nil {
		s.storeError(w, r, err, "delivery")
		return
	}
	var next *string
	if len(ds) > int(limit) {
		ds = ds[:limit]
		c := encodeCursor(ds[len(ds)-1].ID)
		next = &c
	}
	out := make([]deliveryJSON, len(ds))
	for i, d := range ds {
		out[i] = toDeliveryJSON(d)
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"deliveries": out, "next_cursor": next})
}

func (s *Server) getDelivery(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "delivery")
	if !ok {
		return
	}
	d, err := s.store.GetDelivery(r.Context(), id, callerOf(r).scope())
	if err != nil {
		s.storeError(w, r, err, "delivery")
		return
	}
	writeJSON(w, r, http.StatusOK, deliveryDetailJSON{
		deliveryJSON: toDeliveryJSON(d.Delivery), Key: d.Key, Payload: d.Payload,
		LastResponse: d.LastResponse, AttemptLog: d.AttemptLog,
	})
}

func (s *Server) redeliver(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "delivery")
	if !ok {
		return
	}
	if err := s.store.Redeliver(r.Context(), id, callerOf(r).scope()); err != nil {
		s.storeError(w, r, err, "delivery")
		return
	}
	zerolog.Ctx(r.Context()).Info().Int64("delivery_id", id).Msg("delivery queued again")
	writeJSON(w, r, http.StatusAccepted, map[string]any{"id": id, "status": subscriptions.StatusPending})
}

// webhookSummaryJSON is one line of the monitoring table.
type webhookSummaryJSON struct {
	WebhookID           int64      `json:"webhook_id"`
	WebhookName         string     `json:"webhook_name"`
	Owner               *string    `json:"owner"`
	Enabled             bool       `json:"enabled"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	LastSuccessAt       *time.Time `json:"last_success_at"`
	LastFailureAt       *time.Time `json:"last_failure_at"`
	subscriptions.Stats
}

// Limits of the hourly series of GET /api/stats.
const defaultStatsHours = 24

// stats answers GET /api/stats: per-webhook figures over the last days
// (default 7), their total, and the deliveries per hour of the last hours
// (default 24, at most a week), counted in SQL. webhook_id narrows all of
// it to one webhook (another owner's answers 404).
func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	days, ok := queryInt(w, r, q, "days", defaultDeliveryDays, 1, maxDeliveryDays)
	if !ok {
		return
	}
	hours, ok := queryInt(w, r, q, "hours", defaultStatsHours, 1, subscriptions.MaxHours)
	if !ok {
		return
	}
	webhookID, ok := queryInt(w, r, q, "webhook_id", 0, 1, math.MaxInt64)
	if !ok {
		return
	}
	scope := callerOf(r).scope()
	window := time.Duration(days) * 24 * time.Hour
	var sum subscriptions.Summary
	if webhookID != 0 {
		st, err := s.store.Stats(r.Context(), webhookID, scope, window)
		if err != nil {
			s.storeError(w, r, err, "webhook")
			return
		}
		sum = subscriptions.Summary{Window: window, Overall: st.Stats, Subscriptions: []subscriptions.SubscriptionStats{st}}
	} else {
		var err error
		if sum, err = s.store.Summary(r.Context(), scope, window); err != nil {
			s.storeError(w, r, err, "stats")
			return
		}
	}
	hourly, err := s.store.Hourly(r.Context(), scope, webhookID, int(hours))
	if err != nil {
		s.storeError(w, r, err, "webhook")
		return
	}
	hooks := make([]webhookSummaryJSON, len(sum.Subscriptions))
	for i, st := range sum.Subscriptions {
		hooks[i] = webhookSummaryJSON{
			WebhookID: st.SubscriptionID, WebhookName: st.Name, Owner: st.Owner, Enabled: st.Enabled,
			ConsecutiveFailures: st.ConsecutiveFailures, LastSuccessAt: st.LastSuccessAt, LastFailureAt: st.LastFailureAt,
			Stats: st.Stats,
		}
	}
	writeJSON(w, r, http.StatusOK, map[string]any{
		"days": days, "since": time.Now().Add(-window).UTC(), "overall": sum.Overall, "webhooks": hooks,
		"hourly": hourly,
	})
}

// settingsJSON is relay.settings as the API shows it; durations in seconds.
type settingsJSON struct {
	Paused                bool        `json:"paused"`
	PausedReason          *string     `json:"paused_reason"`
	PausedAt              *time.Time  `json:"paused_at"`
	AbsenceDays           []string    `json:"absence_days"`
	Window                *windowJSON `json:"window"`
	FailureAlertThreshold int         `json:"failure_alert_threshold"`
	DisableAfterSeconds   float64     `json:"disable_after_seconds"`
	RetentionSeconds      float64     `json:"retention_seconds"`
	// PayloadRetentionSeconds is null when bodies are kept as long as the rest.
	PayloadRetentionSeconds *float64  `json:"payload_retention_seconds"`
	AllowHTTP               bool      `json:"allow_http"`
	StrictEventTypes        bool      `json:"strict_event_types"`
	UpdatedAt               time.Time `json:"updated_at"`
}

func toSettingsJSON(st subscriptions.Settings) settingsJSON {
	days := st.AbsenceDays
	if days == nil {
		days = []string{}
	}
	var payload *float64
	if st.PayloadRetention != nil {
		v := st.PayloadRetention.Seconds()
		payload = &v
	}
	return settingsJSON{
		PayloadRetentionSeconds: payload,
		Paused:                  st.Paused, PausedReason: st.PausedReason, PausedAt: st.PausedAt, AbsenceDays: days,
		Window: toWindowJSON(st.Window()), FailureAlertThreshold: st.FailureAlertThreshold,
		DisableAfterSeconds: st.DisableAfter.Seconds(), RetentionSeconds: st.Retention.Seconds(),
		AllowHTTP: st.AllowHTTP, StrictEventTypes: st.StrictEventTypes, UpdatedAt: st.UpdatedAt,
	}
}

// settingsRequest is the body of PUT /api/settings: absent fields keep
// their value; window null removes the global window.
type settingsRequest struct {
	Paused                *bool           `json:"paused"`
	PausedReason          *string         `json:"paused_reason"`
	AbsenceDays           *[]string       `json:"absence_days"`
	Window                json.RawMessage `json:"window"`
	FailureAlertThreshold *int            `json:"failure_alert_threshold"`
	DisableAfterSeconds   *float64        `json:"disable_after_seconds"`
	RetentionSeconds      *float64        `json:"retention_seconds"`
	// PayloadRetentionSeconds 0 keeps bodies for the whole retention.
	PayloadRetentionSeconds *float64 `json:"payload_retention_seconds"`
	AllowHTTP               *bool    `json:"allow_http"`
	StrictEventTypes        *bool    `json:"strict_event_types"`
}

func (s *Server) getSettings(w http.ResponseWriter, r *http.Request) {
	st, err := s.store.GetSettings(r.Context())
	if err != nil {
		s.storeError(w, r, err, "settings")
		return
	}
	writeJSON(w, r, http.StatusOK, toSettingsJSON(st))
}

func secondsPtr(s *float64) *time.Duration {
	if s == nil {
		return nil
	}
	d := time.Duration(*s * float64(time.Second))
	if *s > float64(100*365*24*3600) {
		d = 100 * 365 * 24 * time.Hour
	}
	return &d
}

func (s *Server) putSettings(w http.ResponseWriter, r *http.Request) {
	var req settingsRequest
	if !decodeBody(w, r, &req, false) {
		return
	}
	u := subscriptions.SettingsUpdate{
		Paused: req.Paused, PausedReason: req.PausedReason, AbsenceDays: req.AbsenceDays,
		FailureAlertThreshold: req.FailureAlertThreshold, DisableAfter: secondsPtr(req.DisableAfterSeconds),
		Retention: secondsPtr(req.RetentionSeconds), PayloadRetention: secondsPtr(req.PayloadRetentionSeconds),
		AllowHTTP: req.AllowHTTP, StrictEventTypes: req.StrictEventTypes,
	}
	var ok bool
	if u.Window, ok = decodeWindow(w, r, req.Window); !ok {
		return
	}
	st, err := s.store.UpdateSettings(r.Context(), u)
	if err != nil {
		s.storeError(w, r, err, "settings")
		return
	}
	ev := zerolog.Ctx(r.Context()).Info()
	if req.Paused != nil {
		ev = ev.Bool("paused", *req.Paused)
	}
	ev.Msg("settings updated")
	writeJSON(w, r, http.StatusOK, toSettingsJSON(st))
}
