package embedded_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/relay/internal/embedded"
	"github.com/pgoutbox/relay/internal/pgcluster"
)

func TestStartRestartKeepsData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "relay-data")
	ctx := context.Background()
	srv, err := embedded.Start(ctx, embedded.Config{DataDir: dir, Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	var wal string
	if err := conn.QueryRow(ctx, `SHOW wal_level`).Scan(&wal); err != nil || wal != "logical" {
		t.Fatalf("wal_level %q (%v)", wal, err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	srv, err = embedded.Start(ctx, embedded.Config{DataDir: dir, Port: 0})
	if err != nil {
		t.Fatalf("restart on the same data: %v", err)
	}
	defer srv.Stop()
	if !strings.Contains(srv.URL(), "127.0.0.1") || !strings.HasSuffix(strings.Split(srv.URL(), "?")[0], "/relay") {
		t.Fatalf("URL %s", srv.URL())
	}
	conn, err = pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, `SELECT v FROM kept`).Scan(&v); err != nil || v != "still here" {
		t.Fatalf("data after restart: %q %v", v, err)
	}
}

func TestMissingBinariesSayHowToInstall(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	old := pgcluster.SearchGlob
	pgcluster.SearchGlob = filepath.Join(t.TempDir(), "*", "bin")
	defer func() { pgcluster.SearchGlob = old }()
	_, err := embedded.Start(context.Background(), embedded.Config{DataDir: t.TempDir()})
	if !errors.Is(err, pgcluster.ErrNoBinaries) || !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Fatalf("error %v, want ErrNoBinaries with install advice", err)
	}
}

// TestFindAndOperatorToken checks what relay run leaves in its data
// directory for the other commands: the running server can be found, and
// the generated operator token is made once, kept private, and reused.
func TestFindAndOperatorToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "relay-data")
	if _, err := embedded.Find(dir); !errors.Is(err, embedded.ErrNotInitialised) {
		t.Fatalf("Find on nothing: %v", err)
	}
	ctx := context.Background()
	srv, err := embedded.Start(ctx, embedded.Config{DataDir: dir, Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	url, err := embedded.Find(dir)
	if err != nil || url != srv.URL() {
		t.Fatalf("Find = %q, %v; want %q", url, err, srv.URL())
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting to what Find found: %v", err)
	}
	conn.Close(ctx)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := embedded.Find(dir); !errors.Is(err, embedded.ErrNotRunning) {
		t.Fatalf("Find on a stopped server: %v", err)
	}

	tok, created, err := embedded.OperatorToken(dir)
	if err != nil || !created || !strings.HasPrefix(tok, "relayop_") || len(tok) < 32 {
		t.Fatalf("OperatorToken = %q, %v, %v", tok, created, err)
	}
	st, err := os.Stat(filepath.Join(dir, embedded.OperatorTokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", st, err)
	}
	again, created, err := embedded.OperatorToken(dir)
	if err != nil || created || again != tok {
		t.Fatalf("second OperatorToken = %q, %v, %v; want the same token", again, created, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, embedded.OperatorTokenFile+".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
