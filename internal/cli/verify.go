package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pgoutbox/relay/signer"
)

func init() {
	register("verify", "check a webhook signature, as a receiver would", (*CLI).cmdVerify)
}

// verifyView is the JSON of verify.
type verifyView struct {
	Valid bool `json:"valid"`
	// Scheme is "v1" (webhook-signature) or "sha256" (x-relay-signature).
	Scheme string `json:"scheme"`
	// Reason is a short code when the signature is not valid:
	// invalid_secret, malformed_header, no_matching_signature,
	// timestamp_too_old or timestamp_too_new.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	Hint   string `json:"hint,omitempty"`
}

func (c *CLI) cmdVerify(ctx context.Context, args []string) error {
	fs := c.newFlagSet("verify", "verify --secret S --id ID --timestamp TS --signature SIG [--body-file F] [--tolerance 5m | --ignore-timestamp] [--json]")
	asJSON := jsonFlag(fs)
	secret := fs.String("secret", c.getenv("RELAY_WEBHOOK_SECRET"), "the subscription's whsec_… secret (env RELAY_WEBHOOK_SECRET)")
	id := fs.String("id", "", "the webhook-id header")
	ts := fs.String("timestamp", "", "the webhook-timestamp header (unix seconds)")
	sig := fs.String("signature", "", "the webhook-signature header (v1,…), or the x-relay-signature header (sha256=…)")
	bodyFile := fs.String("body-file", "-", "file holding the raw request body, byte for byte; - reads standard input")
	tolerance := fs.Duration("tolerance", signer.DefaultTolerance, "how far the timestamp may be from now")
	ignoreTS := fs.Bool("ignore-timestamp", false, "skip the timestamp check, to check a message recorded earlier")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("verify takes no arguments (got %q)", fs.Arg(0))
	}
	if *secret == "" {
		fs.Usage()
		return usageError("verify needs --secret (or RELAY_WEBHOOK_SECRET)")
	}
	if *sig == "" {
		fs.Usage()
		return usageError("verify needs --signature")
	}
	simple := strings.HasPrefix(*sig, "sha256=")
	if !simple && (*id == "" || *ts == "") {
		fs.Usage()
		return usageError("verify needs --id and --timestamp with a webhook-signature (only a sha256= signature does without)")
	}
	if *tolerance <= 0 {
		return usageError("invalid --tolerance %s: want a positive duration (or --ignore-timestamp)", *tolerance)
	}
	body, err := c.readBody(*bodyFile)
	if err != nil {
		return err
	}

	v := verifyView{Scheme: "v1"}
	if simple {
		v.Scheme = "sha256"
		err = signer.VerifySimple(*secret, *sig, body)
	} else {
		opts := &signer.VerifyOpts{Tolerance: *tolerance}
		if *ignoreTS {
			opts.Tolerance = -1
		}
		err = signer.Verify(*secret, *id, *ts, *sig, body, opts)
	}
	v.Valid = err == nil
	if err != nil {
		v.Error = err.Error()
		v.Reason, v.Hint = verifyReason(err, simple)
	}
	if *asJSON {
		if perr := printJSON(c.Stdout, v); perr != nil {
			return perr
		}
	} else if v.Valid {
		what := "webhook-signature (Standard Webhooks v1)"
		if simple {
			what = "x-relay-signature (sha256 of the body)"
		}
		fmt.Fprintf(c.Stdout, "valid: the %s matches\n", what)
		if simple {
			fmt.Fprintln(c.Stdout, "note: the sha256 form covers only the body; it cannot detect a replayed message")
		}
	} else {
		fmt.Fprintf(c.Stdout, "invalid: %s\n", v.Error)
		if v.Hint != "" {
			fmt.Fprintf(c.Stdout, "hint: %s\n", v.Hint)
		}
	}
	if !v.Valid {
		return &ExitError{Code: 1, Err: errors.New("signature not valid")}
	}
	return nil
}

// readBody reads the body from a file, or standard input for "-" (empty
// when the CLI has none).
func (c *CLI) readBody(path string) ([]byte, error) {
	if path != "-" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, &ExitError{Code: 1, Err: fmt.Errorf("reading the body: %w", err)}
		}
		return b, nil
	}
	if c.Stdin == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(c.Stdin, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the body from standard input: %w", err)
	}
	return b, nil
}

// verifyReason gives a reason code and a hint for a verification error.
func verifyReason(err error, simple bool) (reason, hint string) {
	switch {
	case errors.Is(err, signer.ErrInvalidSecret):
		return "invalid_secret", "the secret is whsec_ followed by base64, as printed by 'relay subs add' or 'relay subs rotate'"
	case errors.Is(err, signer.ErrMalformedHeader):
		return "malformed_header", "pass the header values exactly as received"
	case errors.Is(err, signer.ErrTimestampTooOld):
		return "timestamp_too_old", fmt.Sprintf("a replayed or long-delayed message, or a slow clock; to check a message recorded earlier, add --ignore-timestamp (now %d)", time.Now().Unix())
	case errors.Is(err, signer.ErrTimestampTooNew):
		return "timestamp_too_new", fmt.Sprintf("the sender's clock runs ahead of this one (now %d)", time.Now().Unix())
	case errors.Is(err, signer.ErrNoMatchingSignature):
		if simple {
			return "no_matching_signature", "wrong secret (was it rotated?) or a different body: pass the raw body bytes exactly as received, not re-encoded JSON"
		}
		return "no_matching_signature", "wrong secret (was it rotated?), or the id, timestamp or body differ from what was signed: pass the raw body bytes exactly as received, not re-encoded JSON"
	}
	return "error", ""
}
