// Command pgstream measures pgstream's webhooks target the way relay
// bench's latency scenario measures relay (run.sh sets it up): 8 producers
// insert one ~500-byte event per transaction into relay.outbox at a fixed
// rate; a receiver in its own process takes the receipt time once the
// request line and headers are read and parses pgstream's JSON for the
// event_id; commit→receipt percentiles and pgstream's CPU per event are
// printed. It is not part of relay's build (a module of its own) and never
// runs in make test.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "receiver" {
		receiver()
		return
	}
	dbURL := flag.String("db", "", "database url")
	pgstreamPID := flag.Int("pid", 0, "pgstream pid (CPU)")
	recvAddr := flag.String("recv", "", "receiver address")
	rate := flag.Int("rate", 1000, "events/s")
	dur := flag.Duration("duration", 30*time.Second, "")
	flag.Parse()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, *dbURL)
	must(err)
	// warm-up: 20 events, wait for them
	warm := make([]string, 20)
	for i := range warm {
		warm[i] = newUUID()
		_, err := pool.Exec(ctx, insertSQL, warm[i], payload(i))
		must(err)
	}
	waitAll(*recvAddr, warm, time.Minute)
	cpu0 := cpuOf(*pgstreamPID)
	samples := produce(ctx, pool, *rate, *dur, 8)
	ids := make([]string, len(samples))
	for i, s := range samples {
		ids[i] = s.id
	}
	times := waitAll(*recvAddr, ids, time.Minute)
	cpu1 := cpuOf(*pgstreamPID)
	var lat []float64
	missing := 0
	for _, s := range samples {
		t, ok := times[s.id]
		if !ok {
			missing++
			continue
		}
		lat = append(lat, float64(t-s.commitNs)/1e6)
	}
	if len(lat) == 0 {
		must(fmt.Errorf("none of the %d events reached the receiver", len(samples)))
	}
	sort.Float64s(lat)
	p := func(q float64) float64 { return lat[int(q*float64(len(lat)-1))] }
	fmt.Printf("pgstream: %d events, missing %d; commit→receipt p50 %.2f / p90 %.2f / p99 %.2f / max %.2f ms; pgstream CPU %.1f µs per event (%.2f s)\n",
		len(samples), missing, p(0.5), p(0.9), p(0.99), lat[len(lat)-1], (cpu1-cpu0)/float64(len(samples))*1e6, cpu1-cpu0)
}

const insertSQL = "INSERT INTO relay.outbox (event_id, event_type, payload) VALUES ($1, 'thread.created', $2::jsonb)"

var filler = strings.Repeat("lorem ipsum dolor sit amet ", 14)

func payload(seq int) string {
	return `{"seq": ` + strconv.Itoa(seq) + `, "title": "Benchmark thread ` + strconv.Itoa(seq) +
		`", "author": "bench@example.com", "body": "` + filler + `", "tags": ["bench", "relay", "outbox"]}`
}

type sample struct {
	id       string
	commitNs int64
}

func produce(ctx context.Context, pool *pgxpool.Pool, rate int, d time.Duration, workers int) []sample {
	total := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	due := make(chan int, total)
	samples := make([]sample, total)
	var wg sync.WaitGroup
	start := time.Now().Add(20 * time.Millisecond)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			must(pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
				for i := range due {
					id := newUUID()
					if _, err := c.Exec(ctx, insertSQL, id, payload(i)); err != nil {
						return err
					}
					samples[i] = sample{id, time.Now().UnixNano()}
				}
				return nil
			}))
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
	return samples
}

func waitAll(addr string, ids []string, timeout time.Duration) map[string]int64 {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + addr + "/_report")
		must(err)
		var times map[string]int64
		must(json.NewDecoder(resp.Body).Decode(&times))
		resp.Body.Close()
		n := 0
		for _, id := range ids {
			if _, ok := times[id]; ok {
				n++
			}
		}
		if n == len(ids) || time.Now().After(deadline) {
			return times
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cpuOf is utime+stime of pid, in seconds.
func cpuOf(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(err)
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

func receiver() {
	var mu sync.Mutex
	first := map[string]int64{}
	mux := http.NewServeMux()
	mux.HandleFunc("/_report", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(first)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UnixNano()
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Data struct {
				Table   string `json:"table"`
				Columns []struct {
					Name  string `json:"name"`
					Value any    `json:"value"`
				} `json:"columns"`
			} `json:"Data"`
		}
		if json.Unmarshal(body, &ev) == nil && ev.Data.Table == "outbox" {
			for _, c := range ev.Data.Columns {
				if c.Name == "event_id" {
					if id, ok := c.Value.(string); ok {
						mu.Lock()
						if _, seen := first[id]; !seen {
							first[id] = now
						}
						mu.Unlock()
					}
				}
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	fmt.Println(ln.Addr().String())
	os.Stdout.Sync()
	must(http.Serve(ln, mux))
}

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

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
