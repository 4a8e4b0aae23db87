package cli_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/cli"
	"github.com/pgoutbox/relay/signer"
)

// TestReceiveVerifiesSignatures runs the demo receiver of
// deploy/compose.yaml: a correctly signed webhook is accepted and printed,
// a forged one is refused with 401.
func TestReceiveVerifiesSignatures(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, err := signer.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		c := &cli.CLI{Stdout: &out, Stderr: io.Discard, Getenv: func(string) string { return "" }}
		done <- c.Run(ctx, []string{"receive", "--addr", "127.0.0.1:0", "--secret", secret})
	}()
	var base string
	waitUntil(t, 10*time.Second, "the receiver to listen", func() bool {
		s := out.String()
		i := strings.Index(s, "http://")
		if i < 0 {
			return false
		}
		base = strings.TrimSuffix(strings.Fields(s[i:])[0], "/")
		return true
	})
	post := func(sig string) int {
		body := `{"type":"demo.event"}`
		req, _ := http.NewRequest("POST", base+"/hook", strings.NewReader(body))
		now := time.Now()
		req.Header.Set("webhook-id", "msg_1")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		if sig == "" {
			sig = signer.SignatureHeader([]signer.Key{key}, "msg_1", now, []byte(body))
		}
		req.Header.Set("webhook-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(""); code != 204 {
		t.Fatalf("signed request: %d", code)
	}
	if code := post("v1,Zm9yZ2VkIHNpZ25hdHVyZSBmb3JnZWQgc2lnbmF0dXJlIQ=="); code != 401 {
		t.Fatalf("forged request: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "id=msg_1 attempt= signature ok") || !strings.Contains(s, "REJECTED") {
		t.Fatalf("receiver output:\n%s", s)
	}
	code, _, errs := runCLI(t, nil, "receive", "--secret", "not-a-secret")
	if code != 2 || !strings.Contains(errs, "--secret") {
		t.Fatalf("bad secret: %d %s", code, errs)
	}
}
