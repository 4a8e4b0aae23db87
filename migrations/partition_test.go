package migrations_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/migrations"
)

// upgradeAttempts is the history an upgraded install holds in the test.
const upgradeAttempts = 1_000_000

// beforePartitioning is the last version with one plain attempts table.
const beforePartitioning = 5

// TestUpgradeKeepsAttemptsInPlaceWhileWritersRun migrates a database of
// version beforePartitioning that holds a million attempts while a writer keeps recording
// attempts and a reader keeps reading the log: the old table becomes the
// first partition without being rewritten (its file is the same), nothing
// is lost, no write fails, ids go on, and down and up again keep the rows.
func TestUpgradeKeepsAttemptsInPlaceWhileWritersRun(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDBWith(t, &pgtest.Options{Empty: true})
	ctx := context.Background()
	start := time.Now()
	if err := migrations.UpTo(ctx, db.URL, beforePartitioning); err != nil {
		t.Fatal(err)
	}
	// 250,000 deliveries of the last 5 days with 4 attempts each.
	db.Exec(t, `INSERT INTO relay.subscriptions (id, name, url, event_types) OVERRIDING SYSTEM VALUE
		VALUES (1, 'a', 'https://example.com/a', '{*}'), (2, 'b', 'https://example.com/b', '{*}')`)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload, created_at)
		SELECT 'thread.created', '{}', now() - (g * interval '1 second') FROM generate_series(1, $1::int / 8) AS g`, upgradeAttempts)
	db.Exec(t, `INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts, created_at)
		SELECT o.event_id, s.id, 'succeeded', 4, o.created_at FROM relay.outbox AS o, relay.subscriptions AS s`)
	// Bulk loading is faster without the per-row foreign key check and
	// index upkeep; the table ends exactly as 000001 made it.
	db.Exec(t, `ALTER TABLE relay.delivery_attempts DROP CONSTRAINT delivery_attempts_delivery_id_fkey,
		DROP CONSTRAINT delivery_attempts_delivery_attempt_key`)
	db.Exec(t, `DROP INDEX relay.delivery_attempts_started_at`)
	db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, response_body)
		SELECT d.id, n, d.created_at + n * interval '1 second', 10, CASE WHEN n = 4 THEN 200 ELSE 503 END,
		       CASE WHEN n = 4 THEN 'succeeded' ELSE 'retry' END, 'ok'
		FROM relay.deliveries AS d, generate_series(1, 4) AS n`)
	db.Exec(t, `ALTER TABLE relay.delivery_attempts ADD CONSTRAINT delivery_attempts_delivery_attempt_key UNIQUE (delivery_id, attempt),
		ADD CONSTRAINT delivery_attempts_delivery_id_fkey FOREIGN KEY (delivery_id) REFERENCES relay.deliveries (id) ON DELETE CASCADE`)
	db.Exec(t, `CREATE INDEX delivery_attempts_started_at ON relay.delivery_attempts (started_at)`)
	db.Exec(t, `ANALYZE relay.delivery_attempts`)
	t.Logf("fixture loaded in %s", time.Since(start))
	var oldNode, maxID int64
	if err := db.Pool.QueryRow(ctx, `SELECT pg_relation_filenode('relay.delivery_attempts')::bigint, max(id) FROM relay.delivery_attempts`).Scan(&oldNode, &maxID); err != nil {
		t.Fatal(err)
	}
	if maxID < upgradeAttempts {
		t.Fatalf("the fixture holds %d attempts, want %d", maxID, upgradeAttempts)
	}

	// A writer and a reader run through the whole migration, on a pool of
	// their own. The writer's INSERT names no conflict target, so it is the
	// same statement before and after.
	wpool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer wpool.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written, reads atomic.Int64
	var workErr error
	var errOnce sync.Once
	fail := func(err error) { errOnce.Do(func() { workErr = err }) }
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := wpool.Exec(ctx, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome)
				VALUES ($1, $2, now(), 'succeeded')`, int64(i%1000)+1, 5+i/1000)
			if err != nil {
				fail(err)
				return
			}
			written.Add(1)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int
			if err := wpool.QueryRow(ctx, `SELECT count(*) FROM (SELECT * FROM relay.delivery_log
				WHERE subscription_id = 1 ORDER BY started_at DESC LIMIT 50) AS l`).Scan(&n); err != nil {
				fail(err)
				return
			}
			reads.Add(1)
		}
	}()
	// Let both get going on the old schema first.
	deadline := time.Now().Add(30 * time.Second)
	for written.Load() < 10 || reads.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the writer and reader did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := written.Load()
	migStart := time.Now()
	migErr := migrations.Up(ctx, db.URL)
	during := written.Load() - before
	t.Logf("migrated in %s", time.Since(migStart))
	// Some writes on the new schema too.
	for w := written.Load(); written.Load() < w+10; {
		if workErr != nil || time.Now().After(deadline.Add(time.Minute)) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if migErr != nil {
		t.Fatalf("up: %v", migErr)
	}
	if workErr != nil {
		t.Fatalf("a write or read failed during the migration: %v", workErr)
	}
	t.Logf("%d attempts written and %d log reads while migrating", during, reads.Load())

	var kind string
	if err := db.Pool.QueryRow(ctx, `SELECT relkind::text FROM pg_class WHERE oid = 'relay.delivery_attempts'::regclass`).Scan(&kind); err != nil {
		t.Fatal(err)
	}
	if kind != "p" {
		t.Fatalf("relay.delivery_attempts has relkind %s, want p (partitioned)", kind)
	}
	var firstName string
	var firstNode int64
	var firstFromMin bool
	var firstTo time.Time
	err = db.Pool.QueryRow(ctx, `SELECT partition::text, pg_relation_filenode(partition)::bigint, from_at = '-infinity', to_at
		FROM relay.attempt_partitions() ORDER BY from_at LIMIT 1`).Scan(&firstName, &firstNode, &firstFromMin, &firstTo)
	if err != nil {
		t.Fatal(err)
	}
	if firstNode != oldNode {
		t.Fatalf("first partition %s has file %d, the old table had %d: it was rewritten", firstName, firstNode, oldNode)
	}
	if !firstFromMin {
		t.Fatalf("first partition %s does not start at MINVALUE", firstName)
	}
	if d := time.Until(firstTo); d < 24*time.Hour || d > 72*time.Hour {
		t.Fatalf("first partition ends in %s, want a UTC midnight 1 to 3 days ahead", d)
	}
	var total, viewRows int64
	if err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM relay.delivery_attempts), (SELECT count(*) FROM relay.delivery_log)`).Scan(&total, &viewRows); err != nil {
		t.Fatal(err)
	}
	if want := upgradeAttempts + written.Load(); total != want || viewRows != want {
		t.Fatalf("after up: %d attempts, %d log rows; want %d", total, viewRows, want)
	}
	// The parent's sequence goes on from the old identity.
	var id int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome)
		VALUES (1, 1000000, now(), 'retry') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if id <= maxID+written.Load()-1 {
		t.Fatalf("new attempt id %d, want above %d", id, maxID)
	}
	// Partitions exist for today and ahead, and the views read the parent.
	var ahead int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM relay.attempt_partitions() WHERE to_at > now() + interval '3 days'`).Scan(&ahead); err != nil {
		t.Fatal(err)
	}
	if ahead == 0 {
		t.Fatal("no partition reaches 3 days ahead")
	}
	var h24 int64
	if err := db.Pool.QueryRow(ctx, `SELECT deliveries_24h FROM relay.subscription_health WHERE subscription_id = 1`).Scan(&h24); err != nil {
		t.Fatal(err)
	}
	if h24 == 0 {
		t.Fatal("subscription_health counts nothing")
	}

}

// TestDownAndUpKeepAttempts goes down to beforePartitioning and up again with
// attempts in several partitions: down copies them back into one table, up
// makes that table the first partition again.
func TestDownAndUpKeepAttempts(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	db.Exec(t, `INSERT INTO relay.subscriptions (name, url, event_types) VALUES ('a', 'https://example.com/a', '{*}')`)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'thread.created', '{}' FROM generate_series(1, 100)`)
	db.Exec(t, `INSERT INTO relay.deliveries (event_id, subscription_id, status) SELECT event_id, 1, 'succeeded' FROM relay.outbox`)
	// Today and the days ahead: the first partition and the daily ones.
	db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome)
		SELECT d.id, n, now() + n * interval '1 day', 'retry' FROM relay.deliveries AS d, generate_series(0, 3) AS n`)
	var parts int
	if err := db.Pool.QueryRow(ctx, `SELECT count(DISTINCT tableoid) FROM relay.delivery_attempts`).Scan(&parts); err != nil {
		t.Fatal(err)
	}
	if parts < 2 {
		t.Fatalf("attempts landed in %d partition(s), want several", parts)
	}
	var maxID int64
	if err := db.Pool.QueryRow(ctx, `SELECT max(id) FROM relay.delivery_attempts`).Scan(&maxID); err != nil {
		t.Fatal(err)
	}
	if err := migrations.UpTo(ctx, db.URL, beforePartitioning); err != nil {
		t.Fatalf("down: %v", err)
	}
	var n int
	var kind string
	if err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM relay.delivery_log),
			(SELECT relkind::text FROM pg_class WHERE oid = 'relay.delivery_attempts'::regclass)`).Scan(&n, &kind); err != nil {
		t.Fatal(err)
	}
	if n != 400 || kind != "r" {
		t.Fatalf("after down: %d log rows in a table of kind %s, want 400 in a plain table", n, kind)
	}
	if err := migrations.Up(ctx, db.URL); err != nil {
		t.Fatalf("up again: %v", err)
	}
	var id int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome)
		VALUES (1, 10, now(), 'retry') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM relay.delivery_log`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 401 || id <= maxID {
		t.Fatalf("after up again: %d log rows, new id %d (old max %d)", n, id, maxID)
	}
}

// TestUpToRefusesUnknownVersions keeps UpTo from being asked for a
// version this binary does not have.
func TestUpToRefusesUnknownVersions(t *testing.T) {
	for _, v := range []uint{0, migrations.Latest + 1} {
		if err := migrations.UpTo(context.Background(), "postgres://127.0.0.1:1/x", v); err == nil {
			t.Errorf("UpTo(%d) succeeded", v)
		}
	}
}
