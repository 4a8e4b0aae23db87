package subscriptions

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// The event-type catalog (relay.event_types) lists the event types an
// application emits, each with a description, an example payload and an
// optional JSON Schema, so that people choosing what to subscribe to see
// more than the types already emitted. With Settings.StrictEventTypes,
// relay.outbox refuses a type missing from it. The catalog is global: every
// owner reads it, only the operator writes it.

// EventType is one row of relay.event_types.
type EventType struct {
	Name        string `db:"name" json:"name"`
	Description string `db:"description" json:"description"`
	// Example is a sample payload (a JSON object), nil when none.
	Example json.RawMessage `db:"example" json:"example"`
	// JSONSchema is a JSON Schema of the payload, nil when none. relay
	// stores and shows it; it does not validate payloads against it.
	JSONSchema json.RawMessage `db:"json_schema" json:"json_schema"`
	CreatedAt  time.Time       `db:"created_at" json:"created_at"`
	UpdatedAt  time.Time       `db:"updated_at" json:"updated_at"`
}

// EventTypeParams are the fields of a catalog entry other than its name.
type EventTypeParams struct {
	Description string
	// Example nil (or JSON null) means none; otherwise a JSON object.
	Example json.RawMessage
	// JSONSchema nil (or JSON null) means none; otherwise a JSON object.
	JSONSchema json.RawMessage
}

// MaxDescriptionLength bounds a catalog description, as the SQL constraint
// does.
const MaxDescriptionLength = 2000

const eventTypeColumns = `name, description, example, json_schema, created_at, updated_at`

// jsonObjectOrNull returns raw as text for a jsonb parameter, nil for
// absent or null, and an error naming field when raw is not an object.
func jsonObjectOrNull(field string, raw json.RawMessage, what string) (*string, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(t, &obj); err != nil {
		return nil, invalid(field, fmt.Sprintf("%s must be null or a JSON object (%s)", field, what))
	}
	s := string(t)
	return &s, nil
}

// Catalog lists the catalog, sorted by name.
func (st *Store) Catalog(ctx context.Context) ([]EventType, error) {
	rows, err := st.pool.Query(ctx, `SELECT `+eventTypeColumns+` FROM relay.event_types ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing the event-type catalog: %w", translate(err))
	}
	types, err := pgx.CollectRows(rows, pgx.RowToStructByName[EventType])
	if err != nil {
		return nil, fmt.Errorf("listing the event-type catalog: %w", translate(err))
	}
	if types == nil {
		types = []EventType{}
	}
	return types, nil
}

// GetEventType returns one catalog entry, ErrNotFound when the catalog does
// not list name.
func (st *Store) GetEventType(ctx context.Context, name string) (EventType, error) {
	rows, err := st.pool.Query(ctx, `SELECT `+eventTypeColumns+` FROM relay.event_types WHERE name = $1`, name)
	if err != nil {
		return EventType{}, fmt.Errorf("reading event type %q: %w", name, translate(err))
	}
	et, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[EventType])
	if err != nil {
		return EventType{}, fmt.Errorf("reading event type %q: %w", name, translate(err))
	}
	return et, nil
}

// PutEventType creates the catalog entry name or replaces all its fields,
// and reports whether it was created.
func (st *Store) PutEventType(ctx context.Context, name string, p EventTypeParams) (EventType, bool, error) {
	if !ValidEventType(name) {
		return EventType{}, false, invalid("name", fmt.Sprintf("name %q must be lowercase dotted words like thread.created", name))
	}
	if n := utf8.RuneCountInString(p.Description); n > MaxDescriptionLength {
		return EventType{}, false, invalid("description", fmt.Sprintf("description must be at most %d characters (got %d)", MaxDescriptionLength, n))
	}
	example, err := jsonObjectOrNull("example", p.Example, "a sample payload")
	if err != nil {
		return EventType{}, false, err
	}
	schema, err := jsonObjectOrNull("json_schema", p.JSONSchema, "a JSON Schema")
	if err != nil {
		return EventType{}, false, err
	}
	var et EventType
	var created bool
	err = st.pool.QueryRow(ctx, `
		INSERT INTO relay.event_types AS t (name, description, example, json_schema)
		VALUES ($1, $2, $3::jsonb, $4::jsonb)
		ON CONFLICT (name) DO UPDATE
		SET description = excluded.description, example = excluded.example, json_schema = excluded.json_schema
		RETURNING `+eventTypeColumns+`, xmax = 0`, name, p.Description, example, schema).Scan(
		&et.Name, &et.Description, &et.Example, &et.JSONSchema, &et.CreatedAt, &et.UpdatedAt, &created)
	if err != nil {
		return EventType{}, false, fmt.Errorf("writing event type %q: %w", name, translate(err))
	}
	return et, created, nil
}

// DeleteEventType removes one catalog entry; ErrNotFound when there is
// none. Events already emitted and subscriptions are not touched.
func (st *Store) DeleteEventType(ctx context.Context, name string) error {
	tag, err := st.pool.Exec(ctx, `DELETE FROM relay.event_types WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("deleting event type %q: %w", name, translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("deleting event type %q: %w", name, ErrNotFound)
	}
	return nil
}
