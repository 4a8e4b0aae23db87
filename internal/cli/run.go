package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/app"
	"github.com/pgoutbox/relay/internal/console"
	"github.com/pgoutbox/relay/internal/dbwait"
	"github.com/pgoutbox/relay/internal/embedded"
	"github.com/pgoutbox/relay/internal/pgcluster"
	"github.com/pgoutbox/relay/internal/telemetry"
)

func init() {
	register("run", "run the sidecar: capture, fan-out, delivery, retention, admin API", (*CLI).run)
}

// runFlags are the settings of `relay run`, from flags with RELAY_*
// environment variables as defaults.
type runFlags struct {
	databaseURL, dataDir, slot, publication, adminAddr, adminToken string
	publicURL                                                      string
	allowCIDRs, adminHosts, portalOrigins                          stringList
	concurrency, embeddedPort                                      int
	retention, shutdownTimeout                                     time.Duration
	waitForDatabase                                                waitDuration
	logLevel, logFormat                                            string
	migrate                                                        bool
}

// stringList is a repeatable flag; values may also be comma-separated.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// waitDuration is --wait-for-database: "forever" or a duration, 0 meaning
// no waiting at all.
type waitDuration time.Duration

func (w *waitDuration) String() string {
	if time.Duration(*w) < 0 {
		return "forever"
	}
	return time.Duration(*w).String()
}

func (w *waitDuration) Set(v string) error {
	if strings.EqualFold(strings.TrimSpace(v), "forever") {
		*w = waitDuration(app.WaitForever)
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q: want forever, 0 or a duration such as 2m", v)
	}
	*w = waitDuration(d)
	return nil
}

func (c *CLI) envInt(name string, def int) (int, error) {
	v := c.getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, usageError("%s=%q: not a whole number", name, v)
	}
	return n, nil
}

func (c *CLI) envDuration(name string, def time.Duration) (time.Duration, error) {
	v := c.getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, usageError("%s=%q: not a duration such as 30s or 168h", name, v)
	}
	return d, nil
}

func (c *CLI) envOr(name, def string) string {
	if v := c.getenv(name); v != "" {
		return v
	}
	return def
}

func (c *CLI) runFlagSet(name, synopsis string) (*runFlagSetT, error) {
	fs := c.newFlagSet(name, synopsis)
	f := &runFlags{}
	conc, err := c.envInt("RELAY_CONCURRENCY", 64)
	if err != nil {
		return nil, err
	}
	ret, err := c.envDuration("RELAY_RETENTION", 0)
	if err != nil {
		return nil, err
	}
	port, err := c.envInt("RELAY_EMBEDDED_PORT", embedded.DefaultPort)
	if err != nil {
		return nil, err
	}
	fs.StringVar(&f.databaseURL, "database-url", c.getenv("RELAY_DATABASE_URL"), "PostgreSQL URL (env RELAY_DATABASE_URL); empty starts an embedded PostgreSQL")
	fs.StringVar(&f.dataDir, "data-dir", c.envOr("RELAY_DATA_DIR", "relay-data"), "embedded PostgreSQL data directory (env RELAY_DATA_DIR)")
	fs.IntVar(&f.embeddedPort, "embedded-port", port, "embedded PostgreSQL port on 127.0.0.1 (env RELAY_EMBEDDED_PORT)")
	fs.StringVar(&f.slot, "slot", c.envOr("RELAY_SLOT", "relay"), "replication slot name (env RELAY_SLOT)")
	fs.StringVar(&f.publication, "publication", c.envOr("RELAY_PUBLICATION", "relay"), "publication name (env RELAY_PUBLICATION)")
	fs.StringVar(&f.adminAddr, "admin-addr", c.envOr("RELAY_ADMIN_ADDR", "127.0.0.1:8080"), "admin API and console address, or off (env RELAY_ADMIN_ADDR)")
	fs.StringVar(&f.adminToken, "admin-token", c.getenv("RELAY_ADMIN_TOKEN"), "operator token of the admin API (env RELAY_ADMIN_TOKEN)")
	_ = f.adminHosts.Set(c.getenv("RELAY_ADMIN_HOSTS"))
	fs.Var(&f.adminHosts, "admin-host", "a host name /metrics and /api/openapi.json answer to besides IP addresses and localhost, repeatable (env RELAY_ADMIN_HOSTS, comma-separated)")
	_ = f.portalOrigins.Set(c.getenv("RELAY_PORTAL_ORIGINS"))
	fs.Var(&f.portalOrigins, "portal-origins", "origins allowed to frame the owner portal (/portal), such as https://app.example.com, repeatable (env RELAY_PORTAL_ORIGINS, comma-separated); none: no page may be framed")
	fs.StringVar(&f.publicURL, "public-url", c.getenv("RELAY_PUBLIC_URL"), "origin browsers reach the admin server by, named in portal URLs, such as https://relay.example.com (env RELAY_PUBLIC_URL); empty: the Host of the request")
	_ = f.allowCIDRs.Set(c.getenv("RELAY_ALLOW_CIDRS"))
	fs.Var(&f.allowCIDRs, "allow-cidr", "internal range deliveries may reach, repeatable (env RELAY_ALLOW_CIDRS, comma-separated)")
	fs.IntVar(&f.concurrency, "concurrency", conc, "deliveries in flight at once (env RELAY_CONCURRENCY)")
	fs.DurationVar(&f.retention, "retention", ret, "keep final events this long; 0 uses relay.settings.retention (env RELAY_RETENTION)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight deliveries may finish after the first signal")
	fs.StringVar(&f.logLevel, "log-level", c.envOr("RELAY_LOG_LEVEL", "info"), "debug, info, warn or error (env RELAY_LOG_LEVEL)")
	fs.StringVar(&f.logFormat, "log-format", c.envOr("RELAY_LOG_FORMAT", "auto"), "json, console, or auto (console on a terminal) (env RELAY_LOG_FORMAT)")
	f.waitForDatabase = waitDuration(app.WaitForever)
	if v := c.getenv("RELAY_WAIT_FOR_DATABASE"); v != "" {
		if err := f.waitForDatabase.Set(v); err != nil {
			return nil, usageError("RELAY_WAIT_FOR_DATABASE=%v", err)
		}
	}
	fs.Var(&f.waitForDatabase, "wait-for-database", "how long to wait at start for the database to accept connections: forever, 0 (fail at once) or a duration (env RELAY_WAIT_FOR_DATABASE)")
	fs.BoolVar(&f.migrate, "migrate", true, "apply pending migrations at start; false refuses to start on a pending migration")
	return &runFlagSetT{fs, f}, nil
}

type runFlagSetT struct {
	fs *flag.FlagSet
	f  *runFlags
}

// logger builds the zerolog logger the flags ask for.
func (c *CLI) logger(level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Logger{}, usageError("log level %q: want debug, info, warn or error", level)
	}
	var w io.Writer = c.Stderr
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: c.Stderr, TimeFormat: "15:04:05"}
	case "auto":
		if f, ok := c.Stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			w = zerolog.ConsoleWriter{Out: c.Stderr, TimeFormat: "15:04:05"}
		}
	default:
		return zerolog.Logger{}, usageError("log format %q: want json, console or auto", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func (c *CLI) run(ctx context.Context, args []string) error {
	rf, err := c.runFlagSet("run", "run [flags]")
	if err != nil {
		return err
	}
	if err := parse(rf.fs, args); err != nil {
		return err
	}
	f := rf.f
	if rf.fs.NArg() > 0 {
		return usageError("run takes no arguments (got %q)", rf.fs.Args())
	}
	log, err := c.logger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	cfg := app.Config{
		DatabaseURL: f.databaseURL, Slot: f.slot, Publication: f.publication,
		AdminAddr: f.adminAddr, AdminToken: f.adminToken, AdminHosts: f.adminHosts, AllowCIDRs: f.allowCIDRs,
		PortalOrigins: f.portalOrigins, PublicURL: f.publicURL,
		Concurrency: f.concurrency, Retention: f.retention, Migrate: f.migrate,
		ShutdownTimeout: f.shutdownTimeout, Console: console.Files(),
		UserAgent: userAgent(), Logger: log, WaitForDatabase: time.Duration(f.waitForDatabase), Tracer: c.tracer,
		OTLPEndpoint: telemetry.EndpointFromEnv(c.getenv),
	}
	// Validate before starting an embedded server, so bad flags cost nothing.
	probe := cfg
	if probe.DatabaseURL == "" {
		probe.DatabaseURL = "postgres://embedded"
	}
	if err := probe.Validate(); err != nil {
		return &ExitError{Code: 2, Err: err}
	}

	runCtx, cancel := withSignals(ctx, log)
	defer cancel()

	signIn := signInHint{flagToken: cfg.AdminToken != ""}
	if cfg.DatabaseURL == "" {
		if cfg.AdminToken == "" && cfg.AdminAddr != "off" {
			// A fresh embedded install gets an operator token of its own,
			// so its console can be signed in to at once.
			tok, created, err := embedded.OperatorToken(f.dataDir)
			if err != nil {
				return err
			}
			cfg.AdminToken = tok
			signIn = signInHint{file: filepath.Join(f.dataDir, embedded.OperatorTokenFile), token: tok, created: created}
		}
		srv, err := embedded.Start(runCtx, embedded.Config{DataDir: f.dataDir, Port: f.embeddedPort})
		if err != nil {
			if errors.Is(err, pgcluster.ErrNoBinaries) {
				return err
			}
			return fmt.Errorf("starting embedded PostgreSQL in %s: %w", f.dataDir, err)
		}
		// relay never runs on without its database: when the server
		// exits and cannot be restarted, the relay stops with that error.
		appCtx, failApp := context.WithCancelCause(runCtx)
		superviseCtx, stopSupervising := context.WithCancel(context.Background())
		supervised := make(chan struct{})
		go func() {
			defer close(supervised)
			if err := srv.Supervise(superviseCtx, log); err != nil {
				log.Error().Msg("embedded PostgreSQL is gone and could not be restarted: stopping relay")
				failApp(err)
			}
		}()
		defer func() {
			stopSupervising()
			<-supervised
			if err := srv.Stop(); err != nil {
				log.Warn().Err(err).Msg("stopping embedded PostgreSQL")
			}
		}()
		cfg.DatabaseURL = srv.URL()
		fmt.Fprintf(c.Stdout, "embedded PostgreSQL (data in %s) — applications insert events with:\n  psql %q -c \"SELECT relay.emit('thread.created', '{\\\"title\\\": \\\"Hello\\\"}')\"\n", f.dataDir, srv.URL())
		return c.serve(appCtx, cfg, log, signIn)
	}
	return c.serve(runCtx, cfg, log, signIn)
}

// withSignals returns a context cancelled by the first SIGINT or SIGTERM
// (graceful stop); a second signal exits the process at once.
func withSignals(ctx context.Context, log zerolog.Logger) (context.Context, context.CancelFunc) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	runCtx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case s := <-sigs:
			log.Info().Str("signal", s.String()).Msg("stopping: no more WAL is read, in-flight deliveries finish (signal again to exit at once)")
			cancel()
		case <-runCtx.Done():
			signal.Stop(sigs)
			return
		}
		if s, ok := <-sigs; ok {
			log.Warn().Str("signal", s.String()).Msg("second signal: exiting now")
			os.Exit(130)
		}
	}()
	return runCtx, func() { signal.Stop(sigs); cancel() }
}

// serve runs an App until ctx ends, then stops it gracefully.
func (c *CLI) serve(ctx context.Context, cfg app.Config, log zerolog.Logger, signIn signInHint) error {
	a, err := app.New(cfg)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	if err := a.Start(ctx); err != nil {
		var authErr *dbwait.AuthError
		switch {
		case errors.As(err, &authErr):
			// Waiting or restarting cannot fix a refused password: exit 2,
			// as for any other configuration error.
			return &ExitError{Code: 2, Err: err}
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			if cause := stopCause(ctx); cause != nil {
				return cause
			}
			log.Info().Msg("stopped before the database could be reached")
			return nil
		}
		return err
	}
	if addr := a.AdminAddr(); addr != "" {
		// Without an operator token the admin server itself logs the
		// warning, once; standard output says what to do.
		signIn.print(c.Stdout, addr)
	}
	log.Info().Str("slot", cfg.Slot).Msg("relay running")
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	a.Stop(stopCtx)
	if cause := stopCause(ctx); cause != nil {
		log.Error().Msg("relay stopped on an error")
		return cause
	}
	log.Info().Msg("relay stopped")
	return nil
}

// stopCause is why ctx ended when that was an error (the embedded server
// could not be restarted), nil for a signal or a cancelled parent.
func stopCause(ctx context.Context) error {
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, context.Canceled) {
		return nil
	}
	return cause
}
