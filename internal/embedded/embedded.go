// Package embedded runs the PostgreSQL that `relay run` starts for itself
// when no database URL is given: a cluster from the locally installed server
// binaries, with its data kept in a directory so that a restart finds the
// same events, subscriptions and replication slot.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/relay/internal/pgcluster"
)

// DefaultPort is where the embedded server listens unless told otherwise:
// a fixed port keeps the printed connection string valid across restarts.
const DefaultPort = 54329

// Database is the database relay creates and uses in the embedded server.
const Database = "relay"

// Config configures an embedded server.
type Config struct {
	// DataDir holds the cluster (default ./relay-data).
	DataDir string
	// Port on 127.0.0.1 (default DefaultPort; 0 picks a free one).
	Port int
	// Settings are extra server settings.
	Settings map[string]string
}

// Server is a running embedded PostgreSQL.
type Server struct {
	cluster *pgcluster.Cluster
	url     string
}

// Start initialises the data directory on first use and starts the server.
// It returns pgcluster.ErrNoBinaries, which says how to install them, when
// initdb and postgres cannot be found.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "relay-data"
	}
	if cfg.Port == 0 {
		p, err := pgcluster.FreePort()
		if err != nil {
			return nil, err
		}
		cfg.Port = p
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", abs, err)
	}
	c, err := pgcluster.New(ctx, pgcluster.Config{
		DataDir:  filepath.Join(abs, "pgdata"),
		Port:     cfg.Port,
		Settings: cfg.Settings,
		LogFile:  filepath.Join(abs, "postgres.log"),
	})
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	s := &Server{cluster: c, url: c.URL(Database)}
	if err := s.ensureDatabase(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) ensureDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.cluster.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "CREATE DATABASE "+Database)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // already exists
		return nil
	}
	return err
}

// URL is the connection string applications use to insert events.
func (s *Server) URL() string { return s.url }

// Stop shuts the server down.
func (s *Server) Stop() error { return s.cluster.Stop() }
