package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/relay/signer"
)

const verifySecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestVerifyCommand(t *testing.T) {
	t.Parallel()
	key := signer.MustParseSecret(verifySecret)
	body := []byte(`{"id":"msg_1","type":"thread.created","data":{"title":"hi"}}`)
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := key.Sign("msg_1", now, body)
	bodyFile := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(bodyFile, body, 0o600); err != nil {
		t.Fatal(err)
	}
	args := func(extra ...string) []string {
		return append([]string{"verify", "--secret", verifySecret, "--id", "msg_1", "--timestamp", ts, "--signature", sig, "--body-file", bodyFile}, extra...)
	}

	expectCLI(t, nil, 0, []string{"valid: the webhook-signature (Standard Webhooks v1) matches"}, args()...)
	// The second signature of a rotation matches too.
	other := signer.MustParseSecret("whsec_" + strings.Repeat("A", 43) + "=")
	both := signer.SignatureHeader([]signer.Key{other, key}, "msg_1", now, body)
	expectCLI(t, nil, 0, []string{"valid"}, append(args(), "--signature", both)...)

	// The body from standard input.
	var out, errb bytes.Buffer
	code := runCLIIn(context.Background(), nil, bytes.NewReader(body), &out, &errb,
		"verify", "--secret", verifySecret, "--id", "msg_1", "--timestamp", ts, "--signature", sig)
	if code != 0 || !strings.Contains(out.String(), "valid") {
		t.Fatalf("stdin body: %d %q %q", code, out.String(), errb.String())
	}
	// The secret from the environment.
	env := map[string]string{"RELAY_WEBHOOK_SECRET": verifySecret}
	expectCLI(t, env, 0, []string{"valid"}, "verify", "--id", "msg_1", "--timestamp", ts, "--signature", sig, "--body-file", bodyFile)

	// Why not, with exit 1.
	wrong := "whsec_" + strings.Repeat("B", 43) + "="
	expectCLI(t, nil, 1, []string{"invalid: signature does not match", "hint: wrong secret"}, append(args(), "--secret", wrong)...)
	expectCLI(t, nil, 1, []string{"invalid: signature does not match"}, append(args(), "--id", "msg_2")...)
	tampered := filepath.Join(t.TempDir(), "tampered.json")
	os.WriteFile(tampered, append(body, ' '), 0o600)
	expectCLI(t, nil, 1, []string{"invalid: signature does not match", "raw body"}, append(args(), "--body-file", tampered)...)
	expectCLI(t, nil, 1, []string{"invalid", "hint:", "whsec_"}, append(args(), "--secret", "not-a-secret")...)
	expectCLI(t, nil, 1, []string{"invalid: webhook-timestamp", "not unix seconds"}, append(args(), "--timestamp", "yesterday")...)
	expectCLI(t, nil, 1, []string{"invalid: webhook-signature"}, append(args(), "--signature", "v1,short")...)
	expectCLI(t, nil, 1, []string{"reading the body"}, append(args(), "--body-file", filepath.Join(t.TempDir(), "missing"))...)

	// An old message: refused, unless the timestamp check is off.
	then := now.Add(-time.Hour)
	oldArgs := []string{"verify", "--secret", verifySecret, "--id", "msg_1", "--timestamp", strconv.FormatInt(then.Unix(), 10),
		"--signature", key.Sign("msg_1", then, body), "--body-file", bodyFile}
	expectCLI(t, nil, 1, []string{"older than now", "--ignore-timestamp"}, oldArgs...)
	expectCLI(t, nil, 0, []string{"valid"}, append(oldArgs, "--ignore-timestamp")...)
	expectCLI(t, nil, 0, []string{"valid"}, append(oldArgs, "--tolerance", "2h")...)

	// The simple form needs neither id nor timestamp.
	expectCLI(t, nil, 0, []string{"valid: the x-relay-signature", "cannot detect a replayed message"},
		"verify", "--secret", verifySecret, "--signature", key.SignSimple(body), "--body-file", bodyFile)
	expectCLI(t, nil, 1, []string{"invalid"}, "verify", "--secret", wrong, "--signature", key.SignSimple(body), "--body-file", bodyFile)

	// JSON.
	var v struct {
		Valid  bool   `json:"valid"`
		Scheme string `json:"scheme"`
		Reason string `json:"reason"`
		Error  string `json:"error"`
		Hint   string `json:"hint"`
	}
	decodeJSON(t, expectCLI(t, nil, 0, nil, append(args(), "--json")...), &v)
	if !v.Valid || v.Scheme != "v1" || v.Reason != "" {
		t.Fatalf("valid --json: %+v", v)
	}
	decodeJSON(t, expectCLI(t, nil, 1, nil, append(oldArgs, "--json")...), &v)
	if v.Valid || v.Reason != "timestamp_too_old" || v.Error == "" || v.Hint == "" {
		t.Fatalf("old --json: %+v", v)
	}

	// Usage errors.
	expectCLI(t, nil, 2, []string{"needs --secret"}, "verify", "--id", "msg_1", "--timestamp", ts, "--signature", sig)
	expectCLI(t, nil, 2, []string{"needs --signature"}, "verify", "--secret", verifySecret, "--id", "msg_1", "--timestamp", ts)
	expectCLI(t, nil, 2, []string{"needs --id and --timestamp"}, "verify", "--secret", verifySecret, "--signature", sig)
	expectCLI(t, nil, 2, []string{"invalid value", "-tolerance"}, append(args(), "--tolerance", "soon")...)
	expectCLI(t, nil, 2, []string{"invalid --tolerance"}, append(args(), "--tolerance", "0s")...)
}
