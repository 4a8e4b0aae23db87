package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The capture scenario measures the stage relay cannot scale out by adding
// relays: logical decoding of relay.outbox by one walsender. It decodes the
// same WAL through pgoutput on the server (pg_logical_slot_get_binary_changes,
// the walsender's decoding and output plugin without the network), for
// events committed one per transaction and 100 per transaction, and then
// through two slots whose publications keep half the rows each by a hash of
// key (PostgreSQL 15 row filters), decoded at the same time: the sharded
// capture docs/scaling.md discusses.

// CaptureResult is the capture scenario's report.
type CaptureResult struct {
	OneRow     DecodeRun `json:"one_row_transactions"`
	HundredRow DecodeRun `json:"hundred_row_transactions"`
}

// DecodeRun is one workload's decoding figures.
type DecodeRun struct {
	Events       int     `json:"events"`
	Transactions int     `json:"transactions"`
	WALBytes     int64   `json:"wal_bytes"`
	CommitSecs   float64 `json:"commit_seconds"`
	// OneSlot is the time to decode every event through one slot.
	OneSlotSecs      float64    `json:"one_slot_seconds"`
	OneSlotPerSec    float64    `json:"one_slot_events_per_sec"`
	TwoShardsSecs    float64    `json:"two_shards_seconds"`
	TwoShardsPerSec  float64    `json:"two_shards_events_per_sec"`
	ShardSecs        [2]float64 `json:"shard_seconds"`
	ShardEventCounts [2]int     `json:"shard_events"`
}

// shardFilter is the row filter of capture shard i of 2.
func shardFilter(i int) string {
	return fmt.Sprintf("WHERE ((hashtext(coalesce(key, '')) & 1) = %d)", i)
}

func (b *runner) capture(ctx context.Context) error {
	db, err := b.newDB(ctx, "capture")
	if err != nil {
		return err
	}
	defer db.drop()
	setup := []string{
		`CREATE PUBLICATION bench_all FOR TABLE relay.outbox WITH (publish = 'insert')`,
		`CREATE PUBLICATION bench_s0 FOR TABLE relay.outbox ` + shardFilter(0) + ` WITH (publish = 'insert')`,
		`CREATE PUBLICATION bench_s1 FOR TABLE relay.outbox ` + shardFilter(1) + ` WITH (publish = 'insert')`,
	}
	for _, slot := range []string{"all", "s0", "s1"} {
		setup = append(setup, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s_%s', 'pgoutput')`, db.name, slot))
	}
	for _, s := range setup {
		if _, err := db.pool.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	res := &CaptureResult{}
	b.report.Capture = res
	// 1-row transactions are committed by 4 connections (as fast as the
	// server commits); a quarter of the events suffices to time them.
	oneRow := max(b.cfg.CaptureEvents/4, 1000)
	b.progress("capture: committing %d events, one per transaction", oneRow)
	l0, l1, secs, err := commitEvents(ctx, db.pool, oneRow, 1)
	if err != nil {
		return err
	}
	res.OneRow = DecodeRun{Events: oneRow, Transactions: oneRow, CommitSecs: secs}
	b.progress("capture: committing %d events, 100 per transaction", b.cfg.CaptureEvents)
	_, l2, secs, err := commitEvents(ctx, db.pool, b.cfg.CaptureEvents, 100)
	if err != nil {
		return err
	}
	res.HundredRow = DecodeRun{Events: b.cfg.CaptureEvents, Transactions: b.cfg.CaptureEvents / 100, CommitSecs: secs}
	for _, w := range []struct {
		run      *DecodeRun
		from, to string
	}{{&res.OneRow, l0, l1}, {&res.HundredRow, l1, l2}} {
		if err := db.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint`, w.to, w.from).Scan(&w.run.WALBytes); err != nil {
			return err
		}
		b.progress("capture: decoding %d events through one slot, then two shards at once", w.run.Events)
		n, d, err := decode(ctx, db.pool, db.name+"_all", "bench_all", w.to)
		if err != nil {
			return err
		}
		if n != w.run.Events {
			return fmt.Errorf("one slot decoded %d events, want %d", n, w.run.Events)
		}
		w.run.OneSlotSecs = d.Seconds()
		w.run.OneSlotPerSec = float64(w.run.Events) / d.Seconds()
		var wg sync.WaitGroup
		var errs [2]error
		t := time.Now()
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, d, err := decode(ctx, db.pool, fmt.Sprintf("%s_s%d", db.name, i), fmt.Sprintf("bench_s%d", i), w.to)
				w.run.ShardEventCounts[i], w.run.ShardSecs[i], errs[i] = n, d.Seconds(), err
			}()
		}
		wg.Wait()
		w.run.TwoShardsSecs = time.Since(t).Seconds()
		w.run.TwoShardsPerSec = float64(w.run.Events) / w.run.TwoShardsSecs
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		if got := w.run.ShardEventCounts[0] + w.run.ShardEventCounts[1]; got != w.run.Events {
			return fmt.Errorf("the two shards decoded %d events, want %d", got, w.run.Events)
		}
	}
	return nil
}

// commitEvents commits n events with keys k0…, perTx per transaction, on
// 4 connections, and returns the WAL positions before and after and the
// time it took.
func commitEvents(ctx context.Context, pool *pgxpool.Pool, n, perTx int) (from, to string, secs float64, err error) {
	if err := pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&from); err != nil {
		return "", "", 0, err
	}
	const workers = 4
	var wg sync.WaitGroup
	var errs [workers]error
	t := time.Now()
	txs := n / perTx
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < txs; i += workers {
				_, err := pool.Exec(ctx, `INSERT INTO relay.outbox (event_type, key, payload)
					SELECT 'thread.created', 'k' || g, '{"seq": 1, "title": "capture"}'
					FROM generate_series($1::int, $2::int - 1) AS g`, i*perTx, (i+1)*perTx)
				if err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	secs = time.Since(t).Seconds()
	for _, err := range errs {
		if err != nil {
			return "", "", 0, fmt.Errorf("committing events: %w", err)
		}
	}
	// A WAL message after the last commit marks where the workload ends:
	// decoding up to it includes every commit before it.
	if err := pool.QueryRow(ctx, `SELECT pg_logical_emit_message(false, 'relay-bench', 'end')::text`).Scan(&to); err != nil {
		return "", "", 0, err
	}
	// Decoding reads only flushed WAL: with synchronous_commit off, the
	// last commits may not be yet.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var flushed bool
		if err := pool.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn`, to).Scan(&flushed); err != nil {
			return "", "", 0, err
		}
		if flushed {
			break
		}
		if time.Now().After(deadline) {
			return "", "", 0, fmt.Errorf("the WAL was not flushed up to %s within 30s", to)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return from, to, secs, nil
}

// decode consumes slot up to lsn through pgoutput with publication and
// returns how many inserts it produced and how long it took.
func decode(ctx context.Context, pool *pgxpool.Pool, slot, publication, upto string) (int, time.Duration, error) {
	t := time.Now()
	var n int
	// pgoutput's first byte tells the message; 'I' is an insert.
	err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE get_byte(data, 0) = 73)
		FROM pg_logical_slot_get_binary_changes($1, $2::pg_lsn, NULL, 'proto_version', '1', 'publication_names', $3)`,
		slot, upto, publication).Scan(&n)
	if err != nil {
		return 0, 0, fmt.Errorf("decoding %s: %w", slot, err)
	}
	return n, time.Since(t), nil
}

// rows are the capture scenario's lines of the summary table.
func (c *CaptureResult) rows() [][]string {
	var rows [][]string
	for _, r := range []struct {
		name string
		run  DecodeRun
	}{{"1-row transactions", c.OneRow}, {"100-row transactions", c.HundredRow}} {
		x := r.run
		rows = append(rows,
			[]string{fmt.Sprintf("capture: logical decoding (pgoutput, server side), %s: events/s", r.name),
				fmt.Sprintf("%s (%s events in %.2f s; %s; committed at %s/s)", num(x.OneSlotPerSec), num(float64(x.Events)), x.OneSlotSecs,
					mib(x.WALBytes), num(float64(x.Events)/x.CommitSecs)), "", "", "", ""},
			[]string{fmt.Sprintf("capture: 2 shards by hash of key, decoded at once, %s: events/s", r.name),
				fmt.Sprintf("%s (%.2f s; shards %.2f s and %.2f s for %s + %s events) vs 1 slot %s", num(x.TwoShardsPerSec), x.TwoShardsSecs,
					x.ShardSecs[0], x.ShardSecs[1], num(float64(x.ShardEventCounts[0])), num(float64(x.ShardEventCounts[1])), num(x.OneSlotPerSec)),
				"", "", "", ratio(x.TwoShardsPerSec, x.OneSlotPerSec) + "× of 1 slot"},
		)
	}
	return rows
}
