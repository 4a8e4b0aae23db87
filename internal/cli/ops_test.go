package cli_test

import (
	"context"
	"strconv"
	"testing"
	"time"
)

func TestRedeliverCommand(t *testing.T) {
	t.Parallel()
	db, env := opsDB(t)
	sub := fxSub(t, db, "orders", nil)
	failed := fxDelivery(t, db, sub, "order.created", nil, "failed", time.Hour)
	done := fxDelivery(t, db, sub, "order.created", nil, "succeeded", time.Hour)
	pending := fxDelivery(t, db, sub, "order.created", nil, "pending", time.Hour)
	status := func(id int64) string {
		var s string
		if err := db.Pool.QueryRow(context.Background(), `SELECT status FROM relay.deliveries WHERE id = $1`, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	f, d, p := strconv.FormatInt(failed, 10), strconv.FormatInt(done, 10), strconv.FormatInt(pending, 10)

	expectCLI(t, env, 0, []string{"delivery " + f + " queued for redelivery", "delivery " + d + " queued"}, "redeliver", f, d)
	if status(failed) != "pending" || status(done) != "pending" {
		t.Fatalf("statuses after redeliver: %s %s", status(failed), status(done))
	}
	expectCLI(t, env, 1, []string{"delivery " + p + " is already pending", "not queued"}, "redeliver", p)
	expectCLI(t, env, 1, []string{"delivery 4242 not found"}, "redeliver", "4242")

	db.Exec(t, `UPDATE relay.deliveries SET status = 'failed' WHERE id = $1`, failed)
	var res []struct {
		DeliveryID int64  `json:"delivery_id"`
		Queued     bool   `json:"queued"`
		Error      string `json:"error"`
	}
	decodeJSON(t, expectCLI(t, env, 1, nil, "redeliver", "--json", f, "4242"), &res)
	if len(res) != 2 || !res[0].Queued || res[0].DeliveryID != failed || res[1].Queued || res[1].Error != "delivery 4242 not found" {
		t.Fatalf("redeliver --json: %+v", res)
	}

	expectCLI(t, env, 2, []string{"at least one delivery id"}, "redeliver")
	expectCLI(t, env, 2, []string{`invalid delivery id "x7"`}, "redeliver", f, "x7")
}

func TestReplayCommand(t *testing.T) {
	t.Parallel()
	db, env := opsDB(t)
	sub := fxSub(t, db, "orders", nil)
	recent := fxDelivery(t, db, sub, "order.created", nil, "failed", 2*time.Hour)
	old := fxDelivery(t, db, sub, "order.created", nil, "failed", 48*time.Hour)
	fxDelivery(t, db, sub, "order.created", nil, "succeeded", time.Hour)
	other := fxSub(t, db, "other", nil)
	fxDelivery(t, db, other, "order.created", nil, "failed", time.Hour)
	s := strconv.FormatInt(sub, 10)
	pendingCount := func() int {
		var n int
		if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries WHERE status = 'pending'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	expectCLI(t, env, 0, []string{"queued 1 failed deliveries of subscription " + s}, "replay", "--sub", s, "--since", "1d")
	if n := pendingCount(); n != 1 {
		t.Fatalf("%d pending after replay, want 1", n)
	}
	var res struct {
		SubscriptionID int64     `json:"subscription_id"`
		Since          time.Time `json:"since"`
		Until          time.Time `json:"until"`
		Queued         int       `json:"queued"`
	}
	until := time.Now().Add(-24 * time.Hour).UTC().Format(time.RFC3339)
	decodeJSON(t, expectCLI(t, env, 0, nil, "replay", "--sub", s, "--since", "3d", "--until", until, "--json"), &res)
	if res.Queued != 1 || res.SubscriptionID != sub || !res.Since.Before(res.Until) {
		t.Fatalf("replay --json: %+v", res)
	}
	if n := pendingCount(); n != 2 {
		t.Fatalf("%d pending after the second replay, want 2 (deliveries %d and %d)", n, recent, old)
	}
	// Nothing left to replay.
	expectCLI(t, env, 0, []string{"queued 0"}, "replay", "--sub", s, "--since", "7d")

	expectCLI(t, env, 2, []string{"needs --sub"}, "replay", "--since", "1d")
	expectCLI(t, env, 2, []string{"needs --since"}, "replay", "--sub", s)
	expectCLI(t, env, 2, []string{"invalid --since", "lately"}, "replay", "--sub", s, "--since", "lately")
	expectCLI(t, env, 2, []string{"invalid --until"}, "replay", "--sub", s, "--since", "1d", "--until", "2024-13-01")
	expectCLI(t, env, 2, []string{"must be before --until"}, "replay", "--sub", s, "--since", "1h", "--until", "2h")
	expectCLI(t, env, 2, []string{"invalid value", "-sub"}, "replay", "--sub", "abc", "--since", "1h")
	expectCLI(t, env, 1, []string{"subscription 4242 not found"}, "replay", "--sub", "4242", "--since", "1d")
}

func TestPauseResumeCommands(t *testing.T) {
	t.Parallel()
	db, env := opsDB(t)
	paused := func() (bool, *string) {
		var p bool
		var r *string
		if err := db.Pool.QueryRow(context.Background(), `SELECT paused, paused_reason FROM relay.settings`).Scan(&p, &r); err != nil {
			t.Fatal(err)
		}
		return p, r
	}
	expectCLI(t, env, 0, []string{"relay paused (database upgrade)", "relay resume"}, "pause", "--reason", "database upgrade")
	if p, r := paused(); !p || r == nil || *r != "database upgrade" {
		t.Fatalf("after pause: %v %v", p, r)
	}
	expectCLI(t, env, 0, []string{"PAUSED since", "database upgrade"}, "status")
	var v struct {
		Paused       bool       `json:"paused"`
		PausedReason *string    `json:"paused_reason"`
		PausedAt     *time.Time `json:"paused_at"`
	}
	decodeJSON(t, expectCLI(t, env, 0, nil, "resume", "--json"), &v)
	if v.Paused || v.PausedReason != nil || v.PausedAt != nil {
		t.Fatalf("resume --json: %+v", v)
	}
	if p, _ := paused(); p {
		t.Fatal("still paused after resume")
	}
	decodeJSON(t, expectCLI(t, env, 0, nil, "pause", "--json"), &v)
	if !v.Paused || v.PausedReason != nil || v.PausedAt == nil {
		t.Fatalf("pause --json: %+v", v)
	}
	expectCLI(t, env, 0, []string{"relay resumed"}, "resume")
	expectCLI(t, env, 2, []string{"pause takes no arguments"}, "pause", "now")
	expectCLI(t, env, 2, []string{"resume takes no arguments"}, "resume", "now")
}

type statusJSON struct {
	Paused bool `json:"paused"`
	Slot   struct {
		Name      string  `json:"name"`
		Exists    bool    `json:"exists"`
		Active    bool    `json:"active"`
		WALStatus *string `json:"wal_status"`
		LagBytes  *int64  `json:"lag_bytes"`
	} `json:"slot"`
	Deliveries           map[string]int64 `json:"deliveries"`
	Due                  int64            `json:"due"`
	OldestPendingSeconds *float64         `json:"oldest_pending_seconds"`
	Subscriptions        struct {
		Total, Enabled, Disabled, Failing int64
	} `json:"subscriptions"`
	Unhealthy []struct {
		ID                  int64   `json:"id"`
		Name                string  `json:"name"`
		URL                 string  `json:"url"`
		Enabled             bool    `json:"enabled"`
		DisabledReason      *string `json:"disabled_reason"`
		ConsecutiveFailures int     `json:"consecutive_failures"`
		LastError           *string `json:"last_error"`
		Backlog             int64   `json:"backlog"`
	} `json:"unhealthy"`
}

func TestStatusCommand(t *testing.T) {
	t.Parallel()
	db, env := opsDB(t)

	// An empty database: no slot, nothing waiting.
	out := expectCLI(t, env, 0, []string{"sending:        running", "slot relay:", "does not exist", "0 pending", "oldest pending: none", "subscriptions:  0"}, "status")
	if len(out) == 0 {
		t.Fatal("no output")
	}
	var st statusJSON
	decodeJSON(t, expectCLI(t, env, 0, nil, "status", "--json"), &st)
	if st.Slot.Exists || st.Slot.Name != "relay" || st.Slot.LagBytes != nil || st.OldestPendingSeconds != nil ||
		len(st.Deliveries) != 4 || st.Deliveries["failed"] != 0 || st.Unhealthy == nil || len(st.Unhealthy) != 0 {
		t.Fatalf("empty status: %+v", st)
	}

	good := fxSub(t, db, "good", nil)
	failing := fxSub(t, db, "failing", "acme")
	off := fxSub(t, db, "off", nil)
	db.Exec(t, `UPDATE relay.subscriptions SET consecutive_failures = 3, failing_since = now() - interval '1 hour',
		last_error = 'HTTP 502 Bad Gateway' WHERE id = $1`, failing)
	db.Exec(t, `UPDATE relay.subscriptions SET enabled = false, disabled_reason = 'endpoint gone (HTTP 410)' WHERE id = $1`, off)
	fxDelivery(t, db, good, "order.created", nil, "succeeded", time.Hour)
	fxDelivery(t, db, failing, "order.created", "acme", "pending", 30*time.Minute)
	fxDelivery(t, db, failing, "order.created", "acme", "delivering", time.Minute)
	fxDelivery(t, db, off, "order.created", nil, "failed", time.Hour)

	slot := "st_" + db.Name
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	db.Exec(t, `SELECT relay.emit('order.created')`)

	senv := map[string]string{"RELAY_DATABASE_URL": env["RELAY_DATABASE_URL"], "RELAY_SLOT": slot}
	decodeJSON(t, expectCLI(t, senv, 0, nil, "status", "--json"), &st)
	if !st.Slot.Exists || st.Slot.Name != slot || st.Slot.Active || st.Slot.LagBytes == nil || *st.Slot.LagBytes < 0 ||
		st.Slot.WALStatus == nil || *st.Slot.WALStatus == "" {
		t.Fatalf("slot: %+v", st.Slot)
	}
	if st.Deliveries["pending"] != 1 || st.Deliveries["delivering"] != 1 || st.Deliveries["succeeded"] != 1 ||
		st.Deliveries["failed"] != 1 || st.Due != 1 {
		t.Fatalf("deliveries: %v due %d", st.Deliveries, st.Due)
	}
	if st.OldestPendingSeconds == nil || *st.OldestPendingSeconds < 29*60 || *st.OldestPendingSeconds > 60*60 {
		t.Fatalf("oldest pending: %v", st.OldestPendingSeconds)
	}
	if st.Subscriptions.Total != 3 || st.Subscriptions.Enabled != 2 || st.Subscriptions.Disabled != 1 || st.Subscriptions.Failing != 1 {
		t.Fatalf("subscriptions: %+v", st.Subscriptions)
	}
	if len(st.Unhealthy) != 2 || st.Unhealthy[0].ID != off || st.Unhealthy[0].Enabled || st.Unhealthy[1].ID != failing ||
		st.Unhealthy[1].ConsecutiveFailures != 3 || st.Unhealthy[1].Backlog != 2 || st.Unhealthy[1].URL != "https://hooks.example.com/pri***" {
		t.Fatalf("unhealthy: %+v", st.Unhealthy)
	}

	expectCLI(t, env, 0, []string{"slot " + slot + ":", "inactive", "lag ", "wal_status reserved",
		"1 pending (1 due), 1 delivering, 1 succeeded, 1 failed", "oldest pending: 30m",
		"3 (2 enabled, 1 disabled, 1 failing)", "failing or disabled:", "endpoint gone (HTTP 410)", "HTTP 502 Bad Gateway", "(operator)"},
		"status", "--slot", slot)
	expectCLI(t, env, 2, []string{"status takes no arguments"}, "status", "now")
	expectCLI(t, env, 1, []string{"connecting"}, "status", "--database-url", "postgres://127.0.0.1:1/none?connect_timeout=2")
}
