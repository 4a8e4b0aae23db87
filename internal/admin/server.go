// Package admin is relay's admin HTTP server: the REST API of the brief
// under /api (webhooks, the delivery log, stats, event types, settings),
// health and readiness probes, Prometheus metrics, and the web console.
//
// Every /api route needs "Authorization: Bearer <token>". The operator token
// (Config.OperatorToken, from --admin-token / RELAY_ADMIN_TOKEN) sees
// everything; an owner token (relay tokens create --owner X) sees and
// changes only owner X's webhooks and their deliveries. Another owner's ids
// answer 404, exactly like missing ones, so existence never leaks. A portal
// session's cookie (see portal.go) stands for an owner token for the page
// of the owner portal. /healthz, /readyz, /metrics and /api/openapi.json
// need no token.
//
// Errors have one shape: {"error": {"code": "...", "message": "...",
// "field": "..." or null}}; see openapi.json for every route and body.
package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/metrics"
	"github.com/pgoutbox/relay/internal/portal"
	"github.com/pgoutbox/relay/internal/tokens"
	"github.com/pgoutbox/relay/sink/send"
	"github.com/pgoutbox/relay/subscriptions"
)

// DefaultAddr is where the admin server listens unless told otherwise:
// loopback only, since the API can change every webhook.
const DefaultAddr = "127.0.0.1:8080"

// DefaultMaxBodyBytes bounds request bodies.
const DefaultMaxBodyBytes = 1 << 20

// Timeouts of the http.Server. WriteTimeout is extended per request by the
// test endpoint, which waits for a delivery attempt (up to the
// subscription's timeout_ms).
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
)

// Tester sends the webhook.test event to one subscription and waits for the
// attempt to end. Package sink implements it.
type Tester interface {
	// Test returns once the attempt ended. A refused or failed attempt is a
	// TestResult with Delivered false and Error set, not an error: error is
	// for failures to run the test at all (subscriptions.ErrNotFound when
	// the subscription is gone).
	Test(ctx context.Context, subscriptionID int64) (TestResult, error)
}

// TestResult is the outcome of a test delivery, returned as is by
// POST /api/webhooks/{id}/test.
type TestResult struct {
	Delivered  bool   `json:"delivered"`
	StatusCode int    `json:"status_code"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

// Config configures a Server.
type Config struct {
	// Addr is the listen address, DefaultAddr when empty. "127.0.0.1:0"
	// picks a free port; Addr() tells which after Start.
	Addr string
	// Pool is the database (required).
	Pool *pgxpool.Pool
	// Logger receives request logs, with component=admin.
	Logger zerolog.Logger
	// OperatorToken grants access to everything. Empty means no operator
	// access: only owner tokens work (and without any, every /api request
	// answers 401).
	OperatorToken string
	// Metrics is served at /metrics; nil answers 404 there.
	Metrics *metrics.Metrics
	// Tester runs POST /api/webhooks/{id}/test; nil answers 503 there.
	Tester Tester
	// Health adds fields to the /healthz answer (relay run adds its build
	// and whether it still waits for its database); nil adds none.
	// /healthz answers 200 whatever these say: it tells that the process
	// is alive, /readyz tells whether it works.
	Health func() map[string]any
	// Ready decides /readyz; nil pings the database only. See
	// SlotReadiness for the check relay run uses.
	Ready func(ctx context.Context) error
	// AllowCIDRs are the ranges webhook URLs may point to although private
	// or loopback (the same list the sender's dial-time guard uses).
	AllowCIDRs []netip.Prefix
	// Static is the web console, served at / when non-nil.
	Static fs.FS
	// MaxBodyBytes bounds request bodies; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// FrameAncestors are the origins (https://app.example.com, see
	// ParseOrigins) allowed to frame the pages whose handler calls
	// AllowFraming. Every other response, and every response when this is
	// empty, refuses framing (CSP frame-ancestors 'none', X-Frame-Options
	// DENY).
	FrameAncestors []string
	// AllowedHosts are the host names (without port) the Host header of
	// /metrics and /api/openapi.json may carry besides IP addresses,
	// localhost and the host of Addr, which are always accepted: a name
	// such as relay.internal that Prometheus scrapes by. Other names answer
	// 421, so a page rebinding its own name to this address (DNS
	// rebinding) reads nothing.
	AllowedHosts []string
	// PublicURL is the origin browsers reach this server by
	// (https://relay.example.com), which the one-time portal URLs name;
	// empty takes the scheme and Host of the request that makes the session.
	PublicURL string
	// PortalRateLimit is how many portal sessions one owner may be given
	// per minute (portal.DefaultRateLimit when 0, no limit when negative).
	PortalRateLimit int
}

// Server is the admin HTTP server.
type Server struct {
	cfg    Config
	log    zerolog.Logger
	store  *subscriptions.Store
	tokens *tokens.Store
	portal *portal.Store
	opHash []byte // SHA-256 of the operator token, nil when none
	srv    *http.Server
	// allowedHosts are Config.AllowedHosts and the host of Addr, lowercase.
	allowedHosts []string
	// guard is the sender's address guard with Config.AllowCIDRs, so that
	// creation refuses what delivery would.
	guard *send.AddressGuard

	mu       sync.Mutex
	ln       net.Listener
	served   chan struct{}
	stopOnce sync.Once
	stopErr  error
}

// New validates cfg and builds the server; nothing listens until Start.
func New(cfg Config) (*Server, error) {
	if cfg.Pool == nil {
		return nil, errors.New("admin: Config.Pool is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	origins, err := ParseOrigins(cfg.FrameAncestors)
	if err != nil {
		return nil, fmt.Errorf("admin: frame ancestors: %w", err)
	}
	cfg.FrameAncestors = origins
	if cfg.PublicURL != "" {
		pub, err := ParseOrigins([]string{cfg.PublicURL})
		if err != nil || len(pub) != 1 {
			return nil, fmt.Errorf("admin: public URL %q: want a scheme and host such as https://relay.example.com", cfg.PublicURL)
		}
		cfg.PublicURL = pub[0]
	}
	cidrs := make([]string, len(cfg.AllowCIDRs))
	for i, p := range cfg.AllowCIDRs {
		cidrs[i] = p.String()
	}
	guard, err := send.NewAddressGuard(cidrs)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s := &Server{
		cfg:          cfg,
		log:          cfg.Logger.With().Str("component", "admin").Logger(),
		store:        subscriptions.NewStore(cfg.Pool),
		tokens:       tokens.NewStore(cfg.Pool),
		portal:       portal.NewStore(cfg.Pool, portal.Config{RateLimit: cfg.PortalRateLimit}),
		allowedHosts: normaliseHosts(cfg.Addr, cfg.AllowedHosts),
		guard:        guard,
	}
	if cfg.OperatorToken != "" {
		h := sha256.Sum256([]byte(cfg.OperatorToken))
		s.opHash = h[:]
	}
	s.srv = &http.Server{
		Addr:              cfg.Addr,
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          newStdLogger(s.log),
	}
	return s, nil
}

// Start listens on Config.Addr and serves in a goroutine. It returns once
// the listener is open, so Addr() reports the real port; ctx bounds only
// the listening. Stop the server with Shutdown.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return errors.New("admin: server already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin: listening on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("admin server stopped")
		}
	}()
	s.log.Info().Str("addr", ln.Addr().String()).Msg("admin API listening")
	if s.opHash == nil {
		s.log.Warn().Msg("no operator token: /api answers 401 except to owner tokens; " +
			"set one with --admin-token or RELAY_ADMIN_TOKEN, or create owner tokens with 'relay tokens create --owner X'")
	} else if len(s.cfg.OperatorToken) < 16 {
		s.log.Warn().Int("length", len(s.cfg.OperatorToken)).Msg("the operator token is short; use at least 16 random characters")
	}
	return nil
}

// Addr is the address the server listens on: the real one after Start,
// Config.Addr before.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Addr
}

// Shutdown stops accepting connections and waits for requests in flight to
// finish, until ctx is done; then it closes the remaining connections and
// returns ctx's error. It is idempotent and safe before Start.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		started := s.ln != nil
		s.mu.Unlock()
		if !started {
			return
		}
		err := s.srv.Shutdown(ctx)
		if err != nil {
			_ = s.srv.Close()
		}
		<-s.served
		s.stopErr = err
		s.log.Info().Msg("admin API stopped")
	})
	return s.stopErr
}

// stdLogWriter sends net/http's own error log (TLS handshakes, bad
// requests) to zerolog.
type stdLogWriter struct{ log zerolog.Logger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	msg := string(p)
	if n := len(msg); n > 0 && msg[n-1] == '\n' {
		msg = msg[:n-1]
	}
	w.log.Warn().Msg(msg)
	return len(p), nil
}

func newStdLogger(l zerolog.Logger) *log.Logger { return log.New(stdLogWriter{l}, "", 0) }
