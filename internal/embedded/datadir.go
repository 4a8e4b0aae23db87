package embedded

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The data directory of `relay run`'s embedded default holds, besides the
// cluster (pgdata/) and its log (postgres.log), the operator token of the
// admin API that relay generated for it (operator-token). Other commands
// (relay tokens, relay subs, …) find the running server through it, the
// way `relay run` does, so that a fresh user needs no connection string.

// DefaultDataDir is the data directory relay run and the other commands use
// unless told otherwise (--data-dir, RELAY_DATA_DIR).
const DefaultDataDir = "relay-data"

// OperatorTokenFile is the name, inside the data directory, of the file
// holding the generated operator token.
const OperatorTokenFile = "operator-token"

// ErrNotInitialised is returned by Find when the directory holds no
// embedded cluster: relay run was never started there.
var ErrNotInitialised = errors.New("no embedded PostgreSQL here")

// ErrNotRunning is returned by Find when the directory holds a cluster that
// is not running.
var ErrNotRunning = errors.New("the embedded PostgreSQL is not running")

// Find returns the connection URL of the embedded server running on
// dataDir (relay-data when empty), read from the postmaster.pid file
// PostgreSQL keeps while it runs. It returns an error wrapping
// ErrNotInitialised or ErrNotRunning when there is nothing to connect to.
func Find(dataDir string) (string, error) {
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	pgdata := filepath.Join(dataDir, "pgdata")
	if _, err := os.Stat(filepath.Join(pgdata, "PG_VERSION")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w in %s", ErrNotInitialised, dataDir)
		}
		return "", fmt.Errorf("reading %s: %w", pgdata, err)
	}
	pid, err := os.ReadFile(filepath.Join(pgdata, "postmaster.pid"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w in %s", ErrNotRunning, dataDir)
	}
	if err != nil {
		return "", fmt.Errorf("reading the embedded server's postmaster.pid: %w", err)
	}
	// postmaster.pid: pid, data directory, start time, port, socket
	// directory, listen address, shared memory key, status.
	lines := strings.Split(string(pid), "\n")
	if len(lines) < 6 {
		return "", fmt.Errorf("%w in %s (its postmaster.pid is incomplete: starting or stopping)", ErrNotRunning, dataDir)
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err != nil || port <= 0 || port > 65535 {
		return "", fmt.Errorf("%w in %s (no port in its postmaster.pid)", ErrNotRunning, dataDir)
	}
	host := strings.TrimSpace(strings.Split(strings.TrimSpace(lines[5]), ",")[0])
	if host == "" || host == "*" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("postgres://postgres@%s:%d/%s?sslmode=disable", host, port, Database), nil
}

// OperatorToken returns the operator token kept in dataDir, generating and
// storing it (readable by its owner only) the first time; created tells
// which. relay run uses it when no --admin-token is given, so the console
// of a fresh embedded install can be signed in to.
func OperatorToken(dataDir string) (token string, created bool, err error) {
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	path := filepath.Join(dataDir, OperatorTokenFile)
	if b, err := os.ReadFile(path); err == nil {
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, false, nil
		}
		return "", false, fmt.Errorf("%s is empty: remove it to have a new operator token generated", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("reading the operator token: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", false, fmt.Errorf("creating %s: %w", dataDir, err)
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", false, err
	}
	token = "relayop_" + base64.RawURLEncoding.EncodeToString(b)
	// Written aside, then linked into place: a concurrent relay run either
	// wins (and we read its token) or loses, never reads half a file.
	tmp, err := os.CreateTemp(dataDir, OperatorTokenFile+".*")
	if err != nil {
		return "", false, fmt.Errorf("storing the operator token: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("storing the operator token: %w", err)
	}
	if _, err := tmp.WriteString(token + "\n"); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("storing the operator token: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", false, fmt.Errorf("storing the operator token: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return OperatorToken(dataDir)
	} else if err != nil {
		return "", false, fmt.Errorf("storing the operator token: %w", err)
	}
	return token, true, nil
}
