package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/pgoutbox/relay/signer"
)

func init() {
	register("receive", "a demo webhook receiver: verify each request's signature and print it", (*CLI).receive)
}

// receive is the demo receiver of deploy/compose.yaml: it listens, checks
// each request's Standard Webhooks signature with the subscription's
// secret, answers 204 (401 to a bad signature) and prints one line per
// request. It is for trying relay out, not for production.
func (c *CLI) receive(ctx context.Context, args []string) error {
	fs := c.newFlagSet("receive", "receive [flags]")
	addr := fs.String("addr", c.envOr("RELAY_RECEIVER_ADDR", "127.0.0.1:9000"), "listen address (env RELAY_RECEIVER_ADDR)")
	secret := fs.String("secret", c.getenv("RELAY_RECEIVER_SECRET"), "the subscription's whsec_ secret; empty prints requests unverified (env RELAY_RECEIVER_SECRET)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("receive takes no arguments (got %q)", fs.Args())
	}
	if *secret != "" {
		if _, err := signer.ParseSecret(*secret); err != nil {
			return usageError("--secret: %v", err)
		}
	}
	// As a container's process 1, SIGTERM does nothing unless handled.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *addr, err)
	}
	var mu sync.Mutex // one line at a time on stdout
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil || r.Method != http.MethodPost {
				http.Error(w, "POST a webhook", http.StatusBadRequest)
				return
			}
			verdict, code := "unverified (no --secret)", http.StatusNoContent
			if *secret != "" {
				err := signer.Verify(*secret, r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature"), body, nil)
				verdict = "signature ok"
				if err != nil {
					verdict, code = "REJECTED: "+err.Error(), http.StatusUnauthorized
				}
			}
			mu.Lock()
			fmt.Fprintf(c.Stdout, "receiver: %s %s id=%s attempt=%s %s: %s\n", r.Method, r.URL.Path,
				r.Header.Get("webhook-id"), r.Header.Get("x-relay-attempt"), verdict, body)
			mu.Unlock()
			w.WriteHeader(code)
		}),
	}
	fmt.Fprintf(c.Stdout, "receiver listening on http://%s/\n", ln.Addr())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
