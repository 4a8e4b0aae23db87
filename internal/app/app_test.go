package app_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/pgoutbox/relay/internal/app"
	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/internal/telemetry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestAdminAPIOnARunningRelay drives a whole relay through its admin API:
// create a webhook, press Test (a real request to a local receiver and to a
// refused target), deliver an event and read it back from the API and the
// metrics.
func TestAdminAPIOnARunningRelay(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(15 * time.Millisecond)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer recv.Close()

	a, err := app.New(app.Config{
		DatabaseURL: db.URL, Slot: db.Name, AdminAddr: "127.0.0.1:0", AdminToken: "op-secret-for-the-admin-api",
		AllowCIDRs: []string{"127.0.0.0/8"}, Migrate: true, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	base := "http://" + a.AdminAddr()

	call := func(method, path, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer op-secret-for-the-admin-api")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
		return resp.StatusCode
	}

	var created struct {
		ID     int64
		Secret string
	}
	if code := call("POST", "/api/webhooks", fmt.Sprintf(`{"name":"local","url":%q,"events":["thread.*"]}`, recv.URL+"/hook"), &created); code != 201 || created.ID == 0 {
		t.Fatalf("create: %d %+v", code, created)
	}
	var test struct {
		Delivered  bool   `json:"delivered"`
		StatusCode int    `json:"status_code"`
		DurationMS int64  `json:"duration_ms"`
		Error      string `json:"error"`
	}
	if code := call("POST", fmt.Sprintf("/api/webhooks/%d/test", created.ID), "", &test); code != 200 || !test.Delivered || test.StatusCode != 202 || test.DurationMS < 15 {
		t.Fatalf("test against a local receiver: %d %+v", code, test)
	}
	var refused struct{ ID int64 }
	call("POST", "/api/webhooks", `{"name":"internal","url":"http://10.20.30.40/hook","events":["x.y"]}`, &refused)
	if refused.ID == 0 {
		// The API refuses a private literal address outright, as it should;
		// put one in through SQL to exercise the dial-time guard.
		if err := db.Pool.QueryRow(context.Background(), `INSERT INTO relay.subscriptions (name, url, event_types)
			VALUES ('internal', 'http://10.20.30.40/hook', '{x.y}') RETURNING id`).Scan(&refused.ID); err != nil {
			t.Fatal(err)
		}
	}
	test.Error = ""
	if code := call("POST", fmt.Sprintf("/api/webhooks/%d/test", refused.ID), "", &test); code != 200 || test.Delivered || !strings.Contains(test.Error, "refused") {
		t.Fatalf("test against a refused target: %d %+v", code, test)
	}

	db.Exec(t, `SELECT relay.emit('thread.created', '{"title":"via the stream"}')`)
	var list struct {
		Deliveries []struct {
			EventType string `json:"event_type"`
			Status    string `json:"status"`
		} `json:"deliveries"`
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		call("GET", fmt.Sprintf("/api/deliveries?webhook_id=%d&status=succeeded", created.ID), "", &list)
		n := 0
		for _, d := range list.Deliveries {
			if d.EventType == "thread.created" {
				n++
			}
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("event never listed as delivered: %+v", list)
		}
		time.Sleep(50 * time.Millisecond)
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Three events went through the stream: two test events (each test
	// button press goes through the outbox too) and the thread.created.
	for _, want := range []string{`relay_delivery_attempts_total{outcome="succeeded"} 2`, `relay_events_captured_total 3`, `relay_replication_slot_active{slot="` + db.Name + `"} 1`,
		"\nrelay_deliveries_sent_ahead_total ", "\nrelay_attempts_written_with_delivery_total "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if resp, err := http.Get(base + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
}

// TestTimeoutsAndBuildInfoInMetrics: an attempt that gets no answer within
// the subscription's timeout counts in relay_delivery_timeouts_total (the
// alert rules' timeout rate), and /metrics and /healthz tell which build runs.
func TestTimeoutsAndBuildInfoInMetrics(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
	release := make(chan struct{})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer recv.Close()
	defer close(release)
	db.Exec(t, `INSERT INTO relay.subscriptions (name, url, event_types, timeout_ms, retry_schedule) VALUES ('slow', $1, '{*}', 1000, '{}')`, recv.URL)

	a, err := app.New(app.Config{
		DatabaseURL: db.URL, Slot: db.Name, AdminAddr: "127.0.0.1:0", AllowCIDRs: []string{"127.0.0.0/8"},
		Migrate: true, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	base := "http://" + a.AdminAddr()
	db.Exec(t, `SELECT relay.emit('slow.event', '{}')`)

	scrape := func() string {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	// The timeout is counted as the sender returns, the attempt once recorded.
	for m := scrape(); !strings.Contains(m, "relay_delivery_timeouts_total 1") || !strings.Contains(m, `relay_delivery_attempts_total{outcome="failed"} 1`); m = scrape() {
		if time.Now().After(deadline) {
			t.Fatalf("no timeout counted:\n%s", scrape())
		}
		time.Sleep(50 * time.Millisecond)
	}
	body := scrape()
	for _, want := range []string{"relay_ready 1", "relay_build_info{"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if health["status"] != "ok" || health["state"] != "running" || health["version"] == nil || health["go_version"] == nil || health["commit"] == nil {
		t.Fatalf("/healthz: %v", health)
	}
}

// TestOTLPExport: with an OTLP endpoint configured, a running relay exports
// the spans of an event's capture, fan-out and attempt, in the trace of the
// traceparent the event carried, to a collector over OTLP/HTTP.
func TestOTLPExport(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer recv.Close()
	db.Exec(t, `INSERT INTO relay.subscriptions (name, url, event_types) VALUES ('traced', $1, '{*}')`, recv.URL)

	var mu sync.Mutex
	spans := map[string]string{} // name → trace id
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		// An ExportTraceServiceRequest has the wire form of TracesData
		// (field 1: the resource spans), which spares this test gRPC.
		var req tracepb.TracesData
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					spans[s.Name] = hex.EncodeToString(s.TraceId)
				}
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()

	a, err := app.New(app.Config{
		DatabaseURL: db.URL, Slot: db.Name, AdminAddr: "off", AllowCIDRs: []string{"127.0.0.0/8"}, Migrate: true,
		OTLPEndpoint: telemetry.EndpointFromEnv(func(k string) string {
			if k == telemetry.EnvEndpoint {
				return collector.URL
			}
			return ""
		}),
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	db.Exec(t, `SELECT relay.emit('order.paid', '{}', NULL, NULL, jsonb_build_object('traceparent', '00-`+traceID+`-00f067aa0ba902b7-01'))`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries WHERE status = 'succeeded'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the traced event was not delivered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.Stop(context.Background()) // exports what the batch still holds
	mu.Lock()
	defer mu.Unlock()
	for _, name := range []string{"relay.capture", "relay.fanout", "relay.attempt"} {
		if spans[name] != traceID {
			t.Errorf("span %s: trace %q, want %s (collector got %v)", name, spans[name], traceID, spans)
		}
	}
}

// TestBadOTLPEndpointRefused: a wrong endpoint is a configuration error
// naming it, not spans sent nowhere.
func TestBadOTLPEndpointRefused(t *testing.T) {
	_, err := app.New(app.Config{DatabaseURL: "postgres://x", OTLPEndpoint: "collector:4318"})
	if err == nil || !strings.Contains(err.Error(), `OTLP endpoint "collector:4318"`) {
		t.Fatalf("error %v", err)
	}
}
