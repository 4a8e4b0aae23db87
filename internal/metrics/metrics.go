// Package metrics holds relay's Prometheus metrics: counters and histograms
// the pipeline updates as it works, and a collector that reads the state of
// the database (replication slot, backlog, subscriptions) at scrape time.
//
// Series (all prefixed relay_):
//
//	relay_events_captured_total                     counter   events read from the slot and fanned out
//	relay_delivery_attempts_total{outcome}          counter   HTTP attempts by outcome: succeeded, retry, throttled, failed
//	relay_delivery_timeouts_total                   counter   HTTP attempts that got no answer within the timeout
//	relay_delivery_attempt_duration_seconds         histogram duration of one HTTP attempt
//	relay_commit_to_delivered_seconds               histogram from the event's commit to its 2xx answer
//	relay_database_up                               gauge     1 when the scrape-time queries succeeded
//	relay_replication_lag_bytes{slot}               gauge     pg_current_wal_lsn() - confirmed_flush_lsn of the slot
//	relay_replication_slot_active{slot}             gauge     1 when a relay streams from the slot
//	relay_replication_slot_wal_status{slot,status}  gauge     1 for the slot's wal_status (reserved, extended,
//	                                                          unreserved, lost), or for "missing" without a slot
//	relay_deliveries{status}                        gauge     deliveries now pending, delivering or failed
//	relay_oldest_pending_age_seconds                gauge     age of the oldest pending or delivering delivery (0 if none)
//	relay_subscriptions{state}                      gauge     subscriptions by state: enabled (and healthy),
//	                                                          failing (enabled, consecutive_failures > 0), disabled
//	relay_deliveries_sent_ahead_total               counter   deliveries sent before their row was written (fresh events)
//	relay_attempts_written_with_delivery_total      counter   of those, attempts fan-out wrote with the row, finished
//	relay_ready                                     gauge     1 when /readyz would answer 200 (see RegisterReadiness)
//	relay_build_info{version,commit,go_version}     gauge     always 1; the labels say which build runs
//
// relay_deliveries leaves succeeded rows out on purpose: counting them would
// scan the whole table on every scrape, and the attempts counter already
// tells how many succeeded. The backlog is pending + delivering.
//
// A nil *Metrics is valid and means "metrics off": its methods do nothing.
// Code that uses the exported collectors directly must check for nil first:
//
//	if m != nil { m.EventsCaptured.Add(float64(n)) }
package metrics

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgoutbox/relay/internal/buildinfo"
)

// Attempt outcomes, the values of the outcome label of
// relay_delivery_attempts_total (as in relay.delivery_attempts.outcome).
const (
	OutcomeSucceeded = "succeeded"
	OutcomeRetry     = "retry"
	OutcomeThrottled = "throttled"
	OutcomeFailed    = "failed"
)

// Metrics is relay's metric registry and the collectors components update.
type Metrics struct {
	// Registry holds every relay series plus the Go runtime and process
	// collectors.
	Registry *prometheus.Registry

	// EventsCaptured counts events decoded from the slot and fanned out
	// (relay_events_captured_total).
	EventsCaptured prometheus.Counter
	// Deliveries counts delivery attempts by outcome label: succeeded,
	// retry or failed (relay_delivery_attempts_total).
	Deliveries *prometheus.CounterVec
	// Timeouts counts HTTP attempts that ended without an answer because
	// the subscription's timeout passed (relay_delivery_timeouts_total).
	// Every one is also counted in Deliveries, usually as retry.
	Timeouts prometheus.Counter
	// AttemptDuration observes the seconds one HTTP attempt took
	// (relay_delivery_attempt_duration_seconds).
	AttemptDuration prometheus.Histogram
	// CommitToDelivered observes the seconds from an event's commit to the
	// 2xx that delivered it (relay_commit_to_delivered_seconds).
	CommitToDelivered prometheus.Histogram
}

// New returns Metrics whose scrape-time collector queries pool and reports
// the replication slot named slot ("" leaves the slot series out). A nil
// pool leaves every database series out.
func New(pool *pgxpool.Pool, slot string) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		EventsCaptured: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_events_captured_total",
			Help: "Events read from the outbox slot and fanned out into deliveries.",
		}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_delivery_attempts_total",
			Help: "HTTP delivery attempts by outcome: succeeded (2xx), retry (will be retried), throttled (the receiver asked to slow down; no retry spent), failed (given up).",
		}, []string{"outcome"}),
		Timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_delivery_timeouts_total",
			Help: "HTTP delivery attempts that got no answer within the subscription's timeout (also counted in relay_delivery_attempts_total).",
		}),
		AttemptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_delivery_attempt_duration_seconds",
			Help:    "Duration of one HTTP delivery attempt, from sending the request to reading the answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		CommitToDelivered: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_commit_to_delivered_seconds",
			Help:    "Time from an event's commit to the 2xx answer that delivered it, retries included.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
		}),
	}
	// Pre-create the outcome series so they read 0 before the first attempt.
	for _, o := range []string{OutcomeSucceeded, OutcomeRetry, OutcomeThrottled, OutcomeFailed} {
		m.Deliveries.WithLabelValues(o)
	}
	build := buildinfo.Read()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "relay_build_info",
		Help:        "Always 1; the labels tell the module version, the commit and the Go release of the running relay.",
		ConstLabels: prometheus.Labels{"version": build.Version, "commit": build.ShortCommit(), "go_version": build.GoVersion},
	})
	buildInfo.Set(1)
	m.Registry.MustRegister(m.EventsCaptured, m.Deliveries, m.Timeouts, m.AttemptDuration, m.CommitToDelivered, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if pool != nil {
		m.Registry.MustRegister(newDBCollector(pool, slot))
	}
	return m
}

// RegisterReadiness adds relay_ready: at every scrape check runs (bounded
// by the scrape's database timeout) and the gauge reads 1 when it returns
// nil, 0 otherwise. relay run passes the check behind /readyz, so an alert
// can fire on a relay that is up but not ready (waiting for its database,
// replication interrupted, slot lost) without probing /readyz. Call it at
// most once. Safe on a nil *Metrics.
func (m *Metrics) RegisterReadiness(check func(context.Context) error) {
	if m == nil || check == nil {
		return
	}
	m.Registry.MustRegister(readiness{check: check, desc: prometheus.NewDesc("relay_ready",
		"1 when this relay is ready (what /readyz answers 200 to), 0 otherwise.", nil, nil)})
}

type readiness struct {
	check func(context.Context) error
	desc  *prometheus.Desc
}

func (r readiness) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

func (r readiness) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	ch <- prometheus.MustNewConstMetric(r.desc, prometheus.GaugeValue, b2f(r.check(ctx) == nil))
}

// RegisterSentAhead adds relay_deliveries_sent_ahead_total and
// relay_attempts_written_with_delivery_total, read at scrape time from the
// dispatcher's own counts (dispatch.Dispatcher.SentAhead and
// WrittenWithDelivery): how many deliveries went out before their row was
// written, and how many of those fan-out wrote already finished. A low
// share of the second says receivers answer slower than fan-out writes
// behind. Call it at most once. Safe on a nil *Metrics.
func (m *Metrics) RegisterSentAhead(sent, written func() int64) {
	if m == nil || sent == nil || written == nil {
		return
	}
	m.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "relay_deliveries_sent_ahead_total",
			Help: "Deliveries of fresh events sent before their delivery row was written (the row is written with the same id right after).",
		}, func() float64 { return float64(sent()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "relay_attempts_written_with_delivery_total",
			Help: "Attempts of deliveries sent ahead that fan-out wrote with the delivery row, finished, because the answer came back first.",
		}, func() float64 { return float64(written()) }),
	)
}

// AddTimeout counts one attempt that timed out. Safe on a nil *Metrics.
func (m *Metrics) AddTimeout() {
	if m == nil {
		return
	}
	m.Timeouts.Inc()
}

// AddEventsCaptured counts n captured events. Safe on a nil *Metrics.
func (m *Metrics) AddEventsCaptured(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.EventsCaptured.Add(float64(n))
}

// ObserveAttempt records one HTTP attempt with its outcome (OutcomeSucceeded,
// OutcomeRetry or OutcomeFailed) and duration. Safe on a nil *Metrics.
func (m *Metrics) ObserveAttempt(outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.Deliveries.WithLabelValues(outcome).Inc()
	m.AttemptDuration.Observe(d.Seconds())
}

// ObserveDelivered records the latency from an event's commit to its
// delivery. Safe on a nil *Metrics; a zero commit time is ignored.
func (m *Metrics) ObserveDelivered(commit, delivered time.Time) {
	if m == nil || commit.IsZero() {
		return
	}
	d := delivered.Sub(commit)
	if d < 0 {
		d = 0
	}
	m.CommitToDelivered.Observe(d.Seconds())
}

// Handler serves the registry in the Prometheus exposition format. A
// failing database query does not fail the scrape: the database series are
// left out and relay_database_up reads 0. On a nil *Metrics it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          m.Registry, // promhttp_metric_handler_errors_total
		Timeout:           15 * time.Second,
		EnableOpenMetrics: false,
	})
}

// scrapeTimeout bounds the database queries of one scrape.
const scrapeTimeout = 5 * time.Second

// dbCollector reads the database at scrape time.
type dbCollector struct {
	pool *pgxpool.Pool
	slot string

	up            *prometheus.Desc
	lag           *prometheus.Desc
	slotActive    *prometheus.Desc
	slotWALStatus *prometheus.Desc
	deliveries    *prometheus.Desc
	oldestPending *prometheus.Desc
	subscriptions *prometheus.Desc
}

func newDBCollector(pool *pgxpool.Pool, slot string) *dbCollector {
	return &dbCollector{
		pool: pool,
		slot: slot,
		up: prometheus.NewDesc("relay_database_up",
			"1 when the scrape-time database queries succeeded, 0 otherwise.", nil, nil),
		lag: prometheus.NewDesc("relay_replication_lag_bytes",
			"WAL bytes the slot has not confirmed yet: pg_current_wal_lsn() - confirmed_flush_lsn.", []string{"slot"}, nil),
		slotActive: prometheus.NewDesc("relay_replication_slot_active",
			"1 when a relay is streaming from the slot.", []string{"slot"}, nil),
		slotWALStatus: prometheus.NewDesc("relay_replication_slot_wal_status",
			"1 for the slot's current wal_status (reserved, extended, unreserved, lost), or for missing when the slot does not exist.",
			[]string{"slot", "status"}, nil),
		deliveries: prometheus.NewDesc("relay_deliveries",
			"Deliveries now in a status: pending, delivering (the backlog) or failed (dead letters).", []string{"status"}, nil),
		oldestPending: prometheus.NewDesc("relay_oldest_pending_age_seconds",
			"Age of the oldest pending or delivering delivery, 0 when there is none.", nil, nil),
		subscriptions: prometheus.NewDesc("relay_subscriptions",
			"Subscriptions by state: enabled (healthy), failing (enabled with consecutive failures), disabled.", []string{"state"}, nil),
	}
}

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.lag
	ch <- c.slotActive
	ch <- c.slotWALStatus
	ch <- c.deliveries
	ch <- c.oldestPending
	ch <- c.subscriptions
}

var walStatuses = []string{"reserved", "extended", "unreserved", "lost", "missing"}

// stateSQL reads everything in one round trip. The delivery counts use the
// partial indexes on pending, delivering and failed rows.
const stateSQL = `
SELECT
    (SELECT count(*) FROM relay.deliveries WHERE status = 'pending') AS pending,
    (SELECT count(*) FROM relay.deliveries WHERE status = 'delivering') AS delivering,
    (SELECT count(*) FROM relay.deliveries WHERE status = 'failed') AS failed,
    coalesce((SELECT extract(epoch FROM now() - min(created_at))::float8
              FROM relay.deliveries WHERE status IN ('pending', 'delivering')), 0) AS oldest_pending,
    (SELECT count(*) FROM relay.subscriptions WHERE enabled AND consecutive_failures = 0) AS enabled,
    (SELECT count(*) FROM relay.subscriptions WHERE enabled AND consecutive_failures > 0) AS failing,
    (SELECT count(*) FROM relay.subscriptions WHERE NOT enabled) AS disabled`

const slotSQL = `
SELECT active, coalesce(wal_status, ''),
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::float8
FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	var pending, delivering, failed, enabled, failing, disabled int64
	var oldest float64
	err := c.pool.QueryRow(ctx, stateSQL).Scan(&pending, &delivering, &failed, &oldest, &enabled, &failing, &disabled)
	var active bool
	var walStatus string
	var lag float64
	slotFound := false
	if err == nil && c.slot != "" {
		err = c.pool.QueryRow(ctx, slotSQL, c.slot).Scan(&active, &walStatus, &lag)
		if err == nil {
			slotFound = true
		} else if errors.Is(err, pgx.ErrNoRows) {
			err = nil
		}
	}
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.deliveries, float64(pending), "pending")
	gauge(c.deliveries, float64(delivering), "delivering")
	gauge(c.deliveries, float64(failed), "failed")
	gauge(c.oldestPending, oldest)
	gauge(c.subscriptions, float64(enabled), "enabled")
	gauge(c.subscriptions, float64(failing), "failing")
	gauge(c.subscriptions, float64(disabled), "disabled")
	if c.slot == "" {
		return
	}
	if !slotFound {
		walStatus = "missing"
	} else {
		gauge(c.lag, lag, c.slot)
	}
	gauge(c.slotActive, b2f(active), c.slot)
	for _, s := range walStatuses {
		gauge(c.slotWALStatus, b2f(s == walStatus), c.slot, s)
	}
	if !slices.Contains(walStatuses, walStatus) {
		// A status newer than this code (or none on an old server).
		gauge(c.slotWALStatus, 1, c.slot, walStatus)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
