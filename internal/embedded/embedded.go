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
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

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
	// MaxRestarts is how many times in a row Supervise restarts a server
	// that exited on its own before it gives up (default 5). The count
	// starts again once the server has run for StableAfter.
	MaxRestarts int
	// RestartBackoff is the wait before the first restart (default 1s);
	// it doubles for each further one.
	RestartBackoff time.Duration
	// StableAfter is how long a restarted server must run for the restart
	// count to start again (default 5 minutes).
	StableAfter time.Duration
}

// Server is a running embedded PostgreSQL.
type Server struct {
	cfg Config
	url string

	// mu serialises starting and stopping the cluster between Supervise
	// and Stop.
	mu       sync.Mutex
	cluster  *pgcluster.Cluster
	stopping bool
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
	if cfg.MaxRestarts <= 0 {
		cfg.MaxRestarts = 5
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = time.Second
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = 5 * time.Minute
	}
	s := &Server{cfg: cfg, cluster: c, url: c.URL(Database)}
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

// Stop shuts the server down; Supervise then returns without restarting it.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	return s.cluster.Stop()
}

// logTail is how much of the server's log an error carries.
const logTail = 3000

// Supervise watches the server until ctx ends or Stop is called, and
// returns nil then. When the server exits on its own (killed, out of
// memory, its data directory removed) it logs why, waits and starts it
// again on the same data, up to Config.MaxRestarts times in a row with a
// doubling wait. When it cannot, Supervise returns an error that carries
// the end of the server's log: relay must not run on without its database.
// A data directory that has gone is not initialised again, since an empty
// cluster would silently forget every event and subscription.
func (s *Server) Supervise(ctx context.Context, log zerolog.Logger) error {
	log = log.With().Str("component", "embedded").Logger()
	restarts := 0
	var upSince time.Time
	for {
		s.mu.Lock()
		exited := s.cluster.Exited()
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-exited:
		}
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		if !upSince.IsZero() && time.Since(upSince) >= s.cfg.StableAfter {
			restarts = 0
		}
		pgdata := s.cluster.DataDir()
		log.Error().Str("data_dir", pgdata).Str("log_file", s.cluster.LogFile()).Int("restarts", restarts).
			Msg("embedded PostgreSQL exited unexpectedly")
		if _, err := os.Stat(filepath.Join(pgdata, "PG_VERSION")); err != nil {
			return fmt.Errorf("embedded PostgreSQL exited and its data directory %s is gone (%v); not creating an empty one, "+
				"which would forget every event and subscription: restore it, or start relay with a new --data-dir\n"+
				"end of its log (%s):\n%s", pgdata, err, s.cluster.LogFile(), s.cluster.LogTail(logTail))
		}
		if restarts >= s.cfg.MaxRestarts {
			return fmt.Errorf("embedded PostgreSQL exited %d times in a row; giving up\nend of its log (%s):\n%s",
				restarts+1, s.cluster.LogFile(), s.cluster.LogTail(logTail))
		}
		wait := s.cfg.RestartBackoff << restarts
		restarts++
		log.Warn().Dur("retry_in", wait).Int("restart", restarts).Int("max_restarts", s.cfg.MaxRestarts).Msg("restarting embedded PostgreSQL")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			return nil
		}
		err := s.cluster.Start(ctx)
		s.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Error().Err(err).Int("restart", restarts).Msg("embedded PostgreSQL did not start again")
			continue // Exited is closed: the next round decides
		}
		upSince = time.Now()
		log.Info().Int("restart", restarts).Msg("embedded PostgreSQL restarted")
	}
}
