package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// eventType is the type of every benchmark event.
const eventType = "thread.created"

// newUUID returns a random (version 4) UUID in text form. The producers
// choose event ids themselves so that they know them without RETURNING.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// filler pads payloads to about 500 bytes as PostgreSQL renders jsonb.
var filler = strings.Repeat("lorem ipsum dolor sit amet ", 14)

// payload is a JSON object of about 500 bytes (jsonb's text form).
func payload(seq int) string {
	return `{"seq": ` + strconv.Itoa(seq) + `, "title": "Benchmark thread ` + strconv.Itoa(seq) +
		`", "author": "bench@example.com", "body": "` + filler + `", "tags": ["bench", "relay", "outbox"]}`
}

// sample is one event a producer committed: its id and when the commit
// returned to the producer (Unix nanoseconds).
type sample struct {
	id       string
	commitNs int64
}

// insertOneSQL inserts one event into table (relay.outbox or the plain table).
func insertOneSQL(table string) string {
	return "INSERT INTO " + table + " (event_id, event_type, payload) VALUES ($1, '" + eventType + "', $2::jsonb)"
}

// insertBulk commits n events in transactions of up to batch rows and
// returns their ids.
func insertBulk(ctx context.Context, pool *pgxpool.Pool, n, batch int) ([]string, error) {
	all := make([]string, 0, n)
	for start := 0; start < n; start += batch {
		m := min(batch, n-start)
		ids := make([]string, m)
		payloads := make([]string, m)
		for i := range m {
			ids[i] = newUUID()
			payloads[i] = payload(start + i)
		}
		_, err := pool.Exec(ctx, `
			INSERT INTO relay.outbox (event_id, event_type, payload)
			SELECT id, '`+eventType+`', p::jsonb FROM unnest($1::uuid[], $2::text[]) AS u(id, p)`, ids, payloads)
		if err != nil {
			return all, fmt.Errorf("inserting events: %w", err)
		}
		all = append(all, ids...)
	}
	return all, nil
}

// produceResult is what a set of producers did.
type produceResult struct {
	samples []sample
	elapsed time.Duration
	commits []time.Duration // duration of each insert (commit included)
}

// produceFlat runs producers that each insert one event per transaction
// into table as fast as they can until the duration is over.
func produceFlat(ctx context.Context, pool *pgxpool.Pool, table string, producers int, d time.Duration) (produceResult, error) {
	sql := insertOneSQL(table)
	var mu sync.Mutex
	var res produceResult
	var firstErr error
	var seq atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []sample
			var durs []time.Duration
			err := pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
				for time.Now().Before(end) {
					id := newUUID()
					t0 := time.Now()
					if _, err := c.Exec(ctx, sql, id, payload(int(seq.Add(1)))); err != nil {
						return err
					}
					t1 := time.Now()
					local = append(local, sample{id, t1.UnixNano()})
					durs = append(durs, t1.Sub(t0))
				}
				return nil
			})
			mu.Lock()
			res.samples = append(res.samples, local...)
			res.commits = append(res.commits, durs...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res, firstErr
}

// producePaced inserts rate events per second for d, one per transaction,
// from workers connections. Event i is due at start + i/rate; lateness
// counts events begun more than 5ms after they were due (the producers
// could not keep the pace).
func producePaced(ctx context.Context, pool *pgxpool.Pool, rate int, d time.Duration, workers int) (produceResult, int, error) {
	total := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	due := make(chan int, total)
	sql := insertOneSQL("relay.outbox")
	samples := make([]sample, total)
	durs := make([]time.Duration, total)
	var late atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now().Add(20 * time.Millisecond)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
				for i := range due {
					id := newUUID()
					t0 := time.Now()
					if t0.Sub(start.Add(time.Duration(i)*interval)) > 5*time.Millisecond {
						late.Add(1)
					}
					if _, err := c.Exec(ctx, sql, id, payload(i)); err != nil {
						return err
					}
					t1 := time.Now()
					samples[i] = sample{id, t1.UnixNano()}
					durs[i] = t1.Sub(t0)
				}
				return nil
			})
			if err != nil {
				errOnce.Do(func() { firstErr = err })
				// Drain, so that the pacer is not blocked.
				for range due {
				}
			}
		}()
	}
	for i := range total {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		due <- i
	}
	close(due)
	wg.Wait()
	res := produceResult{elapsed: time.Since(start)}
	for i := range samples {
		if samples[i].id != "" {
			res.samples = append(res.samples, samples[i])
			res.commits = append(res.commits, durs[i])
		}
	}
	return res, int(late.Load()), firstErr
}

// PacedEvents is the latency scenario's load for another tool's harness
// (scripts/peers): rate events a second for d, one ~500-byte event per
// transaction into relay.outbox from workers connections. It returns each
// event's id and when its commit returned (Unix nanoseconds), in the order
// they were due.
func PacedEvents(ctx context.Context, pool *pgxpool.Pool, rate int, d time.Duration, workers int) (ids []string, committedNs []int64, err error) {
	res, _, err := producePaced(ctx, pool, rate, d, workers)
	for _, s := range res.samples {
		ids = append(ids, s.id)
		committedNs = append(committedNs, s.commitNs)
	}
	return ids, committedNs, err
}

// httpLoad is the result of a plain HTTP load on the receiver.
type httpLoad struct {
	Requests int64
	Elapsed  time.Duration
	P50      time.Duration
}

// loadReceiver POSTs a typical webhook body to the receiver from conns
// keep-alive connections for d: the receiver's own ceiling.
func loadReceiver(ctx context.Context, base string, conns int, d time.Duration) (httpLoad, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	body := []byte(`{"id":"` + newUUID() + `","type":"thread.created","timestamp":"2026-01-01T00:00:00.000Z","owner":null,"key":null,"data":` + payload(1) + `}`)
	var n atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for g := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			prefix := "load-" + strconv.Itoa(g) + "-"
			for i := 0; time.Now().Before(end); i++ {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/hook", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Webhook-Id", prefix+strconv.Itoa(i))
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				local = append(local, time.Since(t0))
				n.Add(1)
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return httpLoad{Requests: n.Load(), Elapsed: time.Since(start), P50: percentile(lat, 0.50)}, firstErr
}

// percentile of ds (sorted in place), nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	if !slices.IsSorted(ds) {
		slices.Sort(ds)
	}
	i := int(p*float64(len(ds))+0.5) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// withPlainTable creates public.bench_plain, a table with relay.outbox's
// columns, defaults, checks and indexes, but not in the publication.
func withPlainTable(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS public.bench_plain (LIKE relay.outbox INCLUDING ALL)`)
	return err
}
