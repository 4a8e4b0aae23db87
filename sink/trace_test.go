package sink_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/internal/telemetry"
	"github.com/pgoutbox/relay/outbox"
	"github.com/pgoutbox/relay/sink/dispatch"
	"github.com/pgoutbox/relay/sink/fanout"
)

const (
	appTraceID    = "4bf92f3577b34da6a3ce929d0e0e4736"
	appSpanID     = "00f067aa0ba902b7"
	appTraceparnt = "00-" + appTraceID + "-" + appSpanID + "-01"
)

// emitTraced emits an event whose headers carry the application's trace
// context, through the five-argument relay.emit.
func emitTraced(t *testing.T, db *pgtest.DB) string {
	t.Helper()
	var id string
	if err := db.Pool.QueryRow(context.Background(), `SELECT relay.emit('order.paid', '{"amount": 120}', NULL, NULL,
		jsonb_build_object('traceparent', $1::text, 'tracestate', 'app=checkout'))::text`, appTraceparnt).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestTraceparentSentOnEveryAttempt: without tracing, the event's
// traceparent and tracestate reach the receiver unchanged on the first
// attempt and on the retry.
func TestTraceparentSentOnEveryAttempt(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	subID, _ := subscribe(t, db, nil, rc.URL, []string{"order.*"}, `retry_schedule = '{1 second}'`)
	startCapture(t, db, nil)
	startDispatcher(t, db, loopback, nil)
	emitTraced(t, db)
	waitFor(t, 20*time.Second, "the retry to succeed", func() bool { return delivery(t, db, subID).Status == "succeeded" })
	reqs := rc.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want the failed first attempt and the retry", len(reqs))
	}
	for i, r := range reqs {
		if r.Header.Get("Traceparent") != appTraceparnt || r.Header.Get("Tracestate") != "app=checkout" {
			t.Errorf("attempt %d: traceparent %q tracestate %q", i+1, r.Header.Get("Traceparent"), r.Header.Get("Tracestate"))
		}
	}
}

// TestSpansExported: with tracing on, capture, fan-out and each attempt are
// spans in the application's trace, and each request's traceparent names
// its attempt's span, so the receiver's trace joins.
func TestSpansExported(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	exp := tracetest.NewInMemoryExporter()
	tr, err := telemetry.Start(context.Background(), telemetry.Config{Exporter: exp, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	subID, _ := subscribe(t, db, nil, rc.URL, []string{"order.*"}, `retry_schedule = '{1 second}'`)
	d := startDispatcher(t, db, loopback, func(c *dispatch.Config) { c.Spans = tr.Tracer() })
	startCapture(t, db, func(outbox.Handler) outbox.Handler {
		return fanout.New(db.Pool, fanout.Config{
			Logger: zerolog.New(zerolog.NewTestWriter(t)), Dispatcher: d, OnDeliveries: func(int) { d.Wake() }, Spans: tr.Tracer(),
		})
	})
	eventID := emitTraced(t, db)
	waitFor(t, 20*time.Second, "the retry to succeed", func() bool { return delivery(t, db, subID).Status == "succeeded" })
	waitFor(t, 5*time.Second, "four spans", func() bool { return len(exp.GetSpans()) >= 4 })

	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range exp.GetSpans().Snapshots() {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	if len(byName["relay.capture"]) != 1 || len(byName["relay.fanout"]) != 1 || len(byName["relay.attempt"]) != 2 {
		t.Fatalf("spans: %d capture, %d fanout, %d attempt", len(byName["relay.capture"]), len(byName["relay.fanout"]), len(byName["relay.attempt"]))
	}
	for name, spans := range byName {
		for _, s := range spans {
			if s.SpanContext().TraceID().String() != appTraceID || s.Parent().SpanID().String() != appSpanID {
				t.Errorf("%s: trace %s parent %s, want the application's %s/%s", name, s.SpanContext().TraceID(), s.Parent().SpanID(), appTraceID, appSpanID)
			}
			if got := attr(s, "relay.event_id"); got != eventID {
				t.Errorf("%s: relay.event_id %q, want %s", name, got, eventID)
			}
		}
	}
	reqs := rc.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	attempts := byName["relay.attempt"]
	for i, r := range reqs {
		want := fmt.Sprintf("00-%s-%s-01", appTraceID, attempts[i].SpanContext().SpanID())
		if got := r.Header.Get("Traceparent"); got != want {
			t.Errorf("attempt %d sent traceparent %q, want %q (its own span)", i+1, got, want)
		}
		if r.Header.Get("Tracestate") != "app=checkout" {
			t.Errorf("attempt %d tracestate %q", i+1, r.Header.Get("Tracestate"))
		}
		if code := attr(attempts[i], "http.response.status_code"); code != []string{"502", "200"}[i] {
			t.Errorf("attempt %d span status code %q", i+1, code)
		}
	}
	c := byName["relay.capture"][0]
	if c.StartTime().After(c.EndTime()) || !strings.HasPrefix(attr(c, "relay.commit_lsn"), "0/") {
		t.Errorf("capture span %s..%s lsn %q", c.StartTime(), c.EndTime(), attr(c, "relay.commit_lsn"))
	}
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}
