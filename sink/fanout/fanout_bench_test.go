package fanout

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/outbox"
)

// BenchmarkEventTypeCandidates is the Go side of fan-out matching: the
// candidate patterns of an event type, once per type per batch.
func BenchmarkEventTypeCandidates(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if eventTypeCandidates("thread.message.created") != "* thread.* thread.message.* thread.message.created" {
			b.Fatal("wrong candidates")
		}
	}
}

// BenchmarkFanoutSQL runs the fan-out statement against the test database:
// batches of 100 events of about 500 bytes matched against 100
// subscriptions (half of them by pattern), 5,000 deliveries per batch.
// It reports time per event and per delivery; inserting the events into
// the outbox is not timed.
//
// The filter cases give every one of the 100 subscriptions a payload
// filter: one every event passes (a path, or a predicate: the same 5,000
// deliveries, so the difference is the cost of filtering), and one no
// event passes (no delivery is written: the cost of a filter that saves
// the rest). Run them side by side with
//
//	go test -run '^$' -bench 'BenchmarkFanoutSQL' -benchtime 200x ./sink/fanout/
func BenchmarkFanoutSQL(b *testing.B) {
	for _, c := range []struct {
		name, filter string
		perEvent     int
	}{
		{"filters=none", "", 50},
		{"filters=100_path_match", `$.amount ? (@ > 100)`, 50},
		{"filters=100_predicate_match", `$.channel == "email" && $.amount >= 100`, 50},
		{"filters=100_no_match", `$.amount ? (@ > 1000)`, 0},
	} {
		b.Run(c.name, func(b *testing.B) { benchFanout(b, c.filter, c.perEvent) })
	}
}

func benchFanout(b *testing.B, filter string, perEvent int) {
	db := pgtest.NewDB(b)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `
		INSERT INTO relay.subscriptions (name, url, event_types, filter)
		SELECT 'bench-' || i, 'https://hooks.example.com/' || i,
		       CASE WHEN i % 2 = 0 THEN '{thread.*}'::text[] ELSE '{invoice.paid}'::text[] END,
		       nullif($1, '')::jsonpath
		FROM generate_series(1, 100) AS i`, filter); err != nil {
		b.Fatal(err)
	}
	f := New(db.Pool, Config{Logger: zerolog.Nop()})
	body := strings.Repeat("x", 380)
	const batch = 100
	var events, deliveries int
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		rows, err := db.Pool.Query(ctx, `
			INSERT INTO relay.outbox (event_type, payload)
			SELECT 'thread.created', jsonb_build_object('n', $1::int * 1000 + g, 'amount', 120, 'channel', 'email', 'body', $2::text)
			FROM generate_series(1, $3) AS g
			RETURNING event_id::text, event_type, payload::text, created_at`, i, body, batch)
		if err != nil {
			b.Fatal(err)
		}
		evs := make([]outbox.Event, 0, batch)
		for rows.Next() {
			var ev outbox.Event
			var payload string
			var at time.Time
			if err := rows.Scan(&ev.EventID, &ev.Type, &payload, &at); err != nil {
				b.Fatal(err)
			}
			ev.Payload, ev.CreatedAt = []byte(payload), at
			evs = append(evs, ev)
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		created, _, err := f.handleChunk(ctx, evs, false)
		if err != nil {
			b.Fatal(err)
		}
		events += len(evs)
		deliveries += int(created)
	}
	if deliveries != events*perEvent {
		b.Fatalf("%d deliveries for %d events, want %d each", deliveries, events, perEvent)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
	if deliveries > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(deliveries), "ns/delivery")
	}
}
