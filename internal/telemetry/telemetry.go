// Package telemetry sets up relay's OpenTelemetry tracing and carries each
// event's trace context from the outbox to the receiver.
//
// Tracing is off unless an OTLP endpoint is configured
// (RELAY_OTEL_EXPORTER_OTLP_ENDPOINT, or the standard
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT). Off, a
// Tracing hands out OpenTelemetry's no-op tracer and Enabled reports false,
// so the stages skip even reading trace headers: tracing costs nothing when
// it is off. On, spans go to the collector over OTLP/HTTP (protobuf) in
// batches; the other OTEL_EXPORTER_OTLP_* variables (headers, timeout,
// certificates) and OTEL_TRACES_SAMPLER are read by the SDK as usual.
//
// Spans of an event (see package eventtrace) join the trace of the
// application transaction that emitted it when its headers carry a W3C
// traceparent.
package telemetry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/pgoutbox/relay/internal/telemetry/eventtrace"
)

// TracerName names relay's tracer (the instrumentation scope).
const TracerName = "github.com/pgoutbox/relay"

// Environment variables that turn tracing on, in the order they are read.
const (
	// EnvEndpoint is relay's own: the collector's base URL, e.g.
	// http://otel-collector:4318 (/v1/traces is appended unless the URL
	// has a path).
	EnvEndpoint = "RELAY_OTEL_EXPORTER_OTLP_ENDPOINT"
	// EnvTracesEndpoint is the standard full traces URL.
	EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	// EnvOTLPEndpoint is the standard base URL.
	EnvOTLPEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"
)

// Config configures Start.
type Config struct {
	// Endpoint is the OTLP/HTTP traces URL; "" leaves tracing off unless
	// Exporter is set. EndpointFromEnv gives the configured one.
	Endpoint string
	// ServiceName and ServiceVersion describe this process in every span
	// (service.name defaults to "relay").
	ServiceName    string
	ServiceVersion string
	// Exporter, when set, receives the spans instead of an OTLP exporter
	// (tests pass the SDK's tracetest.InMemoryExporter) and turns tracing on.
	Exporter sdktrace.SpanExporter
	// Sync exports every span as it ends instead of in batches (tests).
	Sync bool
}

// EndpointFromEnv returns the OTLP traces URL the environment configures,
// "" when none. RELAY_OTEL_EXPORTER_OTLP_ENDPOINT wins over the standard
// variables; a base URL (no path) gets /v1/traces, as the OTLP
// specification says for OTEL_EXPORTER_OTLP_ENDPOINT.
func EndpointFromEnv(getenv func(string) string) string {
	if v := strings.TrimSpace(getenv(EnvEndpoint)); v != "" {
		return withTracesPath(v)
	}
	if v := strings.TrimSpace(getenv(EnvTracesEndpoint)); v != "" {
		return v
	}
	if v := strings.TrimSpace(getenv(EnvOTLPEndpoint)); v != "" {
		return withTracesPath(v)
	}
	return ""
}

func withTracesPath(base string) string {
	u, err := url.Parse(base)
	if err != nil || u.Path != "" && u.Path != "/" {
		return base // checked, and reported, by Start
	}
	u.Path = "/v1/traces"
	return u.String()
}

// CheckEndpoint tells whether ep is an OTLP/HTTP URL relay can export to;
// the error names it. The exporter itself would silently fall back to
// localhost on a bad one.
func CheckEndpoint(ep string) error {
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("OTLP endpoint %q: want an http:// or https:// URL such as http://otel-collector:4318", ep)
	}
	return nil
}

// Tracing is relay's tracer provider: the SDK's when tracing is on,
// OpenTelemetry's no-op otherwise. A nil *Tracing is off too.
type Tracing struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// Start builds the tracer provider cfg describes. With neither Endpoint nor
// Exporter it returns a Tracing that is off. An endpoint that is not an
// http(s) URL is an error naming it: relay would otherwise export nowhere
// without a word.
func Start(ctx context.Context, cfg Config) (*Tracing, error) {
	if cfg.Endpoint == "" && cfg.Exporter == nil {
		return &Tracing{tracer: noop.NewTracerProvider().Tracer(TracerName)}, nil
	}
	exp := cfg.Exporter
	if exp == nil {
		if err := CheckEndpoint(cfg.Endpoint); err != nil {
			return nil, err
		}
		var err error
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.Endpoint))
		if err != nil {
			return nil, fmt.Errorf("OTLP exporter: %w", err)
		}
	}
	name := cfg.ServiceName
	if name == "" {
		name = "relay"
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(name)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.ServiceVersion))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		// Only a schema URL conflict: keep relay's own attributes.
		res = resource.NewSchemaless(attrs...)
	}
	var proc sdktrace.SpanProcessor
	if cfg.Sync {
		proc = sdktrace.NewSimpleSpanProcessor(exp)
	} else {
		proc = sdktrace.NewBatchSpanProcessor(exp)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSpanProcessor(proc),
		sdktrace.WithIDGenerator(eventIDGenerator{}),
	)
	return &Tracing{tp: tp, tracer: tp.Tracer(TracerName)}, nil
}

// Enabled reports whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t != nil && t.tp != nil }

// Tracer returns relay's tracer (a no-op one when tracing is off).
func (t *Tracing) Tracer() trace.Tracer {
	if t == nil {
		return noop.NewTracerProvider().Tracer(TracerName)
	}
	return t.tracer
}

// Shutdown exports the spans still buffered and stops the provider, within
// ctx (5 seconds when ctx has no deadline). It is safe on a Tracing that is
// off and more than once.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	err := t.tp.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("exporting the last spans: %w", err)
	}
	return err
}

// eventIDGenerator gives the capture span of an event without traceparent
// the ids eventtrace derived from its uuid, and random ids to every other
// span.
type eventIDGenerator struct{}

func (eventIDGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if tid, sid, ok := eventtrace.RootIDs(ctx); ok {
		return tid, sid
	}
	var tid trace.TraceID
	for !tid.IsValid() {
		_, _ = rand.Read(tid[:])
	}
	return tid, randomSpanID()
}

func (eventIDGenerator) NewSpanID(context.Context, trace.TraceID) trace.SpanID { return randomSpanID() }

func randomSpanID() trace.SpanID {
	var sid trace.SpanID
	for !sid.IsValid() {
		_, _ = rand.Read(sid[:])
	}
	return sid
}
