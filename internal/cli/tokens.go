package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgoutbox/relay/internal/tokens"
)

func init() {
	register("tokens", "create, list or revoke owner-scoped admin API tokens", (*CLI).tokens)
}

const tokensSynopsis = `tokens create --owner OWNER [--name NAME] | list [--json] | revoke ID  [--database-url URL]

An owner token lets the admin API see and change only that owner's webhooks
and deliveries. 'create' prints the token once on stdout: only its SHA-256
is stored, so it cannot be shown again. Revoking takes effect at once.`

func (c *CLI) tokens(ctx context.Context, args []string) error {
	fs := c.newFlagSet("tokens", tokensSynopsis)
	dbURL := c.databaseURLFlag(fs)
	owner := fs.String("owner", "", "owner (tenant) the token acts for (create)")
	name := fs.String("name", "", "a label to recognise the token by (create)")
	asJSON := fs.Bool("json", false, "print JSON (list)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return usageError("tokens needs one of: create, list, revoke")
	}
	action, rest := fs.Arg(0), fs.Args()[1:]
	var revokeID int64
	switch action {
	case "create":
		if strings.TrimSpace(*owner) == "" {
			return usageError("tokens create needs --owner")
		}
		if len(rest) > 0 {
			return usageError("tokens create takes no arguments (got %q)", rest[0])
		}
	case "list":
		if len(rest) > 0 {
			return usageError("tokens list takes no arguments (got %q)", rest[0])
		}
	case "revoke":
		if len(rest) != 1 {
			return usageError("tokens revoke needs exactly one token id (see 'relay tokens list')")
		}
		id, err := strconv.ParseInt(rest[0], 10, 64)
		if err != nil || id <= 0 {
			return usageError("tokens revoke: %q is not a token id", rest[0])
		}
		revokeID = id
	default:
		return usageError("unknown tokens action %q (want create, list or revoke)", action)
	}
	pool, err := c.connectDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := tokens.NewStore(pool)

	switch action {
	case "create":
		plain, tok, err := st.Create(ctx, *owner, *name)
		if err != nil {
			return err
		}
		// The token alone on stdout, so TOKEN=$(relay tokens create …) works.
		fmt.Fprintln(c.Stdout, plain)
		fmt.Fprintf(c.Stderr, "Created token %d for owner %q. Store it now: only its hash is kept and it cannot be shown again.\n"+
			"Send it as: Authorization: Bearer <token>. Revoke it with: relay tokens revoke %d\n", tok.ID, tok.Owner, tok.ID)
	case "list":
		list, err := st.List(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if list == nil {
				list = []tokens.Token{}
			}
			enc := json.NewEncoder(c.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(list)
		}
		if len(list) == 0 {
			fmt.Fprintln(c.Stdout, "no tokens; create one with: relay tokens create --owner OWNER")
			return nil
		}
		tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tOWNER\tNAME\tCREATED\tLAST USED\tSTATUS")
		for _, t := range list {
			status := "active"
			if t.RevokedAt != nil {
				status = "revoked " + tokTime(t.RevokedAt)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", t.ID, tokCell(t.Owner), tokCell(t.Name),
				tokTime(&t.CreatedAt), tokTime(t.LastUsedAt), status)
		}
		return tw.Flush()
	case "revoke":
		t, err := st.Revoke(ctx, revokeID)
		if errors.Is(err, tokens.ErrNotFound) {
			return fmt.Errorf("token %d does not exist (see 'relay tokens list')", revokeID)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "token %d (owner %q) revoked\n", t.ID, t.Owner)
	}
	return nil
}

// tokCell keeps a table cell on one line, safe to print and never empty.
func tokCell(s string) string {
	s = cellText(strings.Join(strings.Fields(s), " "))
	if s == "" {
		return "-"
	}
	return s
}

func tokTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
