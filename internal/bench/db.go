package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/relay/internal/pgcluster"
	"github.com/pgoutbox/relay/migrations"
)

// startCluster starts a throwaway PostgreSQL under dir with the settings
// `relay run` gives its embedded server, and returns its admin URL.
func startCluster(ctx context.Context, dir string) (*pgcluster.Cluster, string, error) {
	c, err := pgcluster.New(ctx, pgcluster.Config{
		DataDir: filepath.Join(dir, "pgdata"),
		LogFile: filepath.Join(dir, "postgres.log"),
	})
	if err != nil {
		return nil, "", err
	}
	if err := c.Start(ctx); err != nil {
		return nil, "", err
	}
	return c, c.URL("postgres"), nil
}

// benchDB is one scenario's database: created fresh, migrated, dropped after.
type benchDB struct {
	name  string
	url   string
	pool  *pgxpool.Pool
	admin string
}

// databaseURL is u with its database replaced by name.
func databaseURL(u, name string) (string, error) {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
		return "", fmt.Errorf("--database-url must be a postgres:// URL (the benchmark creates its own databases on that server)")
	}
	p.Path = "/" + name
	return p.String(), nil
}

// newDB creates and migrates a database named after the scenario. The
// allow_http setting is turned on: the receiver listens on http://127.0.0.1.
func (b *runner) newDB(ctx context.Context, scenario string) (*benchDB, error) {
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name := fmt.Sprintf("relay_bench_%s_%s", scenario, hex.EncodeToString(suffix))
	u, err := databaseURL(b.adminURL, name)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", redact(b.adminURL), err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	// A checkpoint now keeps one from landing in the middle of the
	// measurement (it needs superuser; without it, the run is just noisier).
	_, _ = conn.Exec(ctx, "CHECKPOINT")
	conn.Close(context.Background())
	if err != nil {
		return nil, fmt.Errorf("creating database %s (the role needs CREATEDB): %w", name, err)
	}
	db := &benchDB{name: name, url: u, admin: b.adminURL}
	if err := migrations.Up(ctx, u); err != nil {
		db.drop()
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		db.drop()
		return nil, err
	}
	cfg.MaxConns = 32
	if db.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		db.drop()
		return nil, err
	}
	if _, err := db.pool.Exec(ctx, `UPDATE relay.settings SET allow_http = true`); err != nil {
		db.drop()
		return nil, err
	}
	return db, nil
}

// drop removes the database and its replication slots.
func (db *benchDB) drop() {
	if db.pool != nil {
		db.pool.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.admin)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	for i := 0; i < 50; i++ {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active`, db.name)
		_, _ = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, db.name)
		var n int
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, db.name).Scan(&n)
		if n == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db.name}.Sanitize()+" WITH (FORCE)")
}

// subscribe adds n subscriptions matching every event. With n == 1 the URL
// is base/hook; otherwise base/s/<i>, so the receiver tells them apart.
func (db *benchDB) subscribe(ctx context.Context, base string, n int) error {
	return db.subscribeFiltered(ctx, base, n, "")
}

// subscribeFiltered is subscribe with a payload filter on every
// subscription ("" for none). The filter must pass every benchmark event:
// it is checked on one first, so a run cannot wait for deliveries fan-out
// rightly never makes.
func (db *benchDB) subscribeFiltered(ctx context.Context, base string, n int, filter string) error {
	if filter != "" {
		var passes bool
		err := db.pool.QueryRow(ctx, `SELECT relay.payload_matches($1::jsonb, $2::jsonpath, relay.jsonpath_is_predicate($2::jsonpath))`,
			payload(0), filter).Scan(&passes)
		if err != nil {
			return fmt.Errorf("fan-out filter %q: %w", filter, err)
		}
		if !passes {
			return fmt.Errorf("fan-out filter %q: the benchmark's events do not pass it (they look like %s)", filter, payload(0))
		}
	}
	if n == 1 {
		_, err := db.pool.Exec(ctx, `INSERT INTO relay.subscriptions (name, url, event_types, filter) VALUES ('bench', $1, '{*}', nullif($2, '')::jsonpath)`,
			base+"/hook", filter)
		return err
	}
	_, err := db.pool.Exec(ctx, `
		INSERT INTO relay.subscriptions (name, url, event_types, filter)
		SELECT 'bench-' || i, $1 || '/s/' || i, '{*}', nullif($3, '')::jsonpath FROM generate_series(1, $2) AS i`, base, n, filter)
	return err
}

// waitStreaming waits until a relay holds the slot.
func (db *benchDB) waitStreaming(ctx context.Context, slot string, rp *relayProc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		// The slot is active while it is being created too: wait for a
		// walsender that streams it.
		var active bool
		err := db.pool.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM pg_replication_slots AS s JOIN pg_stat_replication AS r ON r.pid = s.active_pid
			               WHERE s.slot_name = $1 AND r.state = 'streaming')`, slot).Scan(&active)
		if err != nil {
			return err
		}
		if active {
			return nil
		}
		if !rp.running() {
			return fmt.Errorf("relay exited during start-up; see %s", rp.log.Name())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay did not start streaming within %s; see %s", timeout, rp.log.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRecorded waits until want deliveries have succeeded and have an
// attempt row each.
func (db *benchDB) waitRecorded(ctx context.Context, want int, timeout time.Duration) (time.Time, int, error) {
	deadline := time.Now().Add(timeout)
	for {
		var succeeded, attempts int
		err := db.pool.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'),
			       (SELECT count(*) FROM relay.delivery_attempts)`).Scan(&succeeded, &attempts)
		now := time.Now()
		if err != nil {
			return now, 0, err
		}
		if succeeded >= want && attempts >= want {
			return now, attempts, nil
		}
		if now.After(deadline) {
			return now, attempts, fmt.Errorf("only %d of %d deliveries recorded as succeeded (%d attempts) within %s", succeeded, want, attempts, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverVersion is the server's version string, for the report.
func (b *runner) serverVersion(ctx context.Context) string {
	conn, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		return "unknown"
	}
	defer conn.Close(context.Background())
	var v string
	_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&v)
	return v
}

// redact hides the password of a URL.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

func tempDir() (string, error) {
	d, err := os.MkdirTemp("", "relay-bench-")
	if err != nil {
		return "", err
	}
	return d, os.Chmod(d, 0o755)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// walLSN is the server's current WAL write position, in bytes.
func (db *benchDB) walLSN(ctx context.Context) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0')::bigint`).Scan(&n)
	return n, err
}

// transactions is how many transactions the server has counted as
// committed in this database (a statement outside a transaction block is
// one). Rolled-back ones are left out: the walsender counts one for every
// transaction it decodes (it reads the catalogs in a transaction it then
// aborts), which would add the producers' and relay's own transactions a
// second time. PostgreSQL counts a session's transactions only from time
// to time and when it ends, so for an exact figure settle first.
func (db *benchDB) transactions(ctx context.Context) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT pg_stat_clear_snapshot(), xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(nil, &n)
	return n, err
}

// settledTransactions closes the benchmark's own sessions and waits until
// no other session is left in the database (relay must have stopped), so
// that every transaction they made is counted, then reads the count.
func (db *benchDB) settledTransactions(ctx context.Context) (int64, error) {
	db.pool.Reset()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var others int
		err := db.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type IN ('client backend', 'walsender')`).Scan(&others)
		if err != nil {
			return 0, err
		}
		if others == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d sessions still in %s after 30s", others, db.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return db.transactions(ctx)
}
