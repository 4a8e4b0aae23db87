package tokens_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/internal/tokens"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestGenerate(t *testing.T) {
	t.Parallel()
	a, b := tokens.Generate(), tokens.Generate()
	if a == b || !strings.HasPrefix(a, "rly_") {
		t.Fatalf("tokens %q %q", a, b)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(a, "rly_"))
	if err != nil || len(raw) != 32 {
		t.Fatalf("token body decodes to %d bytes: %v", len(raw), err)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	st := tokens.NewStore(db.Pool)

	plain, tok, err := st.Create(ctx, "alice", "ci")
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID == 0 || tok.Owner != "alice" || tok.Name != "ci" || tok.LastUsedAt != nil || tok.RevokedAt != nil {
		t.Fatalf("token %+v", tok)
	}
	// Only the hash is stored.
	var hash []byte
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT token_hash FROM relay.api_tokens WHERE id = $1`, tok.ID).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hash, tokens.Hash(plain)) {
		t.Fatal("stored hash differs from SHA-256 of the plaintext")
	}
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM relay.api_tokens WHERE position($1::bytea IN token_hash) > 0 OR name = $2`,
		[]byte(plain), plain).Scan(&n); err != nil || n != 0 {
		t.Fatalf("plaintext found in the table: %d %v", n, err)
	}

	owner, err := st.Authenticate(ctx, plain)
	if err != nil || owner != "alice" {
		t.Fatalf("authenticate: %q %v", owner, err)
	}
	var used *time.Time
	if err := db.Pool.QueryRow(ctx, `SELECT last_used_at FROM relay.api_tokens WHERE id = $1`, tok.ID).Scan(&used); err != nil || used == nil {
		t.Fatalf("last_used_at not recorded: %v %v", used, err)
	}
	for _, bad := range []string{"", "rly_", plain + "x", "Bearer " + plain, tokens.Generate()} {
		if _, err := st.Authenticate(ctx, bad); !errors.Is(err, tokens.ErrInvalidToken) || !errors.Is(err, tokens.ErrUnknown) {
			t.Fatalf("authenticate %q: %v", bad, err)
		}
	}

	_, tok2, err := st.Create(ctx, " bob ", "")
	if err != nil || tok2.Owner != "bob" {
		t.Fatalf("second token %+v %v", tok2, err)
	}
	if _, _, err := st.Create(ctx, "  ", "x"); err == nil {
		t.Fatal("empty owner accepted")
	}
	list, err := st.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != tok.ID || list[1].Owner != "bob" {
		t.Fatalf("list %+v %v", list, err)
	}

	rev, err := st.Revoke(ctx, tok.ID)
	if err != nil || rev.RevokedAt == nil {
		t.Fatalf("revoke %+v %v", rev, err)
	}
	again, err := st.Revoke(ctx, tok.ID)
	if err != nil || !again.RevokedAt.Equal(*rev.RevokedAt) {
		t.Fatalf("second revoke %+v %v", again, err)
	}
	if _, err := st.Authenticate(ctx, plain); !errors.Is(err, tokens.ErrRevoked) || !errors.Is(err, tokens.ErrInvalidToken) {
		t.Fatalf("revoked token: %v", err)
	}
	if _, err := st.Revoke(ctx, 424242); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
}
