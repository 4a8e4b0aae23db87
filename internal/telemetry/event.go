package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// An event's trace.
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

// Inject sets traceparent and tracestate on h from the span in ctx, when it
// is valid (tracing on); otherwise h is left as it is, with whatever the
// event's own headers put there.
func Inject(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	h.Del(HeaderTracestate)
	traceContext.Inject(ctx, propagation.HeaderCarrier(h))
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

// rootIDs asks eventIDGenerator for the ids of a root span.
type rootIDsKey struct{}

type rootIDs struct {
	trace trace.TraceID
	span  trace.SpanID
}

// eventIDGenerator gives the capture span of an event without traceparent
// the ids EventContext derived from its uuid, and random ids to every other
// span.
type eventIDGenerator struct{}

func (eventIDGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if r, ok := ctx.Value(rootIDsKey{}).(rootIDs); ok {
		return r.trace, r.span
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
		binary.LittleEndian.PutUint64(sid[:], randUint64())
	}
	return sid
}

func randUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}
