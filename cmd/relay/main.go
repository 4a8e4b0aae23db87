// Command relay streams a PostgreSQL outbox table to signed webhooks.
package main

import (
	"context"
	"fmt"
	"os"
	// The time zone database is compiled in, so delivery windows and
	// absence days in any zone work where the system has none (the
	// container image is FROM scratch).
	_ "time/tzdata"

	"github.com/pgoutbox/relay/internal/cli"
)

func main() {
	err := cli.New().Run(context.Background(), os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
	}
	os.Exit(cli.ExitCode(err))
}
