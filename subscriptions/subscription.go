// Package subscriptions is relay's subscription model: the Subscription
// type (a row of relay.subscriptions), Go-side validation that mirrors the
// SQL contract and adds a friendly SSRF pre-check, event-type pattern
// matching, and a Store for subscriptions and the read side of their
// deliveries, used by the admin API and the CLI.
//
// Every Store call that takes an owner *string is owner-scoped: nil means
// the operator (every row), a non-nil owner sees only rows with that owner.
// A row of another owner answers ErrNotFound, exactly like a missing row, so
// existence never leaks across tenants.
//
// The database stays the last word: whatever the Go checks let through is
// checked again by relay.validate_subscription, whose errors come back as a
// *ValidationError naming the column.
package subscriptions

import (
	"time"
)

// Formats a subscription can render its bodies in.
const (
	FormatJSON    = "json"
	FormatSlack   = "slack"
	FormatDiscord = "discord"
)

// Defaults of the SQL schema, repeated here for documentation and for the
// Go-side checks.
const (
	DefaultTimeoutMS   = 10000
	MinTimeoutMS       = 1000
	MaxTimeoutMS       = 60000
	DefaultMaxInFlight = 8
	// OrderingNone and OrderingKey are the values of Ordering.
	OrderingNone   = "none"
	OrderingKey    = "key"
	MaxRetryDelays = 20
	MaxRetryDelay  = 7 * 24 * time.Hour
	MaxNameLength  = 200
	MaxURLLength   = 2000
	// Limits of the free text a subscription carries, so that one row
	// cannot make every attempt (or every page showing it) heavy.
	MaxTemplateLength    = 10000
	MaxHeaders           = 20
	MaxHeaderNameLength  = 128
	MaxHeaderValueLength = 4096
	MaxReasonLength      = 500
)

// What a subscription does with a delivery that comes due while a delivery
// window is closed (relay.subscriptions.outside_window). The windows are the
// subscription's own and the global one (unless IgnoreGlobalWindow). A
// paused relay and absence days always defer, whatever this says.
const (
	// OutsideWindowDefer keeps the delivery pending until the window opens
	// (the default).
	OutsideWindowDefer = "defer"
	// OutsideWindowSend sends it anyway: windows never hold the
	// subscription's deliveries. It cannot be combined with a window of
	// the subscription's own.
	OutsideWindowSend = "send"
	// OutsideWindowSkip ends a new delivery as skipped, with the reason,
	// never retried; relay.redeliver can still send it (the window then
	// defers it). Retries of a delivery first tried inside the window wait
	// for the window instead.
	OutsideWindowSkip = "skip"
)

// ValidOutsideWindow reports whether v is an outside_window choice.
func ValidOutsideWindow(v string) bool {
	return v == OutsideWindowDefer || v == OutsideWindowSend || v == OutsideWindowSkip
}

// MaxFilterLength bounds a filter's text, as the SQL constraint does.
const MaxFilterLength = 2000

// DefaultRetrySchedule is the schema's default: the first attempt plus three
// retries after 1, 5 and 15 minutes.
var DefaultRetrySchedule = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute}

// Subscription is one row of relay.subscriptions (a webhook). Secret and
// PreviousSecrets are never serialised to JSON: an API returns a secret only
// when it is created or rotated.
type Subscription struct {
	ID int64 `db:"id" json:"id"`
	// Owner is the tenant; nil for an operator subscription, which receives
	// the events of every owner.
	Owner      *string  `db:"owner" json:"owner"`
	Name       string   `db:"name" json:"name"`
	URL        string   `db:"url" json:"url"`
	EventTypes []string `db:"event_types" json:"event_types"`
	// Secret is the current signing secret, whsec_ + base64.
	Secret string `db:"secret" json:"-"`
	// PreviousSecrets are secrets still inside their rotation grace period.
	PreviousSecrets []PreviousSecret `db:"previous_secrets" json:"-"`
	Enabled         bool             `db:"enabled" json:"enabled"`
	// Format is json, slack or discord.
	Format string `db:"format" json:"format"`
	// Template is an optional text template for slack and discord bodies.
	Template  *string           `db:"template" json:"template"`
	Headers   map[string]string `db:"headers" json:"headers"`
	TimeoutMS int               `db:"timeout_ms" json:"timeout_ms"`
	// RetrySchedule holds the delays after the first attempt; empty means
	// no retry.
	RetrySchedule []time.Duration `db:"retry_schedule" json:"retry_schedule"`
	MaxInFlight   int             `db:"max_in_flight" json:"max_in_flight"`
	// WindowStart and WindowEnd ("HH:MM", may cross midnight) limit when
	// deliveries are sent; both nil means always.
	WindowStart        *string `db:"window_start" json:"window_start"`
	WindowEnd          *string `db:"window_end" json:"window_end"`
	WindowTimeZone     string  `db:"window_time_zone" json:"window_time_zone"`
	IgnoreGlobalWindow bool    `db:"ignore_global_window" json:"ignore_global_window"`
	// OutsideWindow is what happens to a delivery due while a window that
	// applies to it is closed: OutsideWindowDefer, OutsideWindowSend or
	// OutsideWindowSkip.
	OutsideWindow string `db:"outside_window" json:"outside_window"`
	// Filter is the optional jsonpath the payload must pass, in
	// PostgreSQL's canonical spelling ($."amount"?(@ > 100)); nil means
	// every event of the subscribed types.
	Filter *string `db:"filter" json:"filter"`
	// RateLimit is the pace in requests per second across every relay; nil
	// is unlimited (Slack subscriptions get 1 unless told otherwise).
	// RateBurst is how many may go at once after a quiet spell; nil is one
	// second of RateLimit (at least 1).
	RateLimit *float64 `db:"rate_limit" json:"rate_limit"`
	RateBurst *int     `db:"rate_burst" json:"rate_burst"`
	// Ordering is OrderingNone or OrderingKey (the deliveries of events
	// sharing an outbox key go one at a time, in commit order).
	Ordering string `db:"ordering" json:"ordering"`

	// Flow control state, kept by the dispatcher: no request goes before
	// HeldUntil (HoldReason says why: throttled, rate limit headers,
	// circuit open); CircuitOpenedAt is set while the circuit is open;
	// ThrottledSince is the start of continuous throttling.
	HeldUntil       *time.Time `db:"held_until" json:"held_until"`
	HoldReason      *string    `db:"hold_reason" json:"hold_reason"`
	CircuitOpenedAt *time.Time `db:"circuit_opened_at" json:"circuit_opened_at"`
	ThrottledSince  *time.Time `db:"throttled_since" json:"throttled_since"`

	// Health, kept by the dispatcher.
	ConsecutiveFailures int        `db:"consecutive_failures" json:"consecutive_failures"`
	FailingSince        *time.Time `db:"failing_since" json:"failing_since"`
	LastSuccessAt       *time.Time `db:"last_success_at" json:"last_success_at"`
	LastFailureAt       *time.Time `db:"last_failure_at" json:"last_failure_at"`
	LastError           *string    `db:"last_error" json:"last_error"`
	AlertedAt           *time.Time `db:"alerted_at" json:"alerted_at"`
	DisabledReason      *string    `db:"disabled_reason" json:"disabled_reason"`

	CreatedAt time.Time `db:"created_at" json:"created_at"`
	UpdatedAt time.Time `db:"updated_at" json:"updated_at"`
}

// Window returns the subscription's delivery window, nil when it has none.
func (s *Subscription) Window() *Window {
	if s.WindowStart == nil || s.WindowEnd == nil {
		return nil
	}
	return &Window{Start: *s.WindowStart, End: *s.WindowEnd, TimeZone: s.WindowTimeZone}
}

// PreviousSecret is a rotated-out secret that still signs until ExpiresAt.
type PreviousSecret struct {
	Secret    string    `json:"secret"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Window is a daily delivery window. Start and End are "HH:MM" (or
// "HH:MM:SS") in TimeZone, an IANA name ("" means UTC). End before Start
// crosses midnight: 22:00–06:00 sends at night only.
type Window struct {
	Start    string `json:"start"`
	End      string `json:"end"`
	TimeZone string `json:"time_zone"`
}

// CreateParams are the fields of a new subscription. Zero values take the
// schema's defaults, as noted on each field.
type CreateParams struct {
	// Owner nil creates an operator subscription.
	Owner      *string
	Name       string
	URL        string
	EventTypes []string
	// Secret "" has one generated (whsec_ + base64 of 32 random bytes).
	Secret string
	// Enabled nil means true.
	Enabled *bool
	// Format "" means json.
	Format   string
	Template *string
	// Headers nil means none.
	Headers map[string]string
	// TimeoutMS 0 means DefaultTimeoutMS.
	TimeoutMS int
	// RetrySchedule nil means DefaultRetrySchedule; a non-nil empty slice
	// means no retry.
	RetrySchedule []time.Duration
	// MaxInFlight 0 means DefaultMaxInFlight.
	MaxInFlight int
	// Window nil means no window.
	Window             *Window
	IgnoreGlobalWindow bool
	// OutsideWindow "" means OutsideWindowDefer.
	OutsideWindow string
	// Filter "" means none; otherwise a jsonpath (see Store.CheckFilter).
	Filter string
	// RateLimit nil means the format's default (slack: 1/s; others:
	// unlimited). RateBurst nil means one second of RateLimit.
	RateLimit *float64
	RateBurst *int
	// Ordering "" means OrderingNone.
	Ordering string
}

// UpdateParams change a subscription: only non-nil fields are written.
type UpdateParams struct {
	Name       *string
	URL        *string
	EventTypes *[]string
	// Enabled true also clears the health record (disabled_reason,
	// consecutive_failures, failing_since), so a subscription disabled for
	// failing starts afresh; false records DisabledReason (or "disabled by
	// hand").
	Enabled        *bool
	DisabledReason *string
	Format         *string
	// Template "" clears the template.
	Template      *string
	Headers       *map[string]string
	TimeoutMS     *int
	RetrySchedule *[]time.Duration
	MaxInFlight   *int
	// Window with Start and End both "" removes the window (TimeZone is
	// then kept, or set when given).
	Window             *Window
	IgnoreGlobalWindow *bool
	OutsideWindow      *string
	// Filter "" removes the filter.
	Filter *string
	// RateLimit 0 removes the limit (unlimited); RateBurst 0 goes back to
	// one second of RateLimit.
	RateLimit *float64
	RateBurst *int
	Ordering  *string
}

// ListParams filter List. The zero value lists every subscription.
type ListParams struct {
	// Owner nil lists every owner's subscriptions (the operator); non-nil
	// only that owner's.
	Owner *string
	// Enabled, when set, keeps only enabled (true) or disabled (false) ones.
	Enabled *bool
	// EventType, when set, keeps subscriptions whose patterns match it.
	EventType string
	// Limit 0 means no limit.
	Limit int
}
