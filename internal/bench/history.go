package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/retention"
	"github.com/pgoutbox/relay/subscriptions"
)

// The history scenario measures the attempt history at size, in two
// layouts of the same rows:
//
//   - "one table": every attempt in one table, as version 1 kept them and as
//     an upgraded install holds them on its first day (the old table is its
//     first partition), with the foreign key from attempts to deliveries
//     that versions 1 to 6 had; retention deletes a day of it in batches,
//     through the outbox and ON DELETE CASCADE, which is what version 1
//     did;
//   - "daily partitions": the layout relay keeps from then on (no foreign
//     key since version 7); retention drops the day's attempt partition,
//     then deletes the day's events and deliveries in batches (those
//     tables are not partitioned).
//
// In each layout it measures: one subscription's last 50 attempts (the query
// relay log --sub runs; before, the version-1 query ordered by attempt id),
// the 24-hour statistics of one subscription (Store.Stats, what the console
// and the API run), the retention of the oldest day alone (wall time and WAL
// bytes), and the drain rate of a relay run alone and while the next day's
// retention runs.

// HistoryResult is the history scenario's report.
type HistoryResult struct {
	Attempts      int `json:"attempts"`
	Days          int `json:"days"`
	Subscriptions int `json:"subscriptions"`
	// DrainEvents is the backlog each drain delivers (× Subscriptions).
	DrainEvents int             `json:"drain_events"`
	Layouts     []HistoryLayout `json:"layouts"`
	// Deliveries is the probe of a partitioned relay.deliveries.
	Deliveries *DeliveriesProbe `json:"deliveries_probe,omitempty"`
}

// HistoryLayout is one layout's figures.
type HistoryLayout struct {
	Layout      string  `json:"layout"`
	LoadSeconds float64 `json:"load_seconds"`
	Partitions  int     `json:"partitions"`
	// Log and Stats are latencies over QueryRuns runs after one warm-up.
	Log       QueryLatency `json:"log_last_50"`
	Stats     QueryLatency `json:"stats_24h"`
	Retention RetentionRun `json:"retention_alone"`
	// DrainAlone and DrainDuringRetention are deliveries per second.
	DrainAlonePerSec           float64      `json:"drain_alone_per_sec"`
	DrainDuringRetentionPerSec float64      `json:"drain_during_retention_per_sec"`
	RetentionDuringDrain       RetentionRun `json:"retention_during_drain"`
}

// QueryLatency is the spread of one query's latency.
type QueryLatency struct {
	Runs  int     `json:"runs"`
	P50MS float64 `json:"p50_ms"`
	P95MS float64 `json:"p95_ms"`
	MaxMS float64 `json:"max_ms"`
}

// RetentionRun is one retention run removing one day of history.
type RetentionRun struct {
	Seconds    float64  `json:"seconds"`
	WALBytes   int64    `json:"wal_bytes"`
	Events     int      `json:"events"`
	Partitions []string `json:"partitions"`
}

// queryRuns is how often each query is timed.
const queryRuns = 30

// logQueryV1 is the query relay log --sub ID ran in version 1; logQueryV2
// the one it runs now (internal/cli latestLogSQL: ordered by the partition
// key, so daily partitions are read newest first).
const (
	logColumnsBench = `attempt_id, delivery_id, event_id, subscription_id, subscription_name, url, event_type, owner,
	attempt, outcome, delivery_status, status_code, duration_ms, error, response_body, retry_after, started_at`
	logQueryV1 = `SELECT ` + logColumnsBench + ` FROM relay.delivery_log WHERE true AND subscription_id = $1 ORDER BY attempt_id DESC LIMIT 50`
	logQueryV2 = `SELECT ` + logColumnsBench + ` FROM relay.delivery_log WHERE true AND subscription_id = $1 ORDER BY started_at DESC, attempt_id DESC LIMIT 50`
)

func (b *runner) history(ctx context.Context) error {
	res := &HistoryResult{Attempts: b.cfg.HistoryAttempts, Days: b.cfg.HistoryDays, Subscriptions: 3, DrainEvents: b.cfg.HistoryDrainEvents}
	b.report.History = res
	for _, layout := range []string{"one table", "daily partitions"} {
		l, err := b.historyLayout(ctx, res, layout)
		if err != nil {
			return fmt.Errorf("%s: %w", layout, err)
		}
		res.Layouts = append(res.Layouts, l)
	}
	db, err := b.newDB(ctx, "history_probe")
	if err != nil {
		return err
	}
	defer db.drop()
	b.progress("history: updating deliveries by id, plain table and daily partitions")
	p, err := probeDeliveries(ctx, db, min(res.Attempts, 2_000_000), 10)
	if err != nil {
		return err
	}
	res.Deliveries = &p
	return nil
}

func (b *runner) historyLayout(ctx context.Context, res *HistoryResult, layout string) (HistoryLayout, error) {
	out := HistoryLayout{Layout: layout}
	daily := layout == "daily partitions"
	tag := "history_table"
	if daily {
		tag = "history_daily"
	}
	db, err := b.newDB(ctx, tag)
	if err != nil {
		return out, err
	}
	defer db.drop()
	if err := db.subscribe(ctx, b.recv.base, res.Subscriptions); err != nil {
		return out, err
	}
	b.progress("history (%s): loading %d attempts over %d days", layout, res.Attempts, res.Days)
	t0 := time.Now()
	if err := loadHistory(ctx, db, res.Attempts, res.Days, daily); err != nil {
		return out, err
	}
	out.LoadSeconds = time.Since(t0).Seconds()
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM relay.attempt_partitions()`).Scan(&out.Partitions); err != nil {
		return out, err
	}

	// The slot is created after the history: those events were captured
	// long ago, only the drains' events are in its WAL.
	slot := db.name
	// The relay of the drains must not run retention itself.
	args := append(relayArgs(db.url, slot, b.cfg.Concurrency, b.cfg.RelayLogLevel), "--retention", "87600h")
	rp, err := b.startRelayArgs(args, tag+"-setup")
	if err != nil {
		return out, err
	}
	if err := db.waitStreaming(ctx, slot, rp, time.Minute); err != nil {
		_ = rp.stop(10 * time.Second)
		return out, err
	}
	if err := rp.stop(30 * time.Second); err != nil {
		return out, err
	}

	var subID int64
	if err := db.pool.QueryRow(ctx, `SELECT min(id) + 1 FROM relay.subscriptions`).Scan(&subID); err != nil {
		return out, err
	}
	logSQL := logQueryV1
	if daily {
		logSQL = logQueryV2
	}
	b.progress("history (%s): timing the queries", layout)
	if out.Log, err = timeQuery(queryRuns, func() error {
		rows, err := db.pool.Query(ctx, logSQL, subID)
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if n != 50 {
			return fmt.Errorf("the log query returned %d rows, want 50", n)
		}
		return nil
	}); err != nil {
		return out, err
	}
	store := subscriptions.NewStore(db.pool)
	if out.Stats, err = timeQuery(queryRuns, func() error {
		s, err := store.Stats(ctx, subID, nil, 24*time.Hour)
		if err == nil && s.Attempts == 0 {
			err = fmt.Errorf("the 24 h stats counted no attempt")
		}
		return err
	}); err != nil {
		return out, err
	}

	// Retention of the oldest day alone, then of the next one during a
	// drain, after a drain alone to compare with.
	oldest := historyStart(res.Days)
	b.progress("history (%s): retention of one day", layout)
	if out.Retention, err = runRetention(ctx, db, oldest.AddDate(0, 0, 1)); err != nil {
		return out, err
	}
	if out.DrainAlonePerSec, err = b.historyDrain(ctx, db, args, tag+"-drain", res, nil); err != nil {
		return out, err
	}
	b.progress("history (%s): retention of the next day during a drain", layout)
	var during RetentionRun
	var retErr error
	done := make(chan struct{})
	out.DrainDuringRetentionPerSec, err = b.historyDrain(ctx, db, args, tag+"-drain-retention", res, func() {
		go func() {
			defer close(done)
			during, retErr = runRetention(ctx, db, oldest.AddDate(0, 0, 2))
		}()
	})
	if err != nil {
		return out, err
	}
	<-done
	if retErr != nil {
		return out, retErr
	}
	out.RetentionDuringDrain = during
	return out, nil
}

// historyStart is the UTC midnight where the history begins: days days
// before today's.
func historyStart(days int) time.Time {
	return time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -days)
}

// loadHistory fills db with n attempts spread evenly from historyStart(days)
// to now: one event per 3 attempts, one delivery and one attempt per event
// and subscription, all succeeded, with a short response body. Event ids
// grow in order, so the unique indexes fill like a clock rather than at
// random. With daily, the first partition (empty) is replaced by one
// partition per day first.
func loadHistory(ctx context.Context, db *benchDB, n, days int, daily bool) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if daily {
		if _, err := conn.Exec(ctx, `DO $$
			DECLARE p regclass;
			BEGIN
				FOR p IN SELECT partition FROM relay.attempt_partitions() LOOP
					EXECUTE format('DROP TABLE %s', p);
				END LOOP;
			END $$`); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `SELECT relay.create_attempt_partition(d::date)
			FROM generate_series($1::date, (now() AT TIME ZONE 'UTC')::date, interval '1 day') AS d`, historyStart(days)); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `SELECT relay.prepare_attempt_partitions(3)`); err != nil {
			return err
		}
	}
	// Skipping the per-row foreign key checks needs a superuser; without
	// it the load is only slower.
	_, _ = conn.Exec(ctx, `SET session_replication_role = replica`)
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `RESET session_replication_role`) }()
	events := n / 3
	const chunk = 100000
	start := historyStart(days)
	span := time.Since(start) - time.Minute
	step := span / time.Duration(events)
	for lo := 0; lo < events; lo += chunk {
		hi := min(lo+chunk, events)
		_, err := conn.Exec(ctx, `
			WITH e AS (
				INSERT INTO relay.outbox (event_id, event_type, payload, created_at)
				SELECT lpad(to_hex(g), 32, '0')::uuid, 'thread.created', '{"seq": 1, "title": "history"}',
				       $3::timestamptz + g * $4::interval
				FROM generate_series($1::bigint, $2::bigint - 1) AS g
				RETURNING event_id, created_at
			), d AS (
				INSERT INTO relay.deliveries (event_id, subscription_id, status, attempts, cycle_attempts, next_attempt_at,
				                              last_status_code, last_response, last_duration_ms, created_at, completed_at)
				SELECT e.event_id, s.id, 'succeeded', 1, 1, e.created_at, 200, 'ok', 20, e.created_at, e.created_at + interval '20 ms'
				FROM e CROSS JOIN relay.subscriptions AS s
				ORDER BY e.created_at, s.id
				RETURNING id, created_at
			)
			INSERT INTO relay.delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, response_body)
			SELECT d.id, 1, d.created_at, 20, 200, 'succeeded', 'ok' FROM d`,
			lo, hi, start, step)
		if err != nil {
			return fmt.Errorf("loading history: %w", err)
		}
	}
	if !daily {
		// Before version 7 attempts referenced their delivery, and the
		// retention of one table went through ON DELETE CASCADE.
		if _, err := conn.Exec(ctx, `ALTER TABLE relay.delivery_attempts ADD CONSTRAINT delivery_attempts_delivery_id_fkey
			FOREIGN KEY (delivery_id) REFERENCES relay.deliveries (id) ON DELETE CASCADE`); err != nil {
			return fmt.Errorf("loading history: the version-6 foreign key: %w", err)
		}
	}
	for _, stmt := range []string{`VACUUM (ANALYZE) relay.outbox`, `VACUUM (ANALYZE) relay.deliveries`,
		`VACUUM (ANALYZE) relay.delivery_attempts`, `CHECKPOINT`} {
		// CHECKPOINT needs a superuser; without it the first measure is noisier.
		if _, err := conn.Exec(ctx, stmt); err != nil && !strings.HasPrefix(stmt, "CHECKPOINT") {
			return err
		}
	}
	return nil
}

// timeQuery runs fn once to warm up, then runs times and returns the spread.
func timeQuery(runs int, fn func() error) (QueryLatency, error) {
	if err := fn(); err != nil {
		return QueryLatency{}, err
	}
	ds := make([]time.Duration, 0, runs)
	for range runs {
		t := time.Now()
		if err := fn(); err != nil {
			return QueryLatency{}, err
		}
		ds = append(ds, time.Since(t))
	}
	slices.Sort(ds)
	return QueryLatency{Runs: runs, P50MS: ms(percentile(ds, 0.50)), P95MS: ms(percentile(ds, 0.95)), MaxMS: ms(ds[len(ds)-1])}, nil
}

// runRetention runs relay's retention job once with the retention that
// makes cutoff its limit: everything older goes, whole days of attempts
// first where they are partitions. The slot guard is off (the history was
// loaded, not captured); payloads are left alone.
func runRetention(ctx context.Context, db *benchDB, cutoff time.Time) (RetentionRun, error) {
	var lsn0 string
	if err := db.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn0); err != nil {
		return RetentionRun{}, err
	}
	job := retention.New(retention.Config{
		Pool: db.pool, Logger: zerolog.Nop(), Retention: time.Since(cutoff),
		PayloadRetention: -1, Slot: "bench_no_such_slot",
	})
	t := time.Now()
	r, err := job.Run(ctx)
	if err != nil {
		return RetentionRun{}, err
	}
	out := RetentionRun{Seconds: time.Since(t).Seconds(), Events: r.Events, Partitions: r.Partitions}
	if err := db.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint`, lsn0).Scan(&out.WALBytes); err != nil {
		return out, err
	}
	return out, nil
}

// historyDrain commits res.DrainEvents events while relay is stopped, then
// starts relay, calls during (if any) and returns the deliveries per second
// until all are recorded.
func (b *runner) historyDrain(ctx context.Context, db *benchDB, args []string, tag string, res *HistoryResult, during func()) (float64, error) {
	ids, err := insertBulk(ctx, db.pool, res.DrainEvents, 1000)
	if err != nil {
		return 0, err
	}
	if err := b.recv.reset(ctx); err != nil {
		return 0, err
	}
	var before int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded' AND created_at > now() - interval '1 hour'`).Scan(&before); err != nil {
		return 0, err
	}
	want := len(ids) * res.Subscriptions
	rp, err := b.startRelayArgs(args, tag)
	if err != nil {
		return 0, err
	}
	defer rp.stop(30 * time.Second)
	if during != nil {
		during()
	}
	timeout := time.Minute + time.Duration(want)*time.Second/500
	if _, err := b.recv.waitReceived(ctx, want, timeout); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM relay.deliveries AS d JOIN relay.outbox AS o ON o.event_id = d.event_id
			WHERE d.status = 'succeeded' AND o.event_id = ANY($1::uuid[])`, ids).Scan(&n); err != nil {
			return 0, err
		}
		if n >= want {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("only %d of %d deliveries recorded", n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return float64(want) / time.Since(rp.started).Seconds(), nil
}

// historyRows are the history scenario's lines of the summary table.
func (h *HistoryResult) rows() [][]string {
	var rows [][]string
	for _, l := range h.Layouts {
		name := fmt.Sprintf("history, %s (%s attempts, %d partitions with the days ahead)", l.Layout, num(float64(h.Attempts)), l.Partitions)
		rows = append(rows,
			[]string{name + ": one subscription's last 50 attempts p50 / p95 / max", fmt.Sprintf("%.2f / %.2f / %.2f ms", l.Log.P50MS, l.Log.P95MS, l.Log.MaxMS), "", "", "", ""},
			[]string{name + ": 24 h stats of one subscription p50 / p95 / max", fmt.Sprintf("%.2f / %.2f / %.2f ms", l.Stats.P50MS, l.Stats.P95MS, l.Stats.MaxMS), "", "", "", ""},
			[]string{name + ": retention of one day alone: wall, WAL, events", fmt.Sprintf("%.2f s, %s, %s events, partitions dropped %v",
				l.Retention.Seconds, mib(l.Retention.WALBytes), num(float64(l.Retention.Events)), shortNames(l.Retention.Partitions)), "", "", "", ""},
			[]string{name + ": drain alone / during retention of the next day (deliveries/s)", fmt.Sprintf("%s / %s (retention then took %.2f s)",
				num(l.DrainAlonePerSec), num(l.DrainDuringRetentionPerSec), l.RetentionDuringDrain.Seconds), "", "", "", ""},
		)
	}
	if p := h.Deliveries; p != nil {
		rows = append(rows, []string{fmt.Sprintf("history: UPDATE of %d deliveries by id (the recorder's shape), %s rows, plain vs %d daily partitions",
			p.Batch, num(float64(p.Rows)), p.Partitions),
			fmt.Sprintf("%.2f ms vs %.2f ms per batch", p.PlainMS, p.PartedMS), "", "", "", ratio(p.PartedMS, p.PlainMS) + "× the plain table"})
	}
	return rows
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB WAL", float64(b)/(1<<20)) }

func shortNames(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.TrimPrefix(n, "relay.")
	}
	return out
}

// DeliveriesProbe compares the recorder's kind of statement, an UPDATE of
// a batch of deliveries by id, on a plain table and on the same rows
// partitioned by day of created_at: what partitioning relay.deliveries
// would cost on the hot path, where every statement names deliveries by id
// only (claim, record, redeliver) and so must look in every partition.
type DeliveriesProbe struct {
	Rows       int     `json:"rows"`
	Partitions int     `json:"partitions"`
	Batch      int     `json:"batch"`
	Batches    int     `json:"batches"`
	PlainMS    float64 `json:"plain_ms_per_batch"`
	PartedMS   float64 `json:"partitioned_ms_per_batch"`
}

// probeDeliveries runs the DeliveriesProbe on db with rows rows over
// `days` daily partitions.
func probeDeliveries(ctx context.Context, db *benchDB, rows, days int) (DeliveriesProbe, error) {
	p := DeliveriesProbe{Rows: rows, Partitions: days, Batch: 500, Batches: 100}
	stmts := []string{
		`CREATE TABLE bench_deliveries_plain (id bigint PRIMARY KEY, created_at timestamptz NOT NULL,
			status text NOT NULL, attempts int NOT NULL, locked_by text, last_response text)`,
		`CREATE TABLE bench_deliveries_parted (id bigint NOT NULL, created_at timestamptz NOT NULL,
			status text NOT NULL, attempts int NOT NULL, locked_by text, last_response text,
			PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
	}
	start := historyStart(days - 1)
	for d := range days {
		lo := start.AddDate(0, 0, d)
		stmts = append(stmts, fmt.Sprintf(`CREATE TABLE bench_deliveries_parted_%d PARTITION OF bench_deliveries_parted
			FOR VALUES FROM ('%s') TO ('%s')`, d, lo.Format(time.RFC3339), lo.AddDate(0, 0, 1).Format(time.RFC3339)))
	}
	for _, t := range []string{"bench_deliveries_plain", "bench_deliveries_parted"} {
		stmts = append(stmts, `INSERT INTO `+t+` SELECT g, $1::timestamptz + (g * $2::interval), 'succeeded', 1, NULL, 'ok'
			FROM generate_series(1, $3::int) AS g`, `VACUUM ANALYZE `+t)
	}
	span := time.Since(start) - time.Minute
	for _, s := range stmts {
		var err error
		if strings.Contains(s, "$1") {
			_, err = db.pool.Exec(ctx, s, start, span/time.Duration(rows), rows)
		} else {
			_, err = db.pool.Exec(ctx, s)
		}
		if err != nil {
			return p, fmt.Errorf("deliveries probe: %w", err)
		}
	}
	// Batches of the newest rows, as the recorder sees them.
	for _, t := range []struct {
		table string
		out   *float64
	}{{"bench_deliveries_plain", &p.PlainMS}, {"bench_deliveries_parted", &p.PartedMS}} {
		sql := `UPDATE ` + t.table + ` AS d SET status = 'succeeded', attempts = d.attempts + 1, locked_by = NULL
			FROM unnest($1::bigint[]) AS r(id) WHERE d.id = r.id`
		var total time.Duration
		for i := range p.Batches + 1 {
			ids := make([]int64, p.Batch)
			for j := range ids {
				ids[j] = int64(rows - (i*p.Batch+j)%(rows/10))
			}
			t0 := time.Now()
			if _, err := db.pool.Exec(ctx, sql, ids); err != nil {
				return p, fmt.Errorf("deliveries probe: %w", err)
			}
			if i > 0 { // the first one warms the plan and the cache
				total += time.Since(t0)
			}
		}
		*t.out = ms(total) / float64(p.Batches)
	}
	for _, t := range []string{"bench_deliveries_plain", "bench_deliveries_parted"} {
		if _, err := db.pool.Exec(ctx, `DROP TABLE `+t); err != nil {
			return p, err
		}
	}
	return p, nil
}
