// Package migrations holds relay's SQL schema, embedded in the binary, and
// applies it with golang-migrate. The schema lives in the "relay" schema; the
// migration bookkeeping table is public.relay_schema_migrations so that
// migrating down (which drops the relay schema) keeps its own history.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed sql/*.sql
var files embed.FS

// MigrationsTable is the table golang-migrate keeps its version in.
const MigrationsTable = "relay_schema_migrations"

// Latest is the newest schema version this binary knows. A test checks that
// it matches the newest file under sql/.
const Latest uint = 9

// Status describes where a database stands.
type Status struct {
	// Version is the applied version, 0 when nothing is applied.
	Version uint
	// Dirty is true when a migration failed half-way and needs a person.
	Dirty bool
	// Latest is the newest version this binary can apply.
	Latest uint
}

// Pending reports whether Up would change the database.
func (s Status) Pending() bool { return s.Version < s.Latest }

// Up applies every migration not yet applied. Concurrent calls from several
// processes are safe: golang-migrate holds an advisory lock while it works.
// An up-to-date database is not an error.
func Up(ctx context.Context, databaseURL string) error {
	return run(ctx, databaseURL, func(m *migrate.Migrate) error { return m.Up() })
}

// UpTo applies or reverts migrations until the database is at version v:
// for tests that need an older schema (an install being upgraded) and for
// operators stepping through an upgrade.
func UpTo(ctx context.Context, databaseURL string, v uint) error {
	if v == 0 || v > Latest {
		return fmt.Errorf("migrating: version %d does not exist (want 1 to %d)", v, Latest)
	}
	return run(ctx, databaseURL, func(m *migrate.Migrate) error { return m.Migrate(v) })
}

// Down reverts every migration, removing the relay schema and its data.
func Down(ctx context.Context, databaseURL string) error {
	return run(ctx, databaseURL, func(m *migrate.Migrate) error { return m.Down() })
}

// GetStatus reads the applied version.
func GetStatus(ctx context.Context, databaseURL string) (Status, error) {
	st := Status{Latest: Latest}
	err := run(ctx, databaseURL, func(m *migrate.Migrate) error {
		v, dirty, err := m.Version()
		if errors.Is(err, migrate.ErrNilVersion) {
			return nil
		}
		if err != nil {
			return err
		}
		st.Version, st.Dirty = v, dirty
		return nil
	})
	return st, err
}

// FileVersions lists the versions of the embedded migration files, sorted.
func FileVersions() ([]uint, error) {
	entries, err := fs.ReadDir(files, "sql")
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`^(\d+)_.*\.up\.sql$`)
	var out []uint
	for _, e := range entries {
		if m := re.FindStringSubmatch(e.Name()); m != nil {
			v, err := strconv.ParseUint(m[1], 10, 32)
			if err != nil {
				return nil, err
			}
			out = append(out, uint(v))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func run(ctx context.Context, databaseURL string, fn func(*migrate.Migrate) error) error {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("parsing database URL: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("connecting to database: %w", err)
	}
	m, err := newMigrate(db)
	if err != nil {
		return err
	}
	// Closing m also closes db through the driver; db.Close above is then a no-op.
	defer m.Close()
	done := make(chan error, 1)
	go func() { done <- fn(m) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		m.GracefulStop <- true
		err = <-done
		if err == nil {
			err = ctx.Err()
		}
	}
	if errors.Is(err, migrate.ErrNoChange) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	return nil
}

func newMigrate(db *sql.DB) (*migrate.Migrate, error) {
	src, err := iofs.New(files, "sql")
	if err != nil {
		return nil, fmt.Errorf("reading embedded migrations: %w", err)
	}
	drv, err := migratepgx.WithInstance(db, &migratepgx.Config{MigrationsTable: MigrationsTable})
	if err != nil {
		return nil, fmt.Errorf("preparing migration driver: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		return nil, fmt.Errorf("preparing migrations: %w", err)
	}
	return m, nil
}
