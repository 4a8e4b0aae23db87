package sink

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Settings are the global switches of relay.settings, as the dispatcher
// uses them.
type Settings struct {
	Gate                  Gate
	PausedReason          string
	FailureAlertThreshold int
	DisableAfter          time.Duration
	AllowHTTP             bool
}

// LoadSettings reads relay.settings.
func LoadSettings(ctx context.Context, pool *pgxpool.Pool) (Settings, error) {
	var (
		s                Settings
		absence          []string
		start, end       *string
		zone             string
		reason           *string
		disableAfterSecs float64
	)
	err := pool.QueryRow(ctx, `
		SELECT paused, paused_reason, absence_days, window_start::text, window_end::text, window_time_zone,
		       failure_alert_threshold, extract(epoch FROM disable_after)::float8, allow_http
		FROM relay.settings`).Scan(&s.Gate.Paused, &reason, &absence, &start, &end, &zone,
		&s.FailureAlertThreshold, &disableAfterSecs, &s.AllowHTTP)
	if err != nil {
		return s, fmt.Errorf("reading relay.settings: %w", err)
	}
	if reason != nil {
		s.PausedReason = *reason
	}
	s.DisableAfter = time.Duration(disableAfterSecs * float64(time.Second))
	if s.Gate.AbsenceDays, err = ParseWeekdays(absence); err != nil {
		return s, fmt.Errorf("relay.settings.absence_days: %w", err)
	}
	loc, err := loadLocation(zone)
	if err != nil {
		return s, fmt.Errorf("relay.settings.window_time_zone: %w", err)
	}
	s.Gate.AbsenceLocation = loc
	if start != nil && end != nil {
		w, err := ParseWindow(*start, *end, zone)
		if err != nil {
			return s, fmt.Errorf("relay.settings window: %w", err)
		}
		s.Gate.Global = &w
	}
	return s, nil
}

var locations sync.Map // zone name → *time.Location

// loadLocation caches time.LoadLocation, which reads the zone database
// from disk on every call.
func loadLocation(name string) (*time.Location, error) {
	if v, ok := locations.Load(name); ok {
		return v.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	locations.Store(name, loc)
	return loc, nil
}
