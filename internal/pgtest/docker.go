package pgtest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ory/dockertest/v3"
)

// startDocker runs postgres:15 in a container with logical decoding on.
// It is opt-in (RELAY_TEST_DOCKER=1) because most machines that run the
// suite, CI included, have the server binaries but no Docker engine.
func startDocker(ctx context.Context) (*Server, error) {
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, fmt.Errorf("dockertest: %w", err)
	}
	if err := pool.Client.Ping(); err != nil {
		return nil, fmt.Errorf("dockertest: no Docker engine reachable: %w", err)
	}
	res, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository: "postgres",
		Tag:        "15",
		Env:        []string{"POSTGRES_PASSWORD=relay", "POSTGRES_HOST_AUTH_METHOD=trust"},
		Cmd:        []string{"postgres", "-c", "wal_level=logical", "-c", "max_replication_slots=64", "-c", "max_wal_senders=64", "-c", "fsync=off"},
	})
	if err != nil {
		return nil, fmt.Errorf("dockertest: starting postgres: %w", err)
	}
	_ = res.Expire(900)
	url := fmt.Sprintf("postgres://postgres:relay@%s/postgres?sslmode=disable", res.GetHostPort("5432/tcp"))
	pool.MaxWait = 2 * time.Minute
	if err := pool.Retry(func() error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	}); err != nil {
		_ = pool.Purge(res)
		return nil, errors.Join(errors.New("dockertest: postgres did not become ready"), err)
	}
	return &Server{AdminURL: url, stop: func() { _ = pool.Purge(res) }}, nil
}
