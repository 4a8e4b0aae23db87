package retention_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/internal/retention"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fixture builds events and deliveries on one test database.
type fixture struct {
	t   *testing.T
	db  *pgtest.DB
	sub []int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, db: pgtest.NewDB(t)}
	for _, name := range []string{"a", "b"} {
		var id int64
		err := f.db.Pool.QueryRow(context.Background(), `INSERT INTO relay.subscriptions (name, url, event_types)
			VALUES ($1, 'https://example.com/hook', '{*}') RETURNING id`, name).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		f.sub = append(f.sub, id)
	}
	return f
}

// event inserts an event of the given age with one delivery per status
// (to subscriptions a, b in order), each with one attempt, and returns its
// key.
func (f *fixture) event(key string, age time.Duration, statuses ...string) {
	f.t.Helper()
	ctx := context.Background()
	var eventID string
	err := f.db.Pool.QueryRow(ctx, `INSERT INTO relay.outbox (event_type, key, payload, created_at)
		VALUES ('thread.created', $1, '{}', now() - $2::interval) RETURNING event_id::text`, key, age).Scan(&eventID)
	if err != nil {
		f.t.Fatal(err)
	}
	for i, st := range statuses {
		var did int64
		err := f.db.Pool.QueryRow(ctx, `INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts, created_at)
			VALUES ($1, $2, $3, 1, now() - $4::interval) RETURNING id`, eventID, f.sub[i], st, age).Scan(&did)
		if err != nil {
			f.t.Fatal(err)
		}
		outcome := map[string]string{"succeeded": "succeeded", "failed": "failed"}[st]
		if outcome == "" {
			outcome = "retry"
		}
		f.db.Exec(f.t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome)
			VALUES ($1, 1, now() - $2::interval, $3)`, did, age, outcome)
	}
}

// keys returns the keys of the events left, sorted.
func (f *fixture) keys() []string {
	f.t.Helper()
	rows, _ := f.db.Pool.Query(context.Background(), `SELECT key FROM relay.outbox ORDER BY key`)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		f.t.Fatal(err)
	}
	return keys
}

func (f *fixture) count(table string) int {
	f.t.Helper()
	var n int
	if err := f.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fixture) job(mod func(*retention.Config)) *retention.Job {
	cfg := retention.Config{Pool: f.db.Pool, Logger: zerolog.New(zerolog.NewTestWriter(f.t))}
	if mod != nil {
		mod(&cfg)
	}
	return retention.New(cfg)
}

func equal(a, b []string) bool {
	sort.Strings(a)
	sort.Strings(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

const day = 24 * time.Hour

func TestRunOnceRemovesOnlyFinishedOldEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.event("old-succeeded", 8*day, "succeeded")
	f.event("old-failed", 8*day, "failed", "succeeded")
	f.event("old-none", 8*day)
	f.event("old-pending", 8*day, "pending")
	f.event("old-delivering", 8*day, "delivering")
	f.event("old-mixed", 8*day, "succeeded", "pending")
	f.event("new-succeeded", 6*day, "succeeded")
	f.event("new-none", time.Hour)

	n, err := f.job(nil).RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("removed %d events, want 3", n)
	}
	want := []string{"new-none", "new-succeeded", "old-delivering", "old-mixed", "old-pending"}
	if got := f.keys(); !equal(got, want) {
		t.Fatalf("events left %v, want %v", got, want)
	}
	// Deliveries and attempts went with their events: 1 + 1 + 2 + 1 left.
	if d, a := f.count("relay.deliveries"), f.count("relay.delivery_attempts"); d != 5 || a != 5 {
		t.Fatalf("deliveries %d attempts %d left, want 5 and 5", d, a)
	}

	// A second run finds nothing more.
	if n, err := f.job(nil).RunOnce(context.Background()); err != nil || n != 0 {
		t.Fatalf("second run: %d %v", n, err)
	}
}

func TestRetentionFromSettingsAndConfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.event("3d", 3*day, "succeeded")
	f.event("1d", day, "failed")
	f.event("1h", time.Hour, "succeeded")

	f.db.Exec(t, `UPDATE relay.settings SET retention = '2 days'`)
	if n, err := f.job(nil).RunOnce(context.Background()); err != nil || n != 1 {
		t.Fatalf("settings retention: %d %v", n, err)
	}
	if got := f.keys(); !equal(got, []string{"1d", "1h"}) {
		t.Fatalf("after settings run: %v", got)
	}
	// Config.Retention overrides the setting.
	j := f.job(func(c *retention.Config) { c.Retention = 12 * time.Hour })
	if n, err := j.RunOnce(context.Background()); err != nil || n != 1 {
		t.Fatalf("config retention: %d %v", n, err)
	}
	if got := f.keys(); !equal(got, []string{"1h"}) {
		t.Fatalf("after config run: %v", got)
	}
}

func TestRunOnceBatches(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		f.event(k, 10*day, "succeeded")
	}
	f.event("keep", 10*day, "pending")
	n, err := f.job(func(c *retention.Config) { c.BatchSize = 2 }).RunOnce(context.Background())
	if err != nil || n != 7 {
		t.Fatalf("removed %d, %v; want 7", n, err)
	}
	if got := f.keys(); !equal(got, []string{"keep"}) {
		t.Fatalf("left %v", got)
	}
}

func TestLockExcludesConcurrentRunner(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.event("old", 8*day, "succeeded")
	ctx := context.Background()

	// Another relay holds the lock on its own session.
	other, err := pgx.Connect(ctx, f.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	if _, err := other.Exec(ctx, `SELECT pg_advisory_lock($1)`, retention.LockKey); err != nil {
		t.Fatal(err)
	}
	if n, err := f.job(nil).RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("run while locked: %d %v", n, err)
	}
	if got := f.keys(); !equal(got, []string{"old"}) {
		t.Fatalf("a run without the lock removed events: %v", got)
	}

	// While a run holds the lock, the other session cannot take it: the lock
	// is released when the run ends, so check that by taking it afterwards.
	if _, err := other.Exec(ctx, `SELECT pg_advisory_unlock($1)`, retention.LockKey); err != nil {
		t.Fatal(err)
	}
	if n, err := f.job(nil).RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("run after unlock: %d %v", n, err)
	}
	var got bool
	if err := other.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, retention.LockKey).Scan(&got); err != nil || !got {
		t.Fatalf("the run kept the lock: %v %v", got, err)
	}
}

func TestSlotGuardWaitsForFanOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	slot := "rt_" + f.db.Name
	f.db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	// Written after the slot's position: the stream has not seen them yet.
	f.event("old-none", 8*day)
	f.event("old-done", 8*day, "succeeded")

	j := f.job(func(c *retention.Config) { c.Slot = slot })
	if n, err := j.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("run with a lagging slot: %d %v", n, err)
	}
	if len(f.keys()) != 2 {
		t.Fatalf("removed events the slot has not passed: %v", f.keys())
	}
	// The stream catches up past the first run's position. A slot advances
	// only as far as WAL is flushed, which may take a moment.
	var target string
	if err := f.db.Pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var passed bool
		err := f.db.Pool.QueryRow(ctx, `SELECT end_lsn >= $2::pg_lsn FROM pg_replication_slot_advance($1, $2::pg_lsn)`, slot, target).Scan(&passed)
		if err != nil {
			t.Fatal(err)
		}
		if passed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot did not advance")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, err := j.RunOnce(ctx); err != nil || n != 2 {
		t.Fatalf("run after the slot advanced: %d %v", n, err)
	}
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.event("old", 8*day, "succeeded")
	f.event("new", time.Hour, "succeeded")

	j := f.job(func(c *retention.Config) { c.Interval = 50 * time.Millisecond })
	j.Start(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for len(f.keys()) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the started job did not remove the old event: %v", f.keys())
		}
		time.Sleep(20 * time.Millisecond)
	}
	j.Stop()
	j.Stop()
	// Start after Stop does nothing; Stop on a job never started returns.
	j.Start(context.Background())
	j.Stop()
	f.job(nil).Stop()
}
