// Command relay streams a PostgreSQL outbox table to signed webhooks.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/pgoutbox/relay/internal/cli"
)

func main() {
	err := cli.New().Run(context.Background(), os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
	}
	os.Exit(cli.ExitCode(err))
}
