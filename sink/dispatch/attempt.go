package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/textproto"
	"strconv"
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

	url          string
	secrets      []string // newest first
	format       string
	template     string
	subHeaders   []byte
	timeout      time.Duration
	schedule     []time.Duration
	window       *window.Window
	ignoreGlobal bool
	outside      window.Outside
	targeted     bool
	maxInFlight  int
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
	r := &result{job: j, rec: record.Attempt{
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
	keys := make([]signer.Key, 0, len(j.secrets))
	for _, s := range j.secrets {
		k, err := d.key(s)
		if err != nil {
			return nil, fmt.Errorf("subscription %d secret: %w", j.subID, err)
		}
		keys = append(keys, k)
	}
	h := make(map[string][]string, 12)
	for _, extra := range [][]byte{j.subHeaders, j.eventHeaders} {
		if len(extra) > 2 {
			var m map[string]string
			if err := json.Unmarshal(extra, &m); err != nil {
				return nil, fmt.Errorf("custom headers are not an object of strings: %w", err)
			}
			for k, v := range m {
				h[textproto.CanonicalMIMEHeaderKey(k)] = []string{v}
			}
		}
	}
	h["Content-Type"] = []string{"application/json"}
	h["Webhook-Id"] = []string{j.eventID}
	h["Webhook-Timestamp"] = []string{strconv.FormatInt(now.Unix(), 10)}
	h["Webhook-Signature"] = []string{signer.SignatureHeader(keys, j.eventID, now, body)}
	h["X-Relay-Event"] = []string{j.eventType}
	h["X-Relay-Delivery"] = []string{strconv.FormatInt(j.deliveryID, 10)}
	h["X-Relay-Attempt"] = []string{strconv.Itoa(attempt)}
	h["X-Relay-Signature"] = []string{keys[0].SignSimple(body)}
	return h, nil
}

func (d *Dispatcher) key(secret string) (signer.Key, error) {
	if k, ok := d.keys.Load(secret); ok {
		return k.(signer.Key), nil
	}
	k, err := signer.ParseSecret(secret)
	if err != nil {
		return k, err
	}
	d.keys.Store(secret, k)
	return k, nil
}
