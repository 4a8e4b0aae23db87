package subscriptions_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/relay/subscriptions"
)

// TestSQLRefusesControlCharacters checks relay.validate_subscription: any
// language inserting through plain SQL gets the refusal the Go side gives,
// naming the column and the character, and the size limits hold.
func TestSQLRefusesControlCharacters(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	ctx := context.Background()
	insert := func(name, owner, headers string, template *string) error {
		_, err := db.Pool.Exec(ctx, `INSERT INTO relay.subscriptions (name, owner, url, event_types, headers, template)
			VALUES ($1, $2, 'https://hooks.example.com/x', '{*}', $3::jsonb, $4)`, name, owner, headers, template)
		return err
	}
	wantCheck := func(err error, column, msg string) {
		t.Helper()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23514" || pe.ColumnName != column || !strings.Contains(pe.Message, msg) {
			t.Fatalf("error %v, want check_violation on %s containing %q", err, column, msg)
		}
	}
	wantCheck(insert("bell\aesc\x1b[31mred", "alice", `{}`, nil), "name", "name must not contain control characters (found U+0007)")
	wantCheck(insert("csi \u009b31m", "alice", `{}`, nil), "name", "(found U+009B)")
	wantCheck(insert("del \x7f", "alice", `{}`, nil), "name", "(found U+007F)")
	wantCheck(insert("ok", "al\x1bice", `{}`, nil), "owner", "owner must not contain control characters (found U+001B)")
	wantCheck(insert("ok", "alice", `{"X-A": "a\u001bb"}`, nil), "headers", `headers: the value of 'X-A' must not contain control characters (found U+001B)`)
	wantCheck(insert("ok", "alice", `{"X-A": "`+strings.Repeat("v", 4097)+`"}`, nil), "headers", "at most 4096 characters")
	wantCheck(insert("ok", "alice", `{"`+strings.Repeat("x", 129)+`": "v"}`, nil), "headers", "at most 128 characters")
	many := make([]string, 21)
	for i := range many {
		many[i] = `"X-H` + strings.Repeat("a", i) + `": "v"`
	}
	wantCheck(insert("ok", "alice", `{`+strings.Join(many, ",")+`}`, nil), "headers", "at most 20 headers (got 21)")
	wantCheck(insert("ok", "alice", `{}`, ptr("New {{type}}\x1b]0;pwned\a")), "template", "template must not contain control characters (found U+001B)")
	wantCheck(insert("ok", "alice", `{}`, ptr(strings.Repeat("x", 10001))), "template", "at most 10000 characters")

	// What is allowed: tabs in header values; tabs and line breaks in a
	// template; any printable Unicode in a name.
	if err := insert("Équipe — support ✓", "alice", `{"X-A": "a\tb", "X-B": "`+strings.Repeat("v", 4096)+`"}`, ptr("New thread:\n\t{{data.title}}\r\n")); err != nil {
		t.Fatalf("good row refused: %v", err)
	}

	// A row written before these checks existed (simulated by bypassing the
	// trigger) can still be disabled; rewriting its name checks the new one.
	db.Exec(t, `ALTER TABLE relay.subscriptions DISABLE TRIGGER subscriptions_validate_insert`)
	var legacy int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO relay.subscriptions (name, url, event_types, headers)
		VALUES (E'old\x1bname', 'https://hooks.example.com/x', '{*}', '{"X-A": "a\u0007"}') RETURNING id`).Scan(&legacy); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `ALTER TABLE relay.subscriptions ENABLE TRIGGER subscriptions_validate_insert`)
	if _, err := st.Update(ctx, legacy, nil, subscriptions.UpdateParams{Enabled: ptr(false)}); err != nil {
		t.Fatalf("disabling a legacy row: %v", err)
	}
	_, err := db.Pool.Exec(ctx, `UPDATE relay.subscriptions SET name = E'new\x07' WHERE id = $1`, legacy)
	wantCheck(err, "name", "found U+0007")
	if _, err := st.Update(ctx, legacy, nil, subscriptions.UpdateParams{Name: ptr("clean name"), Headers: &map[string]string{}}); err != nil {
		t.Fatalf("cleaning a legacy row: %v", err)
	}
}

// TestStoreRefusesNUL checks that NUL, which PostgreSQL cannot store (it
// answered 500 through the API), is refused as a validation error.
func TestStoreRefusesNUL(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := context.Background()
	_, err := st.Create(ctx, subscriptions.CreateParams{Name: "a\x00b", URL: "https://hooks.example.com/x", EventTypes: []string{"*"}})
	wantValidation(t, err, "name", "found U+0000")
	_, err = st.Create(ctx, subscriptions.CreateParams{Name: "a", URL: "https://hooks.example.com/x", EventTypes: []string{"*"},
		Headers: map[string]string{"X-A": "\x00"}})
	wantValidation(t, err, "headers", "found U+0000")
}
