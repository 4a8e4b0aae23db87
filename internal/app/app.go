// Package app is relay's composition root: it builds the capture stream, the
// fan-out, the dispatcher, retention and the admin server from one Config,
// starts them in order and stops them in the reverse order.
package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgoutbox/relay/internal/admin"
	"github.com/pgoutbox/relay/internal/buildinfo"
	"github.com/pgoutbox/relay/internal/dbwait"
	"github.com/pgoutbox/relay/internal/metrics"
	"github.com/pgoutbox/relay/internal/partitions"
	"github.com/pgoutbox/relay/internal/retention"
	"github.com/pgoutbox/relay/internal/telemetry"
	"github.com/pgoutbox/relay/migrations"
	"github.com/pgoutbox/relay/outbox"
	"github.com/pgoutbox/relay/sink/dispatch"
	"github.com/pgoutbox/relay/sink/fanout"
	"github.com/pgoutbox/relay/sink/send"
	"github.com/pgoutbox/relay/subscriptions"
)

// Config is everything `relay run` can be told. Zero values take the
// defaults documented on each field; Validate names the first bad field.
type Config struct {
	// DatabaseURL is the PostgreSQL to serve (required here; the CLI starts
	// an embedded server when the user gives none).
	DatabaseURL string
	// Slot and Publication name the replication slot and publication
	// (default "relay").
	Slot, Publication string
	// AdminAddr is the admin API and console address (default
	// 127.0.0.1:8080); "off" disables the admin server.
	AdminAddr string
	// AdminToken is the operator token of the admin API; empty means only
	// owner-scoped tokens work.
	AdminToken string
	// AdminHosts are host names, besides IP addresses and localhost, that
	// /metrics and /api/openapi.json answer to (see admin.Config.AllowedHosts).
	AdminHosts []string
	// PortalOrigins are the origins allowed to frame the owner portal
	// (see admin.Config.FrameAncestors); none means no page may be framed.
	PortalOrigins []string
	// PublicURL is the origin browsers reach the admin server by, named in
	// portal URLs (see admin.Config.PublicURL).
	PublicURL string
	// AllowCIDRs lets the sender reach these internal ranges.
	AllowCIDRs []string
	// Concurrency bounds requests in flight (default 64).
	Concurrency int
	// Retention overrides relay.settings.retention when positive.
	Retention time.Duration
	// Migrate applies pending migrations at start (the CLI defaults it to
	// true); when false a pending migration is an error.
	Migrate bool
	// ShutdownTimeout is how long in-flight deliveries may take to finish
	// on the first stop signal (default 30s).
	ShutdownTimeout time.Duration
	// Console is the web console's files, served by the admin server.
	Console fs.FS
	// UserAgent is sent with every delivery (default relay).
	UserAgent string
	// WaitForDatabase bounds how long Start waits for the database to
	// accept connections: WaitForever (any negative value) waits until the
	// context ends, 0 (the default here; `relay run` defaults to forever)
	// fails on the first refused attempt. A refused password fails at once
	// whatever it says, with a *dbwait.AuthError.
	WaitForDatabase time.Duration
	Logger          zerolog.Logger
	// Tracer, when set, receives the clock points of every delivery
	// (relay bench's latency breakdown: bench-relay --stage-trace); nil,
	// the default, takes none.
	Tracer dispatch.Tracer
	// OTLPEndpoint, when set, exports OpenTelemetry spans of capture,
	// fan-out and each attempt to this OTLP/HTTP traces URL
	// (telemetry.EndpointFromEnv gives the one the environment names).
	// Empty, the default, records no span and costs nothing.
	OTLPEndpoint string
	// SpanExporter, when set, receives the spans instead (tests).
	SpanExporter sdktrace.SpanExporter
}

// WaitForever, as Config.WaitForDatabase, waits for the database until the
// context ends.
const WaitForever = dbwait.Forever

// Validate checks cfg and fills defaults. Errors name the field and value.
func (c *Config) Validate() error {
	if strings.TrimSpace(c.DatabaseURL) == "" {
		return errors.New("database URL: empty (set --database-url or RELAY_DATABASE_URL)")
	}
	if c.OTLPEndpoint != "" {
		if err := telemetry.CheckEndpoint(c.OTLPEndpoint); err != nil {
			return fmt.Errorf("%w (from %s or %s)", err, telemetry.EnvEndpoint, telemetry.EnvOTLPEndpoint)
		}
	}
	if c.Slot == "" {
		c.Slot = "relay"
	}
	if c.Publication == "" {
		c.Publication = "relay"
	}
	for field, v := range map[string]string{"slot": c.Slot, "publication": c.Publication} {
		if !validIdent(v) {
			return fmt.Errorf("%s %q: use lowercase letters, digits and _ (at most 63)", field, v)
		}
	}
	if c.AdminAddr == "" {
		c.AdminAddr = admin.DefaultAddr
	}
	if c.AdminAddr != "off" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			return fmt.Errorf("admin address %q: %v", c.AdminAddr, err)
		}
	}
	if _, err := admin.ParseOrigins(c.PortalOrigins); err != nil {
		return fmt.Errorf("portal-origins: %w", err)
	}
	if c.PublicURL != "" {
		if o, err := admin.ParseOrigins([]string{c.PublicURL}); err != nil || len(o) != 1 {
			return fmt.Errorf("public-url %q: want a scheme and host such as https://relay.example.com", c.PublicURL)
		}
	}
	for _, cidr := range c.AllowCIDRs {
		if _, err := netip.ParsePrefix(strings.TrimSpace(cidr)); err != nil {
			return fmt.Errorf("allow-cidr %q: not a CIDR such as 10.0.0.0/8", cidr)
		}
	}
	if c.Concurrency < 0 || c.Concurrency > 4096 {
		return fmt.Errorf("concurrency %d: must be between 1 and 4096", c.Concurrency)
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if c.Retention < 0 || (c.Retention > 0 && c.Retention < time.Hour) {
		return fmt.Errorf("retention %s: must be at least 1h", c.Retention)
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.UserAgent == "" {
		c.UserAgent = "relay"
	}
	return nil
}

func validIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// App is a running relay.
type App struct {
	cfg Config
	log zerolog.Logger
	// phase is where Start has got to (see phase.go); the fields below
	// are set before phase moves to phaseRunning and read by the admin
	// handlers only after it has.
	phase atomic.Int32
	// wait paces and reports the attempts to reach the database at start.
	wait *dbwait.Retrier
	pool *pgxpool.Pool
	// deliveryPool serves fan-out and dispatch; see newDeliveryPool.
	deliveryPool *pgxpool.Pool
	metrics      *metrics.Metrics
	stream       *outbox.Stream
	dispatcher   *dispatch.Dispatcher
	partitions   *partitions.Job
	retention    *retention.Job
	admin        *admin.Server
	tracing      *telemetry.Tracing
}

// New builds the parts; nothing runs until Start.
func New(cfg Config) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, log: cfg.Logger}
	a.wait = dbwait.New(dbwait.Config{
		What: "database", Limit: cfg.WaitForDatabase, FailOnPermanent: true,
		Logger: cfg.Logger.With().Str("component", "app").Logger(),
	})
	return a, nil
}

// Start opens the admin server (so /healthz answers at once), waits for
// the database as Config.WaitForDatabase allows, migrates (or checks the
// schema), then starts dispatch, capture and retention. It returns once
// everything runs, or with the first error: a *dbwait.AuthError when the
// database refused the credentials, ctx's error when ctx ended while
// waiting.
func (a *App) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.Stop(context.Background())
		}
	}()
	// The pool connects lazily: creating it only parses the URL.
	a.pool, err = pgxpool.New(ctx, a.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connecting to database: %w", err)
	}
	a.metrics = metrics.New(a.pool, a.cfg.Slot)
	a.metrics.RegisterReadiness(a.ready)
	if err := a.startAdmin(ctx); err != nil {
		return err
	}

	a.phase.Store(phaseWaiting)
	if err := dbwait.Wait(ctx, a.wait, a.connectOnce); err != nil {
		return err
	}
	a.phase.Store(phaseStarting)
	if a.cfg.Migrate {
		if err := migrations.Up(ctx, a.cfg.DatabaseURL); err != nil {
			return err
		}
	} else {
		st, err := migrations.GetStatus(ctx, a.cfg.DatabaseURL)
		if err != nil {
			return err
		}
		if st.Dirty || st.Pending() {
			return fmt.Errorf("schema is at version %d of %d (dirty: %v); run 'relay migrate up' or start with --migrate", st.Version, st.Latest, st.Dirty)
		}
	}
	if a.deliveryPool, err = newDeliveryPool(ctx, a.cfg.DatabaseURL); err != nil {
		return err
	}

	// Attempts can be recorded only in a partition of their day: make sure
	// today's and the next days' exist before anything is sent.
	a.partitions = partitions.New(partitions.Config{Pool: a.pool, Logger: a.log})
	if err := a.partitions.Start(ctx); err != nil {
		return err
	}

	guard, err := send.NewAddressGuard(a.cfg.AllowCIDRs)
	if err != nil {
		return err
	}
	a.tracing, err = telemetry.Start(ctx, telemetry.Config{
		Endpoint: a.cfg.OTLPEndpoint, Exporter: a.cfg.SpanExporter, Sync: a.cfg.SpanExporter != nil,
		ServiceVersion: buildinfo.Read().Version,
	})
	if err != nil {
		return err
	}
	var spans trace.Tracer // nil: no span is even started
	if a.tracing.Enabled() {
		spans = a.tracing.Tracer()
		if a.cfg.OTLPEndpoint != "" {
			a.log.Info().Str("component", "app").Str("endpoint", a.cfg.OTLPEndpoint).Msg("exporting OpenTelemetry spans")
		}
	}
	a.dispatcher, err = dispatch.New(dispatch.Config{
		Pool:        a.deliveryPool,
		Sender:      timeoutCounter{send.New(send.Config{Guard: guard, UserAgent: a.cfg.UserAgent}), a.metrics},
		Logger:      a.log,
		Concurrency: a.cfg.Concurrency,
		Observer:    observer{a.metrics},
		Tracer:      a.cfg.Tracer,
		Spans:       spans,
	})
	if err != nil {
		return err
	}
	if err := a.dispatcher.Start(ctx); err != nil {
		return err
	}
	a.metrics.RegisterSentAhead(a.dispatcher.SentAhead, a.dispatcher.WrittenWithDelivery)

	// Fan-out hands fresh deliveries straight to this relay's dispatcher
	// when it has room; what it leaves pending wakes the claim loop.
	fan := fanout.New(a.deliveryPool, fanout.Config{
		Logger: a.log, Dispatcher: a.dispatcher, OnDeliveries: func(int) { a.dispatcher.Wake() }, Spans: spans,
	})
	a.stream, err = outbox.New(outbox.Config{
		DatabaseURL: a.cfg.DatabaseURL,
		Slot:        a.cfg.Slot,
		Publication: a.cfg.Publication,
		Logger:      a.log,
		StampDecode: a.cfg.Tracer != nil,
		Handler:     capturedCounter{fan: fan, captured: a.metrics.EventsCaptured},
	})
	if err != nil {
		return err
	}
	if err := a.stream.Start(ctx); err != nil {
		return err
	}

	a.retention = retention.New(retention.Config{Pool: a.pool, Logger: a.log, Retention: a.cfg.Retention, Slot: a.cfg.Slot})
	a.retention.Start(ctx)
	a.phase.Store(phaseRunning)
	return nil
}

// connectOnce is one attempt to reach the database: a session that passes
// authentication and answers a query, within connectTimeout.
func (a *App) connectOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, a.cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// connectTimeout bounds one attempt, so a server that drops packets (no
// answer at all) costs a retry, not the operating system's TCP timeout.
const connectTimeout = 10 * time.Second

// startAdmin opens the admin server before anything else, so that
// /healthz answers (and /readyz says why not) while relay waits for its
// database.
func (a *App) startAdmin(ctx context.Context) error {
	if a.cfg.AdminAddr == "off" {
		return nil
	}
	var prefixes []netip.Prefix
	for _, c := range a.cfg.AllowCIDRs {
		prefixes = append(prefixes, netip.MustParsePrefix(strings.TrimSpace(c)))
	}
	var err error
	a.admin, err = admin.New(admin.Config{
		Addr:           a.cfg.AdminAddr,
		Pool:           a.pool,
		Logger:         a.log,
		OperatorToken:  a.cfg.AdminToken,
		Metrics:        a.metrics,
		Tester:         tester{a},
		Health:         a.health,
		Ready:          a.ready,
		AllowCIDRs:     prefixes,
		Static:         a.cfg.Console,
		AllowedHosts:   a.cfg.AdminHosts,
		FrameAncestors: a.cfg.PortalOrigins,
		PublicURL:      a.cfg.PublicURL,
	})
	if err != nil {
		return err
	}
	return a.admin.Start(ctx)
}

// ready is /readyz: relay has finished starting, the database answers,
// this relay streams the slot or stands by behind the one that does, and
// the slot has not lost WAL.
func (a *App) ready(ctx context.Context) error {
	if err := a.startupState(); err != nil {
		return err
	}
	if err := a.pool.Ping(ctx); err != nil {
		return fmt.Errorf("database unreachable: %w", err)
	}
	switch st := a.stream.State(); st {
	case outbox.StateStreaming, outbox.StateStandby:
	default:
		return fmt.Errorf("replication is %s", st)
	}
	var walStatus *string
	err := a.pool.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, a.cfg.Slot).Scan(&walStatus)
	if err != nil {
		return fmt.Errorf("reading slot %s: %w", a.cfg.Slot, err)
	}
	if walStatus != nil && *walStatus == "lost" {
		return fmt.Errorf("slot %s has lost WAL it needed (wal_status lost); events may be missing: recreate the slot", a.cfg.Slot)
	}
	return nil
}

// AdminAddr is the admin server's address once started ("" when off).
func (a *App) AdminAddr() string {
	if a.admin == nil {
		return ""
	}
	return a.admin.Addr()
}

// Stream is the capture stream (for status and tests).
func (a *App) Stream() *outbox.Stream { return a.stream }

// Dispatcher is the dispatcher (for tests and the demo).
func (a *App) Dispatcher() *dispatch.Dispatcher { return a.dispatcher }

// Stop shuts down in order: stop reading WAL, let in-flight deliveries
// finish until ctx ends (then cancel them), stop retention and the admin
// server, close the pool. It is safe on a partly started App.
func (a *App) Stop(ctx context.Context) {
	a.phase.Store(phaseStopping)
	if a.stream != nil {
		a.stream.Stop()
	}
	if a.dispatcher != nil {
		a.dispatcher.Stop(ctx)
	}
	if a.retention != nil {
		a.retention.Stop()
	}
	if a.partitions != nil {
		a.partitions.Stop()
	}
	if a.tracing != nil {
		// The last spans, those of the deliveries just finished.
		if err := a.tracing.Shutdown(context.Background()); err != nil {
			a.log.Warn().Err(err).Msg("exporting the last OpenTelemetry spans")
		}
	}
	if a.admin != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = a.admin.Shutdown(sctx)
		cancel()
	}
	if a.deliveryPool != nil {
		a.deliveryPool.Close()
	}
	if a.pool != nil {
		a.pool.Close()
	}
}

// newDeliveryPool opens the connections of the delivery path (fan-out,
// claims, attempt records), apart from those of the admin API, metrics and
// retention, so a slow report never holds up deliveries.
//
// Its sessions plan for statements that run thousands of times a second.
// pgx prepares them; with array parameters PostgreSQL would otherwise
// re-plan most executions (a custom plan looks cheaper than the generic
// one), which measured 0.2ms of planning per attempt batch, so
// plan_cache_mode is force_generic_plan. Every statement of the path is an
// index lookup by design (by id, unique key, partial index or GIN), but a
// generic plan made while relay.deliveries is still small (a fresh install)
// would scan it sequentially, cheapest then, and keep doing so as it grows;
// measured, recording 5 attempts then took 1.7ms on a 10,000-row table
// instead of 0.3ms. So enable_seqscan is off: where no index applies the
// planner still scans, but with a cost so large it would compile the plan
// with JIT (100ms for reading relay.settings), so jit is off too.
func newDeliveryPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["enable_seqscan"] = "off"
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	cfg.ConnConfig.RuntimeParams["jit"] = "off"
	cfg.ConnConfig.RuntimeParams["application_name"] = "relay-delivery"
	// The notification listener holds one; fan-out, claims and records
	// each use one at a time; the test button and deferrals share the rest.
	cfg.MaxConns = max(cfg.MaxConns, 8)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	return pool, nil
}

// tester adapts the dispatcher's test delivery to the admin API.
type tester struct{ a *App }

func (t tester) Test(ctx context.Context, id int64) (admin.TestResult, error) {
	if err := t.a.startupState(); err != nil {
		return admin.TestResult{}, err
	}
	r, err := t.a.dispatcher.Test(ctx, id)
	if err != nil {
		if errors.Is(err, dispatch.ErrSubscriptionNotFound) {
			return admin.TestResult{}, subscriptions.ErrNotFound
		}
		return admin.TestResult{}, err
	}
	return admin.TestResult{Delivered: r.Delivered, StatusCode: r.StatusCode, DurationMS: r.DurationMS, Error: r.Error}, nil
}

// observer feeds delivery measurements to Prometheus.
type observer struct{ m *metrics.Metrics }

func (o observer) AttemptDone(outcome string, d time.Duration) {
	o.m.Deliveries.WithLabelValues(outcome).Inc()
	o.m.AttemptDuration.Observe(d.Seconds())
}

func (o observer) Delivered(d time.Duration) { o.m.CommitToDelivered.Observe(d.Seconds()) }

// timeoutCounter counts the attempts that timed out
// (relay_delivery_timeouts_total) as they come back from the sender, the
// one place that knows an attempt got no answer in time.
type timeoutCounter struct {
	dispatch.Sender
	m *metrics.Metrics
}

func (t timeoutCounter) Send(ctx context.Context, r send.Request) send.Result {
	res := t.Sender.Send(ctx, r)
	if res.StatusCode == 0 && isTimeout(res.Err) {
		t.m.AddTimeout()
	}
	return res
}

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// capturedCounter is the stream's handler: fan-out, counting the events
// it was handed. It passes on fan-out's overlapped commits
// (outbox.PipelinedHandler).
type capturedCounter struct {
	fan      *fanout.Fanout
	captured prometheus.Counter
}

func (c capturedCounter) HandleEvents(ctx context.Context, evs []outbox.Event) error {
	durable, err := c.StartEvents(ctx, evs)
	if err != nil || durable == nil {
		return err
	}
	return <-durable
}

func (c capturedCounter) StartEvents(ctx context.Context, evs []outbox.Event) (<-chan error, error) {
	durable, err := c.fan.StartEvents(ctx, evs)
	if err != nil {
		return nil, err
	}
	c.captured.Add(float64(len(evs)))
	return durable, nil
}
