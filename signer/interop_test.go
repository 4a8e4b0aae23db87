package signer_test

// Interoperability with the official Standard Webhooks libraries: the Go
// module and the npm package standardwebhooks. Both libraries check the
// timestamp against the real clock with a fixed 5 minute tolerance, so these
// tests sign with time.Now.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/pgoutbox/relay/signer"
)

func headers(id string, t time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, id)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(t.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, sig)
	return h
}

// TestInteropGoLibrary: what we sign, the official Go library accepts, and
// what it signs, we accept.
func TestInteropGoLibrary(t *testing.T) {
	t.Parallel()
	newKey, oldKey := mustKey(t, testSecret), mustKey(t, oldSecret)
	now := time.Now()

	theirs := func(secret string) *standardwebhooks.Webhook {
		t.Helper()
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatalf("standardwebhooks.NewWebhook: %v", err)
		}
		return wh
	}

	t.Run("our single signature, their Verify", func(t *testing.T) {
		for _, secret := range []string{testSecret, svixSecret} {
			k := mustKey(t, secret)
			h := headers(testID, now, k.Sign(testID, now, testBody))
			if err := theirs(secret).Verify(testBody, h); err != nil {
				t.Errorf("their Verify of our signature (%s...): %v", secret[:10], err)
			}
		}
	})

	t.Run("our multi-signature header, their Verify with each secret", func(t *testing.T) {
		h := headers(testID, now, signer.SignatureHeader([]signer.Key{newKey, oldKey}, testID, now, testBody))
		for _, secret := range []string{testSecret, oldSecret} {
			if err := theirs(secret).Verify(testBody, h); err != nil {
				t.Errorf("their Verify with %s...: %v", secret[:10], err)
			}
		}
	})

	t.Run("tampered messages, their Verify rejects", func(t *testing.T) {
		sig := signer.SignatureHeader([]signer.Key{newKey, oldKey}, testID, now, testBody)
		wh := theirs(testSecret)
		if err := wh.Verify([]byte(string(testBody)+" "), headers(testID, now, sig)); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
			t.Errorf("their Verify of a tampered body: %v, want ErrNoMatchingSignature", err)
		}
		if err := wh.Verify(testBody, headers(testID+"x", now, sig)); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
			t.Errorf("their Verify of a tampered id: %v, want ErrNoMatchingSignature", err)
		}
		if err := theirs(svixSecret).Verify(testBody, headers(testID, now, sig)); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
			t.Errorf("their Verify with another secret: %v, want ErrNoMatchingSignature", err)
		}
	})

	t.Run("their Sign, our Verify", func(t *testing.T) {
		for _, secret := range []string{testSecret, oldSecret, svixSecret} {
			sig, err := theirs(secret).Sign(testID, now, testBody)
			if err != nil {
				t.Fatalf("their Sign: %v", err)
			}
			if got := mustKey(t, secret).Sign(testID, now, testBody); got != sig {
				t.Errorf("our Sign = %q, their Sign = %q", got, sig)
			}
			if err := signer.Verify(secret, testID, strconv.FormatInt(now.Unix(), 10), sig, testBody, nil); err != nil {
				t.Errorf("our Verify of their signature (%s...): %v", secret[:10], err)
			}
			if err := signer.Verify(secret, testID, strconv.FormatInt(now.Unix(), 10), sig, []byte("{}"), nil); !errors.Is(err, signer.ErrNoMatchingSignature) {
				t.Errorf("our Verify of their signature over another body: %v, want ErrNoMatchingSignature", err)
			}
		}
	})

	t.Run("their signatures joined, our Verify with each secret", func(t *testing.T) {
		s1, _ := theirs(testSecret).Sign(testID, now, testBody)
		s2, _ := theirs(oldSecret).Sign(testID, now, testBody)
		for _, secret := range []string{testSecret, oldSecret} {
			if err := signer.Verify(secret, testID, strconv.FormatInt(now.Unix(), 10), s1+" "+s2, testBody, nil); err != nil {
				t.Errorf("our Verify with %s...: %v", secret[:10], err)
			}
		}
	})
}

// nodeCase is one line of input to testdata/interop/verify.mjs.
type nodeCase struct {
	Secret  string            `json:"secret"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

type nodeResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// TestInteropNode verifies our signatures with the npm package
// standardwebhooks, through testdata/interop/verify.mjs. It needs node on PATH
// and the package installed: run `npm ci --prefix testdata/interop` from the
// repository root (make test does).
func TestInteropNode(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "testdata", "interop")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH; install Node.js to check signatures against the npm package standardwebhooks")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks", "package.json")); err != nil {
		t.Skip("testdata/interop/node_modules is missing; run `npm ci --prefix testdata/interop` from the repository root")
	}

	newKey, oldKey, svixKey := mustKey(t, testSecret), mustKey(t, oldSecret), mustKey(t, svixSecret)
	now := time.Now()
	unicodeBody := `{"id":"evt_2","type":"thread.created","data":{"title":"Grüße, 世界 🎉","quote":"\"a\\b\""}}`
	hdr := func(id, sig string) map[string]string {
		return map[string]string{
			"webhook-id":        id,
			"webhook-timestamp": strconv.FormatInt(now.Unix(), 10),
			"webhook-signature": sig,
		}
	}
	multi := signer.SignatureHeader([]signer.Key{newKey, oldKey}, testID, now, testBody)

	cases := []struct {
		name   string
		in     nodeCase
		wantOK bool
	}{
		{"single signature", nodeCase{testSecret, hdr(testID, newKey.Sign(testID, now, testBody)), string(testBody)}, true},
		{"24-byte secret", nodeCase{svixSecret, hdr(testID, svixKey.Sign(testID, now, testBody)), string(testBody)}, true},
		{"non-ASCII body", nodeCase{testSecret, hdr("evt_2", newKey.Sign("evt_2", now, []byte(unicodeBody))), unicodeBody}, true},
		{"empty body", nodeCase{testSecret, hdr(testID, newKey.Sign(testID, now, nil)), ""}, true},
		{"multi-signature, new secret", nodeCase{testSecret, hdr(testID, multi), string(testBody)}, true},
		{"multi-signature, rotated-out secret matches the second entry", nodeCase{oldSecret, hdr(testID, multi), string(testBody)}, true},
		{"tampered body", nodeCase{testSecret, hdr(testID, multi), string(testBody) + " "}, false},
		{"tampered id", nodeCase{testSecret, hdr(testID+"x", multi), string(testBody)}, false},
		{"secret not in the header", nodeCase{svixSecret, hdr(testID, multi), string(testBody)}, false},
	}

	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	for _, c := range cases {
		if err := enc.Encode(c.in); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "interop", "verify.mjs"))
	cmd.Dir = root
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify.mjs: %v\nstderr:\n%s", err, stderr.String())
	}

	var results []nodeResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r nodeResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("node verify.mjs printed %q: %v", sc.Text(), err)
		}
		results = append(results, r)
	}
	if len(results) != len(cases) {
		t.Fatalf("node verify.mjs printed %d results for %d inputs:\n%s\nstderr:\n%s", len(results), len(cases), out, stderr.String())
	}
	for i, c := range cases {
		r := results[i]
		if r.OK != c.wantOK {
			t.Errorf("%s: standardwebhooks (npm) ok=%v (error %q), want ok=%v", c.name, r.OK, r.Error, c.wantOK)
		}
		if !c.wantOK && r.Error != "No matching signature found" {
			t.Errorf("%s: standardwebhooks (npm) error %q, want %q", c.name, r.Error, "No matching signature found")
		}
	}
}
