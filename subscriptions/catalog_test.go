package subscriptions_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/relay/subscriptions"
)

func TestEventTypeCatalog(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := context.Background()

	// relay's own types come with the schema.
	list, err := st.Catalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range list {
		names = append(names, e.Name)
	}
	if strings.Join(names, " ") != "relay.subscription.disabled relay.subscription.failing webhook.test" {
		t.Fatalf("seeded catalog %v", names)
	}

	et, created, err := st.PutEventType(ctx, "order.paid", subscriptions.EventTypeParams{
		Description: "An order was paid.",
		Example:     json.RawMessage(`{"order_id": "o_1", "amount": 120}`),
		JSONSchema:  json.RawMessage(`{"type": "object", "required": ["order_id"]}`),
	})
	if err != nil || !created || et.Description != "An order was paid." {
		t.Fatalf("put: %+v created=%v err=%v", et, created, err)
	}
	var ex map[string]any
	if err := json.Unmarshal(et.Example, &ex); err != nil || ex["amount"] != float64(120) {
		t.Fatalf("example %s: %v", et.Example, err)
	}
	et2, created, err := st.PutEventType(ctx, "order.paid", subscriptions.EventTypeParams{Description: "Paid."})
	if err != nil || created || et2.Example != nil || et2.JSONSchema != nil || !et2.CreatedAt.Equal(et.CreatedAt) {
		t.Fatalf("replace: %+v created=%v err=%v", et2, created, err)
	}
	got, err := st.GetEventType(ctx, "order.paid")
	if err != nil || got.Description != "Paid." {
		t.Fatalf("get: %+v %v", got, err)
	}

	_, _, err = st.PutEventType(ctx, "Order Paid", subscriptions.EventTypeParams{})
	wantValidation(t, err, "name", "lowercase dotted words")
	_, _, err = st.PutEventType(ctx, "order.refunded", subscriptions.EventTypeParams{Example: json.RawMessage(`[1, 2]`)})
	wantValidation(t, err, "example", "JSON object")
	_, _, err = st.PutEventType(ctx, "order.refunded", subscriptions.EventTypeParams{JSONSchema: json.RawMessage(`"object"`)})
	wantValidation(t, err, "json_schema", "JSON object")

	if err := st.DeleteEventType(ctx, "order.paid"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetEventType(ctx, "order.paid"); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := st.DeleteEventType(ctx, "order.paid"); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestStrictEventTypes(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	ctx := context.Background()
	emit := func(typ string) error {
		_, err := db.Pool.Exec(ctx, `SELECT relay.emit($1)`, typ)
		return err
	}
	// Off by default: anything goes.
	if err := emit("order.paid"); err != nil {
		t.Fatal(err)
	}
	s, err := st.UpdateSettings(ctx, subscriptions.SettingsUpdate{StrictEventTypes: ptr(true)})
	if err != nil || !s.StrictEventTypes {
		t.Fatalf("turning strict on: %+v %v", s, err)
	}
	err = emit("order.shipped")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23514" || pe.ColumnName != "event_type" ||
		!strings.Contains(pe.Message, `event_type 'order.shipped' is not in the event-type catalog relay.event_types`) ||
		!strings.Contains(pe.Hint, "INSERT INTO relay.event_types") {
		t.Fatalf("uncataloged type in strict mode: %v", err)
	}
	// A plain INSERT is refused the same way.
	_, err = db.Pool.Exec(ctx, `INSERT INTO relay.outbox (event_type, payload) VALUES ('order.shipped', '{}')`)
	if !errors.As(err, &pe) || pe.ColumnName != "event_type" {
		t.Fatalf("plain insert in strict mode: %v", err)
	}
	if _, _, err := st.PutEventType(ctx, "order.shipped", subscriptions.EventTypeParams{Description: "Shipped."}); err != nil {
		t.Fatal(err)
	}
	if err := emit("order.shipped"); err != nil {
		t.Fatalf("cataloged type: %v", err)
	}
	// relay's own events pass even when their entries are removed.
	if _, err := db.Pool.Exec(ctx, `DELETE FROM relay.event_types WHERE name LIKE 'relay.%'`); err != nil {
		t.Fatal(err)
	}
	if err := emit("relay.subscription.failing"); err != nil {
		t.Fatalf("relay's own type: %v", err)
	}
	if _, err := st.UpdateSettings(ctx, subscriptions.SettingsUpdate{StrictEventTypes: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if err := emit("anything.goes"); err != nil {
		t.Fatalf("strict off again: %v", err)
	}
}
