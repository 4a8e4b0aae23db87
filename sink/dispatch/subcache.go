package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/textproto"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgoutbox/relay/signer"
	"github.com/pgoutbox/relay/sink/policy/window"
	"github.com/rs/zerolog"
)

// subCacheTTL bounds how long a subscription's settings are used without
// reading them again. Changes made through relay (and any UPDATE of its
// configuration columns) move updated_at, which claims return, so they
// apply at once; the TTL covers hand edits that do not.
const subCacheTTL = 5 * time.Second

// subInfo is what sending needs of a subscription, read once and shared by
// all its deliveries instead of once per delivery.
type subInfo struct {
	id        int64
	updatedAt time.Time
	readAt    time.Time

	url string
	// keys are the current secret's then those in their grace period,
	// newest first; expires[i] is when keys[i+1] stops signing. keyErr is
	// set when a secret does not parse: its deliveries cannot be signed.
	keys    []signer.Key
	expires []time.Time
	keyErr  error
	format  string
	// template is the chat formats' message template.
	template string
	// headers are the custom headers, canonical keys; headersErr is set
	// when the column is not an object of strings.
	headers      []headerField
	headersErr   error
	timeout      time.Duration
	schedule     []time.Duration
	window       *window.Window
	ignoreGlobal bool
	outside      window.Outside
	maxInFlight  int
	rateLimited  bool
}

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// subCache holds subInfo by subscription id.
type subCache struct {
	mu   sync.Mutex
	subs map[int64]*subInfo
	log  zerolog.Logger
}

const subInfoSQL = `
SELECT s.id, s.updated_at, s.url, s.secret,
       ARRAY(SELECT p->>'secret' FROM jsonb_array_elements(s.previous_secrets) AS p
             WHERE (p->>'expires_at')::timestamptz > now() ORDER BY (p->>'expires_at')::timestamptz DESC),
       ARRAY(SELECT (p->>'expires_at')::timestamptz FROM jsonb_array_elements(s.previous_secrets) AS p
             WHERE (p->>'expires_at')::timestamptz > now() ORDER BY (p->>'expires_at')::timestamptz DESC),
       s.format, coalesce(s.template, ''), s.headers::text, s.timeout_ms,
       ARRAY(SELECT extract(epoch FROM i)::float8 FROM unnest(s.retry_schedule) AS i),
       s.window_start::text, s.window_end::text, s.window_time_zone, s.ignore_global_window, s.max_in_flight,
       s.outside_window, s.rate_limit IS NOT NULL
FROM relay.subscriptions AS s
WHERE s.id = ANY($1)`

// get returns the settings of the subscriptions in want (id → the
// updated_at the caller saw), reading through q those not cached, older
// than the TTL or changed since.
func (c *subCache) get(ctx context.Context, q querier, want map[int64]time.Time) (map[int64]*subInfo, error) {
	out := make(map[int64]*subInfo, len(want))
	var missing []int64
	now := time.Now()
	c.mu.Lock()
	for id, updated := range want {
		if s := c.subs[id]; s != nil && s.updatedAt.Equal(updated) && now.Sub(s.readAt) < subCacheTTL {
			out[id] = s
		} else {
			missing = append(missing, id)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, subInfoSQL, missing)
	if err != nil {
		return nil, fmt.Errorf("reading subscriptions: %w", err)
	}
	defer rows.Close()
	var read []*subInfo
	for rows.Next() {
		s := &subInfo{readAt: now}
		var secret string
		var previous []string
		var headers string
		var timeoutMS int
		var schedule []float64
		var ws, we *string
		var zone, outside string
		if err := rows.Scan(&s.id, &s.updatedAt, &s.url, &secret, &previous, &s.expires, &s.format, &s.template,
			&headers, &timeoutMS, &schedule, &ws, &we, &zone, &s.ignoreGlobal, &s.maxInFlight, &outside, &s.rateLimited); err != nil {
			return nil, fmt.Errorf("reading subscriptions: %w", err)
		}
		if s.outside, err = window.ParseOutside(outside); err != nil {
			// The schema's constraint makes this unreachable; defer, the
			// choice that loses nothing.
			c.log.Warn().Err(err).Int64("subscription_id", s.id).Msg("deferring outside the window")
		}
		c.mu.Lock()
		old := c.subs[s.id]
		c.mu.Unlock()
		s.keys, s.keyErr = parseKeys(s.id, append([]string{secret}, previous...), old)
		s.headers, s.headersErr = parseHeaders([]byte(headers))
		s.timeout = time.Duration(timeoutMS) * time.Millisecond
		s.schedule = make([]time.Duration, len(schedule))
		for i, v := range schedule {
			s.schedule[i] = time.Duration(v * float64(time.Second))
		}
		if ws != nil && we != nil {
			w, err := window.ParseWindow(*ws, *we, zone)
			if err != nil {
				c.log.Warn().Err(err).Int64("subscription_id", s.id).Msg("ignoring unreadable delivery window")
			} else {
				s.window = &w
			}
		}
		read = append(read, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading subscriptions: %w", err)
	}
	c.mu.Lock()
	if c.subs == nil {
		c.subs = map[int64]*subInfo{}
	}
	for _, s := range read {
		c.subs[s.id] = s
		out[s.id] = s
	}
	// Forget subscriptions not used for a while, so deleted ones go.
	if len(c.subs) > 2*len(read)+64 {
		for id, s := range c.subs {
			if now.Sub(s.readAt) > 10*subCacheTTL {
				delete(c.subs, id)
			}
		}
	}
	c.mu.Unlock()
	return out, nil
}

// fill gives j its subscription's settings as of now. The slices are
// shared by every job of the subscription and never written to.
func (s *subInfo) fill(j *job, now time.Time) {
	j.url, j.format, j.template, j.subHeaders, j.subHeadersErr = s.url, s.format, s.template, s.headers, s.headersErr
	j.timeout, j.window, j.ignoreGlobal, j.maxInFlight, j.rateLimited = s.timeout, s.window, s.ignoreGlobal, s.maxInFlight, s.rateLimited
	j.outside = s.outside
	// Previous secrets come newest first, so those still in their grace
	// period are a prefix.
	n := 1
	for n-1 < len(s.expires) && n < len(s.keys) && s.expires[n-1].After(now) {
		n++
	}
	j.keys, j.keyErr = s.keys[:min(n, len(s.keys))], s.keyErr
	j.schedule = s.schedule
	if j.eventType == "webhook.test" {
		j.schedule = nil // a test answers once; it is not retried
	}
}

// parseKeys parses a subscription's secrets, newest first, reusing the
// keys of old (what the cache held before) for unchanged secrets: a key
// keeps a pool of HMAC states that would otherwise be made again.
func parseKeys(subID int64, secrets []string, old *subInfo) ([]signer.Key, error) {
	keys := make([]signer.Key, 0, len(secrets))
	for _, secret := range secrets {
		k, ok := signer.Key{}, false
		if old != nil {
			for _, prev := range old.keys {
				if prev.Secret() == secret {
					k, ok = prev, true
					break
				}
			}
		}
		if !ok {
			var err error
			if k, err = signer.ParseSecret(secret); err != nil {
				return nil, fmt.Errorf("subscription %d secret: %w", subID, err)
			}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// headerField is one custom header; value is a one-element slice, ready
// to be shared as a header's values.
type headerField struct {
	key   string
	value []string
}

// parseHeaders reads a custom headers column (a JSON object of strings).
func parseHeaders(raw []byte) ([]headerField, error) {
	if len(raw) <= 2 { // "{}" or nothing
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("custom headers are not an object of strings: %w", err)
	}
	fields := make([]headerField, 0, len(m))
	for k, v := range m {
		fields = append(fields, headerField{key: textproto.CanonicalMIMEHeaderKey(k), value: []string{v}})
	}
	return fields, nil
}
