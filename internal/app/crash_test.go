package app_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/app"
	"github.com/pgoutbox/relay/internal/pgcluster"
	"github.com/pgoutbox/relay/migrations"
)

// TestNoLossThroughPostgresSIGKILL runs a relay against its own
// PostgreSQL (durable settings, as relay run's embedded server), with a
// producer committing one event per transaction, and kills PostgreSQL with
// SIGKILL mid-run, every server process at once; the server then restarts
// with crash recovery. Every event the server holds afterwards is
// delivered, with one delivery row per event and every attempt in the log;
// receivers see duplicates only of events committed around the crash:
// none of those produced once relay had caught up after it.
func TestNoLossThroughPostgresSIGKILL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "relay-sigkill-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cluster, err := pgcluster.New(ctx, pgcluster.Config{DataDir: filepath.Join(dir, "data")})
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })
	url := cluster.URL("postgres")

	var mu sync.Mutex
	seen := map[string]int{} // webhook-id → requests
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen[r.Header.Get("Webhook-Id")]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()

	if err := migrations.Up(ctx, url); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE relay.settings SET allow_http = true`)
	exec(`INSERT INTO relay.subscriptions (name, url, event_types) VALUES ('crash', $1, '{crash.*}')`, recv.URL+"/hook")
	a, err := app.New(app.Config{
		DatabaseURL: url, AdminAddr: "off", AllowCIDRs: []string{"127.0.0.0/8"}, Migrate: true,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())

	count := func(sql string) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, sql).Scan(&n); err != nil {
			return -1 // the server is down or recovering
		}
		return n
	}
	waitFor := func(timeout time.Duration, what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !cond() {
			if time.Now().After(deadline) {
				var states []string
				if rows, err := pool.Query(ctx, `SELECT status || ' ' || coalesce(locked_by, '-') || ' ' || count(*) FROM relay.deliveries GROUP BY status, locked_by`); err == nil {
					states, _ = pgx.CollectRows(rows, pgx.RowTo[string])
				}
				var slot string
				_ = pool.QueryRow(ctx, `SELECT coalesce(active::text, 'none') || ' ' || coalesce(confirmed_flush_lsn::text, '-') || ' of ' || pg_current_wal_lsn()::text FROM pg_replication_slots`).Scan(&slot)
				t.Fatalf("timed out after %s waiting for %s; deliveries by status: %v; events %d; stream %s, slot %s",
					timeout, what, states, count(`SELECT count(*) FROM relay.outbox`), a.Stream().State(), slot)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// The producer commits events one by one, through the crash: inserts
	// that fail while the server is down are retried as new events (the
	// server may or may not have committed the one that failed; what it
	// holds after recovery is the truth).
	stop := make(chan struct{})
	produced := make(chan struct{})
	var phase sync.Map // event_id → "after" for events produced once relay caught up
	var after bool
	var afterMu sync.Mutex
	go func() {
		defer close(produced)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var id string
			err := pool.QueryRow(ctx, `INSERT INTO relay.outbox (event_type, payload) VALUES ('crash.tick', '{"n": 1}') RETURNING event_id::text`).Scan(&id)
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			afterMu.Lock()
			if after {
				phase.Store(id, true)
			}
			afterMu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()

	delivered := `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`
	waitFor(30*time.Second, "200 events delivered before the crash", func() bool { return count(delivered) >= 200 })
	if err := cluster.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pool.Reset()
	// Relay reconnects on its own; once it has delivered every event that
	// existed a moment after the restart, it has caught up.
	var upTo int64
	waitFor(30*time.Second, "the server back", func() bool {
		return pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM relay.outbox`).Scan(&upTo) == nil
	})
	waitFor(90*time.Second, "relay caught up after the crash", func() bool {
		var pending int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM relay.outbox o WHERE o.id <= $1 AND NOT EXISTS (
			SELECT 1 FROM relay.deliveries d WHERE d.event_id = o.event_id AND d.status = 'succeeded')`, upTo).Scan(&pending)
		return err == nil && pending == 0
	})
	afterMu.Lock()
	after = true
	afterMu.Unlock()
	waitFor(30*time.Second, "200 more events", func() bool {
		n := 0
		phase.Range(func(any, any) bool { n++; return true })
		return n >= 200
	})
	close(stop)
	<-produced

	events := count(`SELECT count(*) FROM relay.outbox`)
	waitFor(90*time.Second, "every event the server holds delivered", func() bool {
		return count(delivered) == events
	})
	if n := count(`SELECT count(*) FROM relay.deliveries`); n != events {
		t.Errorf("%d delivery rows for %d events", n, events)
	}
	// Every attempt is in the log: each succeeded delivery has as many
	// attempt rows as its attempts count, the last one succeeded.
	if n := count(`SELECT count(*) FROM relay.deliveries d WHERE d.attempts <> (SELECT count(*) FROM relay.delivery_attempts a WHERE a.delivery_id = d.id)
		OR NOT EXISTS (SELECT 1 FROM relay.delivery_attempts a WHERE a.delivery_id = d.id AND a.outcome = 'succeeded')`); n != 0 {
		t.Errorf("%d deliveries whose attempts are not all in the log", n)
	}
	rows, err := pool.Query(ctx, `SELECT event_id::text FROM relay.outbox`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	missing, dups, dupsAfter := 0, 0, 0
	for _, id := range ids {
		switch n := seen[id]; {
		case n == 0:
			missing++
		case n > 1:
			dups++
			if _, ok := phase.Load(id); ok {
				dupsAfter++
			}
		}
	}
	t.Logf("%d events, %d received twice or more (all committed around the crash)", len(ids), dups)
	if missing > 0 {
		t.Errorf("%d of %d events never reached the receiver", missing, len(ids))
	}
	if dupsAfter > 0 {
		t.Errorf("%d events produced after relay caught up reached the receiver more than once", dupsAfter)
	}
}
