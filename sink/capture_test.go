package sink_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/outbox"
	"github.com/pgoutbox/relay/sink/fanout"
)

// startCapture runs the outbox stream with the real fan-out on db until the
// test ends.
func startCapture(t *testing.T, db *pgtest.DB, wrap func(outbox.Handler) outbox.Handler) *outbox.Stream {
	t.Helper()
	var h outbox.Handler = fanout.New(db.Pool, fanout.Config{Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if wrap != nil {
		h = wrap(h)
	}
	s, err := outbox.New(outbox.Config{
		DatabaseURL:    db.URL,
		Slot:           db.Name, // slots are cluster-wide: one per test database
		Publication:    "relay",
		Handler:        h,
		Logger:         zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
		StatusInterval: 200 * time.Millisecond,
		MinBackoff:     50 * time.Millisecond,
		MaxBackoff:     500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func addSub(t *testing.T, db *pgtest.DB, owner any, patterns ...string) int64 {
	t.Helper()
	var id int64
	err := db.Pool.QueryRow(context.Background(), `INSERT INTO relay.subscriptions (owner, name, url, event_types)
		VALUES ($1, 'sub', 'https://receiver.example.com/hook', $2) RETURNING id`, owner, patterns).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// assertExactlyOnce checks that every outbox event has exactly one delivery
// per subscription it matches, by recomputing the match in SQL.
func assertExactlyOnce(t *testing.T, db *pgtest.DB, wantEvents int) {
	t.Helper()
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.outbox`); n != wantEvents {
		t.Fatalf("outbox holds %d events, want %d", n, wantEvents)
	}
	missing := count(t, db.Pool, `
		SELECT count(*) FROM relay.outbox o JOIN relay.subscriptions s
		  ON s.enabled AND s.event_types && relay.event_type_candidates(o.event_type) AND (s.owner IS NULL OR s.owner = o.owner)
		WHERE NOT EXISTS (SELECT 1 FROM relay.deliveries d WHERE d.event_id = o.event_id AND d.subscription_id = s.id)`)
	dupes := count(t, db.Pool, `SELECT count(*) FROM (SELECT 1 FROM relay.deliveries GROUP BY event_id, subscription_id HAVING count(*) > 1) x`)
	if missing != 0 || dupes != 0 {
		t.Fatalf("missing deliveries %d, duplicated %d", missing, dupes)
	}
}

func TestCaptureOneEventMultiRowAndConcurrent(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	sub := addSub(t, db, "u1", "*")
	startCapture(t, db, nil)
	ctx := context.Background()

	db.Exec(t, `SELECT relay.emit('thread.created', '{"title":"one"}', 'u1')`)
	waitFor(t, 10*time.Second, "one delivery", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 1 })
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries WHERE subscription_id = $1 AND status = 'pending'`, sub); n != 1 {
		t.Fatalf("pending deliveries for sub = %d", n)
	}

	db.Exec(t, `INSERT INTO relay.outbox (event_type, owner, payload) SELECT 'message.sent', 'u1', jsonb_build_object('n', g) FROM generate_series(1, 50) g`)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				if _, err := db.Pool.Exec(ctx, `SELECT relay.emit('analysis.completed', jsonb_build_object('w', $1::int, 'i', $2::int), 'u1')`, w, i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 20*time.Second, "251 deliveries", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) >= 251 })
	assertExactlyOnce(t, db, 251)
}

func TestCaptureRolledBackTransactionDeliversNothing(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	addSub(t, db, nil, "*")
	startCapture(t, db, nil)
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT relay.emit('thread.created', '{"rolled":"back"}')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// A committed marker after the rollback: once it is fanned out, the
	// rolled-back event would have been too.
	db.Exec(t, `SELECT relay.emit('marker.done', '{}')`)
	waitFor(t, 10*time.Second, "the marker", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) >= 1 })
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries d JOIN relay.outbox o USING (event_id) WHERE o.event_type = 'marker.done'`); n != 1 {
		t.Fatalf("marker deliveries = %d", n)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`); n != 1 {
		t.Fatalf("deliveries = %d, want only the marker's", n)
	}
}

func TestCapturePatternsAndOwners(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	threadsA := addSub(t, db, "A", "thread.*")
	allA := addSub(t, db, "A", "*")
	allB := addSub(t, db, "B", "*")
	operator := addSub(t, db, nil, "*")
	exactA := addSub(t, db, "A", "thread.created")
	disabled := addSub(t, db, "A", "*")
	db.Exec(t, `UPDATE relay.subscriptions SET enabled = false WHERE id = $1`, disabled)
	startCapture(t, db, nil)

	emit := func(typ string, owner any) string {
		var id string
		if err := db.Pool.QueryRow(context.Background(), `SELECT relay.emit($1, '{}', $2)::text`, typ, owner).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	evs := map[string]string{
		"A thread.created":  emit("thread.created", "A"),
		"A threads.created": emit("threads.created", "A"),
		"A thread":          emit("thread", "A"),
		"A thread.x.y":      emit("thread.x.y", "A"),
		"B thread.created":  emit("thread.created", "B"),
		"none thread.x":     emit("thread.x", nil),
	}
	emit("marker.end", nil)
	waitFor(t, 10*time.Second, "marker", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries d JOIN relay.outbox o USING (event_id) WHERE o.event_type = 'marker.end'`) == 1
	})
	subsOf := func(key string) string {
		var got []int64
		rows, _ := db.Pool.Query(context.Background(), `SELECT subscription_id FROM relay.deliveries WHERE event_id = $1 ORDER BY 1`, evs[key])
		for rows.Next() {
			var id int64
			_ = rows.Scan(&id)
			got = append(got, id)
		}
		return fmt.Sprint(got)
	}
	want := map[string][]int64{
		"A thread.created":  {threadsA, allA, operator, exactA},
		"A threads.created": {allA, operator},
		"A thread":          {allA, operator},
		"A thread.x.y":      {threadsA, allA, operator},
		"B thread.created":  {allB, operator},
		"none thread.x":     {operator},
	}
	for k, ids := range want {
		if got := subsOf(k); got != fmt.Sprint(ids) {
			t.Errorf("%s went to %s, want %v", k, got, ids)
		}
	}
}

func TestCaptureEventsCommittedWhileStopped(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	addSub(t, db, nil, "*")
	s := startCapture(t, db, nil)
	db.Exec(t, `SELECT relay.emit('a.first', '{}')`)
	waitFor(t, 10*time.Second, "first", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 1 })
	s.Stop()
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'a.while_stopped', '{}' FROM generate_series(1, 300)`)
	startCapture(t, db, nil)
	waitFor(t, 20*time.Second, "301 deliveries", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 301 })
	assertExactlyOnce(t, db, 301)
}

func TestCaptureBackfillsEventsBeforeSlotExisted(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	addSub(t, db, nil, "*")
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'before.slot', '{}' FROM generate_series(1, 20)`)
	startCapture(t, db, nil)
	db.Exec(t, `SELECT relay.emit('after.slot', '{}')`)
	waitFor(t, 10*time.Second, "21 deliveries", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 21 })
	assertExactlyOnce(t, db, 21)
}

func TestCaptureSurvivesPostgresRestart(t *testing.T) {
	// Not parallel: restarting the cluster disturbs every test of the binary.
	db := pgtest.NewDB(t)
	addSub(t, db, nil, "*")
	startCapture(t, db, nil)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'x.before', '{}' FROM generate_series(1, 100)`)
	waitFor(t, 10*time.Second, "100", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 100 })
	db.Restart(t)
	db.Pool.Reset()
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'x.after', '{}' FROM generate_series(1, 100)`)
	waitFor(t, 30*time.Second, "200 after restart", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 200 })
	assertExactlyOnce(t, db, 200)
}

func TestCaptureSurvivesTerminatedConnection(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	addSub(t, db, nil, "*")
	startCapture(t, db, nil)
	db.Exec(t, `SELECT relay.emit('x.one', '{}')`)
	waitFor(t, 10*time.Second, "1", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 1 })
	db.Exec(t, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = current_database() AND active`)
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'x.after_cut', '{}' FROM generate_series(1, 50)`)
	waitFor(t, 20*time.Second, "51", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 51 })
	assertExactlyOnce(t, db, 51)
}

func TestIdleOutboxBusyOtherTableAdvancesSlot(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := startCapture(t, db, nil)
	db.Exec(t, `CREATE TABLE busy (id serial primary key, v text)`)
	slotLSN := func() string {
		var lsn string
		if err := db.Pool.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE database = current_database()`).Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	var before string
	waitFor(t, 10*time.Second, "streaming", func() bool { return s.State() == outbox.StateStreaming })
	before = slotLSN()
	var walAfterWrites string
	for i := 0; i < 20; i++ {
		db.Exec(t, `INSERT INTO busy (v) SELECT repeat('x', 200) FROM generate_series(1, 500)`)
	}
	if err := db.Pool.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&walAfterWrites); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "confirmed_flush_lsn to pass the other table's writes", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND confirmed_flush_lsn >= $1::pg_lsn`, walAfterWrites) == 1
	})
	t.Logf("confirmed_flush_lsn moved from %s to %s with an idle outbox", before, slotLSN())
}

func TestCaptureBigTransactionInChunks(t *testing.T) {
	if testing.Short() {
		t.Skip("200,000-row transaction")
	}
	db := pgtest.NewDB(t)
	addSub(t, db, nil, "*")
	var maxChunk, chunks atomic.Int64
	var peakHeap atomic.Uint64
	startCapture(t, db, func(h outbox.Handler) outbox.Handler {
		return outbox.HandlerFunc(func(ctx context.Context, evs []outbox.Event) error {
			chunks.Add(1)
			if n := int64(len(evs)); n > maxChunk.Load() {
				maxChunk.Store(n)
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
			return h.HandleEvents(ctx, evs)
		})
	})
	const rows = 200_000
	start := time.Now()
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'bulk.row', jsonb_build_object('n', g, 'pad', repeat('p', 100)) FROM generate_series(1, $1::int) g`, rows)
	waitFor(t, 3*time.Minute, "200k deliveries", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == rows })
	elapsed := time.Since(start)
	if maxChunk.Load() > 2000 {
		t.Fatalf("a chunk held %d events, more than MaxBatch", maxChunk.Load())
	}
	assertExactlyOnce(t, db, rows)
	t.Logf("200,000-row transaction: %d chunks of at most %d events, peak heap in use %.1f MiB, %s (%.0f events/s)",
		chunks.Load(), maxChunk.Load(), float64(peakHeap.Load())/(1<<20), elapsed.Round(time.Millisecond), rows/elapsed.Seconds())
}

// The crash tests run the stream in a child process (this test binary,
// re-executed) and kill it with SIGKILL at a chosen point.

const crashEnv = "RELAY_CRASH_HELPER"

// crashAppName names the child's connections in pg_stat_activity.
const crashAppName = "relay_crash_child"

// runCrashHelper runs the child side when the environment asks for it.
func runCrashHelper() bool {
	mode := os.Getenv(crashEnv)
	if mode == "" {
		return false
	}
	dbURL := os.Getenv("RELAY_CRASH_DB")
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fan := fanout.New(pool, fanout.Config{})
	want, _ := strconv.Atoi(os.Getenv("RELAY_CRASH_EVENTS"))
	seen := 0
	var handler outbox.Handler = outbox.HandlerFunc(func(ctx context.Context, evs []outbox.Event) error {
		seen += len(evs)
		if mode == "before_fanout" {
			fmt.Println("RECEIVED", len(evs))
			select {} // killed here: nothing written, nothing acknowledged
		}
		if err := fan.HandleEvents(ctx, evs); err != nil {
			return err
		}
		if seen >= want {
			fmt.Println("FANNED", seen)
			select {} // killed here: deliveries committed, WAL not acknowledged
		}
		return nil
	})
	if mode == "presend" {
		handler = presendCrashHandler(ctx, pool)
	}
	s, err := outbox.New(outbox.Config{DatabaseURL: dbURL, Slot: os.Getenv("RELAY_CRASH_SLOT"), Handler: handler, MaxBatch: 100})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	if err := s.Start(ctx); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("STARTED")
	select {}
}

// runCrashChild starts the child, runs afterStart once it has started
// (expect waits for a line the child prints), waits for the line that marks
// the mode's crash point and kills the child there.
func runCrashChild(t *testing.T, db *pgtest.DB, mode string, events int, afterStart func(expect func(prefix string))) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+mode, "PGAPPNAME="+crashAppName, "RELAY_CRASH_DB="+db.URL, "RELAY_CRASH_SLOT="+db.Name,
		"RELAY_CRASH_EVENTS="+strconv.Itoa(events))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A test that fails before the crash point must not leave the child
	// running (it holds the test's output open).
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := bufio.NewScanner(out)
	expect := func(prefix string) {
		t.Helper()
		for lines.Scan() {
			if strings.HasPrefix(lines.Text(), prefix) {
				return
			}
			if strings.HasPrefix(lines.Text(), "ERROR") {
				t.Fatal(lines.Text())
			}
		}
		t.Fatalf("child ended before printing %s", prefix)
	}
	expect("STARTED")
	afterStart(expect)
	switch mode {
	case "before_fanout":
		expect("RECEIVED")
	case "after_fanout":
		expect("FANNED")
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

func TestCrashBetweenFanoutCommitAndAck(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	addSub(t, db, nil, "*")
	addSub(t, db, nil, "a.*")
	runCrashChild(t, db, "after_fanout", 500, func(func(string)) {
		db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'a.crash', '{}' FROM generate_series(1, 500)`)
	})
	// The child committed deliveries but never acknowledged: the slot still
	// holds the transaction.
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`); n != 1000 {
		t.Fatalf("deliveries before restart = %d, want 1000", n)
	}
	db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'a.later', '{}' FROM generate_series(1, 10)`)
	startCapture(t, db, nil)
	waitFor(t, 20*time.Second, "1020 deliveries", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 1020 })
	// The replayed transaction was absorbed: nothing more than one row per pair.
	assertExactlyOnce(t, db, 510)
}

func TestCrashBetweenInsertAndFanout(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	addSub(t, db, nil, "*")
	runCrashChild(t, db, "before_fanout", 1, func(func(string)) {
		db.Exec(t, `INSERT INTO relay.outbox (event_type, payload) SELECT 'b.crash', '{}' FROM generate_series(1, 300)`)
	})
	if n := count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`); n != 0 {
		t.Fatalf("deliveries before restart = %d, want 0", n)
	}
	startCapture(t, db, nil)
	waitFor(t, 20*time.Second, "300 deliveries", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 300 })
	assertExactlyOnce(t, db, 300)
}

func TestSecondStreamStandsByAndTakesOver(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	addSub(t, db, nil, "*")
	first := startCapture(t, db, nil)
	waitFor(t, 10*time.Second, "first streaming", func() bool { return first.State() == outbox.StateStreaming })
	second := startCapture(t, db, nil)
	waitFor(t, 10*time.Second, "second standing by", func() bool { return second.State() == outbox.StateStandby })
	db.Exec(t, `SELECT relay.emit('ha.one', '{}')`)
	waitFor(t, 10*time.Second, "1", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 1 })
	first.Stop()
	waitFor(t, 20*time.Second, "second takes over", func() bool { return second.State() == outbox.StateStreaming })
	db.Exec(t, `SELECT relay.emit('ha.two', '{}')`)
	waitFor(t, 10*time.Second, "2", func() bool { return count(t, db.Pool, `SELECT count(*) FROM relay.deliveries`) == 2 })
	assertExactlyOnce(t, db, 2)
}
