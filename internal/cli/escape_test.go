package cli_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pgoutbox/relay/internal/tokens"
)

// hostile is text an owner could have stored before the schema refused
// control characters (or that reaches relay some other way): BEL, a colour
// escape, a window-title escape, a C1 CSI and a bidi override.
const hostile = "bell\aesc\x1b[31mred\x1b]0;pwned\a csi\u009b2J rtl\u202egnp.exe"

// wantTerminalSafe fails when out holds a byte a terminal acts on (other
// than the line breaks the command itself writes) or text that is not
// UTF-8, and checks that the escapes are visible (all of them when full,
// else the first: tables truncate long cells).
func wantTerminalSafe(t *testing.T, what, out string, full bool) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: output is not UTF-8: %q", what, out)
	}
	for _, r := range out {
		if (r < 0x20 && r != '\n') || (r >= 0x7f && r <= 0x9f) || r == 0x202e {
			t.Errorf("%s: output holds U+%04X raw:\n%q", what, r, out)
			return
		}
	}
	escapes := []string{`\x07`, `\x1b[31m`, `\u009b`, `\u202e`}
	if !full {
		escapes = escapes[:1]
	}
	for _, esc := range escapes {
		if !strings.Contains(out, esc) {
			t.Errorf("%s: output lacks the visible escape %s:\n%s", what, esc, out)
		}
	}
}

// TestTablesEscapeTerminalControls runs the commands that print names,
// owners, reasons and errors against rows holding terminal escapes, and
// checks that none reaches the terminal raw.
func TestTablesEscapeTerminalControls(t *testing.T) {
	t.Parallel()
	db, env := opsDB(t)
	ctx := context.Background()
	// Rows written before the checks existed: bypass the validation trigger.
	db.Exec(t, `ALTER TABLE relay.subscriptions DISABLE TRIGGER subscriptions_validate_insert`)
	sub := fxSub(t, db, hostile, hostile)
	db.Exec(t, `ALTER TABLE relay.subscriptions ENABLE TRIGGER subscriptions_validate_insert`)
	db.Exec(t, `UPDATE relay.subscriptions SET enabled = false, disabled_reason = $2, last_error = $2,
		consecutive_failures = 3 WHERE id = $1`, sub, hostile)
	d := fxDelivery(t, db, sub, "thread.created", hostile, "failed", time.Minute)
	fxAttempt(t, db, d, 1, "failed", 500, hostile, time.Minute)
	db.Exec(t, `UPDATE relay.settings SET paused = true, paused_reason = $1, paused_at = now()`, hostile)
	if _, _, err := tokens.NewStore(db.Pool).Create(ctx, "alice", hostile); err == nil {
		t.Fatal("a token name with control characters was accepted")
	}
	db.Exec(t, `INSERT INTO relay.api_tokens (owner, name, token_hash) VALUES ($1, $1, $2)`, hostile, tokens.Hash(tokens.Generate()))

	for _, c := range []struct {
		args []string
		full bool
	}{
		{[]string{"subs", "list"}, false},
		{[]string{"subs", "show", strconv.FormatInt(sub, 10)}, true},
		{[]string{"log"}, false},
		{[]string{"status"}, false},
		{[]string{"tokens", "list"}, true},
	} {
		code, out, errs := runCLI(t, env, c.args...)
		if code != 0 {
			t.Fatalf("relay %s: exit %d\n%s\n%s", strings.Join(c.args, " "), code, out, errs)
		}
		wantTerminalSafe(t, "relay "+strings.Join(c.args, " "), out, c.full)
	}
}
