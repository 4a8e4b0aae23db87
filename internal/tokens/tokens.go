// Package tokens manages the owner-scoped bearer tokens of the admin API,
// kept in relay.api_tokens.
//
// The database holds only the SHA-256 of a token: a plaintext is shown once,
// when it is created, and cannot be recovered. Tokens are 32 random bytes,
// so a fast hash is enough (there is nothing to brute-force that a slow
// hash would protect).
//
// It is a package of its own, apart from subscriptions, because tokens are
// a detail of the admin API and the CLI that manages them, not of the public
// subscription model.
package tokens

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Prefix starts every token, so a leaked one is easy to recognise (and to
// scan for in repositories).
const Prefix = "rly_"

// Errors returned by Authenticate. Both match ErrInvalidToken; callers
// should not tell them apart in answers to clients.
var (
	ErrInvalidToken = errors.New("invalid token")
	ErrRevoked      = fmt.Errorf("%w: revoked", ErrInvalidToken)
	ErrUnknown      = fmt.Errorf("%w: unknown", ErrInvalidToken)
)

// ErrNotFound is returned by Revoke for an id that does not exist.
var ErrNotFound = errors.New("token not found")

// Token is a row of relay.api_tokens, without its hash.
type Token struct {
	ID         int64      `db:"id" json:"id"`
	Owner      string     `db:"owner" json:"owner"`
	Name       string     `db:"name" json:"name"`
	CreatedAt  time.Time  `db:"created_at" json:"created_at"`
	LastUsedAt *time.Time `db:"last_used_at" json:"last_used_at"`
	RevokedAt  *time.Time `db:"revoked_at" json:"revoked_at"`
}

// Store reads and writes tokens. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Hash returns the SHA-256 of a plaintext token, as stored.
func Hash(plaintext string) []byte {
	h := sha256.Sum256([]byte(plaintext))
	return h[:]
}

// Generate returns a new plaintext token: Prefix followed by the unpadded
// base64url encoding of 32 random bytes.
func Generate() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+).
	return Prefix + base64.RawURLEncoding.EncodeToString(b)
}

const tokenColumns = `id, owner, name, created_at, last_used_at, revoked_at`

// Create makes a token for owner and returns its plaintext, which is not
// stored and cannot be shown again. name is a free label ("" allowed).
func (s *Store) Create(ctx context.Context, owner, name string) (string, Token, error) {
	owner = strings.TrimSpace(owner)
	if owner == "" {
		return "", Token{}, errors.New("creating token: owner must not be empty")
	}
	// Owners and names are printed in terminals (relay tokens list) and
	// logs: control characters (ESC, BEL, …) are refused, as for
	// subscriptions.
	for what, v := range map[string]string{"owner": owner, "name": name} {
		if i := strings.IndexFunc(v, isControl); i >= 0 {
			r, _ := utf8.DecodeRuneInString(v[i:])
			return "", Token{}, fmt.Errorf("creating token: %s must not contain control characters (found U+%04X)", what, r)
		}
	}
	plaintext := Generate()
	rows, err := s.pool.Query(ctx, `INSERT INTO relay.api_tokens (owner, name, token_hash) VALUES ($1, $2, $3)
		RETURNING `+tokenColumns, owner, name, Hash(plaintext))
	if err != nil {
		return "", Token{}, fmt.Errorf("creating token: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Token])
	if err != nil {
		return "", Token{}, fmt.Errorf("creating token: %w", err)
	}
	return plaintext, t, nil
}

// lastUsedResolution is how stale last_used_at may get: it is written at
// most once a minute per token, so authentication stays a read.
const lastUsedResolution = "1 minute"

// Authenticate returns the owner of a valid token. An unknown token gives
// ErrUnknown and a revoked one ErrRevoked (both match ErrInvalidToken). It
// records last_used_at in the same statement, at most once a minute.
func (s *Store) Authenticate(ctx context.Context, plaintext string) (string, error) {
	if !strings.HasPrefix(plaintext, Prefix) {
		return "", ErrUnknown
	}
	var owner string
	var revoked bool
	err := s.pool.QueryRow(ctx, `
		WITH t AS (
			SELECT id, owner, revoked_at, last_used_at FROM relay.api_tokens WHERE token_hash = $1
		), touch AS (
			UPDATE relay.api_tokens AS a SET last_used_at = now()
			FROM t
			WHERE a.id = t.id AND t.revoked_at IS NULL
			  AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '`+lastUsedResolution+`')
		)
		SELECT owner, revoked_at IS NOT NULL FROM t`, Hash(plaintext)).Scan(&owner, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrUnknown
	}
	if err != nil {
		return "", fmt.Errorf("authenticating token: %w", err)
	}
	if revoked {
		return "", ErrRevoked
	}
	return owner, nil
}

// List returns every token, revoked ones included, ordered by id.
func (s *Store) List(ctx context.Context) ([]Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenColumns+` FROM relay.api_tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	ts, err := pgx.CollectRows(rows, pgx.RowToStructByName[Token])
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	return ts, nil
}

// Revoke revokes a token at once. Revoking a revoked token keeps its first
// revocation time and is not an error; an unknown id is ErrNotFound.
func (s *Store) Revoke(ctx context.Context, id int64) (Token, error) {
	rows, err := s.pool.Query(ctx, `UPDATE relay.api_tokens SET revoked_at = coalesce(revoked_at, now())
		WHERE id = $1 RETURNING `+tokenColumns, id)
	if err != nil {
		return Token{}, fmt.Errorf("revoking token %d: %w", id, err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Token])
	if errors.Is(err, pgx.ErrNoRows) {
		return Token{}, fmt.Errorf("revoking token %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Token{}, fmt.Errorf("revoking token %d: %w", id, err)
	}
	return t, nil
}

// isControl reports C0 controls, DEL and C1 controls.
func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }
