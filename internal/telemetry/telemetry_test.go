package telemetry_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgoutbox/relay/internal/telemetry"
	"github.com/pgoutbox/relay/internal/telemetry/eventtrace"
)

func TestEndpointFromEnv(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{nil, ""},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "http://collector:4318/v1/traces"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http://collector:4318/v1/traces"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c.example/custom/traces",
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318"}, "https://c.example/custom/traces"},
		{map[string]string{"RELAY_OTEL_EXPORTER_OTLP_ENDPOINT": "http://relay-collector:4318",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c.example/custom/traces"}, "http://relay-collector:4318/v1/traces"},
		{map[string]string{"RELAY_OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/otlp/v1/traces"}, "http://c:4318/otlp/v1/traces"},
	}
	for _, c := range cases {
		if got := telemetry.EndpointFromEnv(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("%v: %q, want %q", c.env, got, c.want)
		}
	}
}

func TestOffByDefault(t *testing.T) {
	tr, err := telemetry.Start(context.Background(), telemetry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Fatal("tracing on without an endpoint")
	}
	_, span := tr.Tracer().Start(context.Background(), "x")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Fatal("the tracer of a Tracing that is off records")
	}
	h := http.Header{}
	h.Set("traceparent", "from-the-event")
	eventtrace.Inject(context.Background(), h)
	if h.Get("Traceparent") != "from-the-event" {
		t.Fatal("Inject without a span changed the event's header")
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var none *telemetry.Tracing
	if none.Enabled() || none.Shutdown(context.Background()) != nil {
		t.Fatal("a nil Tracing is not off")
	}
}

func TestStartRefusesABadEndpoint(t *testing.T) {
	for _, ep := range []string{"collector:4318", "ftp://c/", "http://"} {
		if _, err := telemetry.Start(context.Background(), telemetry.Config{Endpoint: ep}); err == nil || !strings.Contains(err.Error(), ep) {
			t.Errorf("%q: %v", ep, err)
		}
	}
	tr, err := telemetry.Start(context.Background(), telemetry.Config{Endpoint: "http://127.0.0.1:1/v1/traces"})
	if err != nil || !tr.Enabled() {
		t.Fatalf("valid endpoint: %v", err)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown with nothing to export: %v", err)
	}
}

func start(t *testing.T) (*telemetry.Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := telemetry.Start(context.Background(), telemetry.Config{Exporter: exp, Sync: true, ServiceVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

const (
	eventID     = "5d3c1e9a-8b7f-4a2e-9c61-0f2b7d4e8a13"
	traceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	appSpanID   = "00f067aa0ba902b7"
	traceparent = "00-" + traceID + "-" + appSpanID + "-01"
)

// TestEventWithTraceparent: every stage's span is a child of the
// application's span, and the receiver is told the attempt's span.
func TestEventWithTraceparent(t *testing.T) {
	tr, exp := start(t)
	headers := []byte(`{"Traceparent": "` + traceparent + `", "tracestate": "app=1", "x-other": "y"}`)
	for _, st := range []eventtrace.Stage{eventtrace.StageCapture, eventtrace.StageFanout, eventtrace.StageAttempt} {
		ctx, span := tr.Tracer().Start(eventtrace.EventContext(context.Background(), eventID, headers, st), "stage")
		if st == eventtrace.StageAttempt {
			h := http.Header{}
			h.Set("Traceparent", "stale")
			eventtrace.Inject(ctx, h)
			want := "00-" + traceID + "-" + span.SpanContext().SpanID().String() + "-01"
			if h.Get("traceparent") != want || h.Get("tracestate") != "app=1" {
				t.Fatalf("injected %q %q, want %q and the event's tracestate", h.Get("traceparent"), h.Get("tracestate"), want)
			}
		}
		span.End()
	}
	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans", len(spans))
	}
	for _, s := range spans {
		if s.SpanContext.TraceID().String() != traceID || s.Parent.SpanID().String() != appSpanID || !s.Parent.IsRemote() {
			t.Errorf("span %s in trace %s with parent %s, want trace %s parent %s", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID(), traceID, appSpanID)
		}
	}
}

// TestEventWithoutTraceparent: the event's uuid is the trace id, the capture
// span its root, and later stages (anywhere, any time) its children.
func TestEventWithoutTraceparent(t *testing.T) {
	tr, exp := start(t)
	for _, headers := range [][]byte{nil, []byte(`{"traceparent": "not-a-traceparent"}`)} {
		exp.Reset()
		_, capture := tr.Tracer().Start(eventtrace.EventContext(context.Background(), eventID, headers, eventtrace.StageCapture), "capture")
		capture.End()
		_, attempt := tr.Tracer().Start(eventtrace.EventContext(context.Background(), eventID, headers, eventtrace.StageAttempt), "attempt")
		attempt.End()
		spans := exp.GetSpans()
		if len(spans) != 2 {
			t.Fatalf("%d spans", len(spans))
		}
		c, a := spans[0], spans[1]
		wantTrace := strings.ReplaceAll(eventID, "-", "")
		if c.SpanContext.TraceID().String() != wantTrace || c.Parent.IsValid() {
			t.Errorf("capture span: trace %s parent %v, want trace %s as a root", c.SpanContext.TraceID(), c.Parent, wantTrace)
		}
		if a.SpanContext.TraceID() != c.SpanContext.TraceID() || a.Parent.SpanID() != c.SpanContext.SpanID() {
			t.Errorf("attempt span: trace %s parent %s, want the capture span %s", a.SpanContext.TraceID(), a.Parent.SpanID(), c.SpanContext.SpanID())
		}
		if a.SpanContext.SpanID() == c.SpanContext.SpanID() {
			t.Error("the attempt span reuses the capture span's id")
		}
	}
	// Other spans get random ids.
	_, s1 := tr.Tracer().Start(context.Background(), "a")
	_, s2 := tr.Tracer().Start(context.Background(), "b")
	if s1.SpanContext().TraceID() == s2.SpanContext().TraceID() || !s1.SpanContext().IsValid() {
		t.Fatal("root spans without an event share a trace id")
	}
}
