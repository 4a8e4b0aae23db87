package cli_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/internal/tokens"
)

func TestTokensCommand(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	env := map[string]string{"RELAY_DATABASE_URL": db.URL}
	ctx := context.Background()

	// create prints only the token on stdout.
	code, out, errs := runCLI(t, env, "tokens", "create", "--owner", "alice", "--name", "ci bot")
	if code != 0 {
		t.Fatalf("create: %d %q", code, errs)
	}
	plain := strings.TrimSpace(out)
	if !regexp.MustCompile(`^rly_[A-Za-z0-9_-]{43}$`).MatchString(plain) || strings.Count(out, "\n") != 1 {
		t.Fatalf("create stdout %q", out)
	}
	if !strings.Contains(errs, "cannot be shown again") || !strings.Contains(errs, "relay tokens revoke 1") {
		t.Fatalf("create stderr %q", errs)
	}
	st := tokens.NewStore(db.Pool)
	if owner, err := st.Authenticate(ctx, plain); err != nil || owner != "alice" {
		t.Fatalf("the printed token does not authenticate: %q %v", owner, err)
	}
	var stored int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM relay.api_tokens WHERE token_hash = sha256($1::text::bytea)`, plain).Scan(&stored); err != nil || stored != 1 {
		t.Fatalf("hash not stored: %d %v", stored, err)
	}
	if code, _, _ := runCLI(t, env, "tokens", "create", "--owner", "bob"); code != 0 {
		t.Fatal("second create failed")
	}

	// list, as a table and as JSON; never the token or its hash.
	code, out, _ = runCLI(t, env, "tokens", "list")
	if code != 0 || !strings.Contains(out, "OWNER") || !regexp.MustCompile(`(?m)^1\s+alice\s+ci bot\s+.*active$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^2\s+bob\s+-\s+`).MatchString(out) || strings.Contains(out, plain) {
		t.Fatalf("list: %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, env, "tokens", "list", "--json")
	var list []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 2 || list[0]["owner"] != "alice" ||
		list[0]["last_used_at"] == nil || list[1]["revoked_at"] != nil || strings.Contains(out, "hash") {
		t.Fatalf("list --json: %d %s", code, out)
	}

	// revoke.
	if code, out, errs := runCLI(t, env, "tokens", "revoke", "1"); code != 0 || !strings.Contains(out, `token 1 (owner "alice") revoked`) {
		t.Fatalf("revoke: %d %q %q", code, out, errs)
	}
	if _, err := st.Authenticate(ctx, plain); err == nil {
		t.Fatal("revoked token still authenticates")
	}
	if code, out, _ := runCLI(t, env, "tokens", "list"); code != 0 || !regexp.MustCompile(`(?m)^1\s+alice.*revoked \d{4}-`).MatchString(out) {
		t.Fatalf("list after revoke: %s", out)
	}
	if code, _, errs := runCLI(t, env, "tokens", "revoke", "99"); code != 1 || !strings.Contains(errs, "token 99 does not exist") {
		t.Fatalf("revoke unknown: %d %q", code, errs)
	}

	// Usage errors exit 2.
	for _, args := range [][]string{
		{"tokens"},
		{"tokens", "create"},
		{"tokens", "create", "--owner", "  "},
		{"tokens", "create", "--owner", "a", "extra"},
		{"tokens", "list", "extra"},
		{"tokens", "revoke"},
		{"tokens", "revoke", "x"},
		{"tokens", "revoke", "1", "2"},
		{"tokens", "rotate"},
		{"tokens", "list", "--bogus"},
	} {
		if code, _, errs := runCLI(t, env, args...); code != 2 {
			t.Errorf("%v: exit %d (%q), want 2", args, code, errs)
		}
	}
	if code, _, errs := runCLI(t, nil, "tokens", "list"); code != 2 || !strings.Contains(errs, "RELAY_DATABASE_URL") {
		t.Fatalf("no database: %d %q", code, errs)
	}
	if code, _, errs := runCLI(t, env, "tokens", "--help"); code != 0 || !strings.Contains(errs, "relay tokens create --owner OWNER") {
		t.Fatalf("help: %d %q", code, errs)
	}
}

func TestTokensListEmpty(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	env := map[string]string{"RELAY_DATABASE_URL": db.URL}
	if code, out, _ := runCLI(t, env, "tokens", "list"); code != 0 || !strings.Contains(out, "no tokens") {
		t.Fatalf("empty list: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, env, "tokens", "list", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty json list: %d %q", code, out)
	}
}
