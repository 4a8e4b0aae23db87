package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Receiver is the webhook endpoint of the benchmark. It runs in its own
// process (relay bench-receiver) so that its CPU is not counted as relay's.
// It answers 204 at once and remembers, for every delivery key, when it
// first arrived and how many times it came.
//
// A delivery's key is its webhook-id, followed by "|" and the request path
// when the path is not /hook: fan-out sends one event to many subscriptions,
// each with its own path, and each (event, subscription) must arrive once.
//
// Control endpoints (under /_bench/): GET count, GET report, POST reset.
type Receiver struct {
	mu    sync.Mutex
	first map[string]int64 // key → receipt time, Unix nanoseconds
	dups  map[string]int   // key → extra copies
	total int64
}

// NewReceiver returns an empty receiver.
func NewReceiver() *Receiver {
	return &Receiver{first: map[string]int64{}, dups: map[string]int{}}
}

// Counts is what GET /_bench/count answers.
type Counts struct {
	Received   int64 `json:"received"`
	Unique     int   `json:"unique"`
	Duplicates int   `json:"duplicates"`
}

// ReceiverReport is what GET /_bench/report answers: every key with its
// first receipt time (Unix nanoseconds) and the keys that came more than once.
type ReceiverReport struct {
	Counts
	Times      map[string]int64 `json:"times"`
	Duplicated map[string]int   `json:"duplicated"`
}

// ServeHTTP records a delivery or answers a control request.
func (rv *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The receipt time is taken first: the request line and headers have
	// been read, the body not yet.
	now := time.Now().UnixNano()
	if len(r.URL.Path) > 8 && r.URL.Path[:8] == "/_bench/" {
		rv.control(w, r)
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	key := r.Header.Get("Webhook-Id")
	if key == "" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if r.URL.Path != "/hook" {
		key += "|" + r.URL.Path
	}
	if strings.HasPrefix(r.URL.Path, "/slow/") {
		time.Sleep(slowPathDelay) // a receiver that does real work per request
	}
	rv.mu.Lock()
	rv.total++
	if _, seen := rv.first[key]; seen {
		rv.dups[key]++
	} else {
		rv.first[key] = now
	}
	rv.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rv *Receiver) counts() Counts {
	return Counts{Received: rv.total, Unique: len(rv.first), Duplicates: len(rv.dups)}
}

func (rv *Receiver) control(w http.ResponseWriter, r *http.Request) {
	var v any
	rv.mu.Lock()
	switch r.URL.Path {
	case "/_bench/count":
		v = rv.counts()
	case "/_bench/report":
		rep := ReceiverReport{Counts: rv.counts(), Times: make(map[string]int64, len(rv.first)), Duplicated: map[string]int{}}
		for k, t := range rv.first {
			rep.Times[k] = t
		}
		for k, n := range rv.dups {
			rep.Duplicated[k] = n
		}
		v = rep
	case "/_bench/reset":
		rv.first, rv.dups, rv.total = map[string]int64{}, map[string]int{}, 0
		v = rv.counts()
	default:
		rv.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	rv.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// ServeReceiver listens on addr, writes one JSON line {"addr": "host:port"}
// to out, and serves until ctx ends.
func ServeReceiver(ctx context.Context, addr string, out io.Writer) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: NewReceiver(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	line, _ := json.Marshal(map[string]string{"addr": l.Addr().String()})
	if _, err := fmt.Fprintf(out, "%s\n", line); err != nil {
		l.Close()
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		return err
	}
}
