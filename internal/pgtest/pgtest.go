// Package pgtest gives each test its own PostgreSQL database with relay's
// migrations applied. It is imported only from _test.go files.
//
// The server is found in this order (DESIGN.md §7):
//  1. RELAY_TEST_DATABASE_URL, an existing server (the role needs CREATEDB
//     and REPLICATION);
//  2. a container through dockertest when RELAY_TEST_DOCKER=1;
//  3. a throwaway cluster made with the local initdb/postgres on a free port,
//     started once per test binary and removed when it exits.
//
// Each test database is copied from a template that already holds the
// migrated schema, which takes a few milliseconds instead of a migration run.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/relay/internal/pgcluster"
	"github.com/pgoutbox/relay/migrations"
)

// Server is the PostgreSQL server a test binary uses.
type Server struct {
	// AdminURL connects to a maintenance database as a role that can create
	// databases and replication slots.
	AdminURL string
	// Cluster is the local cluster, nil for an external server or container.
	Cluster *pgcluster.Cluster

	template string
	stop     func()
}

var (
	startOnce sync.Once
	server    *Server
	startErr  error
	dbSeq     atomic.Int64
)

// Main runs the tests and then stops the server if one was started. Call it
// from TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if server != nil && server.stop != nil {
		server.stop()
	}
	os.Exit(code)
}

// Start returns the shared server, starting it on first use.
func Start(tb testing.TB) *Server {
	tb.Helper()
	startOnce.Do(func() { server, startErr = start() })
	if startErr != nil {
		tb.Fatalf("pgtest: no PostgreSQL server: %v", startErr)
	}
	return server
}

func start() (*Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var s *Server
	var err error
	switch {
	case os.Getenv("RELAY_TEST_DATABASE_URL") != "":
		s = &Server{AdminURL: os.Getenv("RELAY_TEST_DATABASE_URL")}
	case os.Getenv("RELAY_TEST_DOCKER") == "1":
		s, err = startDocker(ctx)
	default:
		s, err = startLocal(ctx)
	}
	if err != nil {
		return nil, err
	}
	s.template = fmt.Sprintf("relay_tpl_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if err := s.createTemplate(ctx); err != nil {
		if s.stop != nil {
			s.stop()
		}
		return nil, err
	}
	prevStop := s.stop
	s.stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if s.Cluster == nil {
			_ = s.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{s.template}.Sanitize()+" WITH (FORCE)")
		}
		if prevStop != nil {
			prevStop()
		}
	}
	return s, nil
}

func startLocal(ctx context.Context) (*Server, error) {
	dir, err := os.MkdirTemp("", "relay-pgtest-")
	if err != nil {
		return nil, err
	}
	c, err := pgcluster.New(ctx, pgcluster.Config{
		DataDir: dir + "/data",
		// A test cluster trades durability for speed; crash tests kill the
		// relay, never the server, and Restart stops it cleanly.
		Settings: map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Server{
		AdminURL: c.URL("postgres"),
		Cluster:  c,
		stop: func() {
			_ = c.Stop()
			os.RemoveAll(dir)
		},
	}, nil
}

func (s *Server) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.AdminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func (s *Server) createTemplate(ctx context.Context) error {
	if err := s.exec(ctx, "CREATE DATABASE "+pgx.Identifier{s.template}.Sanitize()); err != nil {
		return fmt.Errorf("creating template database: %w", err)
	}
	if err := migrations.Up(ctx, s.URL(s.template)); err != nil {
		return fmt.Errorf("migrating template database: %w", err)
	}
	return nil
}

// URL is the connection string of a database on this server.
func (s *Server) URL(database string) string {
	u, err := url.Parse(s.AdminURL)
	if err != nil || u.Scheme == "" {
		// A key=value connection string.
		return s.AdminURL + " dbname=" + database
	}
	u.Path = "/" + database
	return u.String()
}

// DB is one test's database.
type DB struct {
	Name string
	URL  string
	Pool *pgxpool.Pool
	srv  *Server
}

// Options change how NewDB prepares a database.
type Options struct {
	// Empty skips the migrations: the database starts with no relay schema.
	Empty bool
}

// NewDB creates a fresh database with relay's schema for this test and drops
// it (with its replication slots) when the test ends.
func NewDB(tb testing.TB) *DB { return NewDBWith(tb, nil) }

// NewDBWith is NewDB with options (nil allowed).
func NewDBWith(tb testing.TB, opts *Options) *DB {
	tb.Helper()
	s := Start(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("relay_t_%d_%d", os.Getpid(), dbSeq.Add(1))
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if opts == nil || !opts.Empty {
		stmt += " TEMPLATE " + pgx.Identifier{s.template}.Sanitize()
	}
	if err := s.exec(ctx, stmt); err != nil {
		tb.Fatalf("pgtest: creating database: %v", err)
	}
	db := &DB{Name: name, URL: s.URL(name), srv: s}
	pool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		tb.Fatalf("pgtest: connecting: %v", err)
	}
	db.Pool = pool
	tb.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db.dropSlots(ctx)
		if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Logf("pgtest: dropping database %s: %v", name, err)
		}
	})
	return db
}

// dropSlots removes this database's replication slots, ending the sessions
// that still use them, since a database with slots cannot be dropped.
func (db *DB) dropSlots(ctx context.Context) {
	for i := 0; i < 50; i++ {
		err := db.srv.exec(ctx, `
			SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active`, db.Name)
		if err == nil {
			err = db.srv.exec(ctx, `
				SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, db.Name)
		}
		var n int
		conn, cerr := pgx.Connect(ctx, db.srv.AdminURL)
		if cerr == nil {
			_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, db.Name).Scan(&n)
			conn.Close(ctx)
		}
		if err == nil && n == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Exec runs SQL on this test's database and fails the test on error.
func (db *DB) Exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	if _, err := db.Pool.Exec(context.Background(), sql, args...); err != nil {
		tb.Fatalf("pgtest: %s: %v", firstLine(sql), err)
	}
}

// Restart restarts the local cluster (all tests of the binary see it). Tests
// that need it are skipped against an external server.
func (db *DB) Restart(tb testing.TB) {
	tb.Helper()
	if db.srv.Cluster == nil {
		tb.Skip("pgtest: restarting needs the local cluster")
	}
	if err := db.srv.Cluster.Restart(context.Background()); err != nil {
		tb.Fatalf("pgtest: restarting cluster: %v", err)
	}
}

// Server is the server this database lives on.
func (db *DB) Server() *Server { return db.srv }

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
