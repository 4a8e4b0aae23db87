package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pgoutbox/relay/internal/cli"
	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/migrations"
)

func TestMain(m *testing.M) {
	if runAsRelay() {
		return
	}
	pgtest.Main(m)
}

// runCLI runs one relay command and returns its exit code and output.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli.CLI{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	err := c.Run(context.Background(), args)
	if err != nil {
		errb.WriteString(err.Error())
	}
	return cli.ExitCode(err), out.String(), errb.String()
}

func TestMigrateCommand(t *testing.T) {
	db := pgtest.NewDBWith(t, &pgtest.Options{Empty: true})
	env := map[string]string{"RELAY_DATABASE_URL": db.URL}

	code, out, _ := runCLI(t, env, "migrate", "status")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("version 0 of %d", migrations.Latest)) || !strings.Contains(out, "pending") {
		t.Fatalf("status before: %d %q", code, out)
	}
	if code, out, errs := runCLI(t, env, "migrate", "up"); code != 0 || !strings.Contains(out, fmt.Sprintf("version %d", migrations.Latest)) {
		t.Fatalf("up: %d %q %q", code, out, errs)
	}
	if code, out, _ := runCLI(t, nil, "migrate", "status", "--database-url", db.URL); code != 0 || !strings.Contains(out, "up to date") {
		t.Fatalf("status after: %d %q", code, out)
	}
	if code, _, errs := runCLI(t, env, "migrate", "sideways"); code != 2 || !strings.Contains(errs, `unknown migrate action "sideways"`) {
		t.Fatalf("bad action: %d %q", code, errs)
	}
	if code, _, errs := runCLI(t, nil, "migrate", "up"); code != 2 || !strings.Contains(errs, "RELAY_DATABASE_URL") {
		t.Fatalf("no database: %d %q", code, errs)
	}
	if code, _, errs := runCLI(t, nil, "migrate", "up", "--database-url", "postgres://127.0.0.1:1/none?connect_timeout=2"); code != 1 || !strings.Contains(errs, "connecting") {
		t.Fatalf("unreachable database: %d %q", code, errs)
	}
	if code, _, _ := runCLI(t, env, "nosuchcommand"); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
}
