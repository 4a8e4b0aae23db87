package signer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Every error returned by ParseSecret, Verify and
// VerifySimple wraps exactly one of them, so callers can branch with
// errors.Is; the error's own message says what was wrong in words a person
// understands ("timestamp 1700000000 is 12m0s older than now (tolerance
// 5m0s)"). Messages never contain a secret.
var (
	// ErrInvalidSecret means the secret is not "whsec_" + standard base64 of at
	// least MinSecretBytes bytes.
	ErrInvalidSecret = errors.New("invalid secret")

	// ErrMalformedHeader means a header could not be read at all: empty
	// webhook-id or webhook-signature, a webhook-timestamp that is not unix
	// seconds, a webhook-signature with no usable v1 entry and at least one
	// entry that is not "<version>,<signature>" or whose v1 signature is not
	// base64 of 32 bytes, or an x-relay-signature that is not "sha256=<64 hex>".
	ErrMalformedHeader = errors.New("malformed signature header")

	// ErrNoMatchingSignature means the headers were readable but no signature
	// in them was made with this secret over this id, timestamp and body:
	// wrong secret, or a tampered message. A webhook-signature that holds only
	// signatures of other versions than v1 (which receivers must ignore) also
	// gives this error.
	ErrNoMatchingSignature = errors.New("no matching signature")

	// ErrTimestampTooOld means webhook-timestamp lies further in the past than
	// the tolerance: a replay, a long-delayed message or a slow clock.
	ErrTimestampTooOld = errors.New("timestamp too old")

	// ErrTimestampTooNew means webhook-timestamp lies further in the future
	// than the tolerance, usually a sender's clock running fast.
	ErrTimestampTooNew = errors.New("timestamp too new")
)

// sentinelError has its own message and unwraps to one sentinel, so the
// message reads naturally without repeating the sentinel's text.
type sentinelError struct {
	sentinel error
	msg      string
}

func (e *sentinelError) Error() string { return e.msg }
func (e *sentinelError) Unwrap() error { return e.sentinel }

func errorf(sentinel error, format string, args ...any) error {
	return &sentinelError{sentinel: sentinel, msg: fmt.Sprintf(format, args...)}
}

// VerifyOpts are optional settings for Verify. A nil *VerifyOpts, and any
// zero field, means the default.
type VerifyOpts struct {
	// Tolerance is how far webhook-timestamp may lie from Now, in either
	// direction. Zero means DefaultTolerance (5 minutes). A negative value
	// turns the timestamp check off; use that only to re-check stored
	// deliveries (debugging tools, tests), never on a live receiver, where the
	// check is what stops replays.
	Tolerance time.Duration

	// Now returns the current time. Nil means time.Now. Tests inject a fixed
	// clock here.
	Now func() time.Time
}

func (o *VerifyOpts) tolerance() time.Duration {
	if o == nil || o.Tolerance == 0 {
		return DefaultTolerance
	}
	return o.Tolerance
}

func (o *VerifyOpts) now() time.Time {
	if o == nil || o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// Verify checks a Standard Webhooks message against one secret: the values of
// its webhook-id, webhook-timestamp and webhook-signature headers and its raw
// body, byte for byte as received.
//
// The signature header is a space-separated list of "<version>,<signature>"
// entries; entries of versions other than v1 are ignored and the message is
// accepted if any v1 signature matches, compared in constant time. The
// timestamp must lie within opts.Tolerance of opts.Now, in whole seconds as
// the header carries them; it is checked before the signature, as the
// official libraries do. Verify returns nil when the message is authentic, and
// otherwise an error wrapping ErrInvalidSecret, ErrMalformedHeader,
// ErrTimestampTooOld, ErrTimestampTooNew or ErrNoMatchingSignature.
//
// To check many messages against the same secret, parse it once with
// ParseSecret and call Key.Verify.
func Verify(secret, msgID, timestampHeader, signatureHeader string, body []byte, opts *VerifyOpts) error {
	k, err := ParseSecret(secret)
	if err != nil {
		return err
	}
	return k.Verify(msgID, timestampHeader, signatureHeader, body, opts)
}

// Verify is like the package-level Verify, with a parsed secret.
func (k Key) Verify(msgID, timestampHeader, signatureHeader string, body []byte, opts *VerifyOpts) error {
	st := k.get()
	defer k.pool.Put(st)
	if msgID == "" {
		return errorf(ErrMalformedHeader, "webhook-id is empty")
	}
	ts, err := parseTimestamp(timestampHeader)
	if err != nil {
		return err
	}
	if tol := opts.tolerance(); tol >= 0 {
		if err := checkTimestamp(ts, opts.now().Unix(), tol); err != nil {
			return err
		}
	}
	if strings.TrimSpace(signatureHeader) == "" {
		return errorf(ErrMalformedHeader, "webhook-signature is empty")
	}

	want := st.sumV1(msgID, ts, body)

	var (
		numV1     int
		malformed string   // description of the first unreadable entry
		others    []string // versions other than v1, for the message
		got       [sha256.Size + 2]byte
	)
	n := 0
	for entry := range strings.FieldsSeq(signatureHeader) {
		n++
		version, sig, ok := strings.Cut(entry, ",")
		if !ok {
			if malformed == "" {
				malformed = fmt.Sprintf("entry %d %s has no comma between version and signature", n, quoteShort(entry))
			}
			continue
		}
		if version != versionV1 {
			others = append(others, quoteShort(version))
			continue
		}
		if len(sig) != b64.EncodedLen(sha256.Size) {
			if malformed == "" {
				malformed = fmt.Sprintf("entry %d: v1 signature has %d characters, want %d (base64 of 32 bytes)", n, len(sig), b64.EncodedLen(sha256.Size))
			}
			continue
		}
		m, err := b64.Decode(got[:], []byte(sig))
		if err != nil || m != sha256.Size {
			if malformed == "" {
				malformed = fmt.Sprintf("entry %d: v1 signature %s is not base64 of 32 bytes", n, quoteShort(sig))
			}
			continue
		}
		numV1++
		if hmac.Equal(got[:sha256.Size], want) {
			return nil
		}
	}

	switch {
	case numV1 == 1:
		return errorf(ErrNoMatchingSignature, "signature does not match the v1 signature in the header")
	case numV1 > 1:
		return errorf(ErrNoMatchingSignature, "signature does not match any of the %d v1 signatures in the header", numV1)
	case malformed != "":
		return errorf(ErrMalformedHeader, "webhook-signature: %s", malformed)
	default:
		return errorf(ErrNoMatchingSignature, "webhook-signature has no v1 signature, only versions %s", strings.Join(others, ", "))
	}
}

// parseTimestamp reads a webhook-timestamp: unix seconds, ASCII digits only.
func parseTimestamp(h string) (int64, error) {
	if h == "" {
		return 0, errorf(ErrMalformedHeader, "webhook-timestamp is empty")
	}
	for i := 0; i < len(h); i++ {
		if h[i] < '0' || h[i] > '9' {
			return 0, errorf(ErrMalformedHeader, "webhook-timestamp %s is not unix seconds", quoteShort(h))
		}
	}
	ts, err := strconv.ParseInt(h, 10, 64)
	if err != nil {
		return 0, errorf(ErrMalformedHeader, "webhook-timestamp %s is out of range", quoteShort(h))
	}
	return ts, nil
}

// checkTimestamp compares whole seconds. For an integer number of seconds d,
// d > floor(tol/1s) exactly when d seconds > tol, and working in seconds
// cannot overflow a Duration however far off the timestamp is.
func checkTimestamp(ts, now int64, tol time.Duration) error {
	limit := int64(tol / time.Second)
	// ts and now are both non-negative, so the differences cannot overflow.
	if age := now - ts; age > limit {
		return errorf(ErrTimestampTooOld, "timestamp %d is %s older than now (tolerance %s)", ts, seconds(age), tol)
	}
	if ahead := ts - now; ahead > limit {
		return errorf(ErrTimestampTooNew, "timestamp %d is %s ahead of now (tolerance %s)", ts, seconds(ahead), tol)
	}
	return nil
}

// seconds formats n seconds as a Duration does, without overflowing.
func seconds(n int64) string {
	if n > math.MaxInt64/int64(time.Second) {
		return strconv.FormatInt(n, 10) + "s"
	}
	return (time.Duration(n) * time.Second).String()
}

// quoteShort quotes an untrusted header fragment for an error message,
// cutting it short so a huge header does not flood the logs.
func quoteShort(s string) string {
	const max = 48
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

// VerifySimple checks an x-relay-signature header value, "sha256=<hex>",
// against the raw body and one secret. The hex may be upper or lower case.
// It returns nil when the signature matches, compared in constant time, and
// otherwise an error wrapping ErrInvalidSecret, ErrMalformedHeader or
// ErrNoMatchingSignature.
//
// The simple form covers only the body: it cannot detect a replayed message.
func VerifySimple(secret, header string, body []byte) error {
	k, err := ParseSecret(secret)
	if err != nil {
		return err
	}
	return k.VerifySimple(header, body)
}

// VerifySimple is like the package-level VerifySimple, with a parsed secret.
func (k Key) VerifySimple(header string, body []byte) error {
	st := k.get()
	defer k.pool.Put(st)
	hexSig, ok := strings.CutPrefix(header, simplePrefix)
	if !ok {
		return errorf(ErrMalformedHeader, "x-relay-signature %s does not start with %q", quoteShort(header), simplePrefix)
	}
	if len(hexSig) != hex.EncodedLen(sha256.Size) {
		return errorf(ErrMalformedHeader, "x-relay-signature has %d hex digits, want %d", len(hexSig), hex.EncodedLen(sha256.Size))
	}
	var got [sha256.Size]byte
	if _, err := hex.Decode(got[:], []byte(hexSig)); err != nil {
		return errorf(ErrMalformedHeader, "x-relay-signature is not hex: %v", err)
	}
	if !hmac.Equal(got[:], st.sumSimple(k.secret, body)) {
		return errorf(ErrNoMatchingSignature, "signature does not match the sha256 signature in the header")
	}
	return nil
}
