package subscriptions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Payload filters (relay.subscriptions.filter) are PostgreSQL jsonpath
// expressions. PostgreSQL's parser is the reference, so this file asks it
// instead of re-implementing jsonpath in Go: a filter refused here is
// refused by the column's type with the same message.
//
// A predicate ($.channel == "email") passes when it is true; any other path
// ($.amount ? (@ > 100)) passes when it selects something. Fan-out and
// CheckFilter both call relay.payload_matches, so what the check endpoint
// says is what fan-out does.

// Filter kinds, as FilterCheck reports them.
const (
	FilterPredicate = "predicate"
	FilterPath      = "path"
)

// FilterCheck is what CheckFilter found.
type FilterCheck struct {
	// Filter is the filter in PostgreSQL's canonical spelling, as it will be
	// stored and shown.
	Filter string `json:"filter"`
	// Kind is FilterPredicate (tested with @@) or FilterPath (tested with @?).
	Kind string `json:"kind"`
	// Matches tells whether the payload given passes the filter; nil when
	// no payload was given.
	Matches *bool `json:"matches"`
}

// CheckFilter parses filter as PostgreSQL will store it and, when payload
// is not nil, evaluates it on payload (a JSON object) exactly as fan-out
// does. A filter PostgreSQL refuses is a *ValidationError with Field
// "filter" and PostgreSQL's message; a payload that is not a JSON object is
// one with Field "payload".
func (st *Store) CheckFilter(ctx context.Context, filter string, payload json.RawMessage) (FilterCheck, error) {
	if strings.TrimSpace(filter) == "" {
		return FilterCheck{}, invalid("filter", "filter must not be empty")
	}
	if err := validateFilterText(filter); err != nil {
		return FilterCheck{}, err
	}
	if payload != nil {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(payload, &obj); err != nil || obj == nil {
			return FilterCheck{}, invalid("payload", "payload must be a JSON object, as event payloads are")
		}
	}
	var fc FilterCheck
	var predicate bool
	// The payload goes as text and is cast in SQL, so that jsonb, not Go,
	// decides what it holds (numbers keep their precision).
	var payloadText *string
	if payload != nil {
		s := string(payload)
		payloadText = &s
	}
	err := st.pool.QueryRow(ctx, `
		SELECT f::text, relay.jsonpath_is_predicate(f),
		       CASE WHEN $2::text IS NOT NULL THEN relay.payload_matches($2::jsonb, f, relay.jsonpath_is_predicate(f)) END
		FROM CAST($1::text AS jsonpath) AS f`, filter, payloadText).Scan(&fc.Filter, &predicate, &fc.Matches)
	if err != nil {
		return FilterCheck{}, fmt.Errorf("checking filter: %w", filterError(translate(err)))
	}
	fc.Kind = FilterPath
	if predicate {
		fc.Kind = FilterPredicate
	}
	return fc, nil
}

// codeSyntaxError is what the jsonpath parser raises.
const codeSyntaxError = "42601"

// filterError turns the jsonpath parser's errors, which name no column,
// into a *ValidationError on "filter"; other errors pass through.
func filterError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == codeSyntaxError && strings.Contains(pe.Message, "jsonpath") {
		return &ValidationError{Field: "filter", Message: "filter: " + pe.Message, Hint: pe.Hint}
	}
	return err
}
