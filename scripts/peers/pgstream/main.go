// Command pgstream measures pgstream's webhooks target the way relay
// bench's latency scenario measures relay (run.sh sets it up): the same
// producers (bench.PacedEvents: 8 connections, one ~500-byte event per
// transaction into relay.outbox at a fixed rate), a receiver in its own
// process that takes the receipt time once the request line and headers
// are read and parses pgstream's JSON for the event_id, and pgstream's CPU
// per event from /proc. It is built with relay's module (so that it
// compiles with it) but never runs in make test.
//
//	pgstream receiver              # prints its address, serves until killed
//	pgstream -db URL -pid PID -recv ADDR [-rate 1000] [-duration 30s]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/relay/internal/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "receiver" {
		must(receive())
		return
	}
	dbURL := flag.String("db", "", "the database's URL")
	pid := flag.Int("pid", 0, "pgstream's process id, for its CPU time")
	recv := flag.String("recv", "", "the receiver's address")
	rate := flag.Int("rate", 1000, "events a second")
	dur := flag.Duration("duration", 30*time.Second, "how long the producers insert")
	flag.Parse()
	must(measure(*dbURL, *pid, *recv, *rate, *dur))
}

func measure(dbURL string, pid int, recv string, rate int, dur time.Duration) error {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	// Warm-up: pgstream's subscription cache and connections, as relay
	// bench warms relay with 20 events.
	warm, _, err := bench.PacedEvents(ctx, pool, 20, time.Second, 1)
	if err != nil {
		return err
	}
	if _, err := waitAll(recv, warm, time.Minute); err != nil {
		return err
	}
	u0, err := bench.ReadUsage(pid)
	if err != nil {
		return err
	}
	ids, committed, err := bench.PacedEvents(ctx, pool, rate, dur, 8)
	if err != nil {
		return err
	}
	received, err := waitAll(recv, ids, time.Minute)
	if err != nil {
		return err
	}
	u1, err := bench.ReadUsage(pid)
	if err != nil {
		return err
	}
	var ds []time.Duration
	for i, id := range ids {
		if at, ok := received[id]; ok {
			ds = append(ds, time.Duration(at-committed[i]))
		}
	}
	if len(ds) == 0 {
		return fmt.Errorf("none of the %d events reached the receiver", len(ids))
	}
	l := bench.Percentiles(ds) // as relay bench computes relay's
	cpu := u1.CPU - u0.CPU
	fmt.Printf("pgstream: %d events, missing %d; commit→receipt p50 %.2f / p90 %.2f / p99 %.2f / max %.2f ms; pgstream CPU %.1f µs per event (%.2f s)\n",
		len(ids), len(ids)-len(ds), l.P50, l.P90, l.P99, l.Max, float64(cpu.Microseconds())/float64(len(ids)), cpu.Seconds())
	return nil
}

// waitAll polls the receiver until every id has arrived or timeout passes,
// and returns the receipt times it has.
func waitAll(recv string, ids []string, timeout time.Duration) (map[string]int64, error) {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + recv + "/_report")
		if err != nil {
			return nil, err
		}
		var times map[string]int64
		err = json.NewDecoder(resp.Body).Decode(&times)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		n := 0
		for _, id := range ids {
			if _, ok := times[id]; ok {
				n++
			}
		}
		if n == len(ids) || time.Now().After(deadline) {
			return times, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// receive serves pgstream's webhooks: the first receipt time of every
// relay.outbox event_id, read once the request line and headers are in,
// and GET /_report with them all.
func receive() error {
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
				if id, ok := c.Value.(string); ok && c.Name == "event_id" {
					mu.Lock()
					if _, seen := first[id]; !seen {
						first[id] = now
					}
					mu.Unlock()
				}
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	return http.Serve(ln, mux)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgstream peer:", err)
		os.Exit(1)
	}
}
