package admin

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// readyTimeout bounds one readiness check.
const readyTimeout = 3 * time.Second

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{}
	if s.cfg.Health != nil {
		for k, v := range s.cfg.Health() {
			body[k] = v
		}
	}
	body["status"] = "ok"
	writeJSON(w, r, http.StatusOK, body)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	var err error
	if s.cfg.Ready != nil {
		err = s.cfg.Ready(ctx)
	} else {
		err = s.cfg.Pool.Ping(ctx)
		if err != nil {
			err = fmt.Errorf("database unreachable: %w", err)
		}
	}
	if err != nil {
		writeJSON(w, r, http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "error": err.Error()})
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Metrics == nil {
		writeError(w, r, http.StatusNotFound, "not_found", "metrics are not enabled in this process", "")
		return
	}
	s.cfg.Metrics.Handler().ServeHTTP(w, r)
}

//go:embed openapi.json
var openapiJSON []byte

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(openapiJSON)
}

// SlotReadiness returns the readiness check of a relay that streams (or
// stands by for) the logical replication slot named slot, for
// Config.Ready. It is ready when the database answers and the slot
// (1) does not have wal_status lost (WAL the slot needed was removed: events
// may be missing, a person must act), and (2) is streamed, by this relay
// (streaming reports true) or by another one that holds the slot (this one
// stands by). A slot that does not exist yet, or that nobody streams, is
// not ready. streaming may be nil (this relay never streams).
func SlotReadiness(pool *pgxpool.Pool, slot string, streaming func() bool) func(context.Context) error {
	return func(ctx context.Context) error {
		var active bool
		var walStatus string
		err := pool.QueryRow(ctx, `SELECT active, coalesce(wal_status, '') FROM pg_replication_slots
			WHERE slot_name = $1 AND database = current_database()`, slot).Scan(&active, &walStatus)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("replication slot %q does not exist yet", slot)
		}
		if err != nil {
			return fmt.Errorf("database unreachable: %w", err)
		}
		if walStatus == "lost" {
			return fmt.Errorf("replication slot %q has wal_status lost: WAL it needed was removed; recreate the slot and replay", slot)
		}
		if streaming != nil && streaming() {
			return nil
		}
		if active {
			return nil // standing by behind the relay that streams
		}
		return fmt.Errorf("nobody streams replication slot %q", slot)
	}
}

// maskURL hides all of a webhook URL but its scheme, host and the first
// three characters of its path, as relay.mask_url does:
// https://hooks.make.com/abc123?token=x becomes https://hooks.make.com/abc***.
func maskURL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "***"
	}
	path := strings.TrimPrefix(u.EscapedPath(), "/")
	if len(path) > 3 {
		path = path[:3]
	}
	return u.Scheme + "://" + u.Host + "/" + path + "***"
}
