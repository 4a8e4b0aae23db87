package outbox

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// Hand-built pgoutput (protocol 1) messages, decoded with no database.

func cstr(s string) []byte { return append([]byte(s), 0) }

func relationMsg(id uint32, ns, name string, cols ...string) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, cstr(ns)...)
	b = append(b, cstr(name)...)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, 0)
		b = append(b, cstr(c)...)
		b = binary.BigEndian.AppendUint32(b, 25) // text
		b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
	}
	return b
}

// insertMsg builds an insert; a nil value is a NULL column.
func insertMsg(rel uint32, vals ...*string) []byte {
	b := []byte{'I'}
	b = binary.BigEndian.AppendUint32(b, rel)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			b = append(b, 'n')
			continue
		}
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(*v)))
		b = append(b, *v...)
	}
	return b
}

func beginMsg(finalLSN uint64, commit time.Time) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, finalLSN)
	micros := commit.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()
	b = binary.BigEndian.AppendUint64(b, uint64(micros))
	b = binary.BigEndian.AppendUint32(b, 42)
	return b
}

func p(s string) *string { return &s }

func mustParse(t *testing.T, b []byte) pglogrepl.Message {
	t.Helper()
	m, err := pglogrepl.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDecodeOutboxInsert(t *testing.T) {
	d := newDecoder()
	// Columns in an unusual order plus one relay does not know (added by a user).
	rel := mustParse(t, relationMsg(7, "relay", "outbox",
		"id", "event_id", "event_type", "owner", "key", "payload", "headers", "created_at", "tenant_region", "target_subscription_id", "skip_subscription_id"))
	if err := d.relation(rel.(*pglogrepl.RelationMessage)); err != nil {
		t.Fatal(err)
	}
	commit := time.Date(2026, 11, 23, 14, 8, 24, 818802000, time.UTC)
	d.begin(mustParse(t, beginMsg(0x16B3748, commit)).(*pglogrepl.BeginMessage))
	ins := mustParse(t, insertMsg(7, p("12"), p("a90d9ca2-a383-49e0-8090-eca32e5bec3a"), p("thread.created"), p("user-1"), nil,
		p(`{"title": "Hi"}`), nil, p("2026-11-23 14:08:24.818802+00"), p("eu"), p("5"), nil)).(*pglogrepl.InsertMessage)
	ev, ok, err := d.insert(ins)
	if err != nil || !ok {
		t.Fatalf("insert: ok=%v err=%v", ok, err)
	}
	if ev.ID != 12 || ev.EventID != "a90d9ca2-a383-49e0-8090-eca32e5bec3a" || ev.Type != "thread.created" ||
		ev.Owner == nil || *ev.Owner != "user-1" || ev.Key != nil || string(ev.Payload) != `{"title": "Hi"}` || ev.Headers != nil {
		t.Fatalf("decoded %+v", ev)
	}
	if ev.TargetSubscriptionID == nil || *ev.TargetSubscriptionID != 5 || ev.SkipSubscriptionID != nil {
		t.Fatalf("routing columns: target %v skip %v", ev.TargetSubscriptionID, ev.SkipSubscriptionID)
	}
	if !ev.CreatedAt.Equal(commit) || !ev.CommitTime.Equal(commit) || ev.CommitLSN != 0x16B3748 {
		t.Fatalf("times/LSN: created %v commit %v lsn %v", ev.CreatedAt, ev.CommitTime, ev.CommitLSN)
	}
}

func TestDecodeSkipsOtherRelationsAndRejectsUnknownOnes(t *testing.T) {
	d := newDecoder()
	if err := d.relation(mustParse(t, relationMsg(9, "public", "orders", "id")).(*pglogrepl.RelationMessage)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := d.insert(mustParse(t, insertMsg(9, p("1"))).(*pglogrepl.InsertMessage)); ok || err != nil {
		t.Fatalf("other table: ok=%v err=%v", ok, err)
	}
	if _, _, err := d.insert(mustParse(t, insertMsg(10, p("1"))).(*pglogrepl.InsertMessage)); err == nil {
		t.Fatal("insert for an unseen relation must fail")
	}
}

func TestDecodeRejectsBadRows(t *testing.T) {
	d := newDecoder()
	if err := d.relation(mustParse(t, relationMsg(3, "relay", "outbox", "id")).(*pglogrepl.RelationMessage)); err == nil {
		t.Fatal("an outbox relation without event_id/event_type/payload must be refused")
	}
	if err := d.relation(mustParse(t, relationMsg(3, "relay", "outbox", "event_id", "event_type", "payload", "created_at")).(*pglogrepl.RelationMessage)); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]*string{
		"null payload":   {p("a90d9ca2-a383-49e0-8090-eca32e5bec3a"), p("a.b"), nil, nil},
		"bad created_at": {p("a90d9ca2-a383-49e0-8090-eca32e5bec3a"), p("a.b"), p("{}"), p("yesterday")},
	}
	for name, vals := range cases {
		if _, _, err := d.insert(mustParse(t, insertMsg(3, vals...)).(*pglogrepl.InsertMessage)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestParseTimestamptzOffsets(t *testing.T) {
	for in, want := range map[string]time.Time{
		"2026-11-23 14:08:24.818802+00":  time.Date(2026, 11, 23, 14, 8, 24, 818802000, time.UTC),
		"2026-11-23 19:38:24+05:30":      time.Date(2026, 11, 23, 14, 8, 24, 0, time.UTC),
		"2026-11-23 14:08:24.5-01":       time.Date(2026, 11, 23, 15, 8, 24, 500000000, time.UTC),
		"1901-12-13 20:45:52.1+00:09:21": time.Date(1901, 12, 13, 20, 36, 31, 100000000, time.UTC),
	} {
		got, err := parseTimestamptz(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: %v %v, want %v", in, got, err, want)
		}
	}
}

func BenchmarkDecodeInsert(b *testing.B) {
	d := newDecoder()
	rel, _ := pglogrepl.Parse(relationMsg(7, "relay", "outbox", "id", "event_id", "event_type", "owner", "key", "payload", "headers", "created_at", "target_subscription_id", "skip_subscription_id"))
	_ = d.relation(rel.(*pglogrepl.RelationMessage))
	payload := `{"title": "` + string(make([]byte, 0)) + `a fairly ordinary thread title", "body": "` + string(bytesOf('x', 400)) + `"}`
	raw := insertMsg(7, p("12"), p("a90d9ca2-a383-49e0-8090-eca32e5bec3a"), p("thread.created"), p("user-1"), p("thread-9"),
		p(payload), nil, p("2026-11-23 14:08:24.818802+00"), nil, nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		m, err := pglogrepl.Parse(raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := d.insert(m.(*pglogrepl.InsertMessage)); err != nil {
			b.Fatal(err)
		}
	}
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}
