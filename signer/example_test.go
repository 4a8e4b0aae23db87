package signer_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pgoutbox/relay/signer"
)

func ExampleGenerateSecret() {
	secret, err := signer.GenerateSecret()
	if err != nil {
		panic(err)
	}
	fmt.Println(strings.HasPrefix(secret, signer.SecretPrefix), len(secret))
	// Output: true 50
}

func ExampleKey_Sign() {
	key, err := signer.ParseSecret("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	if err != nil {
		panic(err)
	}
	ts := time.Unix(1700000000, 0)
	body := []byte(`{"id":"evt_1","type":"thread.created","data":{"title":"hello"}}`)

	fmt.Println("webhook-id: evt_1")
	fmt.Println("webhook-timestamp:", strconv.FormatInt(ts.Unix(), 10))
	fmt.Println("webhook-signature:", key.Sign("evt_1", ts, body))
	fmt.Println("x-relay-signature:", key.SignSimple(body))
	// Output:
	// webhook-id: evt_1
	// webhook-timestamp: 1700000000
	// webhook-signature: v1,ZEXZiKJI09VoIqiDG02KiJkNHjkEXqf85Caiq6RDNJ8=
	// x-relay-signature: sha256=39e261bc92f3920677afa0d4b49463a2294128cfca232146ed0c7f457519aab6
}

func ExampleSignatureHeader() {
	current := signer.MustParseSecret("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	rotatedOut := signer.MustParseSecret("whsec_//////////////////////////////////////////8=")
	ts := time.Unix(1700000000, 0)
	body := []byte(`{"id":"evt_1"}`)

	// Newest first: receivers still on the old secret match the second entry.
	h := signer.SignatureHeader([]signer.Key{current, rotatedOut}, "evt_1", ts, body)
	for _, sig := range strings.Split(h, " ") {
		fmt.Println(sig)
	}
	// Output:
	// v1,NbfQFpUBVqfAFlQAVrpHevsLe1lcYPENUEVWmUM3zxY=
	// v1,kpIWEWLLR2DDuXymIqvtWhSnA5wISX3D7+guEtEr8DQ=
}

func ExampleVerify() {
	const secret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	body := []byte(`{"id":"evt_1","type":"thread.created","data":{"title":"hello"}}`)
	sig := signer.MustParseSecret(secret).Sign("evt_1", time.Unix(1700000000, 0), body)

	// A receiver's clock, fixed here so the example is reproducible; a real
	// receiver passes nil opts and gets time.Now and a 5 minute tolerance.
	opts := &signer.VerifyOpts{Now: func() time.Time { return time.Unix(1700000042, 0) }}
	fmt.Println(signer.Verify(secret, "evt_1", "1700000000", sig, body, opts))

	tampered := []byte(strings.Replace(string(body), "hello", "HELLO", 1))
	err := signer.Verify(secret, "evt_1", "1700000000", sig, tampered, opts)
	fmt.Println(err)
	fmt.Println(errors.Is(err, signer.ErrNoMatchingSignature))

	late := &signer.VerifyOpts{Now: func() time.Time { return time.Unix(1700000720, 0) }}
	err = signer.Verify(secret, "evt_1", "1700000000", sig, body, late)
	fmt.Println(err)
	fmt.Println(errors.Is(err, signer.ErrTimestampTooOld))
	// Output:
	// <nil>
	// signature does not match the v1 signature in the header
	// true
	// timestamp 1700000000 is 12m0s older than now (tolerance 5m0s)
	// true
}

func ExampleVerifySimple() {
	const secret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	body := []byte(`{"id":"evt_1"}`)
	header := signer.MustParseSecret(secret).SignSimple(body)

	fmt.Println(signer.VerifySimple(secret, header, body))
	fmt.Println(signer.VerifySimple(secret, header, []byte(`{"id":"evt_2"}`)))
	fmt.Println(signer.VerifySimple(secret, "md5=abc", body))
	// Output:
	// <nil>
	// signature does not match the sha256 signature in the header
	// x-relay-signature "md5=abc" does not start with "sha256="
}

func ExampleParseSecret() {
	_, err := signer.ParseSecret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	fmt.Println(err)
	_, err = signer.ParseSecret("whsec_c2hvcnQ=")
	fmt.Println(err)
	fmt.Println(errors.Is(err, signer.ErrInvalidSecret))
	// Output:
	// invalid secret: must start with "whsec_"
	// invalid secret: decodes to 5 bytes, want at least 24
	// true
}
