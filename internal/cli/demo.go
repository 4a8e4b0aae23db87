package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/relay/internal/app"
	"github.com/pgoutbox/relay/internal/console"
	"github.com/pgoutbox/relay/internal/embedded"
	"github.com/pgoutbox/relay/migrations"
	"github.com/pgoutbox/relay/signer"
)

func init() {
	register("demo", "run relay on a throwaway embedded PostgreSQL with a demo receiver", (*CLI).demo)
}

// demoEvents are sample events of the brief's kinds, emitted in turn.
var demoEvents = []struct{ typ, payload string }{
	{"thread.created", `{"thread_id": %d, "title": "Weekly planning #%d"}`},
	{"message.sent", `{"message_id": %d, "thread_id": %d, "agent": "assistant"}`},
	{"analysis.completed", `{"thread_id": %d, "concepts_count": %d}`},
}

func (c *CLI) demo(ctx context.Context, args []string) error {
	fs := c.newFlagSet("demo", "demo [--duration 30s] [--admin-addr 127.0.0.1:8080]")
	duration := fs.Duration("duration", 0, "exit by itself after this long, with a summary (0: until Ctrl-C)")
	adminAddr := fs.String("admin-addr", "127.0.0.1:8080", "admin API and console address (a free port is used if it is taken)")
	every := fs.Duration("every", 700*time.Millisecond, "how often a sample event is emitted")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *duration < 0 || *every <= 0 {
		return usageError("--duration must be positive or 0, --every positive")
	}
	log, err := c.logger("warn", "console")
	if err != nil {
		return err
	}
	ctx, cancel := withSignals(ctx, log)
	defer cancel()
	if *duration > 0 {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeout(ctx, *duration)
		defer cancelT()
	}

	dir, err := os.MkdirTemp("", "relay-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(c.Stdout, "relay demo — starting a throwaway PostgreSQL…")
	srv, err := embedded.Start(context.WithoutCancel(ctx), embedded.Config{DataDir: dir, Port: 0})
	if err != nil {
		return err
	}
	defer srv.Stop()
	dbURL := srv.URL()
	setup := context.WithoutCancel(ctx)
	if err := migrations.Up(setup, dbURL); err != nil {
		return err
	}
	pool, err := pgxpool.New(setup, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	recv, err := startDemoReceiver(c.Stdout)
	if err != nil {
		return err
	}
	defer recv.Close()
	if _, err := pool.Exec(setup, `UPDATE relay.settings SET allow_http = true`); err != nil {
		return err
	}
	var demoSecret, flakySecret string
	if err := pool.QueryRow(setup, `INSERT INTO relay.subscriptions (owner, name, url, event_types)
		VALUES ('demo-user', 'Demo receiver', $1, '{thread.*,message.sent,analysis.completed}') RETURNING secret`,
		recv.url+"/hooks/demo").Scan(&demoSecret); err != nil {
		return err
	}
	if err := pool.QueryRow(setup, `INSERT INTO relay.subscriptions (owner, name, url, event_types, retry_schedule)
		VALUES ('demo-user', 'Flaky endpoint', $1, '{thread.created}', '{2 seconds,4 seconds,8 seconds}') RETURNING secret`,
		recv.url+"/hooks/flaky").Scan(&flakySecret); err != nil {
		return err
	}
	recv.setSecrets(map[string]string{"/hooks/demo": demoSecret, "/hooks/flaky": flakySecret})

	token := randomToken()
	addr := *adminAddr
	if l, err := net.Listen("tcp", addr); err != nil {
		addr = "127.0.0.1:0"
	} else {
		l.Close()
	}
	a, err := app.New(app.Config{
		DatabaseURL: dbURL, AdminAddr: addr, AdminToken: token, AllowCIDRs: []string{"127.0.0.0/8"},
		Migrate: true, Console: console.Files(), UserAgent: userAgent(), Logger: log,
		ShutdownTimeout: 5 * time.Second,
	})
	if err != nil {
		return err
	}
	if err := a.Start(setup); err != nil {
		return err
	}
	stopped := false
	stopApp := func() {
		if !stopped {
			stopped = true
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			a.Stop(sctx)
			cancel()
		}
	}
	defer stopApp()

	fmt.Fprintf(c.Stdout, "\nPostgreSQL:  %s\n", dbURL)
	fmt.Fprintf(c.Stdout, "Console:     http://%s/  (token: %s)\n", a.AdminAddr(), token)
	fmt.Fprintf(c.Stdout, "Receiver:    %s/hooks/demo verifies every signature; %s/hooks/flaky fails twice per event, then accepts\n", recv.url, recv.url)
	fmt.Fprintf(c.Stdout, "Try:         psql %q -c \"SELECT relay.emit('thread.created', '{\\\"title\\\": \\\"Hi\\\"}', 'demo-user')\"\n\n", dbURL)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); emitDemoEvents(ctx, pool, *every, c.Stdout) }()
	go func() { defer wg.Done(); followDemoLog(ctx, pool, c.Stdout) }()
	<-ctx.Done()
	wg.Wait()
	stopApp()

	var events, delivered, retried, failed int
	err = pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM relay.outbox WHERE event_type NOT LIKE 'relay.%'),
		(SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'),
		(SELECT count(*) FROM relay.delivery_attempts WHERE outcome = 'retry'),
		(SELECT count(*) FROM relay.deliveries WHERE status = 'failed')`).Scan(&events, &delivered, &retried, &failed)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "\nsummary: events=%d delivered=%d retried=%d failed=%d (signatures verified by the receiver: %d, bad: %d)\n",
		events, delivered, retried, failed, recv.verified(), recv.bad())
	return nil
}

func randomToken() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return "demo_" + base64.RawURLEncoding.EncodeToString(b)
}

func emitDemoEvents(ctx context.Context, pool *pgxpool.Pool, every time.Duration, out io.Writer) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		ev := demoEvents[(n-1)%len(demoEvents)]
		payload := fmt.Sprintf(ev.payload, 100+n, n)
		if _, err := pool.Exec(ctx, `SELECT relay.emit($1, $2::jsonb, 'demo-user', $3)`, ev.typ, payload, fmt.Sprintf("thread-%d", 100+n)); err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(out, "emit: %v\n", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// followDemoLog prints relay.delivery_log as it grows.
func followDemoLog(ctx context.Context, pool *pgxpool.Pool, out io.Writer) {
	var last int64
	fmt.Fprintf(out, "%-8s %-22s %-16s %-3s %-10s %-5s %6s  %s\n", "TIME", "EVENT", "WEBHOOK", "TRY", "OUTCOME", "CODE", "MS", "ERROR")
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
		rows, err := pool.Query(ctx, `SELECT attempt_id, started_at, event_type, subscription_name, attempt, outcome,
			coalesce(status_code::text, '-'), coalesce(duration_ms, 0), coalesce(error, '')
			FROM relay.delivery_log WHERE attempt_id > $1 ORDER BY attempt_id`, last)
		if err != nil {
			continue
		}
		for rows.Next() {
			var at time.Time
			var typ, sub, outcome, code, errText string
			var attempt, ms int
			if rows.Scan(&last, &at, &typ, &sub, &attempt, &outcome, &code, &ms, &errText) == nil {
				fmt.Fprintf(out, "%-8s %-22s %-16s %-3d %-10s %-5s %6d  %s\n", at.Local().Format("15:04:05"), typ, cellText(sub), attempt, outcome, code, ms, cellText(errText))
			}
		}
		rows.Close()
	}
}

// demoReceiver is the local endpoint of the demo: it checks each signature
// as a receiver should and prints what it got.
type demoReceiver struct {
	url     string
	srv     *http.Server
	mu      sync.Mutex
	secrets map[string]string
	tries   map[string]int
	ok, nok int
}

func startDemoReceiver(out io.Writer) (*demoReceiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &demoReceiver{url: "http://" + l.Addr().String(), tries: map[string]int{}}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		r.mu.Lock()
		secret := r.secrets[req.URL.Path]
		r.mu.Unlock()
		err := signer.Verify(secret, req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), body, nil)
		r.mu.Lock()
		if err != nil {
			r.nok++
		} else {
			r.ok++
		}
		id := req.Header.Get("webhook-id")
		r.tries[req.URL.Path+id]++
		try := r.tries[req.URL.Path+id]
		r.mu.Unlock()
		if err != nil {
			fmt.Fprintf(out, "receiver: REJECTED %s: %v\n", req.URL.Path, err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if req.URL.Path == "/hooks/flaky" && try <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var ev struct{ Type string }
		_ = json.Unmarshal(body, &ev)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(l) }()
	return r, nil
}

func (r *demoReceiver) setSecrets(m map[string]string) { r.mu.Lock(); r.secrets = m; r.mu.Unlock() }
func (r *demoReceiver) verified() int                  { r.mu.Lock(); defer r.mu.Unlock(); return r.ok }
func (r *demoReceiver) bad() int                       { r.mu.Lock(); defer r.mu.Unlock(); return r.nok }
func (r *demoReceiver) Close() error                   { return r.srv.Close() }
