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
	// Deliveries went with their events: 1 + 1 + 2 + 1 left. Their
	// attempts stay in their day's partition until it is dropped (this
	// database's first partition holds every day of the test), and the
	// log no longer shows them: 5 attempts are reachable.
	if d, a := f.count("relay.deliveries"), f.count("relay.delivery_log"); d != 5 || a != 5 {
		t.Fatalf("deliveries %d logged attempts %d left, want 5 and 5", d, a)
	}
	if a := f.count("relay.delivery_attempts AS a WHERE EXISTS (SELECT 1 FROM relay.deliveries AS d WHERE d.id = a.delivery_id)"); a != 5 {
		t.Fatalf("%d attempts of remaining deliveries, want 5", a)
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

// partitionDays lists the days (YYYYMMDD) of the attempt partitions.
func (f *fixture) partitionDays() []string {
	f.t.Helper()
	rows, _ := f.db.Pool.Query(context.Background(), `SELECT to_char(from_at AT TIME ZONE 'UTC', 'YYYYMMDD') FROM relay.attempt_partitions()`)
	days, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		f.t.Fatal(err)
	}
	return days
}

func TestRunDropsWholeAttemptDaysAndKeepsPendingWork(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.db.DailyAttemptPartitions(t, 10)
	before := f.partitionDays()
	f.event("old-succeeded", 9*day, "succeeded")
	f.event("old-pending", 9*day, "pending")
	f.event("new-succeeded", 2*day, "succeeded")
	// The filenode of a partition changes if its rows are rewritten.
	var keptNode int64
	if err := f.db.Pool.QueryRow(ctx, `SELECT pg_relation_filenode(partition)::bigint FROM relay.attempt_partitions()
		WHERE from_at <= now() - interval '2 days' AND to_at > now() - interval '2 days'`).Scan(&keptNode); err != nil {
		t.Fatal(err)
	}

	res, err := f.job(nil).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Whole days older than 7 days went: the partitions from 10 days ago to
	// the one that ends at or before now - 7 days (3 or 4 of them,
	// depending on the time of day).
	after := f.partitionDays()
	if len(res.Partitions) < 3 || len(res.Partitions) > 4 || len(after) != len(before)-len(res.Partitions) {
		t.Fatalf("dropped %v; partitions before %v, after %v", res.Partitions, before, after)
	}
	var oldest time.Time
	if err := f.db.Pool.QueryRow(ctx, `SELECT min(from_at) FROM relay.attempt_partitions()`).Scan(&oldest); err != nil {
		t.Fatal(err)
	}
	if age := time.Since(oldest); age > 8*day || age < 7*day-day {
		t.Fatalf("oldest partition left starts %s ago, want between 6 and 8 days", age)
	}
	// The old finished event went by the batched delete; the pending one
	// stays with its delivery, only its 9-day-old attempt row is gone.
	if got := f.keys(); !equal(got, []string{"new-succeeded", "old-pending"}) {
		t.Fatalf("events left %v", got)
	}
	if res.Events != 1 {
		t.Fatalf("removed %d events, want 1", res.Events)
	}
	var status string
	var attempts int
	if err := f.db.Pool.QueryRow(ctx, `SELECT d.status, d.attempts FROM relay.deliveries AS d
		JOIN relay.outbox AS o ON o.event_id = d.event_id WHERE o.key = 'old-pending'`).Scan(&status, &attempts); err != nil {
		t.Fatal(err)
	}
	if status != "pending" || attempts != 1 {
		t.Fatalf("pending delivery now %s with %d attempts", status, attempts)
	}
	if n := f.count("relay.delivery_attempts"); n != 1 {
		t.Fatalf("%d attempts left, want the 2-day-old one", n)
	}
	var node int64
	if err := f.db.Pool.QueryRow(ctx, `SELECT pg_relation_filenode(partition)::bigint FROM relay.attempt_partitions()
		WHERE from_at <= now() - interval '2 days' AND to_at > now() - interval '2 days'`).Scan(&node); err != nil {
		t.Fatal(err)
	}
	if node != keptNode {
		t.Fatalf("the kept partition was rewritten (filenode %d, was %d)", node, keptNode)
	}
	// A second run finds nothing; new attempts still have partitions ahead.
	if res, err := f.job(nil).Run(ctx); err != nil || len(res.Partitions) != 0 || res.Events != 0 {
		t.Fatalf("second run: %+v %v", res, err)
	}
	f.db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome)
		SELECT id, 2, now() + interval '2 days', 'retry' FROM relay.deliveries WHERE status = 'pending'`)
}

func TestRunDropsThePartitionLeftByAnInterruptedDetach(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.db.DailyAttemptPartitions(t, 10)
	oldest := f.partitionDays()[0]
	// DETACH ... CONCURRENTLY commits "detach pending" first, then waits
	// for the transactions that use the table; one stopped in that wait
	// leaves the partition pending. Hold such a transaction open, and stop
	// the detach with a statement timeout while it waits.
	holder, err := f.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, `SELECT count(*) FROM relay.delivery_attempts`); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, f.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SET statement_timeout = '2s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE relay.delivery_attempts DETACH PARTITION relay.delivery_attempts_`+oldest+` CONCURRENTLY`); err == nil {
		t.Fatal("the detach did not wait for the open transaction")
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var pending bool
	if err := f.db.Pool.QueryRow(ctx, `SELECT detach_pending FROM relay.attempt_partitions()
		WHERE partition = ('relay.delivery_attempts_' || $1)::regclass`, oldest).Scan(&pending); err != nil || !pending {
		t.Fatalf("the interrupted detach left no pending partition: %v %v", pending, err)
	}
	res, err := f.job(nil).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Partitions) == 0 || res.Partitions[0] != "relay.delivery_attempts_"+oldest {
		t.Fatalf("dropped %v, want relay.delivery_attempts_%s first", res.Partitions, oldest)
	}
	var exists bool
	if err := f.db.Pool.QueryRow(ctx, `SELECT to_regclass('relay.delivery_attempts_' || $1) IS NOT NULL`, oldest).Scan(&exists); err != nil || exists {
		t.Fatalf("the pending partition is still there: %v %v", exists, err)
	}
}

func TestPayloadRetentionClearsOnlySucceededBodies(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.event("old-succeeded", 2*day, "succeeded")
	f.event("old-failed", 2*day, "failed")
	f.event("new-succeeded", time.Hour, "succeeded")
	f.db.Exec(t, `UPDATE relay.delivery_attempts SET response_body = 'body of ' || attempt`)
	f.db.Exec(t, `UPDATE relay.deliveries SET last_response = 'body of 1'`)
	f.db.Exec(t, `UPDATE relay.settings SET payload_retention = '1 day'`)

	bodies := func() map[string][2]*string {
		rows, _ := f.db.Pool.Query(ctx, `SELECT o.key, a.response_body, d.last_response
			FROM relay.outbox AS o JOIN relay.deliveries AS d ON d.event_id = o.event_id
			JOIN relay.delivery_attempts AS a ON a.delivery_id = d.id`)
		out := map[string][2]*string{}
		var key string
		var body, last *string
		if _, err := pgx.ForEachRow(rows, []any{&key, &body, &last}, func() error {
			out[key] = [2]*string{body, last}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	// A small batch makes the run walk several batches.
	j := f.job(func(c *retention.Config) { c.BatchSize = 1 })
	res, err := j.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Payloads != 1 || res.Events != 0 {
		t.Fatalf("run: %+v, want 1 payload cleared and no event removed", res)
	}
	got := bodies()
	if b := got["old-succeeded"]; b[0] != nil || b[1] != nil {
		t.Errorf("old succeeded delivery kept its body: %v %v", b[0], b[1])
	}
	for _, k := range []string{"old-failed", "new-succeeded"} {
		if b := got[k]; b[0] == nil || b[1] == nil {
			t.Errorf("%s lost its body", k)
		}
	}
	if n := f.count("relay.delivery_attempts"); n != 3 {
		t.Fatalf("%d attempts left, want all 3 (only bodies go)", n)
	}
	var mark time.Time
	if err := f.db.Pool.QueryRow(ctx, `SELECT payloads_cleared_before FROM relay.maintenance_state`).Scan(&mark); err != nil {
		t.Fatal(err)
	}
	if age := time.Since(mark); age < day-time.Minute || age > day+time.Minute {
		t.Fatalf("progress mark %s ago, want about a day", age)
	}
	// The next run starts from the mark and finds nothing more.
	if res, err := f.job(nil).Run(ctx); err != nil || res.Payloads != 0 {
		t.Fatalf("second run: %+v %v", res, err)
	}
	// NULL (the default) keeps the bodies.
	f.db.Exec(t, `UPDATE relay.settings SET payload_retention = NULL`)
	f.db.Exec(t, `UPDATE relay.maintenance_state SET payloads_cleared_before = NULL`)
	if res, err := f.job(nil).Run(ctx); err != nil || res.Payloads != 0 {
		t.Fatalf("run without payload retention: %+v %v", res, err)
	}
	if _, err := f.db.Pool.Exec(ctx, `UPDATE relay.settings SET payload_retention = '5 minutes'`); err == nil {
		t.Fatal("a payload retention under an hour was accepted")
	}
}
