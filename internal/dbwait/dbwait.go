// Package dbwait is how relay waits for PostgreSQL: at start, before
// anything else touches the database (in a pod, a compose file or after a
// host reboot the server is often still starting), and whenever the
// replication connection is lost (a restart, a failover). After each failed
// attempt it logs one line saying why (the server is starting up, the
// connection was refused, …), waits with exponential backoff and jitter,
// and gives up only when the caller's time limit has passed or, if the
// caller asks, when waiting cannot help (authentication failed).
//
// It knows nothing of what an attempt does: callers pass their own connect
// function to Wait, or call Retry from their own reconnect loop.
package dbwait

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
)

// Forever, as Config.Limit, waits until the context ends.
const Forever time.Duration = -1

// Reason says why one attempt failed.
type Reason struct {
	// Text is a short phrase for logs and /readyz, such as "starting up"
	// or "connection refused".
	Text string
	// Permanent is true when waiting cannot fix it: the server answered
	// and refused the credentials.
	Permanent bool
}

func (r Reason) String() string { return r.Text }

// Classify tells why err, from a connection attempt or a session that
// broke, happened.
func Classify(err error) Reason {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		msg := strings.ToLower(pgErr.Message)
		switch pgErr.Code {
		case "57P03": // cannot_connect_now
			switch {
			case strings.Contains(msg, "shutting down"):
				return Reason{Text: "shutting down"}
			case strings.Contains(msg, "recovery"):
				return Reason{Text: "in recovery"}
			}
			return Reason{Text: "starting up"}
		case "57P01": // admin_shutdown: a fast shutdown, or pg_terminate_backend
			return Reason{Text: "terminated by the server"}
		case "57P02": // crash_shutdown
			return Reason{Text: "restarting after a crash"}
		case "53300", "53400": // too_many_connections, configuration_limit_exceeded
			return Reason{Text: "too many connections"}
		case "28P01": // invalid_password
			return Reason{Text: "authentication failed", Permanent: true}
		case "28000": // invalid_authorization_specification: pg_hba.conf rejects, no such role
			return Reason{Text: "authentication failed", Permanent: true}
		case "3D000": // invalid_catalog_name
			return Reason{Text: "database does not exist (yet)"}
		}
		return Reason{Text: "server error " + pgErr.Code}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsNotFound {
			return Reason{Text: "host not found"}
		}
		return Reason{Text: "name resolution failed"}
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Reason{Text: "connection refused"}
	case errors.Is(err, syscall.ENOENT):
		return Reason{Text: "no server socket"}
	case errors.Is(err, syscall.ECONNRESET):
		return Reason{Text: "connection reset"}
	case errors.Is(err, syscall.EHOSTUNREACH):
		return Reason{Text: "host unreachable"}
	case errors.Is(err, syscall.ENETUNREACH):
		return Reason{Text: "network unreachable"}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Reason{Text: "connection closed by the server"}
	case errors.Is(err, context.DeadlineExceeded):
		return Reason{Text: "timed out"}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return Reason{Text: "timed out"}
	}
	return Reason{Text: "unavailable"}
}

// AuthError is what Retry returns, with Config.FailOnPermanent, when the
// server refused the credentials: waiting cannot fix that.
type AuthError struct {
	// Role is the role relay connected as ("" when unknown).
	Role string
	Err  error
}

func (e *AuthError) Error() string {
	detail := e.Err.Error()
	var pgErr *pgconn.PgError
	if errors.As(e.Err, &pgErr) {
		detail = pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"
	}
	return fmt.Sprintf("authentication failed for role %q: %s; waiting cannot fix this: check the user and password in the database URL, that the role exists and has LOGIN, and pg_hba.conf", e.Role, detail)
}

func (e *AuthError) Unwrap() error { return e.Err }

// Config configures a Retrier.
type Config struct {
	// What names what is waited for, in logs (default "database").
	What string
	// Limit bounds how long one outage may last before Retry gives up:
	// Forever (any negative value) waits until the context ends, 0 gives
	// up after the first failed attempt.
	Limit time.Duration
	// FailOnPermanent makes Retry return an *AuthError at once when the
	// server refused the credentials. Without it such a failure is logged
	// at error level and retried like any other, as a relay that already
	// runs should do while an operator fixes a password.
	FailOnPermanent bool
	// MinBackoff and MaxBackoff bound the wait between attempts (defaults
	// 250ms and 5s); it doubles after each failure, ±25% jitter.
	MinBackoff, MaxBackoff time.Duration
	// StableAfter is how long a connection must have been up before the
	// backoff starts again from MinBackoff (default 1 minute), so a
	// connection that breaks as soon as it is made is not retried in a
	// tight loop.
	StableAfter time.Duration
	Logger      zerolog.Logger
}

// Retrier counts the failed attempts of one outage, logs them and paces
// the next ones. It is safe for concurrent use: Status may be read while
// another goroutine retries.
type Retrier struct {
	cfg Config

	mu       sync.Mutex
	attempts int       // failed attempts in the current outage
	since    time.Time // first failure of the current outage
	upSince  time.Time // last success
	backoff  time.Duration
	last     Reason
	lastErr  error
}

// New returns a Retrier with cfg's defaults filled in.
func New(cfg Config) *Retrier {
	if cfg.What == "" {
		cfg.What = "database"
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = time.Minute
	}
	return &Retrier{cfg: cfg, backoff: cfg.MinBackoff}
}

// Retry is called after an attempt failed with err. It logs why and waits
// before the next attempt, returning nil when that attempt should be made.
// It returns an error instead when ctx ends, when the outage has lasted
// Config.Limit, or (Config.FailOnPermanent) with an *AuthError when the
// credentials were refused.
func (r *Retrier) Retry(ctx context.Context, err error) error {
	reason := Classify(err)
	now := time.Now()
	r.mu.Lock()
	if r.attempts == 0 {
		r.since = now
		if !r.upSince.IsZero() && now.Sub(r.upSince) >= r.cfg.StableAfter {
			r.backoff = r.cfg.MinBackoff
		}
	}
	r.attempts++
	attempt, waited := r.attempts, now.Sub(r.since)
	r.last, r.lastErr = reason, err
	wait := jitter(r.backoff)
	r.backoff = min(r.backoff*2, r.cfg.MaxBackoff)
	r.mu.Unlock()

	log := r.cfg.Logger
	if reason.Permanent && r.cfg.FailOnPermanent {
		role := ""
		var ce *pgconn.ConnectError
		if errors.As(err, &ce) && ce.Config != nil {
			role = ce.Config.User
		}
		return &AuthError{Role: role, Err: err}
	}
	if r.cfg.Limit >= 0 {
		left := r.cfg.Limit - waited
		if left <= 0 {
			return fmt.Errorf("%s not reachable after %d attempt(s) in %s: %s: %w",
				r.cfg.What, attempt, waited.Round(time.Millisecond), reason, err)
		}
		wait = min(wait, left)
	}
	ev := log.Warn()
	if reason.Permanent {
		ev = log.Error()
	}
	ev.Str("reason", reason.Text).Int("attempt", attempt).Dur("waited", waited).Dur("retry_in", wait).
		Str("error", err.Error()).Msg("waiting for the " + r.cfg.What + ": " + reason.Text)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Succeeded ends the current outage after an attempt worked, logging how
// long it lasted if there was one.
func (r *Retrier) Succeeded() {
	r.mu.Lock()
	attempts, since := r.attempts, r.since
	r.attempts, r.last, r.lastErr = 0, Reason{}, nil
	r.upSince = time.Now()
	r.mu.Unlock()
	if attempts > 0 {
		r.cfg.Logger.Info().Int("failed_attempts", attempts).Dur("waited", time.Since(since)).
			Msg(r.cfg.What + " reachable")
	}
}

// Status describes an outage under way.
type Status struct {
	Reason   Reason
	Attempts int
	Since    time.Time
	Err      error
}

func (s Status) String() string {
	return fmt.Sprintf("%s (%d failed attempt(s) in %s)", s.Reason, s.Attempts, time.Since(s.Since).Round(time.Second))
}

// Status returns the outage under way, if any.
func (r *Retrier) Status() (Status, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts == 0 {
		return Status{}, false
	}
	return Status{Reason: r.last, Attempts: r.attempts, Since: r.since, Err: r.lastErr}, true
}

// Wait calls attempt until it succeeds, pacing and logging the failures
// with r. It returns nil once attempt succeeded, or Retry's error.
func Wait(ctx context.Context, r *Retrier, attempt func(context.Context) error) error {
	for {
		err := attempt(ctx)
		if err == nil {
			r.Succeeded()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := r.Retry(ctx, err); err != nil {
			return err
		}
	}
}

// jitter spreads d by ±25% so that relays do not retry in lockstep.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.75 + rand.Float64()*0.5))
}
