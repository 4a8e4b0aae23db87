package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgoutbox/relay/sink/policy/window"
)

// Settings are the global switches of relay.settings, as the dispatcher
// uses them.
type Settings struct {
	Gate                  window.Gate
	PausedReason          string
	FailureAlertThreshold int
	DisableAfter          time.Duration
	AllowHTTP             bool
	// ThrottleCap, ProbeInterval and ProbeMax: see record.Policy.
	ThrottleCap, ProbeInterval, ProbeMax time.Duration
}

// loadSettings reads relay.settings.
func loadSettings(ctx context.Context, pool *pgxpool.Pool) (Settings, error) {
	var (
		s                Settings
		absence          []string
		start, end       *string
		zone             string
		reason           *string
		disableAfterSecs float64
		capSecs          float64
		probeSecs        float64
		probeMaxSecs     float64
	)
	err := pool.QueryRow(ctx, `
		SELECT paused, paused_reason, absence_days, window_start::text, window_end::text, window_time_zone,
		       failure_alert_threshold, extract(epoch FROM disable_after)::float8, allow_http,
		       extract(epoch FROM throttle_cap)::float8, extract(epoch FROM circuit_probe_interval)::float8,
		       extract(epoch FROM circuit_probe_max)::float8
		FROM relay.settings`).Scan(&s.Gate.Paused, &reason, &absence, &start, &end, &zone,
		&s.FailureAlertThreshold, &disableAfterSecs, &s.AllowHTTP, &capSecs, &probeSecs, &probeMaxSecs)
	if err != nil {
		return s, fmt.Errorf("reading relay.settings: %w", err)
	}
	if reason != nil {
		s.PausedReason = *reason
	}
	s.DisableAfter = time.Duration(disableAfterSecs * float64(time.Second))
	s.ThrottleCap = time.Duration(capSecs * float64(time.Second))
	s.ProbeInterval = time.Duration(probeSecs * float64(time.Second))
	s.ProbeMax = time.Duration(probeMaxSecs * float64(time.Second))
	if s.Gate.AbsenceDays, err = window.ParseWeekdays(absence); err != nil {
		return s, fmt.Errorf("relay.settings.absence_days: %w", err)
	}
	loc, err := window.LoadLocation(zone)
	if err != nil {
		return s, fmt.Errorf("relay.settings.window_time_zone: %w", err)
	}
	s.Gate.AbsenceLocation = loc
	if start != nil && end != nil {
		w, err := window.ParseWindow(*start, *end, zone)
		if err != nil {
			return s, fmt.Errorf("relay.settings window: %w", err)
		}
		s.Gate.Global = &w
	}
	return s, nil
}

func (d *Dispatcher) currentSettings(ctx context.Context, force bool) (Settings, error) {
	d.mu.Lock()
	fresh := !force && time.Since(d.settingsAt) < 2*time.Second
	s := d.settings
	d.mu.Unlock()
	if fresh {
		return s, nil
	}
	s, err := loadSettings(ctx, d.cfg.Pool)
	if err != nil {
		return s, err
	}
	d.mu.Lock()
	d.settings, d.settingsAt = s, time.Now()
	d.mu.Unlock()
	return s, nil
}
