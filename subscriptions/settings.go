package subscriptions

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Settings is the one row of relay.settings: global switches that govern
// every subscription.
type Settings struct {
	// Paused stops all sending; deliveries stay pending.
	Paused       bool       `db:"paused" json:"paused"`
	PausedReason *string    `db:"paused_reason" json:"paused_reason"`
	PausedAt     *time.Time `db:"paused_at" json:"paused_at"`
	// AbsenceDays are lowercase English weekday names on which nothing is
	// sent.
	AbsenceDays []string `db:"absence_days" json:"absence_days"`
	// The global delivery window ("HH:MM"), nil when none.
	WindowStart    *string `db:"window_start" json:"window_start"`
	WindowEnd      *string `db:"window_end" json:"window_end"`
	WindowTimeZone string  `db:"window_time_zone" json:"window_time_zone"`
	// FailureAlertThreshold is the number of consecutive failed deliveries
	// after which relay.subscription.failing is emitted.
	FailureAlertThreshold int `db:"failure_alert_threshold" json:"failure_alert_threshold"`
	// DisableAfter is how long a subscription may fail continuously before
	// it is disabled.
	DisableAfter time.Duration `db:"disable_after" json:"disable_after"`
	// Retention is how long outbox rows and deliveries are kept.
	Retention time.Duration `db:"retention" json:"retention"`
	// PayloadRetention is how long the response bodies of succeeded
	// deliveries are kept, nil for as long as the rest (Retention).
	PayloadRetention *time.Duration `db:"payload_retention" json:"payload_retention"`
	// AllowHTTP lets subscriptions use http:// URLs (development only).
	AllowHTTP bool `db:"allow_http" json:"allow_http"`
	// StrictEventTypes makes relay.outbox refuse event types that are not
	// in the catalog (relay.event_types).
	StrictEventTypes bool      `db:"strict_event_types" json:"strict_event_types"`
	UpdatedAt        time.Time `db:"updated_at" json:"updated_at"`
}

// Window returns the global delivery window, nil when there is none.
func (s *Settings) Window() *Window {
	if s.WindowStart == nil || s.WindowEnd == nil {
		return nil
	}
	return &Window{Start: *s.WindowStart, End: *s.WindowEnd, TimeZone: s.WindowTimeZone}
}

// SettingsUpdate changes the settings: only non-nil fields are written.
type SettingsUpdate struct {
	// Paused true pauses (recording PausedReason and the time), false
	// resumes (clearing both).
	Paused       *bool
	PausedReason *string
	AbsenceDays  *[]string
	// Window with Start and End both "" removes the global window.
	Window                *Window
	FailureAlertThreshold *int
	DisableAfter          *time.Duration
	Retention             *time.Duration
	// PayloadRetention 0 clears it (bodies kept for the whole retention).
	PayloadRetention *time.Duration
	AllowHTTP        *bool
	StrictEventTypes *bool
}

var settingsColumns = `paused, paused_reason, paused_at, absence_days, ` +
	hhmm("window_start") + ` AS window_start, ` +
	hhmm("window_end") + ` AS window_end, window_time_zone, failure_alert_threshold,
	disable_after, retention, payload_retention, allow_http, strict_event_types, updated_at`

// GetSettings reads relay.settings.
func (st *Store) GetSettings(ctx context.Context) (Settings, error) {
	rows, err := st.pool.Query(ctx, `SELECT `+settingsColumns+` FROM relay.settings`)
	if err != nil {
		return Settings{}, fmt.Errorf("reading settings: %w", translate(err))
	}
	s, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Settings])
	if err != nil {
		return Settings{}, fmt.Errorf("reading settings: %w", translate(err))
	}
	return s, nil
}

// AllowHTTP reports relay.settings.allow_http, for ValidateURL.
func (st *Store) AllowHTTP(ctx context.Context) (bool, error) {
	var allow bool
	if err := st.pool.QueryRow(ctx, `SELECT allow_http FROM relay.settings`).Scan(&allow); err != nil {
		return false, fmt.Errorf("reading settings: %w", translate(err))
	}
	return allow, nil
}

var weekdays = map[string]bool{
	"monday": true, "tuesday": true, "wednesday": true, "thursday": true,
	"friday": true, "saturday": true, "sunday": true,
}

// UpdateSettings writes the set fields of u and returns the settings as
// they are afterwards. It notifies relay_settings ("paused", "resumed" or
// "updated") in the same transaction, so running relays react at once.
func (st *Store) UpdateSettings(ctx context.Context, u SettingsUpdate) (Settings, error) {
	if u.AbsenceDays != nil {
		for _, d := range *u.AbsenceDays {
			if !weekdays[d] {
				return Settings{}, invalid("absence_days", fmt.Sprintf("absence_days: %q is not a weekday name (monday … sunday)", d))
			}
		}
	}
	if u.Window != nil {
		if err := validateWindow(*u.Window, true); err != nil {
			return Settings{}, err
		}
	}
	if u.FailureAlertThreshold != nil && *u.FailureAlertThreshold < 1 {
		return Settings{}, invalid("failure_alert_threshold", "failure_alert_threshold must be at least 1")
	}
	if u.DisableAfter != nil && *u.DisableAfter <= 0 {
		return Settings{}, invalid("disable_after", "disable_after must be positive")
	}
	if u.Retention != nil && *u.Retention < time.Hour {
		return Settings{}, invalid("retention", "retention must be at least 1 hour")
	}
	if u.PausedReason != nil {
		if n := utf8.RuneCountInString(*u.PausedReason); n > MaxReasonLength {
			return Settings{}, invalid("paused_reason", fmt.Sprintf("paused_reason must be at most %d characters (got %d)", MaxReasonLength, n))
		}
		if err := checkText("paused_reason", "paused_reason", *u.PausedReason, allowNone); err != nil {
			return Settings{}, err
		}
	}
	if u.PayloadRetention != nil && *u.PayloadRetention != 0 && *u.PayloadRetention < time.Hour {
		return Settings{}, invalid("payload_retention", "payload_retention must be at least 1 hour (0 keeps bodies for the whole retention)")
	}
	var args []any
	var sets []string
	set := func(col string, v any, cast string) {
		args = append(args, v)
		sets = append(sets, col+" = $"+strconv.Itoa(len(args))+cast)
	}
	notify := "updated"
	if u.Paused != nil {
		if *u.Paused {
			notify = "paused"
			sets = append(sets, "paused = true", "paused_at = CASE WHEN paused THEN paused_at ELSE now() END")
			var reason *string
			if u.PausedReason != nil && *u.PausedReason != "" {
				reason = u.PausedReason
			}
			set("paused_reason", reason, "")
		} else {
			notify = "resumed"
			sets = append(sets, "paused = false", "paused_reason = NULL", "paused_at = NULL")
		}
	} else if u.PausedReason != nil {
		set("paused_reason", *u.PausedReason, "")
	}
	if u.AbsenceDays != nil {
		days := *u.AbsenceDays
		if days == nil {
			days = []string{}
		}
		set("absence_days", days, "")
	}
	if u.Window != nil {
		if u.Window.Start == "" && u.Window.End == "" {
			sets = append(sets, "window_start = NULL", "window_end = NULL")
		} else {
			set("window_start", u.Window.Start, "::time")
			set("window_end", u.Window.End, "::time")
		}
		if u.Window.TimeZone != "" {
			set("window_time_zone", u.Window.TimeZone, "")
		}
	}
	if u.FailureAlertThreshold != nil {
		set("failure_alert_threshold", *u.FailureAlertThreshold, "")
	}
	if u.DisableAfter != nil {
		set("disable_after", *u.DisableAfter, "::interval")
	}
	if u.Retention != nil {
		set("retention", *u.Retention, "::interval")
	}
	if u.PayloadRetention != nil {
		if *u.PayloadRetention == 0 {
			sets = append(sets, "payload_retention = NULL")
		} else {
			set("payload_retention", *u.PayloadRetention, "::interval")
		}
	}
	if u.AllowHTTP != nil {
		set("allow_http", *u.AllowHTTP, "")
	}
	if u.StrictEventTypes != nil {
		set("strict_event_types", *u.StrictEventTypes, "")
	}
	if len(sets) == 0 {
		return st.GetSettings(ctx)
	}
	var s Settings
	err := pgx.BeginFunc(ctx, st.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE relay.settings SET `+strings.Join(sets, ", ")+` RETURNING `+settingsColumns, args...)
		if err != nil {
			return err
		}
		s, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Settings])
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify('relay_settings', $1)`, notify)
		return err
	})
	if err != nil {
		return Settings{}, fmt.Errorf("updating settings: %w", translate(err))
	}
	return s, nil
}
