package pgtest_test

import (
	"context"
	"testing"

	"github.com/pgoutbox/relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestDatabaseHasSchemaAndLogicalWAL(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := context.Background()
	var walLevel string
	if err := db.Pool.QueryRow(ctx, `SHOW wal_level`).Scan(&walLevel); err != nil {
		t.Fatal(err)
	}
	if walLevel != "logical" {
		t.Fatalf("wal_level = %s", walLevel)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM relay.settings`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("relay.settings rows = %d, %v", n, err)
	}
	// A test can create (and the harness later drops) a replication slot.
	if _, err := db.Pool.Exec(ctx, `SELECT pg_create_logical_replication_slot('pgtest_slot', 'pgoutput')`); err != nil {
		t.Fatalf("creating a slot: %v", err)
	}
}

func TestDatabasesAreIsolated(t *testing.T) {
	a, b := pgtest.NewDB(t), pgtest.NewDB(t)
	a.Exec(t, `SELECT relay.emit('a.b', '{}')`)
	var n int
	if err := b.Pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.outbox`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("second database sees %d outbox rows (%v)", n, err)
	}
}
