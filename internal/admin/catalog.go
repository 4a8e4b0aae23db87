package admin

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/subscriptions"
)

// This file holds what a client asks before it writes a webhook: which
// event types exist (the catalog and the types already emitted), whether a
// payload filter is valid and what it matches, and who the token is
// (GET /api/me).

// eventTypesResponse is GET /api/event-types. event_types lists every name
// a webhook may subscribe to with confidence: the catalog's and those
// already emitted (an owner sees the types of its own events), sorted;
// catalog has the entries with their descriptions and examples.
type eventTypesResponse struct {
	EventTypes []string                  `json:"event_types"`
	Catalog    []subscriptions.EventType `json:"catalog"`
}

func (s *Server) eventTypes(w http.ResponseWriter, r *http.Request) {
	emitted, err := s.store.EventTypes(r.Context(), callerOf(r).scope())
	if err != nil {
		s.storeError(w, r, err, "event types")
		return
	}
	catalog, err := s.store.Catalog(r.Context())
	if err != nil {
		s.storeError(w, r, err, "event types")
		return
	}
	seen := make(map[string]bool, len(emitted)+len(catalog))
	names := make([]string, 0, len(emitted)+len(catalog))
	for _, n := range emitted {
		seen[n] = true
		names = append(names, n)
	}
	for _, e := range catalog {
		// The test event is relay's, not something to subscribe to.
		if !seen[e.Name] && e.Name != subscriptions.TestEventType {
			seen[e.Name] = true
			names = append(names, e.Name)
		}
	}
	sort.Strings(names)
	writeJSON(w, r, http.StatusOK, eventTypesResponse{EventTypes: names, Catalog: catalog})
}

func (s *Server) getEventType(w http.ResponseWriter, r *http.Request) {
	et, err := s.store.GetEventType(r.Context(), r.PathValue("name"))
	if err != nil {
		s.storeError(w, r, err, "event type")
		return
	}
	writeJSON(w, r, http.StatusOK, et)
}

// eventTypeRequest is the body of PUT /api/event-types/{name}: it replaces
// the whole entry (absent fields become empty).
type eventTypeRequest struct {
	Description string          `json:"description"`
	Example     json.RawMessage `json:"example"`
	JSONSchema  json.RawMessage `json:"json_schema"`
}

func (s *Server) putEventType(w http.ResponseWriter, r *http.Request) {
	var req eventTypeRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	name := r.PathValue("name")
	et, created, err := s.store.PutEventType(r.Context(), name, subscriptions.EventTypeParams{
		Description: req.Description, Example: req.Example, JSONSchema: req.JSONSchema,
	})
	if err != nil {
		s.storeError(w, r, err, "event type")
		return
	}
	zerolog.Ctx(r.Context()).Info().Str("event_type", name).Bool("created", created).Msg("event type cataloged")
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, r, status, et)
}

func (s *Server) deleteEventType(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.store.DeleteEventType(r.Context(), name); err != nil {
		s.storeError(w, r, err, "event type")
		return
	}
	zerolog.Ctx(r.Context()).Info().Str("event_type", name).Msg("event type removed from the catalog")
	w.WriteHeader(http.StatusNoContent)
}

// filterCheckRequest is the body of POST /api/filters/check.
type filterCheckRequest struct {
	Filter string `json:"filter"`
	// Payload is optional: without it only the filter is checked.
	Payload json.RawMessage `json:"payload"`
}

// checkFilter parses a payload filter as PostgreSQL will store it and,
// given a sample payload, evaluates it exactly as fan-out does. It writes
// nothing. A bad filter answers 400 with field "filter" and PostgreSQL's
// message.
func (s *Server) checkFilter(w http.ResponseWriter, r *http.Request) {
	var req filterCheckRequest
	if !decodeBody(w, r, &req, false) {
		return
	}
	var payload json.RawMessage
	if len(req.Payload) > 0 && string(req.Payload) != "null" {
		payload = req.Payload
	}
	fc, err := s.store.CheckFilter(r.Context(), req.Filter, payload)
	if err != nil {
		s.storeError(w, r, err, "filter")
		return
	}
	writeJSON(w, r, http.StatusOK, fc)
}

// meResponse is GET /api/me: who the token is and what the settings let it
// do, so that a client need not guess from which routes answer 403.
type meResponse struct {
	// Operator is true for the operator token; Owner is the owner of an
	// owner token, null for the operator.
	Operator bool    `json:"operator"`
	Owner    *string `json:"owner"`
	// AllowHTTP tells whether webhook URLs may use http:// (relay.settings).
	AllowHTTP bool `json:"allow_http"`
	// StrictEventTypes tells whether the outbox refuses uncataloged types.
	StrictEventTypes bool `json:"strict_event_types"`
	// Paused tells whether sending is paused; PausedReason is shown to the
	// operator only (it may be internal).
	Paused       bool    `json:"paused"`
	PausedReason *string `json:"paused_reason"`
	// What this token may do beyond its own webhooks and deliveries: read
	// and change relay.settings, write the event-type catalog and create
	// webhooks for any owner (the operator only), and send test
	// deliveries (when this process can).
	CanChangeSettings  bool `json:"can_change_settings"`
	CanWriteEventTypes bool `json:"can_write_event_types"`
	CanChooseOwner     bool `json:"can_choose_owner"`
	CanTestWebhooks    bool `json:"can_test_webhooks"`
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	st, err := s.store.GetSettings(r.Context())
	if err != nil {
		s.storeError(w, r, err, "settings")
		return
	}
	out := meResponse{
		Operator: c.operator, Owner: c.scope(), AllowHTTP: st.AllowHTTP, StrictEventTypes: st.StrictEventTypes,
		Paused: st.Paused, CanChangeSettings: c.operator, CanWriteEventTypes: c.operator,
		CanChooseOwner: c.operator, CanTestWebhooks: s.cfg.Tester != nil,
	}
	if c.operator {
		out.PausedReason = st.PausedReason
	}
	writeJSON(w, r, http.StatusOK, out)
}
