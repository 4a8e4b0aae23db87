package subscriptions_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/subscriptions"
)

// historyFixture gives db ten days of history in daily partitions: three
// subscriptions, one delivery with one attempt every 5 minutes for each,
// and returns the subscriptions' ids.
func historyFixture(t *testing.T, db *pgtest.DB) []int64 {
	t.Helper()
	db.DailyAttemptPartitions(t, 10)
	db.Exec(t, `INSERT INTO relay.subscriptions (name, url, event_types)
		SELECT 'sub ' || g, 'https://example.com/hook', '{*}' FROM generate_series(1, 3) AS g`)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload, created_at)
		SELECT 'thread.created', '{}', now() - g * interval '5 minutes' FROM generate_series(1, 10 * 288) AS g`)
	db.Exec(t, `INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts, created_at, completed_at)
		SELECT o.event_id, s.id, 'succeeded', 1, o.created_at, o.created_at FROM relay.outbox AS o, relay.subscriptions AS s`)
	db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome)
		SELECT d.id, 1, d.created_at, 20 + d.id % 50, 200, 'succeeded' FROM relay.deliveries AS d`)
	db.Exec(t, `ANALYZE relay.delivery_attempts, relay.deliveries, relay.outbox, relay.subscriptions`)
	var ids []int64
	rows, err := db.Pool.Query(context.Background(), `SELECT id FROM relay.subscriptions ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// attemptPartitionsSince returns the names of the attempt partitions that
// hold times after since, and of all of them.
func attemptPartitionsSince(t *testing.T, db *pgtest.DB, since string) (recent map[string]bool, all int) {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT c.relname, p.to_at > now() - $1::interval
		FROM relay.attempt_partitions() AS p JOIN pg_class AS c ON c.oid = p.partition`, since)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	recent = map[string]bool{}
	for rows.Next() {
		var name string
		var isRecent bool
		if err := rows.Scan(&name, &isRecent); err != nil {
			t.Fatal(err)
		}
		all++
		if isRecent {
			recent[name] = true
		}
	}
	return recent, all
}

// TestStatsReadOnlyTheLastDaysPartitions checks the plan of the console's
// 24-hour statistics of one webhook (GET /api/webhooks/{id}/stats runs
// Store.Stats): of the attempt history, only the partitions that hold the
// last 24 hours are read, and the figures are right.
func TestStatsReadOnlyTheLastDaysPartitions(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	subs := historyFixture(t, db)
	pool, plans := db.ExplainingPool(t)
	st := subscriptions.NewStore(pool)

	// pgx prepares the statement: the first runs are custom plans, later
	// ones may be a generic plan, pruned when the executor starts. Check
	// both kinds.
	for i := 0; i < 7; i++ {
		s, err := st.Stats(context.Background(), subs[1], nil, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if s.Attempts < 287 || s.Attempts > 289 || s.Deliveries != s.Attempts {
			t.Fatalf("24 h stats count %d attempts and %d deliveries, want 288 of each", s.Attempts, s.Deliveries)
		}
	}
	recent, all := attemptPartitionsSince(t, db, "24 hours")
	got := plans.Matching("relay.delivery_attempts")
	if len(got) < 7 {
		t.Fatalf("captured %d plans of the stats query, want 7", len(got))
	}
	for _, p := range got {
		read := 0
		for _, rel := range pgtest.ExecutedRelations(p) {
			if !strings.HasPrefix(rel, "delivery_attempts") {
				continue
			}
			read++
			if !recent[rel] {
				t.Fatalf("the 24 h stats read %s, which holds nothing of the last 24 hours", rel)
			}
		}
		if read == 0 || read >= all {
			t.Fatalf("the 24 h stats read %d of %d attempt partitions", read, all)
		}
	}
}
