package signer_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/relay/signer"
)

const (
	// testSecret is "whsec_" + base64 of the bytes 0x00..0x1f.
	testSecret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	// oldSecret is "whsec_" + base64 of 32 bytes of 0xff, a rotated-out secret.
	oldSecret = "whsec_//////////////////////////////////////////8="
	// svixSecret is the 24-byte secret of the Standard Webhooks test vectors.
	svixSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

	testID = "msg_2nB5cXNYwXPQe9Vz3NVxYtWm0Ce"
)

var (
	testTime = time.Unix(1700000000, 0)
	testBody = []byte(`{"id":"msg_2nB5cXNYwXPQe9Vz3NVxYtWm0Ce","type":"thread.created","data":{"title":"hello"}}`)
)

func fixedClock(t time.Time) *signer.VerifyOpts {
	return &signer.VerifyOpts{Now: func() time.Time { return t }}
}

func ts(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

func mustKey(t testing.TB, secret string) signer.Key {
	t.Helper()
	k, err := signer.ParseSecret(secret)
	if err != nil {
		t.Fatalf("ParseSecret: %v", err)
	}
	return k
}

// hmacB64 and hmacHex compute signatures with crypto/hmac directly, as an
// independent reference for the package's own code.
func hmacB64(t testing.TB, secret, msgID string, unix int64, body []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msgID + "." + strconv.FormatInt(unix, 10) + "." + string(body)))
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func hmacHex(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestKnownAnswer(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testSecret)

	// Computed here from first principles, not with the package.
	want := hmacB64(t, testSecret, testID, testTime.Unix(), testBody)
	if got := k.Sign(testID, testTime, testBody); got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
	// Sub-second parts of the timestamp do not count.
	if got := k.Sign(testID, testTime.Add(999*time.Millisecond), testBody); got != want {
		t.Errorf("Sign with fractional second = %q, want %q", got, want)
	}
	if got, want := k.SignSimple(testBody), hmacHex(testSecret, testBody); got != want {
		t.Errorf("SignSimple = %q, want %q", got, want)
	}
}

// TestStandardWebhooksVector checks the test vector published with the
// Standard Webhooks specification and used by the official libraries.
func TestStandardWebhooksVector(t *testing.T) {
	t.Parallel()
	k := mustKey(t, svixSecret)
	const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	got := k.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

func TestSignFormat(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testSecret)
	for _, body := range [][]byte{nil, {}, []byte("x"), make([]byte, 1<<16)} {
		sig := k.Sign(testID, testTime, body)
		v, b, ok := strings.Cut(sig, ",")
		if !ok || v != "v1" || len(b) != 44 {
			t.Errorf("Sign(len %d) = %q, want v1,<44 base64 chars>", len(body), sig)
		}
		simple := k.SignSimple(body)
		if !strings.HasPrefix(simple, "sha256=") || len(simple) != 7+64 || strings.ToLower(simple) != simple {
			t.Errorf("SignSimple(len %d) = %q, want sha256=<64 lowercase hex>", len(body), simple)
		}
	}
	// A very long message id grows the internal buffer; signing must stay right.
	longID := strings.Repeat("m", 10000)
	if got, want := k.Sign(longID, testTime, testBody), hmacB64(t, testSecret, longID, testTime.Unix(), testBody); got != want {
		t.Errorf("Sign(long id) = %q, want %q", got, want)
	}
	if got, want := k.Sign(testID, testTime, testBody), hmacB64(t, testSecret, testID, testTime.Unix(), testBody); got != want {
		t.Errorf("Sign after long id = %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testSecret)
	good := k.Sign(testID, testTime, testBody)
	wrong := mustKey(t, oldSecret).Sign(testID, testTime, testBody)

	tests := []struct {
		name    string
		secret  string
		id      string
		ts      string
		sig     string
		body    []byte
		wantErr error // nil: must verify
	}{
		{name: "round trip", secret: testSecret, id: testID, ts: ts(testTime), sig: good, body: testBody},
		{name: "24-byte secret", secret: svixSecret, id: testID, ts: ts(testTime), sig: mustKey(t, svixSecret).Sign(testID, testTime, testBody), body: testBody},
		{name: "empty body", secret: testSecret, id: testID, ts: ts(testTime), sig: k.Sign(testID, testTime, nil), body: []byte{}},
		{name: "wrong secret", secret: oldSecret, id: testID, ts: ts(testTime), sig: good, body: testBody, wantErr: signer.ErrNoMatchingSignature},
		{name: "tampered body", secret: testSecret, id: testID, ts: ts(testTime), sig: good, body: []byte(string(testBody) + " "), wantErr: signer.ErrNoMatchingSignature},
		{name: "tampered id", secret: testSecret, id: testID + "x", ts: ts(testTime), sig: good, body: testBody, wantErr: signer.ErrNoMatchingSignature},
		{name: "tampered timestamp", secret: testSecret, id: testID, ts: ts(testTime.Add(time.Second)), sig: good, body: testBody, wantErr: signer.ErrNoMatchingSignature},
		{name: "second signature matches", secret: testSecret, id: testID, ts: ts(testTime), sig: wrong + " " + good, body: testBody},
		{name: "first signature matches", secret: testSecret, id: testID, ts: ts(testTime), sig: good + " " + wrong, body: testBody},
		{name: "extra spaces", secret: testSecret, id: testID, ts: ts(testTime), sig: "  " + wrong + "   " + good + " ", body: testBody},
		{name: "other versions ignored", secret: testSecret, id: testID, ts: ts(testTime), sig: "v1a,abc v2," + good[3:] + " " + good, body: testBody},
		{name: "good signature under another version", secret: testSecret, id: testID, ts: ts(testTime), sig: "v2," + good[3:], body: testBody, wantErr: signer.ErrNoMatchingSignature},
		{name: "only v2 entries", secret: testSecret, id: testID, ts: ts(testTime), sig: "v2,abc v2,def", body: testBody, wantErr: signer.ErrNoMatchingSignature},
		{name: "none of two match", secret: testSecret, id: testID, ts: ts(testTime), sig: wrong + " " + wrong, body: testBody, wantErr: signer.ErrNoMatchingSignature},
		{name: "malformed entry and a good one", secret: testSecret, id: testID, ts: ts(testTime), sig: "garbage " + good, body: testBody},
		{name: "malformed entry and a wrong one", secret: testSecret, id: testID, ts: ts(testTime), sig: "garbage " + wrong, body: testBody, wantErr: signer.ErrNoMatchingSignature},
		{name: "empty signature header", secret: testSecret, id: testID, ts: ts(testTime), sig: "", body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "blank signature header", secret: testSecret, id: testID, ts: ts(testTime), sig: "   ", body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "no comma", secret: testSecret, id: testID, ts: ts(testTime), sig: "v1" + good[3:], body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "bad base64", secret: testSecret, id: testID, ts: ts(testTime), sig: "v1," + strings.Repeat("!", 44), body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "base64 of 31 bytes", secret: testSecret, id: testID, ts: ts(testTime), sig: "v1," + base64.StdEncoding.EncodeToString(make([]byte, 31)), body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "short signature", secret: testSecret, id: testID, ts: ts(testTime), sig: "v1,abcd", body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "empty v1 signature", secret: testSecret, id: testID, ts: ts(testTime), sig: "v1,", body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "empty id", secret: testSecret, id: "", ts: ts(testTime), sig: good, body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "empty timestamp", secret: testSecret, id: testID, ts: "", sig: good, body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "timestamp not a number", secret: testSecret, id: testID, ts: "yesterday", sig: good, body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "timestamp with sign", secret: testSecret, id: testID, ts: "+" + ts(testTime), sig: good, body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "timestamp in milliseconds out of range", secret: testSecret, id: testID, ts: "99999999999999999999", sig: good, body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "timestamp with fraction", secret: testSecret, id: testID, ts: ts(testTime) + ".5", sig: good, body: testBody, wantErr: signer.ErrMalformedHeader},
		{name: "bad secret", secret: "not-a-secret", id: testID, ts: ts(testTime), sig: good, body: testBody, wantErr: signer.ErrInvalidSecret},
	}
	sentinels := []error{signer.ErrInvalidSecret, signer.ErrMalformedHeader, signer.ErrNoMatchingSignature, signer.ErrTimestampTooOld, signer.ErrTimestampTooNew}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := signer.Verify(tt.secret, tt.id, tt.ts, tt.sig, tt.body, fixedClock(testTime))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify: %v, want an error wrapping %q", err, tt.wantErr)
			}
			for _, s := range sentinels {
				if s != tt.wantErr && errors.Is(err, s) {
					t.Errorf("Verify: %v also wraps %q", err, s)
				}
			}
			if strings.Contains(err.Error(), strings.TrimPrefix(tt.secret, "whsec_")) {
				t.Errorf("error %q contains the secret", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestVerifyErrorMessages(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testSecret)
	good := k.Sign(testID, testTime, testBody)
	tests := []struct {
		name, ts, sig string
		now           time.Time
		want          string
	}{
		{"too old", ts(testTime), good, testTime.Add(12 * time.Minute), "timestamp 1700000000 is 12m0s older than now (tolerance 5m0s)"},
		{"too new", ts(testTime), good, testTime.Add(-7 * time.Minute), "timestamp 1700000000 is 7m0s ahead of now (tolerance 5m0s)"},
		{"far future", "9223372036854775807", good, testTime, "timestamp 9223372036854775807 is 9223372035154775807s ahead of now (tolerance 5m0s)"},
		{"no match", ts(testTime), mustKey(t, oldSecret).Sign(testID, testTime, testBody), testTime, "signature does not match the v1 signature in the header"},
		{"no match of two", ts(testTime), "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", testTime, "signature does not match any of the 2 v1 signatures in the header"},
		{"only v2", ts(testTime), "v2,abc", testTime, `webhook-signature has no v1 signature, only versions "v2"`},
		{"no comma", ts(testTime), "abc", testTime, `webhook-signature: entry 1 "abc" has no comma between version and signature`},
		{"bad timestamp", "soon", good, testTime, `webhook-timestamp "soon" is not unix seconds`},
		{"empty", ts(testTime), "", testTime, "webhook-signature is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := k.Verify(testID, tt.ts, tt.sig, testBody, fixedClock(tt.now))
			if err == nil || err.Error() != tt.want {
				t.Errorf("Verify: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestVerifyTimestampTolerance(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testSecret)
	sig := k.Sign(testID, testTime, testBody)

	tests := []struct {
		name      string
		offset    time.Duration // now - signing time
		tolerance time.Duration
		wantErr   error
	}{
		{"same second", 0, 0, nil},
		{"later in the same second", 999 * time.Millisecond, 0, nil},
		{"exactly 5m old", 5 * time.Minute, 0, nil},
		{"5m0.9s old counts as 5m", 5*time.Minute + 900*time.Millisecond, 0, nil},
		{"5m1s old", 5*time.Minute + time.Second, 0, signer.ErrTimestampTooOld},
		{"an hour old", time.Hour, 0, signer.ErrTimestampTooOld},
		{"exactly 5m ahead", -5 * time.Minute, 0, nil},
		{"5m1s ahead", -5*time.Minute - time.Second, 0, signer.ErrTimestampTooNew},
		{"custom tolerance ok", 59 * time.Second, time.Minute, nil},
		{"custom tolerance too old", 61 * time.Second, time.Minute, signer.ErrTimestampTooOld},
		{"custom tolerance too new", -61 * time.Second, time.Minute, signer.ErrTimestampTooNew},
		{"fractional tolerance", 2 * time.Second, 1500 * time.Millisecond, signer.ErrTimestampTooOld},
		{"fractional tolerance ok", time.Second, 1500 * time.Millisecond, nil},
		{"negative tolerance disables the check", 1000 * time.Hour, -1, nil},
		{"negative tolerance disables the check (future)", -1000 * time.Hour, -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := &signer.VerifyOpts{
				Tolerance: tt.tolerance,
				Now:       func() time.Time { return testTime.Add(tt.offset) },
			}
			err := k.Verify(testID, ts(testTime), sig, testBody, opts)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Verify: %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify: %v, want %q", err, tt.wantErr)
			}
		})
	}

	// The timestamp is checked before the signature, as in the official
	// libraries: an old message with a bad signature reports its age.
	err := k.Verify(testID, ts(testTime), "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", testBody, fixedClock(testTime.Add(time.Hour)))
	if !errors.Is(err, signer.ErrTimestampTooOld) {
		t.Errorf("Verify(old and wrong): %v, want ErrTimestampTooOld", err)
	}
}

func TestVerifyDefaults(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testSecret)
	now := time.Now()
	sig := k.Sign(testID, now, testBody)
	if err := k.Verify(testID, ts(now), sig, testBody, nil); err != nil {
		t.Errorf("Verify(nil opts): %v", err)
	}
	if err := k.Verify(testID, ts(now), sig, testBody, &signer.VerifyOpts{}); err != nil {
		t.Errorf("Verify(zero opts): %v", err)
	}
	old := now.Add(-signer.DefaultTolerance - time.Minute)
	if err := k.Verify(testID, ts(old), k.Sign(testID, old, testBody), testBody, nil); !errors.Is(err, signer.ErrTimestampTooOld) {
		t.Errorf("Verify(nil opts, 6m old): %v, want ErrTimestampTooOld", err)
	}
}

func TestSignatureHeader(t *testing.T) {
	t.Parallel()
	newKey, oldKey := mustKey(t, testSecret), mustKey(t, oldSecret)

	if got := signer.SignatureHeader(nil, testID, testTime, testBody); got != "" {
		t.Errorf("SignatureHeader(no keys) = %q, want empty", got)
	}
	if got, want := signer.SignatureHeader([]signer.Key{newKey}, testID, testTime, testBody), newKey.Sign(testID, testTime, testBody); got != want {
		t.Errorf("SignatureHeader(one key) = %q, want %q", got, want)
	}

	h := signer.SignatureHeader([]signer.Key{newKey, oldKey}, testID, testTime, testBody)
	want := hmacB64(t, testSecret, testID, testTime.Unix(), testBody) + " " + hmacB64(t, oldSecret, testID, testTime.Unix(), testBody)
	if h != want {
		t.Errorf("SignatureHeader(new, old) = %q, want %q (newest first, one space)", h, want)
	}
	// A receiver holding either secret accepts the message.
	for _, secret := range []string{testSecret, oldSecret} {
		if err := signer.Verify(secret, testID, ts(testTime), h, testBody, fixedClock(testTime)); err != nil {
			t.Errorf("Verify(%s...): %v", secret[:10], err)
		}
	}
	// A receiver holding a third secret does not.
	third := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	if err := signer.Verify(third, testID, ts(testTime), h, testBody, fixedClock(testTime)); !errors.Is(err, signer.ErrNoMatchingSignature) {
		t.Errorf("Verify(third secret): %v, want ErrNoMatchingSignature", err)
	}
}

func TestSimple(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testSecret)
	sig := k.SignSimple(testBody)

	tests := []struct {
		name    string
		secret  string
		header  string
		body    []byte
		wantErr error
	}{
		{"round trip", testSecret, sig, testBody, nil},
		{"upper-case hex", testSecret, "sha256=" + strings.ToUpper(sig[7:]), testBody, nil},
		{"empty body", testSecret, k.SignSimple(nil), nil, nil},
		{"wrong secret", oldSecret, sig, testBody, signer.ErrNoMatchingSignature},
		{"tampered body", testSecret, sig, []byte(strings.Replace(string(testBody), "hello", "hellO", 1)), signer.ErrNoMatchingSignature},
		{"keyed by the decoded secret is wrong", testSecret, func() string {
			key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(testSecret, "whsec_"))
			m := hmac.New(sha256.New, key)
			m.Write(testBody)
			return "sha256=" + hex.EncodeToString(m.Sum(nil))
		}(), testBody, signer.ErrNoMatchingSignature},
		{"empty header", testSecret, "", testBody, signer.ErrMalformedHeader},
		{"no prefix", testSecret, sig[7:], testBody, signer.ErrMalformedHeader},
		{"other algorithm", testSecret, "sha1=" + sig[7:], testBody, signer.ErrMalformedHeader},
		{"short", testSecret, sig[:len(sig)-2], testBody, signer.ErrMalformedHeader},
		{"not hex", testSecret, "sha256=" + strings.Repeat("zz", 32), testBody, signer.ErrMalformedHeader},
		{"bad secret", "whsec_short", sig, testBody, signer.ErrInvalidSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := signer.VerifySimple(tt.secret, tt.header, tt.body)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("VerifySimple: %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifySimple: %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name    string
		secret  string
		wantErr string // substring of the message; "" for success
	}{
		{"32 bytes", testSecret, ""},
		{"24 bytes (Svix, Standard Webhooks vectors)", svixSecret, ""},
		{"64 bytes", "whsec_" + b64(make([]byte, 64)), ""},
		{"empty", "", `must start with "whsec_"`},
		{"missing prefix", strings.TrimPrefix(testSecret, "whsec_"), `must start with "whsec_"`},
		{"upper-case prefix", "WHSEC_" + strings.TrimPrefix(testSecret, "whsec_"), `must start with "whsec_"`},
		{"prefix only", "whsec_", "decodes to 0 bytes, want at least 24"},
		{"too short", "whsec_" + b64(make([]byte, 16)), "decodes to 16 bytes, want at least 24"},
		{"23 bytes", "whsec_" + b64(make([]byte, 23)), "decodes to 23 bytes, want at least 24"},
		{"bad base64", "whsec_not*base64*at*all*not*base64*at*all*", "not standard base64"},
		{"url-safe alphabet", "whsec_" + base64.URLEncoding.EncodeToString(make([]byte, 32)) + "-_", "not standard base64"},
		{"missing padding", strings.TrimSuffix(testSecret, "="), "not standard base64"},
		{"trailing newline", testSecret + "\n", "whitespace at byte 44"},
		{"embedded CR LF", "whsec_AAECAwQFBgcICQoLDA0O\r\nDxAREhMUFRYXGBkaGxwdHh8=", "whitespace at byte 20"},
		{"leading space after prefix", "whsec_ " + strings.TrimPrefix(testSecret, "whsec_"), "whitespace at byte 0"},
		{"leading space", " " + testSecret, `must start with "whsec_"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k, err := signer.ParseSecret(tt.secret)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseSecret: %v", err)
				}
				if k.Secret() != tt.secret {
					t.Errorf("Secret() = %q, want the input", k.Secret())
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseSecret succeeded, want error containing %q", tt.wantErr)
			}
			if !errors.Is(err, signer.ErrInvalidSecret) {
				t.Errorf("error %v does not wrap ErrInvalidSecret", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
			}
			if enc := strings.TrimSpace(strings.TrimPrefix(tt.secret, "whsec_")); len(enc) > 4 && strings.Contains(err.Error(), enc) {
				t.Errorf("error %q contains the secret", err)
			}
		})
	}
}

func TestMustParseSecret(t *testing.T) {
	t.Parallel()
	_ = signer.MustParseSecret(testSecret)
	defer func() {
		if r := recover(); r == nil {
			t.Error("MustParseSecret(bad) did not panic")
		}
	}()
	signer.MustParseSecret("bad")
}

func TestGenerateSecret(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		s, err := signer.GenerateSecret()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, signer.SecretPrefix) || len(s) != 50 {
			t.Fatalf("GenerateSecret() = %q, want whsec_ + 44 base64 characters", s)
		}
		raw, err := base64.StdEncoding.DecodeString(s[len(signer.SecretPrefix):])
		if err != nil || len(raw) != 32 {
			t.Fatalf("GenerateSecret() = %q: decodes to %d bytes, %v", s, len(raw), err)
		}
		if _, err := signer.ParseSecret(s); err != nil {
			t.Fatalf("ParseSecret(GenerateSecret()): %v", err)
		}
		if seen[s] {
			t.Fatalf("GenerateSecret returned %q twice", s)
		}
		seen[s] = true
	}
}

func TestKeyDoesNotPrintSecret(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testSecret)
	enc := strings.TrimPrefix(testSecret, "whsec_")
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, k)
		if strings.Contains(out, enc) || strings.Contains(out, "AAECAw") {
			t.Errorf("Sprintf(%q, key) = %q leaks the secret", verb, out)
		}
	}
	// Also inside a struct, as a config dump would print it.
	out := fmt.Sprintf("%+v", struct{ Keys []signer.Key }{[]signer.Key{k}})
	if strings.Contains(out, "AAECAw") {
		t.Errorf("Sprintf of a struct holding a key = %q leaks the secret", out)
	}
}

func TestZeroKeyPanics(t *testing.T) {
	t.Parallel()
	var k signer.Key
	for name, f := range map[string]func(){
		"Sign":            func() { k.Sign(testID, testTime, testBody) },
		"SignSimple":      func() { k.SignSimple(testBody) },
		"SignatureHeader": func() { signer.SignatureHeader([]signer.Key{k}, testID, testTime, testBody) },
		"Verify":          func() { _ = k.Verify(testID, ts(testTime), "v1,x", testBody, nil) },
		"VerifySimple":    func() { _ = k.VerifySimple("sha256=x", testBody) },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("%s on the zero Key did not panic", name)
				}
			}()
			f()
		}()
	}
}

// TestConcurrentUse signs and verifies from many goroutines with one Key and
// its copies; run with -race.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testSecret)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			kk := k // copies share the pool
			for i := range 200 {
				id := fmt.Sprintf("msg_%d_%d", g, i)
				body := []byte(strings.Repeat("b", i))
				if got, want := kk.Sign(id, testTime, body), hmacB64(t, testSecret, id, testTime.Unix(), body); got != want {
					t.Errorf("Sign(%s) = %q, want %q", id, got, want)
					return
				}
				if got, want := kk.SignSimple(body), hmacHex(testSecret, body); got != want {
					t.Errorf("SignSimple = %q, want %q", got, want)
					return
				}
				if err := kk.Verify(id, ts(testTime), kk.Sign(id, testTime, body), body, fixedClock(testTime)); err != nil {
					t.Errorf("Verify: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestSignAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector, so allocation counts are meaningless")
	}
	k := mustKey(t, testSecret)
	body := make([]byte, 1024)
	k.Sign(testID, testTime, body) // warm the pool
	if n := testing.AllocsPerRun(1000, func() { k.Sign(testID, testTime, body) }); n > 1 {
		t.Errorf("Sign allocates %v times per call, want at most 1 (the result)", n)
	}
	if n := testing.AllocsPerRun(1000, func() { k.SignSimple(body) }); n > 1 {
		t.Errorf("SignSimple allocates %v times per call, want at most 1 (the result)", n)
	}
	keys := []signer.Key{k, mustKey(t, oldSecret)}
	signer.SignatureHeader(keys, testID, testTime, body)
	if n := testing.AllocsPerRun(1000, func() { signer.SignatureHeader(keys, testID, testTime, body) }); n > 2 {
		t.Errorf("SignatureHeader allocates %v times per call, want at most 2", n)
	}
}

func BenchmarkSign(b *testing.B) {
	k := mustKey(b, testSecret)
	body := make([]byte, 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		k.Sign(testID, testTime, body)
	}
}

func BenchmarkSignParallel(b *testing.B) {
	k := mustKey(b, testSecret)
	body := make([]byte, 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k.Sign(testID, testTime, body)
		}
	})
}

func BenchmarkSignatureHeaderTwoKeys(b *testing.B) {
	keys := []signer.Key{mustKey(b, testSecret), mustKey(b, oldSecret)}
	body := make([]byte, 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		signer.SignatureHeader(keys, testID, testTime, body)
	}
}

func BenchmarkSignSimple(b *testing.B) {
	k := mustKey(b, testSecret)
	body := make([]byte, 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		k.SignSimple(body)
	}
}

func BenchmarkVerify(b *testing.B) {
	k := mustKey(b, testSecret)
	body := make([]byte, 1024)
	sig := k.Sign(testID, testTime, body)
	opts := fixedClock(testTime)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := k.Verify(testID, ts(testTime), sig, body, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignNaive is the straightforward implementation, for comparison.
func BenchmarkSignNaive(b *testing.B) {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(testSecret, "whsec_"))
	body := make([]byte, 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		m := hmac.New(sha256.New, key)
		fmt.Fprintf(m, "%s.%d.%s", testID, testTime.Unix(), body)
		_ = "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
}
