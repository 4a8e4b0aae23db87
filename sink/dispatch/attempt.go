package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgoutbox/relay/internal/telemetry/eventtrace"
	"github.com/pgoutbox/relay/signer"
	"github.com/pgoutbox/relay/sink/format"
	"github.com/pgoutbox/relay/sink/policy/backpressure"
	"github.com/pgoutbox/relay/sink/policy/classify"
	"github.com/pgoutbox/relay/sink/policy/retry"
	"github.com/pgoutbox/relay/sink/policy/window"
	"github.com/pgoutbox/relay/sink/record"
	"github.com/pgoutbox/relay/sink/send"
)

// job is one claimed delivery with what sending it needs.
type job struct {
	deliveryID, subID  int64
	eventID, eventType string
	owner, key         *string
	payload            []byte
	eventHeaders       []byte
	eventCreatedAt     time.Time
	attempts           int // attempts made before this one
	cycleAttempts      int // attempts since last queued, before this one

	url           string
	keys          []signer.Key // newest first
	keyErr        error
	format        string
	template      string
	subHeaders    []headerField
	subHeadersErr error
	timeout       time.Duration
	schedule      []time.Duration
	window        *window.Window
	ignoreGlobal  bool
	outside       window.Outside
	targeted      bool
	maxInFlight   int
	// rateLimited: the subscription has a rate_limit, so each request
	// spends a token of its bucket (see flow.go).
	rateLimited bool
	// orderingKey is the event's key when the subscription orders by key.
	orderingKey *string
	// probe: the subscription's circuit is open and this is its one probe.
	probe bool

	// sendBy is when a queued job becomes too old to start: its lease
	// could run out before its request ends.
	sendBy time.Time
	// stages holds its clock points when the dispatcher traces, else nil.
	stages *Stages
	// commit, for a delivery fan-out handed over before its commit was
	// confirmed, is that commit's outcome; nil when committed already.
	commit *Commit
	// sentAhead: a Presend sent the job before its row was written;
	// aheadState then says whether its result is back and whether
	// fan-out took it to write (see Presend.TakeAnswered).
	sentAhead  bool
	aheadState atomic.Int32

	// res is the job's one result, kept here rather than allocated.
	res result
}

// result is the outcome of one attempt, waiting to be recorded.
type result struct {
	job      *job
	rec      record.Attempt
	released bool // cancelled by a hard stop: not an attempt
	requeue  bool // held too long to start: handed back unsent
	// uncommitted: the delivery's insert did not commit (see Commit), so
	// there is nothing to record; the event is replayed.
	uncommitted bool
}

// attempt sends one delivery and decides what happens next.
func (d *Dispatcher) attempt(ctx context.Context, j *job) *result {
	r := &j.res
	*r = result{job: j, rec: record.Attempt{
		DeliveryID: j.deliveryID, SubscriptionID: j.subID, Attempt: j.attempts + 1, StartedAt: d.cfg.Now(),
	}}
	var res send.Result
	body, err := format.RenderBody(j.format, format.EventView{
		EventID: j.eventID, Type: j.eventType, Owner: j.owner, Key: j.key,
		Timestamp: j.eventCreatedAt, Payload: json.RawMessage(j.payload),
	}, j.template)
	if err != nil {
		res = send.Result{Err: fmt.Errorf("rendering %s body: %w", j.format, err)}
	} else {
		header, err := d.headers(j, r.rec.Attempt, r.rec.StartedAt, body)
		if err != nil {
			res = send.Result{Err: err}
		} else {
			settings, _ := d.currentSettings(ctx, false)
			if j.stages != nil {
				j.stages.RequestStart = time.Now()
			}
			sendCtx := ctx
			var span trace.Span
			if d.cfg.Spans != nil {
				sendCtx, span = d.startAttemptSpan(ctx, j, r.rec.Attempt)
				eventtrace.Inject(sendCtx, header)
			}
			res = d.cfg.Sender.Send(sendCtx, send.Request{
				URL: j.url, Body: body, Header: header, Timeout: j.timeout, AllowHTTP: settings.AllowHTTP,
			})
			if span != nil {
				endAttemptSpan(span, res)
			}
			if j.stages != nil {
				j.stages.Answered = time.Now()
			}
		}
	}
	if ctx.Err() != nil && res.StatusCode == 0 {
		r.released = true
		return r
	}
	rec := &r.rec
	rec.Duration, rec.StatusCode, rec.Response, rec.RetryAfter = res.Duration, res.StatusCode, res.ResponseBody, res.RetryAfter
	rec.Verdict = classify.Classify(res.StatusCode, res.Err)
	rec.Error = res.ErrorText()
	rec.Probe, rec.OrderingKey = j.probe, j.orderingKey
	now := d.cfg.Now()
	if reason, gone := classify.DisablingAnswer(res.StatusCode, res.ResponseBody); gone {
		rec.Verdict, rec.GoneReason = classify.VerdictGone, reason
	} else if res.Err == nil {
		bp := backpressure.Decide(backpressure.Answer{
			StatusCode: res.StatusCode, RetryAfter: res.RetryAfter, Body: res.ResponseBody,
			RateLimitRemaining: res.RateLimitRemaining, RateLimitResetAfter: res.RateLimitResetAfter,
		}, now, d.cfg.MaxRetryAfter)
		if bp.Throttled {
			// The recorder holds the subscription and sets when the
			// delivery is next due; it spends no retry.
			rec.Verdict, rec.Status, rec.Hold, rec.NoSpend = classify.VerdictThrottled, "pending", bp.Hold, true
			return r
		}
		rec.Hold = bp.Hold
	}
	switch rec.Verdict {
	case classify.VerdictSucceeded:
		rec.Status = "succeeded"
	case classify.VerdictRetry:
		var ra time.Duration
		if rec.RetryAfter != "" {
			ra, _ = retry.ParseRetryAfter(rec.RetryAfter, now)
		}
		if at, ok := retry.NextAttemptAt(j.schedule, j.cycleAttempts+1, now, ra, d.cfg.MaxRetryAfter, retry.DefaultJitter*d.cfg.Jitter()); ok {
			rec.Status, rec.NextAt = "pending", &at
		} else {
			rec.Status = "failed"
		}
	default:
		rec.Status = "failed"
	}
	if rec.Status == "failed" && j.orderingKey != nil {
		rec.Error += record.KeyMovesOn
	}
	return r
}

// startAttemptSpan starts the span of one attempt, a child of the event's
// trace context (its traceparent, or the trace its uuid names).
func (d *Dispatcher) startAttemptSpan(ctx context.Context, j *job, attempt int) (context.Context, trace.Span) {
	ctx = eventtrace.EventContext(ctx, j.eventID, j.eventHeaders, eventtrace.StageAttempt)
	return d.cfg.Spans.Start(ctx, "relay.attempt", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("relay.event_id", j.eventID),
		attribute.String("relay.event_type", j.eventType),
		attribute.Int64("relay.delivery_id", j.deliveryID),
		attribute.Int64("relay.subscription_id", j.subID),
		attribute.Int("relay.attempt", attempt),
		attribute.String("http.request.method", "POST"),
		attribute.String("url.full", send.MaskURL(j.url)),
	))
}

// endAttemptSpan records the answer (or the failure to get one) and ends
// the span.
func endAttemptSpan(span trace.Span, res send.Result) {
	if res.StatusCode != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.StatusCode))
	}
	switch {
	case res.Err != nil:
		span.SetStatus(codes.Error, res.ErrorText())
	case res.StatusCode < 200 || res.StatusCode > 299:
		span.SetStatus(codes.Error, strconv.Itoa(res.StatusCode))
	}
	span.End()
}

// headers builds the request headers of DESIGN.md §4 (the sender adds
// user-agent). Custom headers come first, so the webhook headers win.
func (d *Dispatcher) headers(j *job, attempt int, now time.Time, body []byte) (map[string][]string, error) {
	if j.keyErr != nil {
		return nil, j.keyErr
	}
	if j.subHeadersErr != nil {
		return nil, j.subHeadersErr
	}
	event, err := parseHeaders(j.eventHeaders)
	if err != nil {
		return nil, err
	}
	// Two entries more for the sender's user-agent and idempotency mark.
	h := make(map[string][]string, 10+len(j.subHeaders)+len(event))
	for _, f := range j.subHeaders {
		h[f.key] = f.value
	}
	for _, f := range event {
		h[f.key] = f.value
	}
	// The values made here share one string, and their slices one array.
	var buf [512]byte
	b := strconv.AppendInt(buf[:0], now.Unix(), 10)
	tsEnd := len(b)
	b = strconv.AppendInt(b, j.deliveryID, 10)
	idEnd := len(b)
	b = strconv.AppendInt(b, int64(attempt), 10)
	attemptEnd := len(b)
	b = signer.AppendSignatureHeader(b, j.keys, j.eventID, now, body)
	sigEnd := len(b)
	b = j.keys[0].AppendSimple(b, body)
	all := string(b)
	v := make([]string, 8)
	v[0] = "application/json"
	v[1] = j.eventID
	v[2] = all[:tsEnd]
	v[3] = all[attemptEnd:sigEnd]
	v[4] = j.eventType
	v[5] = all[tsEnd:idEnd]
	v[6] = all[idEnd:attemptEnd]
	v[7] = all[sigEnd:]
	for i, k := range [...]string{"Content-Type", "Webhook-Id", "Webhook-Timestamp", "Webhook-Signature",
		"X-Relay-Event", "X-Relay-Delivery", "X-Relay-Attempt", "X-Relay-Signature"} {
		h[k] = v[i : i+1 : i+1]
	}
	return h, nil
}
