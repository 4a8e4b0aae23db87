package partitions_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/partitions"
	"github.com/pgoutbox/relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestJobKeepsDaysAhead starts the job on an install running for a week:
// it creates the missing days ahead at Start, recreates one dropped by
// hand, and List reports them in order with their ranges.
func TestJobKeepsDaysAhead(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	db.DailyAttemptPartitions(t, 7)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	// Remove the days ahead: a relay stopped for a while.
	db.Exec(t, `DO $$
		DECLARE p regclass;
		BEGIN
			FOR p IN SELECT partition FROM relay.attempt_partitions() WHERE from_at > now() LOOP
				EXECUTE format('DROP TABLE %s', p);
			END LOOP;
		END $$`)

	j := partitions.New(partitions.Config{Pool: db.Pool, Logger: zerolog.New(zerolog.NewTestWriter(t)), DaysAhead: 5, Interval: time.Hour})
	if err := j.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer j.Stop()
	parts, err := partitions.List(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 7+1+5 {
		t.Fatalf("%d partitions, want 13 (7 days back, today, 5 ahead): %+v", len(parts), parts)
	}
	for i, p := range parts {
		want := today.AddDate(0, 0, i-7)
		if !p.From.Equal(want) || !p.To.Equal(want.AddDate(0, 0, 1)) || p.DetachPending {
			t.Fatalf("partition %d is %+v, want the day %s", i, p, want.Format(time.DateOnly))
		}
	}
	// An attempt five days ahead has somewhere to go.
	db.Exec(t, `INSERT INTO relay.subscriptions (name, url, event_types) VALUES ('a', 'https://example.com/a', '{*}')`)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) VALUES ('thread.created', '{}')`)
	db.Exec(t, `INSERT INTO relay.deliveries (event_id, subscription_id) SELECT event_id, 1 FROM relay.outbox`)
	db.Exec(t, `INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, outcome)
		SELECT id, 1, now() + interval '5 days', 'retry' FROM relay.deliveries`)

	// A day dropped by hand comes back at the next run, and nothing else.
	db.Exec(t, `DROP TABLE `+parts[len(parts)-2].Name)
	n, err := j.RunOnce(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RunOnce created %d partitions, %v; want 1", n, err)
	}
	if n, err := j.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("second RunOnce created %d, %v; want 0", n, err)
	}
	j.Stop()
	j.Stop()
}

// TestStartFailsWithoutAPartitionForNow: a relay that cannot create
// today's partition cannot record attempts, so it refuses to start.
func TestStartFailsWithoutAPartitionForNow(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	db.DailyAttemptPartitions(t, 1)
	var today string
	if err := db.Pool.QueryRow(ctx, `SELECT partition::text FROM relay.attempt_partitions() WHERE from_at <= now() AND to_at > now()`).Scan(&today); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `DROP TABLE `+today)
	// A table of that name that is not a partition stops the creation.
	db.Exec(t, `CREATE TABLE `+today+` (x int)`)
	j := partitions.New(partitions.Config{Pool: db.Pool, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	err := j.Start(ctx)
	if err == nil {
		j.Stop()
		t.Fatal("Start succeeded with no partition for the current time")
	}
	t.Log(err)
}
