package cli

import (
	"context"
	"fmt"

	"github.com/pgoutbox/relay/migrations"
)

func init() {
	register("migrate", "apply, revert or show the relay schema migrations", (*CLI).migrate)
}

func (c *CLI) migrate(ctx context.Context, args []string) error {
	fs := c.newFlagSet("migrate", "migrate up|down|status [--database-url URL]")
	dbURL := c.databaseURLFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError("migrate needs exactly one of: up, down, status")
	}
	url, err := c.databaseURL(*dbURL)
	if err != nil {
		return err
	}
	*dbURL = url
	switch fs.Arg(0) {
	case "up":
		if err := migrations.Up(ctx, *dbURL); err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "relay schema is at version %d\n", migrations.Latest)
	case "down":
		if err := migrations.Down(ctx, *dbURL); err != nil {
			return err
		}
		fmt.Fprintln(c.Stdout, "relay schema removed")
	case "status":
		st, err := migrations.GetStatus(ctx, *dbURL)
		if err != nil {
			return err
		}
		state := "up to date"
		switch {
		case st.Dirty:
			state = "DIRTY: a migration failed half-way; fix it by hand, then force the version"
		case st.Pending():
			state = fmt.Sprintf("%d migration(s) pending; run 'relay migrate up'", st.Latest-st.Version)
		}
		fmt.Fprintf(c.Stdout, "version %d of %d: %s\n", st.Version, st.Latest, state)
	default:
		return usageError("unknown migrate action %q (want up, down or status)", fs.Arg(0))
	}
	return nil
}
