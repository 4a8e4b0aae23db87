// Package signer signs webhook deliveries and verifies their signatures.
//
// Two forms are produced for every delivery:
//
//   - The Standard Webhooks v1 form (https://www.standardwebhooks.com), sent in
//     the webhook-signature header: "v1,<base64 HMAC-SHA256>" over
//     "<webhook-id>.<webhook-timestamp>.<body>", keyed by the base64-decoded part
//     of the secret after "whsec_". When a subscription has more than one active
//     secret (a rotated-out secret still inside its grace period), the header
//     carries one signature per secret, newest first, separated by single spaces,
//     so a receiver holding either secret accepts the message. The official
//     Standard Webhooks libraries verify these headers unchanged.
//   - A simple form for receivers that only want an HMAC of the body, sent in
//     the x-relay-signature header: "sha256=<lowercase hex HMAC-SHA256 of the body>",
//     keyed by the secret string exactly as stored (the whole "whsec_..." text).
//     It does not cover the message id or timestamp, so it does not protect
//     against replays; prefer the Standard Webhooks form.
//
// Secrets are "whsec_" followed by standard (padded) base64 of random bytes;
// [GenerateSecret] makes 32-byte ones. Parse a secret once with [ParseSecret]
// and sign any number of messages with the resulting [Key]: a Key keeps its
// HMAC state ready for reuse, so signing does not decode the secret or rebuild
// the HMAC each time, and is safe for concurrent use.
//
// The package uses only the standard library.
package signer

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// SecretPrefix starts every secret. It is part of the secret: the simple
	// form is keyed by the whole string, prefix included.
	SecretPrefix = "whsec_"

	// DefaultTolerance is how far a webhook-timestamp may lie from the
	// verifier's clock, in either direction, when VerifyOpts does not say
	// otherwise. It is the value the Standard Webhooks libraries use.
	DefaultTolerance = 5 * time.Minute

	// SecretBytes is the number of random bytes GenerateSecret puts in a secret.
	SecretBytes = 32

	// MinSecretBytes is the shortest decoded secret ParseSecret accepts.
	// 24 bytes is what Svix and other Standard Webhooks senders issue, so their
	// secrets can be imported; anything shorter is rejected as too weak.
	MinSecretBytes = 24
)

const (
	versionV1    = "v1"
	simplePrefix = "sha256="
)

var b64 = base64.StdEncoding

// GenerateSecret returns a new secret: SecretPrefix followed by the standard
// base64 encoding (with padding) of SecretBytes bytes from crypto/rand, 50
// characters in all. The error is that of crypto/rand and is not expected in
// practice.
func GenerateSecret() (string, error) {
	var raw [SecretBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("generating secret: %w", err)
	}
	return SecretPrefix + b64.EncodeToString(raw[:]), nil
}

// Key is a parsed secret, ready to sign many messages. Make one with
// [ParseSecret]. The zero Key holds no secret: its signing and verifying
// methods panic rather than sign with an empty key.
//
// A Key is a small value that may be copied freely and used from many
// goroutines at once; copies share a pool of prepared HMAC states. Its String
// and GoString methods redact the secret, so a Key that ends up in a log line
// does not leak it.
type Key struct {
	secret  string     // the secret exactly as given, "whsec_..."; keys the simple form
	decoded []byte     // base64-decoded part after the prefix; keys the v1 form
	pool    *sync.Pool // of *state, keyed with this secret
}

// state is the per-call scratch space of a Key: both HMACs (already keyed,
// reset before each use) and buffers, so that a signature costs one allocation
// (the returned string) once the pool is warm.
type state struct {
	v1     hash.Hash
	simple hash.Hash // created on first use of SignSimple or VerifySimple
	sum    [sha256.Size]byte
	buf    []byte
}

// ParseSecret parses a secret of the form "whsec_<standard base64>" into a Key.
//
// The prefix is required, although the Standard Webhooks libraries accept
// secrets without it: the simple form is keyed by the secret string as
// stored, so "whsec_X" and "X" would sign the same v1 signatures but different
// simple ones. Requiring the prefix keeps one spelling per secret. The base64
// part must be standard base64 with padding, contain no whitespace or line
// breaks (a common accident with secrets read from files) and decode to at
// least MinSecretBytes bytes.
//
// Errors wrap ErrInvalidSecret and never contain the secret itself.
func ParseSecret(secret string) (Key, error) {
	encoded, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return Key{}, errorf(ErrInvalidSecret, "invalid secret: must start with %q", SecretPrefix)
	}
	if i := strings.IndexAny(encoded, " \t\r\n"); i >= 0 {
		return Key{}, errorf(ErrInvalidSecret, "invalid secret: whitespace at byte %d after %q", i, SecretPrefix)
	}
	decoded, err := b64.DecodeString(encoded)
	if err != nil {
		// base64.CorruptInputError only gives an offset, never the input.
		return Key{}, errorf(ErrInvalidSecret, "invalid secret: the part after %q is not standard base64: %v", SecretPrefix, err)
	}
	if len(decoded) < MinSecretBytes {
		return Key{}, errorf(ErrInvalidSecret, "invalid secret: decodes to %d bytes, want at least %d", len(decoded), MinSecretBytes)
	}
	k := Key{secret: secret, decoded: decoded}
	k.pool = &sync.Pool{New: func() any {
		return &state{v1: hmac.New(sha256.New, decoded), buf: make([]byte, 0, 128)}
	}}
	return k, nil
}

// MustParseSecret is like ParseSecret but panics on error. It is meant for
// tests and examples with constant secrets.
func MustParseSecret(secret string) Key {
	k, err := ParseSecret(secret)
	if err != nil {
		panic("signer: " + err.Error())
	}
	return k
}

// Secret returns the secret exactly as it was given to ParseSecret.
func (k Key) Secret() string { return k.secret }

// String returns a redacted description of the key, never the secret.
func (k Key) String() string {
	if k.pool == nil {
		return "signer.Key(zero)"
	}
	return "signer.Key(" + SecretPrefix + "…redacted)"
}

// GoString is like String, so that %#v does not print the secret either.
func (k Key) GoString() string { return k.String() }

func (k Key) get() *state {
	if k.pool == nil {
		panic("signer: use of zero Key; create Keys with ParseSecret")
	}
	return k.pool.Get().(*state)
}

// sumV1 computes the v1 HMAC of "<msgID>.<unixSeconds>.<body>" into st.sum.
func (st *state) sumV1(msgID string, unixSeconds int64, body []byte) []byte {
	st.v1.Reset()
	b := append(st.buf[:0], msgID...)
	b = append(b, '.')
	b = strconv.AppendInt(b, unixSeconds, 10)
	b = append(b, '.')
	st.v1.Write(b)
	st.v1.Write(body)
	st.buf = b[:0] // keep a buffer that grew for a long msgID
	return st.v1.Sum(st.sum[:0])
}

// sumSimple computes the simple-form HMAC of body into st.sum.
func (st *state) sumSimple(secret string, body []byte) []byte {
	if st.simple == nil {
		st.simple = hmac.New(sha256.New, []byte(secret))
	} else {
		st.simple.Reset()
	}
	st.simple.Write(body)
	return st.simple.Sum(st.sum[:0])
}

// appendV1 appends "v1,<base64 signature>" to dst.
func appendV1(dst []byte, st *state, msgID string, unixSeconds int64, body []byte) []byte {
	sum := st.sumV1(msgID, unixSeconds, body)
	dst = append(dst, versionV1...)
	dst = append(dst, ',')
	return b64.AppendEncode(dst, sum)
}

// Sign returns the Standard Webhooks v1 signature of a message,
// "v1,<base64 of HMAC-SHA256 over "<msgID>.<unix seconds>.<body>">", for the
// webhook-signature header. Only the whole seconds of timestamp count; send
// the same value, strconv.FormatInt(timestamp.Unix(), 10), as webhook-timestamp.
//
// Sign panics on the zero Key.
func (k Key) Sign(msgID string, timestamp time.Time, body []byte) string {
	st := k.get()
	defer k.pool.Put(st)
	var out [3 + 44]byte // "v1," + base64 of 32 bytes
	return string(appendV1(out[:0], st, msgID, timestamp.Unix(), body))
}

// SignSimple returns the simple signature of body, "sha256=<lowercase hex of
// HMAC-SHA256(secret string, body)>", for the x-relay-signature header. The key
// is the secret string as stored, prefix included, not its decoded bytes.
//
// SignSimple panics on the zero Key.
func (k Key) SignSimple(body []byte) string {
	var out [len(simplePrefix) + 2*sha256.Size]byte
	return string(k.AppendSimple(out[:0], body))
}

// AppendSimple appends the simple signature of body (see SignSimple) to
// dst and returns the extended slice, so a caller can build several header
// values in one buffer.
func (k Key) AppendSimple(dst []byte, body []byte) []byte {
	st := k.get()
	defer k.pool.Put(st)
	sum := st.sumSimple(k.secret, body)
	dst = append(dst, simplePrefix...)
	return hex.AppendEncode(dst, sum)
}

// SignatureHeader returns the webhook-signature header value for a message
// signed with every key in keys: their v1 signatures separated by single
// spaces, in the order given. Pass the newest secret first and then any
// rotated-out secrets still inside their grace period, so receivers that only
// look at the first signature still use the current secret.
//
// It returns "" when keys is empty, and panics if any key is the zero Key.
func SignatureHeader(keys []Key, msgID string, timestamp time.Time, body []byte) string {
	if len(keys) == 0 {
		return ""
	}
	return string(AppendSignatureHeader(make([]byte, 0, len(keys)*(3+44+1)), keys, msgID, timestamp, body))
}

// AppendSignatureHeader appends the webhook-signature header value (see
// SignatureHeader) to dst and returns the extended slice.
func AppendSignatureHeader(dst []byte, keys []Key, msgID string, timestamp time.Time, body []byte) []byte {
	ts := timestamp.Unix()
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ' ')
		}
		st := k.get()
		dst = appendV1(dst, st, msgID, ts, body)
		k.pool.Put(st)
	}
	return dst
}
