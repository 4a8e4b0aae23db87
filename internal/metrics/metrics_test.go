package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgoutbox/relay/internal/metrics"
	"github.com/pgoutbox/relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// gathered returns the value of the series name{labels} from reg, and
// whether it exists.
func gathered(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, s := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range s.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			return value(f.GetType(), s), true
		}
	}
	return 0, false
}

func value(typ dto.MetricType, s *dto.Metric) float64 {
	switch typ {
	case dto.MetricType_COUNTER:
		return s.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return s.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(s.GetHistogram().GetSampleCount())
	}
	return -1
}

func mustValue(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := gathered(t, m, name, labels)
	if !ok {
		t.Fatalf("series %s%v missing", name, labels)
	}
	return v
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape status %d: %s", rec.Code, rec.Body)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestNilMetricsIsSafe(t *testing.T) {
	t.Parallel()
	var m *metrics.Metrics
	m.AddEventsCaptured(3)
	m.ObserveAttempt(metrics.OutcomeSucceeded, time.Second)
	m.ObserveDelivered(time.Now(), time.Now())
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Fatalf("nil metrics handler status %d", rec.Code)
	}
}

func TestCountersAndHistograms(t *testing.T) {
	t.Parallel()
	m := metrics.New(nil, "")
	if v := mustValue(t, m, "relay_delivery_attempts_total", map[string]string{"outcome": "retry"}); v != 0 {
		t.Fatalf("retry before any attempt = %v", v)
	}
	m.AddEventsCaptured(3)
	m.EventsCaptured.Inc()
	m.ObserveAttempt(metrics.OutcomeSucceeded, 20*time.Millisecond)
	m.ObserveAttempt(metrics.OutcomeSucceeded, 30*time.Millisecond)
	m.ObserveAttempt(metrics.OutcomeRetry, 2*time.Second)
	m.ObserveAttempt(metrics.OutcomeFailed, 10*time.Millisecond)
	now := time.Now()
	m.ObserveDelivered(now.Add(-1500*time.Millisecond), now)
	m.ObserveDelivered(time.Time{}, now) // ignored

	body := scrape(t, m.Handler())
	for _, want := range []string{
		"relay_events_captured_total 4",
		`relay_delivery_attempts_total{outcome="succeeded"} 2`,
		`relay_delivery_attempts_total{outcome="retry"} 1`,
		`relay_delivery_attempts_total{outcome="failed"} 1`,
		"relay_delivery_attempt_duration_seconds_count 4",
		`relay_delivery_attempt_duration_seconds_bucket{le="0.025"} 2`,
		`relay_delivery_attempt_duration_seconds_bucket{le="2.5"} 4`,
		"relay_commit_to_delivered_seconds_count 1",
		`relay_commit_to_delivered_seconds_bucket{le="1"} 0`,
		`relay_commit_to_delivered_seconds_bucket{le="2.5"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if strings.Contains(body, "relay_database_up") {
		t.Error("database series without a pool")
	}
}

func TestDatabaseCollectorMatchesDatabase(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	slot := "metrics_" + db.Name
	m := metrics.New(db.Pool, slot)

	// No slot yet: reported missing.
	if v := mustValue(t, m, "relay_replication_slot_wal_status", map[string]string{"slot": slot, "status": "missing"}); v != 1 {
		t.Fatalf("missing slot status = %v", v)
	}
	if _, ok := gathered(t, m, "relay_replication_lag_bytes", nil); ok {
		t.Fatal("lag reported without a slot")
	}
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)

	// Fixtures: subscriptions in each state, deliveries in each status.
	db.Exec(t, `INSERT INTO relay.subscriptions (owner, name, url, event_types, enabled, consecutive_failures) VALUES
		('a', 'ok1', 'https://a.example.com/', '{*}', true, 0),
		('a', 'ok2', 'https://a.example.com/', '{*}', true, 0),
		('a', 'failing', 'https://a.example.com/', '{*}', true, 3),
		('b', 'off', 'https://b.example.com/', '{*}', false, 0)`)
	statuses := []string{"pending", "pending", "pending", "delivering", "succeeded", "succeeded", "failed", "failed"}
	for i, st := range statuses {
		db.Exec(t, `WITH e AS (SELECT relay.emit('thread.created', '{}', 'a') AS id)
			INSERT INTO relay.deliveries (event_id, subscription_id, status, created_at)
			SELECT e.id, (SELECT min(id) FROM relay.subscriptions), $1, now() - make_interval(mins => $2) FROM e`, st, 10*i)
	}

	if v := mustValue(t, m, "relay_database_up", nil); v != 1 {
		t.Fatalf("database_up = %v", v)
	}
	for _, st := range []string{"pending", "delivering", "failed"} {
		var want float64
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM relay.deliveries WHERE status = $1`, st).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got := mustValue(t, m, "relay_deliveries", map[string]string{"status": st}); got != want || want == 0 {
			t.Errorf("relay_deliveries{status=%q} = %v, database says %v", st, got, want)
		}
	}
	var oldest float64
	if err := db.Pool.QueryRow(ctx, `SELECT extract(epoch FROM now() - min(created_at))::float8 FROM relay.deliveries WHERE status IN ('pending', 'delivering')`).Scan(&oldest); err != nil {
		t.Fatal(err)
	}
	if got := mustValue(t, m, "relay_oldest_pending_age_seconds", nil); got < oldest-5 || got > oldest+5 || got < 30*60-5 {
		t.Errorf("oldest pending age = %v, database says %v", got, oldest)
	}
	for state, want := range map[string]float64{"enabled": 2, "failing": 1, "disabled": 1} {
		if got := mustValue(t, m, "relay_subscriptions", map[string]string{"state": state}); got != want {
			t.Errorf("relay_subscriptions{state=%q} = %v, want %v", state, got, want)
		}
	}

	// The slot: inactive, WAL reserved, lagging by the WAL written since it was made.
	labels := map[string]string{"slot": slot}
	if v := mustValue(t, m, "relay_replication_slot_active", labels); v != 0 {
		t.Errorf("slot active = %v", v)
	}
	var walStatus string
	if err := db.Pool.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&walStatus); err != nil {
		t.Fatal(err)
	}
	if v := mustValue(t, m, "relay_replication_slot_wal_status", map[string]string{"slot": slot, "status": walStatus}); v != 1 {
		t.Errorf("wal_status{%s} = %v", walStatus, v)
	}
	if v := mustValue(t, m, "relay_replication_slot_wal_status", map[string]string{"slot": slot, "status": "missing"}); v != 0 {
		t.Errorf("wal_status{missing} = %v once the slot exists", v)
	}
	lag := mustValue(t, m, "relay_replication_lag_bytes", labels)
	var lagAfter float64
	if err := db.Pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8 FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lagAfter); err != nil {
		t.Fatal(err)
	}
	if lag <= 0 || lag > lagAfter {
		t.Errorf("lag = %v bytes, database says %v a moment later", lag, lagAfter)
	}

	body := scrape(t, m.Handler())
	for _, want := range []string{
		`relay_deliveries{status="pending"} 3`,
		`relay_subscriptions{state="failing"} 1`,
		fmt.Sprintf(`relay_replication_slot_active{slot=%q} 0`, slot),
		"relay_database_up 1",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

func TestDatabaseDownDoesNotFailScrape(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://relay@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	m := metrics.New(pool, "s")
	m.EventsCaptured.Inc()
	body := scrape(t, m.Handler())
	if !strings.Contains(body, "relay_database_up 0") || !strings.Contains(body, "relay_events_captured_total 1") ||
		strings.Contains(body, "relay_deliveries{") {
		t.Fatalf("exposition with the database down:\n%s", body)
	}
}

func TestBuildInfoTimeoutsAndReadiness(t *testing.T) {
	t.Parallel()
	m := metrics.New(nil, "")
	m.AddTimeout()
	m.AddTimeout()
	var notReady error = fmt.Errorf("waiting for the database")
	m.RegisterReadiness(func(context.Context) error { return notReady })
	body := scrape(t, m.Handler())
	for _, want := range []string{"relay_delivery_timeouts_total 2", "relay_ready 0", `relay_build_info{commit="`, `go_version="go`} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if v := mustValue(t, m, "relay_build_info", nil); v != 1 {
		t.Errorf("relay_build_info = %v", v)
	}
	notReady = nil
	if v := mustValue(t, m, "relay_ready", nil); v != 1 {
		t.Errorf("relay_ready once ready = %v", v)
	}
	var nilMetrics *metrics.Metrics
	nilMetrics.AddTimeout()
	nilMetrics.RegisterReadiness(func(context.Context) error { return nil })
	nilMetrics.RegisterSentAhead(func() int64 { return 1 }, func() int64 { return 1 })
}

// The sent-ahead counters read the dispatcher's counts at each scrape.
func TestSentAheadCounters(t *testing.T) {
	t.Parallel()
	m := metrics.New(nil, "")
	sent, written := int64(7), int64(5)
	m.RegisterSentAhead(func() int64 { return sent }, func() int64 { return written })
	if v := mustValue(t, m, "relay_deliveries_sent_ahead_total", nil); v != 7 {
		t.Errorf("relay_deliveries_sent_ahead_total = %v, want 7", v)
	}
	sent, written = 9, 8
	body := scrape(t, m.Handler())
	for _, want := range []string{"relay_deliveries_sent_ahead_total 9", "relay_attempts_written_with_delivery_total 8",
		"# TYPE relay_attempts_written_with_delivery_total counter"} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}
