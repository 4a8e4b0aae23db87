// Package portal keeps the owner portal's sessions in relay.portal_sessions.
//
// An application's backend asks for a session (Create, with the operator
// token) when its signed-in user opens the Webhooks tab; it receives a
// one-time code, valid a few minutes, that it puts in the URL of the portal
// page it frames. The page exchanges the code (Exchange) for the session
// secret, which the admin server keeps in an HttpOnly cookie: the page's
// JavaScript never sees it, and the code in the URL is worthless once used.
// Each request with the cookie is checked by Authenticate; state-changing
// ones also carry CSRFToken(secret), which the page receives from the server.
//
// The table holds only SHA-256 hashes of codes and secrets (32 random bytes
// each, so a fast hash is enough), and records for whom, by whom, when and
// until when every session was made, when it was used and revoked.
//
// The package knows nothing of HTTP: cookies, headers and origin checks are
// the admin server's.
package portal

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Prefixes of the secrets, so a leaked one is easy to recognise.
const (
	CodePrefix    = "rlyc_"
	SessionPrefix = "rlys_"
)

// Limits of a session's lifetime (Create's TTL) and of its code's.
const (
	MinTTL      = time.Minute
	MaxTTL      = 24 * time.Hour
	DefaultTTL  = time.Hour
	CodeTTL     = 5 * time.Minute
	maxUserLen  = 200
	maxURLLen   = 2048
	pruneAfter  = "30 days"
	lastUsedRes = "1 minute"
)

// DefaultRateLimit is how many sessions Create makes per owner per minute
// unless Config.RateLimit says otherwise: far above what people opening a
// tab need, low enough to stop a runaway loop in an application.
const DefaultRateLimit = 30

// Errors of Exchange and Authenticate. All match ErrInvalid; the admin server
// tells the page which one it was (the page says "expired" or "revoked"),
// since only the holder of the secret can learn it.
var (
	ErrInvalid = errors.New("invalid portal session")
	ErrUnknown = fmt.Errorf("%w: unknown", ErrInvalid)
	ErrUsed    = fmt.Errorf("%w: code already used", ErrInvalid)
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalid)
	ErrRevoked = fmt.Errorf("%w: revoked", ErrInvalid)
)

// ErrNotFound is returned by Revoke for an id that does not exist.
var ErrNotFound = errors.New("portal session not found")

// RateLimitedError is returned by Create when the owner reached the limit;
// RetryAfter says when the next session may be made.
type RateLimitedError struct {
	Limit      int
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("creating portal session: more than %d sessions for this owner in a minute; retry in %s",
		e.Limit, e.RetryAfter.Round(time.Second))
}

// ValidationError names the bad field of CreateParams.
type ValidationError struct {
	Field, Message string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

// Session is a row of relay.portal_sessions, without its hashes.
type Session struct {
	ID            int64      `db:"id" json:"id"`
	Owner         string     `db:"owner" json:"owner"`
	CreatedBy     string     `db:"created_by" json:"created_by"`
	ClientAddr    string     `db:"client_addr" json:"client_addr"`
	User          string     `db:"app_user" json:"user"`
	ReturnURL     *string    `db:"return_url" json:"return_url"`
	CreatedAt     time.Time  `db:"created_at" json:"created_at"`
	CodeExpiresAt time.Time  `db:"code_expires_at" json:"code_expires_at"`
	ExpiresAt     time.Time  `db:"expires_at" json:"expires_at"`
	ExchangedAt   *time.Time `db:"exchanged_at" json:"exchanged_at"`
	LastUsedAt    *time.Time `db:"last_used_at" json:"last_used_at"`
	RevokedAt     *time.Time `db:"revoked_at" json:"revoked_at"`
}

const columns = `id, owner, created_by, client_addr, app_user, return_url, created_at, code_expires_at,
	expires_at, exchanged_at, last_used_at, revoked_at`

// Config configures a Store.
type Config struct {
	// RateLimit is how many sessions one owner may be given per minute,
	// counted in the database so that it holds across relays;
	// DefaultRateLimit when 0, no limit when negative.
	RateLimit int
}

// Store reads and writes portal sessions. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	cfg  Config
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool, cfg Config) *Store {
	if cfg.RateLimit == 0 {
		cfg.RateLimit = DefaultRateLimit
	}
	return &Store{pool: pool, cfg: cfg}
}

// CreateParams describe a new session.
type CreateParams struct {
	// Owner is the one owner the session may see and change (required).
	Owner string
	// TTL is the session's lifetime, between MinTTL and MaxTTL;
	// DefaultTTL when 0.
	TTL time.Duration
	// ReturnURL is where the page sends the user when the session has
	// ended (an absolute http or https URL; optional).
	ReturnURL string
	// User is the application's name for its user, recorded for audits
	// (optional, at most 200 characters).
	User string
	// CreatedBy and ClientAddr record who asked ("operator") and from where.
	CreatedBy, ClientAddr string
}

func (p *CreateParams) validate() error {
	p.Owner = strings.TrimSpace(p.Owner)
	if p.Owner == "" {
		return &ValidationError{"owner", "owner is required: the session sees only this owner's webhooks"}
	}
	if p.TTL == 0 {
		p.TTL = DefaultTTL
	}
	if p.TTL < MinTTL || p.TTL > MaxTTL {
		return &ValidationError{"ttl", fmt.Sprintf("ttl must be between 1m and 24h (got %s)", p.TTL)}
	}
	for field, v := range map[string]string{"owner": p.Owner, "user": p.User, "return_url": p.ReturnURL} {
		if i := strings.IndexFunc(v, isControl); i >= 0 {
			r, _ := utf8.DecodeRuneInString(v[i:])
			return &ValidationError{field, fmt.Sprintf("%s must not contain control characters (found U+%04X)", field, r)}
		}
	}
	if utf8.RuneCountInString(p.User) > maxUserLen || utf8.RuneCountInString(p.Owner) > maxUserLen {
		return &ValidationError{"user", fmt.Sprintf("owner and user must be at most %d characters", maxUserLen)}
	}
	if p.ReturnURL != "" {
		u, err := url.Parse(p.ReturnURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || len(p.ReturnURL) > maxURLLen {
			return &ValidationError{"return_url", "return_url must be an absolute http or https URL without credentials, such as https://app.example.com/settings"}
		}
	}
	return nil
}

// newSecret returns prefix followed by 32 random bytes, base64url.
func newSecret(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+).
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Hash is the SHA-256 of a code or secret, as stored.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// CSRFToken is the token state-changing requests made with the session
// secret must carry. It is derived from the secret (an HMAC keyed by it), so
// it needs no storage, differs for every session, and reveals nothing of the
// secret to the page that holds it.
func CSRFToken(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("relay portal csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Create records a session and returns its one-time code, which is not
// stored and cannot be shown again. It refuses with *RateLimitedError past
// Config.RateLimit sessions per owner per minute, and with
// *ValidationError for bad params. Sessions expired for 30 days are
// removed on the way.
func (s *Store) Create(ctx context.Context, p CreateParams) (string, Session, error) {
	if err := p.validate(); err != nil {
		return "", Session{}, err
	}
	code := newSecret(CodePrefix)
	var sess Session
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if s.cfg.RateLimit > 0 {
			// One creation at a time per owner, so concurrent requests
			// cannot all pass the count below.
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('relay.portal_sessions:' || $1, 0))`, p.Owner); err != nil {
				return err
			}
			var n int
			var oldest *time.Time
			if err := tx.QueryRow(ctx, `SELECT count(*), min(created_at) FROM relay.portal_sessions
				WHERE owner = $1 AND created_at > now() - interval '1 minute'`, p.Owner).Scan(&n, &oldest); err != nil {
				return err
			}
			if n >= s.cfg.RateLimit {
				retry := time.Second
				if oldest != nil {
					if d := time.Until(oldest.Add(time.Minute)); d > retry {
						retry = d
					}
				}
				return &RateLimitedError{Limit: s.cfg.RateLimit, RetryAfter: retry}
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM relay.portal_sessions WHERE expires_at < now() - interval '`+pruneAfter+`'`); err != nil {
			return err
		}
		var ret *string
		if p.ReturnURL != "" {
			ret = &p.ReturnURL
		}
		rows, err := tx.Query(ctx, `INSERT INTO relay.portal_sessions
				(owner, created_by, client_addr, app_user, return_url, code_hash, expires_at, code_expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, now() + $7::interval, now() + least($7::interval, $8::interval))
			RETURNING `+columns,
			p.Owner, p.CreatedBy, p.ClientAddr, p.User, ret, Hash(code), p.TTL, CodeTTL)
		if err != nil {
			return err
		}
		sess, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Session])
		return err
	})
	var rl *RateLimitedError
	if errors.As(err, &rl) {
		return "", Session{}, err
	}
	if err != nil {
		return "", Session{}, fmt.Errorf("creating portal session: %w", err)
	}
	return code, sess, nil
}

// Exchange trades a one-time code for the session's secret. The code works
// once, before its expiry and the session's, and not after a revocation; the
// same statement that checks it uses it up, so two concurrent exchanges
// cannot both succeed. The error says why a code is refused (ErrUnknown,
// ErrUsed, ErrExpired, ErrRevoked).
func (s *Store) Exchange(ctx context.Context, code string) (string, Session, error) {
	if !strings.HasPrefix(code, CodePrefix) {
		return "", Session{}, ErrUnknown
	}
	secret := newSecret(SessionPrefix)
	rows, err := s.pool.Query(ctx, `UPDATE relay.portal_sessions
		SET session_hash = $2, exchanged_at = now(), last_used_at = now()
		WHERE code_hash = $1 AND exchanged_at IS NULL AND revoked_at IS NULL AND code_expires_at > now()
		RETURNING `+columns, Hash(code), Hash(secret))
	if err != nil {
		return "", Session{}, fmt.Errorf("exchanging portal code: %w", err)
	}
	sess, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Session])
	if errors.Is(err, pgx.ErrNoRows) {
		return "", Session{}, s.whyRefused(ctx, code)
	}
	if err != nil {
		return "", Session{}, fmt.Errorf("exchanging portal code: %w", err)
	}
	return secret, sess, nil
}

// whyRefused tells why Exchange refused a code.
func (s *Store) whyRefused(ctx context.Context, code string) error {
	var used, revoked, expired bool
	err := s.pool.QueryRow(ctx, `SELECT exchanged_at IS NOT NULL, revoked_at IS NOT NULL, code_expires_at <= now()
		FROM relay.portal_sessions WHERE code_hash = $1`, Hash(code)).Scan(&used, &revoked, &expired)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return ErrUnknown
	case err != nil:
		return fmt.Errorf("exchanging portal code: %w", err)
	case revoked:
		return ErrRevoked
	case used:
		return ErrUsed
	case expired:
		return ErrExpired
	}
	return ErrUnknown
}

// Authenticate returns the session a secret belongs to, or ErrUnknown,
// ErrExpired or ErrRevoked. It records last_used_at, at most once a minute,
// in the same statement.
func (s *Store) Authenticate(ctx context.Context, secret string) (Session, error) {
	if !strings.HasPrefix(secret, SessionPrefix) {
		return Session{}, ErrUnknown
	}
	rows, err := s.pool.Query(ctx, `
		WITH t AS (
			SELECT * FROM relay.portal_sessions WHERE session_hash = $1
		), touch AS (
			UPDATE relay.portal_sessions AS p SET last_used_at = now()
			FROM t
			WHERE p.id = t.id AND t.revoked_at IS NULL AND t.expires_at > now()
			  AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '`+lastUsedRes+`')
		)
		SELECT `+columns+` FROM t`, Hash(secret))
	if err != nil {
		return Session{}, fmt.Errorf("authenticating portal session: %w", err)
	}
	sess, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Session])
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, ErrUnknown
	}
	if err != nil {
		return Session{}, fmt.Errorf("authenticating portal session: %w", err)
	}
	if sess.RevokedAt != nil {
		return Session{}, ErrRevoked
	}
	if !sess.ExpiresAt.After(time.Now()) {
		return Session{}, ErrExpired
	}
	return sess, nil
}

// ListParams filter List.
type ListParams struct {
	// Owner, when not empty, keeps that owner's sessions only.
	Owner string
	// Active keeps the sessions neither expired nor revoked.
	Active bool
	// Limit bounds the answer (newest first); 100 when 0.
	Limit int
}

// List returns sessions, newest first.
func (s *Store) List(ctx context.Context, p ListParams) ([]Session, error) {
	if p.Limit <= 0 {
		p.Limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM relay.portal_sessions
		WHERE ($1 = '' OR owner = $1) AND (NOT $2 OR (revoked_at IS NULL AND expires_at > now()))
		ORDER BY id DESC LIMIT $3`, p.Owner, p.Active, p.Limit)
	if err != nil {
		return nil, fmt.Errorf("listing portal sessions: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[Session])
	if err != nil {
		return nil, fmt.Errorf("listing portal sessions: %w", err)
	}
	return out, nil
}

// Revoke ends a session at once (and makes its code worthless if it was not
// used yet). Revoking twice keeps the first time; an unknown id is
// ErrNotFound.
func (s *Store) Revoke(ctx context.Context, id int64) (Session, error) {
	rows, err := s.pool.Query(ctx, `UPDATE relay.portal_sessions SET revoked_at = coalesce(revoked_at, now())
		WHERE id = $1 RETURNING `+columns, id)
	if err != nil {
		return Session{}, fmt.Errorf("revoking portal session %d: %w", id, err)
	}
	sess, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Session])
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, fmt.Errorf("revoking portal session %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Session{}, fmt.Errorf("revoking portal session %d: %w", id, err)
	}
	return sess, nil
}

// isControl reports C0 controls, DEL and C1 controls.
func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }
