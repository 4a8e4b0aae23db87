package subscriptions_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/relay/subscriptions"
)

func TestFilterStoredCheckedAndCleared(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := context.Background()
	s := mustCreate(t, st, subscriptions.CreateParams{
		Name: "big orders", URL: "https://hooks.example.com/a", EventTypes: []string{"order.*"},
		Filter: "$.amount ? (@ > 100)",
	})
	if s.Filter == nil || *s.Filter != `$."amount"?(@ > 100)` {
		t.Fatalf("filter stored as %v, want PostgreSQL's canonical spelling", s.Filter)
	}
	if s.OutsideWindow != subscriptions.OutsideWindowDefer {
		t.Fatalf("outside_window default %q", s.OutsideWindow)
	}

	// The type itself refuses a bad path, with PostgreSQL's message, on the
	// field; so does the predicate probe for a $variable.
	_, err := st.Create(ctx, subscriptions.CreateParams{
		Name: "bad", URL: "https://hooks.example.com/b", EventTypes: []string{"*"}, Filter: "$.amount ? (@ >",
	})
	wantValidation(t, err, "filter", "syntax error")
	_, err = st.Update(ctx, s.ID, nil, subscriptions.UpdateParams{Filter: ptr(`$.a == $limit`)})
	wantValidation(t, err, "filter", `could not find jsonpath variable "limit"`)

	u, err := st.Update(ctx, s.ID, nil, subscriptions.UpdateParams{Filter: ptr(`$.channel == "email"`)})
	if err != nil {
		t.Fatal(err)
	}
	if u.Filter == nil || *u.Filter != `($."channel" == "email")` || !u.UpdatedAt.After(s.UpdatedAt) {
		t.Fatalf("after update: filter %v updated_at %v (was %v)", u.Filter, u.UpdatedAt, s.UpdatedAt)
	}
	u, err = st.Update(ctx, s.ID, nil, subscriptions.UpdateParams{Filter: ptr("")})
	if err != nil || u.Filter != nil {
		t.Fatalf("clearing the filter: %v, %v", u.Filter, err)
	}
}

func TestCheckFilter(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := context.Background()
	payload := json.RawMessage(`{"amount": 120, "channel": "sms", "tags": ["vip"], "at": "2025-01-01T10:00:00+01:00"}`)
	cases := []struct {
		filter  string
		kind    string
		matches bool
	}{
		{"$.amount ? (@ > 100)", subscriptions.FilterPath, true},
		{"$.amount ? (@ > 1000)", subscriptions.FilterPath, false},
		{`$.channel == "email"`, subscriptions.FilterPredicate, false},
		{`$.channel == "sms" && $.amount >= 120`, subscriptions.FilterPredicate, true},
		{`strict $.missing > 1`, subscriptions.FilterPredicate, false},
		{`$.missing > 1`, subscriptions.FilterPredicate, false},
		{`$.channel > 1`, subscriptions.FilterPredicate, false}, // a type mismatch is no match, not an error
		{`exists($.refund)`, subscriptions.FilterPredicate, false},
		{`$.tags[*] ? (@ == "vip")`, subscriptions.FilterPath, true},
		// A datetime with a zone compared with one without: PostgreSQL's @@
		// would raise, fan-out must not.
		{`$.at.datetime() < "2025-06-01T00:00:00".datetime()`, subscriptions.FilterPredicate, true},
	}
	for _, c := range cases {
		fc, err := st.CheckFilter(ctx, c.filter, payload)
		if err != nil {
			t.Fatalf("%s: %v", c.filter, err)
		}
		if fc.Kind != c.kind || fc.Matches == nil || *fc.Matches != c.matches {
			t.Errorf("%s: kind %s matches %v, want %s %v", c.filter, fc.Kind, fc.Matches, c.kind, c.matches)
		}
	}
	fc, err := st.CheckFilter(ctx, "$.amount ? (@ > 100)", nil)
	if err != nil || fc.Matches != nil || fc.Filter != `$."amount"?(@ > 100)` {
		t.Fatalf("without a payload: %+v, %v", fc, err)
	}
	_, err = st.CheckFilter(ctx, "$.amount ? (", payload)
	wantValidation(t, err, "filter", "syntax error")
	_, err = st.CheckFilter(ctx, "$.a", json.RawMessage(`[1]`))
	wantValidation(t, err, "payload", "JSON object")
	_, err = st.CheckFilter(ctx, " ", payload)
	wantValidation(t, err, "filter", "empty")
}

func TestOutsideWindowChoices(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	ctx := context.Background()
	s := mustCreate(t, st, subscriptions.CreateParams{
		Name: "office hours", URL: "https://hooks.example.com/a", EventTypes: []string{"*"},
		Window: &subscriptions.Window{Start: "09:00", End: "18:00", TimeZone: "Europe/Paris"}, OutsideWindow: "skip",
	})
	if s.OutsideWindow != "skip" {
		t.Fatalf("outside_window %q", s.OutsideWindow)
	}
	_, err := st.Create(ctx, subscriptions.CreateParams{
		Name: "x", URL: "https://hooks.example.com/a", EventTypes: []string{"*"}, OutsideWindow: "later",
	})
	wantValidation(t, err, "outside_window", "defer, send, skip")
	// send with a window of its own is a contradiction, refused by the
	// database too (the field is read from the constraint's name).
	_, err = st.Update(ctx, s.ID, nil, subscriptions.UpdateParams{OutsideWindow: ptr("send")})
	wantValidation(t, err, "outside_window", "cannot be send with a window of its own")
	u, err := st.Update(ctx, s.ID, nil, subscriptions.UpdateParams{OutsideWindow: ptr("send"), Window: &subscriptions.Window{}})
	if err != nil || u.OutsideWindow != "send" || u.Window() != nil || !u.UpdatedAt.After(s.UpdatedAt) {
		t.Fatalf("send without a window: %+v, %v", u, err)
	}
	// Plain SQL gets the constraint's sentence.
	_, err = db.Pool.Exec(ctx, `UPDATE relay.subscriptions SET outside_window = 'never' WHERE id = $1`, s.ID)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.ConstraintName != "outside_window must be defer, send or skip" {
		t.Fatalf("SQL update: %v", err)
	}
}
