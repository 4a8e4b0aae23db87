package pgtest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DailyAttemptPartitions gives a fresh database the partition layout of an
// install that has run for `days` days: one partition of
// relay.delivery_attempts per UTC day from `days` days ago to 3 days ahead.
// A fresh database has instead one first partition covering everything up
// to the day after tomorrow (migration 000006), in which no query can skip
// anything. The history must be empty.
func (db *DB) DailyAttemptPartitions(tb testing.TB, days int) {
	tb.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.delivery_attempts`).Scan(&n); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if n != 0 {
		tb.Fatalf("pgtest: DailyAttemptPartitions needs an empty history, it holds %d attempts", n)
	}
	db.Exec(tb, `DO $$
		DECLARE p regclass;
		BEGIN
			FOR p IN SELECT partition FROM relay.attempt_partitions() LOOP
				EXECUTE format('DROP TABLE %s', p);
			END LOOP;
		END $$`)
	db.Exec(tb, `SELECT relay.create_attempt_partition(d::date)
		FROM generate_series((now() AT TIME ZONE 'UTC')::date - $1::int, (now() AT TIME ZONE 'UTC')::date, interval '1 day') AS d`, days)
	db.Exec(tb, `SELECT relay.prepare_attempt_partitions(3)`)
}

// AttemptPartitionsFor gives db a partition of relay.delivery_attempts for
// each UTC day from `from` to `to`, for a test whose clock is set far from
// now: an attempt can be recorded only in a partition of its day, and relay
// creates them only around the real date.
func (db *DB) AttemptPartitionsFor(tb testing.TB, from, to time.Time) {
	tb.Helper()
	db.Exec(tb, `SELECT relay.create_attempt_partition(d::date)
		FROM generate_series($1::date, $2::date, interval '1 day') AS d`, from.UTC(), to.UTC())
}

// Plans collects the plans of the statements run on an ExplainingPool.
type Plans struct {
	mu    sync.Mutex
	plans []map[string]any
}

// ExplainingPool returns a pool on db whose sessions send back, as a
// notice, the EXPLAIN ANALYZE plan of every statement they run
// (auto_explain), so a test can check the plan of the very query a
// package runs. It needs a superuser (LOAD); the test is skipped otherwise.
func (db *DB) ExplainingPool(tb testing.TB) (*pgxpool.Pool, *Plans) {
	tb.Helper()
	plans := &Plans{}
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	cfg.MaxConns = 1
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		i := strings.IndexByte(n.Message, '{')
		if i < 0 {
			return
		}
		var p map[string]any
		if json.Unmarshal([]byte(n.Message[i:]), &p) == nil {
			plans.mu.Lock()
			plans.plans = append(plans.plans, p)
			plans.mu.Unlock()
		}
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, `LOAD 'auto_explain';
			SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;
			SET auto_explain.log_timing = off; SET auto_explain.log_format = json;
			SET auto_explain.log_level = notice`)
		return err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err == nil {
		err = pool.Ping(context.Background())
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		var pe *pgconn.PgError
		if strings.Contains(err.Error(), "auto_explain") || (errors.As(err, &pe) && pe.Code == "42501") {
			tb.Skipf("pgtest: auto_explain is not available to this role: %v", err)
		}
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool, plans
}

// Reset forgets the plans collected so far.
func (p *Plans) Reset() {
	p.mu.Lock()
	p.plans = nil
	p.mu.Unlock()
}

// Matching returns the plans of the statements whose text contains s.
func (p *Plans) Matching(s string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, pl := range p.plans {
		if q, _ := pl["Query Text"].(string); strings.Contains(q, s) {
			out = append(out, pl)
		}
	}
	return out
}

// ExecutedRelations lists the relations a plan read, in plan order: the
// scans that ran at least once. Partitions pruned at plan time or at
// executor start-up are not in the plan at all; those an ordered Append
// never reached show "never executed" (no loops) and are left out too.
func ExecutedRelations(plan map[string]any) []string {
	var out []string
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		if rel, ok := n["Relation Name"].(string); ok {
			if loops, _ := n["Actual Loops"].(float64); loops > 0 {
				out = append(out, rel)
			}
		}
		if kids, ok := n["Plans"].([]any); ok {
			for _, k := range kids {
				if m, ok := k.(map[string]any); ok {
					walk(m)
				}
			}
		}
	}
	if root, ok := plan["Plan"].(map[string]any); ok {
		walk(root)
	}
	return out
}
