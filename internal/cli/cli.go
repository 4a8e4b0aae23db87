// Package cli is relay's command line: a testable type whose Run takes the
// arguments, so end-to-end tests call it directly instead of a binary.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/pgoutbox/relay/internal/buildinfo"
	"github.com/pgoutbox/relay/internal/embedded"
	"github.com/pgoutbox/relay/sink/dispatch"
)

// Version is relay's module version, from the binary's build information
// (see internal/buildinfo).
var Version = buildinfo.Read().Version

// userAgent is the User-Agent of every delivery this process sends.
func userAgent() string { return buildinfo.Read().UserAgent() }

// ExitError carries the process exit code of a failed command: 2 for usage
// errors (bad flags or arguments), 1 for everything else.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// usageError marks bad input: the command exits with status 2.
func usageError(format string, args ...any) error {
	return &ExitError{Code: 2, Err: fmt.Errorf(format, args...)}
}

// ExitCode maps an error from Run to a process exit code.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 1
}

// CLI holds what commands read and write, so tests can capture them.
type CLI struct {
	Stdout io.Writer
	Stderr io.Writer
	Stdin  io.Reader
	// Getenv reads RELAY_* settings; os.Getenv when nil.
	Getenv func(string) string

	// tracer is given to the App of relay run by bench-relay --stage-trace.
	tracer dispatch.Tracer
}

// New returns a CLI on the process's standard streams and environment.
func New() *CLI {
	return &CLI{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin, Getenv: os.Getenv}
}

type command struct {
	summary string
	run     func(c *CLI, ctx context.Context, args []string) error
}

// commands is filled by the init functions of the files that define them.
var commands = map[string]command{}

func register(name, summary string, run func(c *CLI, ctx context.Context, args []string) error) {
	commands[name] = command{summary: summary, run: run}
}

func (c *CLI) getenv(k string) string {
	if c.Getenv == nil {
		return os.Getenv(k)
	}
	return c.Getenv(k)
}

// Run runs one command: args[0] names it.
func (c *CLI) Run(ctx context.Context, args []string) error {
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		c.usage(c.Stdout)
		if len(args) == 0 {
			return &ExitError{Code: 2, Err: errors.New("no command given")}
		}
		return nil
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(c.Stdout, buildinfo.Read())
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		c.usage(c.Stderr)
		return usageError("unknown command %q", args[0])
	}
	err := cmd.run(c, ctx, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func (c *CLI) usage(w io.Writer) {
	fmt.Fprintf(w, "relay %s — PostgreSQL outbox to signed webhooks\n\nUsage: relay <command> [flags]\n\nCommands:\n", Version)
	// Commands whose summary starts with "internal:" are helper processes
	// of other commands (relay bench's receiver): not listed.
	names := make([]string, 0, len(commands))
	width := 0
	for n, cmd := range commands {
		if strings.HasPrefix(cmd.summary, "internal:") {
			continue
		}
		names = append(names, n)
		width = max(width, len(n))
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-*s  %s\n", width, n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'relay <command> --help' for a command's flags.\n")
}

// newFlagSet returns a flag set that reports errors as usage errors and
// prints its help to the CLI's stderr.
func (c *CLI) newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.Stderr, "Usage: relay %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, which may come before or after the positional
// arguments (relay migrate status --database-url …), turning a bad flag into
// a usage error (exit 2). Positional arguments are then in fs.Args().
func parse(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return &ExitError{Code: 2, Err: err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// fs.Parse stops at "--" (consumed) or at the first non-flag.
		consumedDashes := len(args) > len(rest) && args[len(args)-len(rest)-1] == "--"
		if consumedDashes {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Re-parse only the positionals so fs.Args() returns them.
	return fs.Parse(append([]string{"--"}, positional...))
}

// databaseURLFlag adds --database-url defaulting to RELAY_DATABASE_URL.
func (c *CLI) databaseURLFlag(fs *flag.FlagSet) *string {
	return fs.String("database-url", c.getenv("RELAY_DATABASE_URL"), "PostgreSQL connection URL (env RELAY_DATABASE_URL)")
}

// databaseURL returns the database a command works on: u (from
// --database-url or RELAY_DATABASE_URL) when set, else the embedded
// PostgreSQL that relay run started in its data directory (RELAY_DATA_DIR,
// default ./relay-data), found the way relay run finds it again.
func (c *CLI) databaseURL(u string) (string, error) {
	if strings.TrimSpace(u) != "" {
		return u, nil
	}
	dir := c.envOr("RELAY_DATA_DIR", embedded.DefaultDataDir)
	found, err := embedded.Find(dir)
	switch {
	case err == nil:
		return found, nil
	case errors.Is(err, embedded.ErrNotInitialised):
		return "", usageError("no database: set --database-url or RELAY_DATABASE_URL " +
			"(or run this where 'relay run' keeps its embedded PostgreSQL: ./relay-data, or RELAY_DATA_DIR)")
	case errors.Is(err, embedded.ErrNotRunning):
		return "", &ExitError{Code: 1, Err: fmt.Errorf("no database: the embedded PostgreSQL in %s is not running; start 'relay run' (or set --database-url)", dir)}
	}
	return "", &ExitError{Code: 1, Err: fmt.Errorf("no database: %w", err)}
}
