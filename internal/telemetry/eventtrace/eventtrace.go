// Package eventtrace carries an event's trace context through relay's
// stages: which span each stage's span descends from, and the traceparent
// an attempt sends. It uses the OpenTelemetry API only (no SDK, nothing of
// PostgreSQL or HTTP), so the stages can import it without the exporter;
// package telemetry sets up the SDK that records the spans.
//
// When the event's headers carry a valid W3C traceparent, every span relay
// makes for it (capture, fan-out, each attempt, on any relay, hours apart)
// is a child of that span, so they appear in the trace of the application
// transaction that emitted the event. An attempt then sends the receiver a
// traceparent naming the attempt's span as parent (same trace id), and the
// event's tracestate.
//
// When it carries none, the event's uuid (webhook-id, 16 bytes) is the
// trace id: the capture span is the root, with a span id taken from the
// uuid too, and fan-out and attempts are its children. Every stage finds
// the trace again from the event alone, with nothing stored, and a person
// can look a webhook's trace up by its webhook-id.
package eventtrace

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/textproto"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// An event's trace, in short:
//
// When the event's headers carry a valid W3C traceparent, every span relay
// makes for it (capture, fan-out, each attempt, on any relay, hours apart)
// is a child of that span, so they appear in the trace of the application
// transaction that emitted the event. An attempt then sends the receiver a
// traceparent naming the attempt's span as parent (same trace id), and the
// event's tracestate.
//
// When it carries none, the event's uuid (webhook-id, 16 bytes) is the
// trace id: the capture span is the root, with a span id taken from the
// uuid too, and fan-out and attempts are its children. Every stage finds
// the trace again from the event alone, with nothing stored, and a person
// can look a webhook's trace up by its webhook-id.

// Stage is a step of an event's way through relay.
type Stage int

const (
	// StageCapture is the event read from the replication slot.
	StageCapture Stage = iota
	// StageFanout is the statement that writes its deliveries.
	StageFanout
	// StageAttempt is one HTTP attempt of one delivery.
	StageAttempt
)

// Header names of W3C Trace Context.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

var traceContext = propagation.TraceContext{}

// EventContext returns ctx carrying what a span of stage for the event
// eventID (its uuid) with headers (the outbox's headers column, a JSON
// object or nil) must descend from. Start the stage's span from it.
func EventContext(ctx context.Context, eventID string, headers []byte, stage Stage) context.Context {
	if tp, ts := traceHeaders(headers); tp != "" {
		carrier := propagation.MapCarrier{HeaderTraceparent: tp}
		if ts != "" {
			carrier[HeaderTracestate] = ts
		}
		if sc := trace.SpanContextFromContext(traceContext.Extract(context.Background(), carrier)); sc.IsValid() {
			return trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	tid, sid, ok := eventIDs(eventID)
	if !ok {
		return ctx // not a uuid: a trace of its own
	}
	if stage == StageCapture {
		return context.WithValue(ctx, rootIDsKey{}, rootIDs{tid, sid})
	}
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
}

// Inject sets traceparent and tracestate on h (request headers with
// canonical keys) from the span in ctx, when it is valid (tracing on);
// otherwise h is left as it is, with whatever the event's own headers put
// there.
func Inject(ctx context.Context, h map[string][]string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	delete(h, textproto.CanonicalMIMEHeaderKey(HeaderTracestate))
	traceContext.Inject(ctx, headerCarrier(h))
}

// headerCarrier is propagation.HeaderCarrier over a plain header map, so
// this package needs nothing of net/http.
type headerCarrier map[string][]string

func (c headerCarrier) Get(key string) string {
	if v := c[textproto.CanonicalMIMEHeaderKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c headerCarrier) Set(key, value string) {
	c[textproto.CanonicalMIMEHeaderKey(key)] = []string{value}
}

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// traceHeaders reads traceparent and tracestate from an event's headers,
// whatever their case.
func traceHeaders(headers []byte) (traceparent, tracestate string) {
	if len(headers) < len(`{"traceparent":""}`) || !containsFold(headers, HeaderTraceparent) {
		return "", ""
	}
	var m map[string]any
	if json.Unmarshal(headers, &m) != nil {
		return "", ""
	}
	for k, v := range m {
		s, _ := v.(string)
		switch strings.ToLower(k) {
		case HeaderTraceparent:
			traceparent = s
		case HeaderTracestate:
			tracestate = s
		}
	}
	return traceparent, tracestate
}

func containsFold(b []byte, sub string) bool {
	return strings.Contains(strings.ToLower(string(b)), sub)
}

// eventIDs derives a trace id and a span id from an event's uuid.
func eventIDs(eventID string) (trace.TraceID, trace.SpanID, bool) {
	var tid trace.TraceID
	var sid trace.SpanID
	raw := strings.ReplaceAll(eventID, "-", "")
	if len(raw) != 32 {
		return tid, sid, false
	}
	if _, err := hex.Decode(tid[:], []byte(raw)); err != nil || !tid.IsValid() {
		return tid, sid, false
	}
	copy(sid[:], tid[8:])
	if !sid.IsValid() {
		sid[7] = 1
	}
	return tid, sid, true
}

// rootIDsKey marks the context of an event's capture span when the event
// has no traceparent: the span must get the ids derived from the event.
type rootIDsKey struct{}

type rootIDs struct {
	trace trace.TraceID
	span  trace.SpanID
}

// RootIDs returns the trace and span ids EventContext asked for the span
// started from ctx, if any. The SDK's ID generator (package telemetry)
// calls it; any other generator ignores it, and the capture span then gets
// random ids (its children still share the event's trace id).
func RootIDs(ctx context.Context) (trace.TraceID, trace.SpanID, bool) {
	r, ok := ctx.Value(rootIDsKey{}).(rootIDs)
	return r.trace, r.span, ok
}
