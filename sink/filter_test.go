package sink_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgtest"
)

// TestFanoutPayloadFilters: filters are evaluated in the fan-out statement
// and compose with event types and owners; both fan-out paths (plain, and
// handing deliveries to this relay's dispatcher) agree.
func TestFanoutPayloadFilters(t *testing.T) {
	t.Parallel()
	for _, handoff := range []bool{false, true} {
		t.Run(fmt.Sprintf("handoff=%v", handoff), func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			sub := func(owner any, patterns []string, filter string) int64 {
				id := addSub(t, db, owner, patterns...)
				if filter != "" {
					db.Exec(t, `UPDATE relay.subscriptions SET filter = $2 WHERE id = $1`, id, filter)
				}
				return id
			}
			big := sub("A", []string{"order.*"}, `$.amount ? (@ > 100)`)
			email := sub("A", []string{"order.paid"}, `$.channel == "email"`)
			plainA := sub("A", []string{"order.*"}, "")
			bigB := sub("B", []string{"*"}, `$.amount ? (@ > 100)`)
			vipOp := sub(nil, []string{"*"}, `$.tags[*] ? (@ == "vip")`)
			sub(nil, []string{"marker.end"}, "")
			if handoff {
				rc := newReceiver(t, nil)
				db.Exec(t, `UPDATE relay.settings SET allow_http = true`)
				db.Exec(t, `UPDATE relay.subscriptions SET url = $1`, rc.URL)
				startHandoff(t, db, nil)
			} else {
				startCapture(t, db, nil)
			}
			emit := func(typ string, owner any, payload string) string {
				var id string
				if err := db.Pool.QueryRow(context.Background(), `SELECT relay.emit($1, $2::jsonb, $3)::text`, typ, payload, owner).Scan(&id); err != nil {
					t.Fatal(err)
				}
				return id
			}
			evs := map[string]string{
				"A paid 120 email":  emit("order.paid", "A", `{"amount": 120, "channel": "email"}`),
				"A paid 50 sms vip": emit("order.paid", "A", `{"amount": 50, "channel": "sms", "tags": ["vip"]}`),
				"A shipped 500":     emit("order.shipped", "A", `{"amount": 500}`),
				"A paid amount str": emit("order.paid", "A", `{"amount": "lots"}`),
				"B paid 120":        emit("order.paid", "B", `{"amount": 120}`),
				"A user 999":        emit("user.created", "A", `{"amount": 999}`),
			}
			emit("marker.end", nil, `{}`)
			waitFor(t, 10*time.Second, "the marker", func() bool {
				return count(t, db.Pool, `SELECT count(*) FROM relay.outbox o WHERE o.event_type = 'marker.end'
					AND EXISTS (SELECT 1 FROM relay.deliveries d WHERE d.event_id = o.event_id)`) == 1
			})
			want := map[string][]int64{
				"A paid 120 email":  {big, email, plainA},
				"A paid 50 sms vip": {plainA, vipOp},
				"A shipped 500":     {big, plainA},
				"A paid amount str": {plainA}, // a type mismatch is no match, not an error
				"B paid 120":        {bigB},
				"A user 999":        {},
			}
			for k, ids := range want {
				var got []int64
				rows, err := db.Pool.Query(context.Background(), `SELECT subscription_id FROM relay.deliveries WHERE event_id = $1 ORDER BY 1`, evs[k])
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var id int64
					_ = rows.Scan(&id)
					got = append(got, id)
				}
				if fmt.Sprint(got) != fmt.Sprint(append([]int64{}, ids...)) && !(len(got) == 0 && len(ids) == 0) {
					t.Errorf("%s went to %v, want %v", k, got, ids)
				}
			}
		})
	}
}

// TestTestButtonIgnoresFilter: the test event reaches its subscription
// whatever the filter says.
func TestTestButtonIgnoresFilter(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	id, _ := subscribe(t, db, nil, rc.URL, []string{"*"}, `filter = '$.never == true'`)
	d := startDispatcher(t, db, loopback, nil)
	res, err := d.Test(context.Background(), id)
	if err != nil || !res.Delivered {
		t.Fatalf("test delivery: %+v %v", res, err)
	}
}
