package dispatch

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pgoutbox/relay/signer"
	"github.com/pgoutbox/relay/sink/send"
)

type nopSender struct{}

func (nopSender) Send(_ context.Context, r send.Request) send.Result {
	return send.Result{StatusCode: 204, Duration: time.Millisecond}
}

// benchJob is a json delivery of a 500-byte payload with one secret.
func benchJob(url string) *job {
	owner, key := "user-1", "thread-7"
	payload := []byte(`{"thread_id":"t-1234567890","title":"Hello","body":"` +
		"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum." + `"}`)
	return &job{
		deliveryID: 12345, subID: 7, eventID: "0195d5f0-7a3c-7c4e-9f1a-3b2c1d0e9f8a", eventType: "thread.created",
		owner: &owner, key: &key, payload: payload, eventCreatedAt: time.Now(),
		url: url, keys: []signer.Key{signer.MustParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")},
		format: "json", timeout: 5 * time.Second, schedule: []time.Duration{time.Minute},
	}
}

func benchDispatcher(b *testing.B, s Sender) *Dispatcher {
	d := &Dispatcher{cfg: Config{Sender: s, Now: time.Now, Jitter: func() float64 { return 0 }, MaxRetryAfter: time.Hour}}
	d.settings.AllowHTTP = true
	d.settingsAt = time.Now().Add(time.Hour) // fresh: no database read
	return d
}

// BenchmarkAttemptAroundTheRequest is the work of one attempt outside the
// HTTP exchange: body, headers, signatures, classification.
func BenchmarkAttemptAroundTheRequest(b *testing.B) {
	d := benchDispatcher(b, nopSender{})
	j := benchJob("http://127.0.0.1:1/hook")
	b.ReportAllocs()
	for b.Loop() {
		if r := d.attempt(context.Background(), j); r.rec.Status != "succeeded" {
			b.Fatalf("%+v", r.rec)
		}
	}
}

// BenchmarkAttemptLoopback is one whole attempt through the real sender to a
// loopback receiver answering 204 (client and server share the CPU).
func BenchmarkAttemptLoopback(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	g, _ := send.NewAddressGuard([]string{"127.0.0.0/8"})
	s := send.New(send.Config{Guard: g})
	defer s.CloseIdleConnections()
	d := benchDispatcher(b, s)
	j := benchJob(srv.URL + "/hook")
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := d.attempt(context.Background(), j); r.rec.Status != "succeeded" {
				b.Errorf("%+v", r.rec)
				return
			}
		}
	})
}
