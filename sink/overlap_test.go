package sink_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgoutbox/relay/internal/pgtest"
	"github.com/pgoutbox/relay/outbox"
)

// heldCommits is a PipelinedHandler whose commits the test confirms: each
// StartEvents call returns at once with a durable channel the test
// resolves later.
type heldCommits struct {
	mu    sync.Mutex
	calls []heldCall
	added chan struct{}
}

type heldCall struct {
	events  []outbox.Event
	durable chan error
}

func (h *heldCommits) HandleEvents(context.Context, []outbox.Event) error {
	return errors.New("the stream must use StartEvents")
}

func (h *heldCommits) StartEvents(_ context.Context, evs []outbox.Event) (<-chan error, error) {
	c := heldCall{events: append([]outbox.Event(nil), evs...), durable: make(chan error, 1)}
	h.mu.Lock()
	h.calls = append(h.calls, c)
	h.mu.Unlock()
	h.added <- struct{}{}
	return c.durable, nil
}

// next waits for the next StartEvents call.
func (h *heldCommits) next(t *testing.T) heldCall {
	t.Helper()
	select {
	case <-h.added:
	case <-time.After(15 * time.Second):
		t.Fatal("the stream handed nothing over")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[len(h.calls)-1]
}

// holdsBack checks that the stream hands nothing more over within d while
// calls are unconfirmed (why says what that would mean), then that
// confirming the oldest lets the event of type next through; it confirms
// them all at the end.
func (h *heldCommits) holdsBack(t *testing.T, calls []heldCall, d time.Duration, next, why string) {
	t.Helper()
	select {
	case <-h.added:
		t.Fatal(why)
	case <-time.After(d):
	}
	calls[0].durable <- nil
	got := h.next(t)
	if got.events[0].Type != next {
		t.Fatalf("handed over %s, want %s", got.events[0].Type, next)
	}
	for _, c := range append(calls[1:], got) {
		c.durable <- nil
	}
}

// The stream hands the next events over while an earlier commit is still
// unconfirmed, acknowledges positions only in commit order once the
// commits before them are confirmed, and replays from the acknowledged
// position when a commit fails.
func TestCaptureOverlappedCommitsAcknowledgeInOrder(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	h := &heldCommits{added: make(chan struct{}, 16)}
	s := startCapture(t, db, func(outbox.Handler) outbox.Handler { return h })

	db.Exec(t, `SELECT relay.emit('a.one', '{}')`)
	first := h.next(t)
	// Nothing confirmed: the second event is handed over all the same.
	db.Exec(t, `SELECT relay.emit('a.two', '{}')`)
	second := h.next(t)
	if first.events[0].Type != "a.one" || second.events[0].Type != "a.two" {
		t.Fatalf("handed over %s then %s", first.events[0].Type, second.events[0].Type)
	}
	// A position equal to an event's CommitLSN is still before it: that is
	// where its commit record starts, and the server sends again every
	// transaction whose commit record starts at or after the slot's
	// confirmed position. A keepalive can report exactly that position
	// (the WAL end once the insert was written and before its commit),
	// and the stream acknowledges it when nothing is in flight. Only a
	// position past CommitLSN would skip the event.
	before := s.AckedLSN()
	if before > first.events[0].CommitLSN {
		t.Fatalf("acknowledged %s before any commit was confirmed (first event's commit at %s)", before, first.events[0].CommitLSN)
	}

	// The second commit confirmed first moves nothing: the first one is
	// still open, and the slot must keep its event.
	second.durable <- nil
	time.Sleep(300 * time.Millisecond)
	if got := s.AckedLSN(); got != before {
		t.Fatalf("acknowledged %s with the first commit unconfirmed, was %s", got, before)
	}
	first.durable <- nil
	waitFor(t, 10*time.Second, "both events acknowledged", func() bool { return s.AckedLSN() >= second.events[0].CommitLSN })
	acked := s.AckedLSN()
	waitFor(t, 10*time.Second, "the slot to confirm them", func() bool {
		var confirmed string
		_ = db.Pool.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, db.Name).Scan(&confirmed)
		lsn, err := pglogrepl.ParseLSN(confirmed)
		return err == nil && lsn >= acked
	})

	// A commit that fails is not acknowledged: its event comes again.
	db.Exec(t, `SELECT relay.emit('a.three', '{}')`)
	third := h.next(t)
	third.durable <- errors.New("commit failed")
	again := h.next(t)
	if again.events[0].EventID != third.events[0].EventID {
		t.Fatalf("after a failed commit the stream handed over %s, want %s again", again.events[0].EventID, third.events[0].EventID)
	}
	if got := s.AckedLSN(); got > third.events[0].CommitLSN {
		t.Fatalf("acknowledged %s past the failed commit at %s", got, third.events[0].CommitLSN)
	}
	again.durable <- nil
	waitFor(t, 10*time.Second, "the replayed event acknowledged", func() bool { return s.AckedLSN() >= third.events[0].CommitLSN })
}

// At most a few commits stay unconfirmed: the stream waits for the oldest
// before handing over more.
func TestCaptureOverlappedCommitsAreBounded(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	h := &heldCommits{added: make(chan struct{}, 64)}
	startCapture(t, db, func(outbox.Handler) outbox.Handler { return h })
	var calls []heldCall
	for i := 0; i < outbox.MaxOverlapped; i++ {
		db.Exec(t, `SELECT relay.emit('a.n', '{}')`)
		calls = append(calls, h.next(t))
	}
	db.Exec(t, `SELECT relay.emit('a.fifth', '{}')`)
	h.holdsBack(t, calls, 500*time.Millisecond, "a.fifth",
		fmt.Sprintf("one more hand-over started with %d commits unconfirmed", outbox.MaxOverlapped))
}

var _ outbox.PipelinedHandler = (*heldCommits)(nil)

// Large events bound the unconfirmed hand-overs by their size too: with
// 4-MiB payloads the stream stops at MaxOverlappedBytes, long before
// MaxOverlapped commits, and goes on once the oldest is confirmed.
func TestCaptureOverlappedBytesAreBounded(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	h := &heldCommits{added: make(chan struct{}, 64)}
	startCapture(t, db, func(outbox.Handler) outbox.Handler { return h })
	emit := func(typ string) {
		db.Exec(t, `SELECT relay.emit($1, jsonb_build_object('blob', repeat('x', $2)))`, typ, 4<<20)
	}
	emit("a.big")
	calls := []heldCall{h.next(t)}
	size := len(calls[0].events[0].Payload)
	fit := outbox.MaxOverlappedBytes / size // hand-overs whose events fit together
	for len(calls) < fit {
		emit("a.big")
		calls = append(calls, h.next(t))
	}
	emit("a.over")
	// A 4-MiB event takes well under a second from its commit to its
	// hand-over here (-race included); give it several.
	h.holdsBack(t, calls, 3*time.Second, "a.over",
		fmt.Sprintf("one more hand-over of %d bytes started with %d unconfirmed holding %d bytes", size, fit, fit*size))
}
