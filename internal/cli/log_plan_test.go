package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgoutbox/relay/internal/cli"
	"github.com/pgoutbox/relay/internal/pgtest"
)

// TestLatestLogReadsOnlyTheNewestPartition checks the plan of one
// subscription's last 50 attempts (relay log --sub ID, relay.delivery_log):
// with ten days of history in daily partitions, PostgreSQL reads the
// partitions newest first and stops in today's, which holds the 50 rows;
// the older ones are never executed.
func TestLatestLogReadsOnlyTheNewestPartition(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	db.DailyAttemptPartitions(t, 10)
	db.Exec(t, `INSERT INTO relay.subscriptions (name, url, event_types)
		SELECT 'sub ' || g, 'https://example.com/hook', '{*}' FROM generate_series(1, 3) AS g`)
	// One event a minute for ten days up to 23:00 UTC today, to each
	// subscription: today's partition holds the 50 newest attempts of each,
	// whatever the time of day the test runs.
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload, created_at)
		SELECT 'thread.created', '{}', date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
			+ interval '23 hours' - g * interval '1 minute'
		FROM generate_series(0, 10 * 1440 - 1) AS g`)
	db.Exec(t, `INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts, created_at, completed_at)
		SELECT o.event_id, s.id, 'succeeded', 1, o.created_at, o.created_at FROM relay.outbox AS o, relay.subscriptions AS s`)
	db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome)
		SELECT d.id, 1, d.created_at, 20, 200, 'succeeded' FROM relay.deliveries AS d`)
	db.Exec(t, `ANALYZE relay.delivery_attempts, relay.deliveries, relay.outbox, relay.subscriptions`)
	var subID int64
	var today string
	if err := db.Pool.QueryRow(ctx, `SELECT (SELECT min(id) FROM relay.subscriptions),
			'delivery_attempts_' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')`).Scan(&subID, &today); err != nil {
		t.Fatal(err)
	}

	pool, plans := db.ExplainingPool(t)
	sql, args := cli.LatestLogQuery(subID, 50)
	for i := 0; i < 7; i++ { // custom plans first, then possibly a generic one
		rows, err := pool.Query(ctx, sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if n != 50 {
			t.Fatalf("the log query returned %d rows, want 50", n)
		}
	}
	got := plans.Matching("relay.delivery_log")
	if len(got) < 7 {
		t.Fatalf("captured %d plans, want 7", len(got))
	}
	for _, p := range got {
		var read []string
		for _, rel := range pgtest.ExecutedRelations(p) {
			if strings.HasPrefix(rel, "delivery_attempts") {
				read = append(read, rel)
			}
		}
		// Today's partition and the empty ones after it, nothing older.
		if len(read) == 0 || read[len(read)-1] != today {
			t.Fatalf("the log query read the attempt partitions %v; want today's (%s) last", read, today)
		}
		for _, rel := range read {
			if rel < today {
				t.Fatalf("the log query read %s, older than today's partition (read %v)", rel, read)
			}
		}
	}
}
