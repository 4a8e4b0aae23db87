package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/dbwait"
)

// Config configures a Stream.
type Config struct {
	// DatabaseURL is a normal connection URL; the stream opens its own
	// replication connection from it.
	DatabaseURL string
	// Slot is the logical replication slot's name (default "relay").
	Slot string
	// Publication is the publication's name (default "relay").
	Publication string
	// Handler receives committed events. Required.
	Handler Handler
	// Logger receives the stream's logs.
	Logger zerolog.Logger
	// MaxBatch is the most events handed to the handler at once (default
	// 2000); a larger transaction is handed over in chunks of this size, so
	// memory stays bounded however big a transaction is.
	MaxBatch int
	// StatusInterval is how often the acknowledged position is reported to
	// the server when nothing else prompts it (default 10s).
	StatusInterval time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (defaults 100ms and
	// 30s); the delay doubles after each failure, with jitter. Reconnecting
	// goes through internal/dbwait, the code relay run waits for its
	// database with at start, so both log each attempt with its reason.
	MinBackoff, MaxBackoff time.Duration
	// StandbyInterval is how often a relay that does not hold the slot tries
	// to take it over (default 1s).
	StandbyInterval time.Duration
	// BackfillWindow bounds how old events may be for the backfill made
	// when the slot is created (default 7 days). See ensureSlot.
	BackfillWindow time.Duration
	// Linger is how long after handing events over the stream waits
	// before handing over the next ones (default 0: never). Events need
	// no linger to travel in batches: those that arrive while the handler
	// is committing queue up and are handed over together as soon as it
	// returns, and a lone event is handed over at once. Measured at 1,000
	// events/s, a 1ms linger added 1.0ms to the median latency.
	Linger time.Duration
	// ReportDelay bounds how often a moved acknowledgement is reported to
	// the server (default 50ms; negative reports each one at once). The
	// position is acknowledged in memory as soon as the handler returns;
	// reporting it is a write on the replication connection and work for
	// the walsender, which at 1,000 events/s one by one was one more
	// system call per event. Waiting only keeps WAL the slot could release
	// a little longer: a crash replays it, absorbed as any replay.
	ReportDelay time.Duration
	// StampDecode sets Event.DecodedAt on every event streamed, one clock
	// read per event (for relay bench's latency breakdown; default off).
	StampDecode bool
}

// State is where a stream stands.
type State int32

const (
	StateStopped    State = iota
	StateConnecting       // connecting or reconnecting after an error
	StateStreaming        // this relay holds the slot and reads it
	StateStandby          // another relay holds the slot; this one waits
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateStreaming:
		return "streaming"
	case StateStandby:
		return "standby"
	}
	return "stopped"
}

// Stream reads relay.outbox through a logical replication slot.
type Stream struct {
	cfg Config
	log zerolog.Logger

	retry   *dbwait.Retrier
	state   atomic.Int32
	acked   atomic.Uint64
	events  atomic.Int64
	cancel  context.CancelFunc
	done    chan struct{}
	stopped sync.Once
}

// New validates cfg and returns a stream that is not yet started.
func New(cfg Config) (*Stream, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("outbox: DatabaseURL is required")
	}
	if cfg.Handler == nil {
		return nil, errors.New("outbox: Handler is required")
	}
	if cfg.Slot == "" {
		cfg.Slot = "relay"
	}
	if cfg.Publication == "" {
		cfg.Publication = "relay"
	}
	for _, n := range []string{cfg.Slot, cfg.Publication} {
		if !validName(n) {
			return nil, fmt.Errorf("outbox: %q is not a valid slot or publication name (lowercase letters, digits and _; at most 63)", n)
		}
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 2000
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.StandbyInterval <= 0 {
		cfg.StandbyInterval = time.Second
	}
	if cfg.ReportDelay == 0 {
		cfg.ReportDelay = 50 * time.Millisecond
	}
	if cfg.BackfillWindow <= 0 {
		cfg.BackfillWindow = 7 * 24 * time.Hour
	}
	s := &Stream{cfg: cfg, log: cfg.Logger.With().Str("component", "outbox").Logger()}
	s.retry = dbwait.New(dbwait.Config{
		What: "database (replication connection)", Limit: dbwait.Forever,
		MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, Logger: s.log,
	})
	return s, nil
}

// validName accepts the names PostgreSQL allows for replication slots, which
// are also safe to splice into replication commands unquoted.
func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// State reports whether the stream is streaming, standing by or reconnecting.
func (s *Stream) State() State { return State(s.state.Load()) }

// AckedLSN is the position last acknowledged to the slot.
func (s *Stream) AckedLSN() pglogrepl.LSN { return pglogrepl.LSN(s.acked.Load()) }

// EventsCaptured counts the events handed to the handler since start.
func (s *Stream) EventsCaptured() int64 { return s.events.Load() }

// Start checks the server, ensures the publication and slot exist, and
// starts streaming in the background. It fails fast when the database cannot
// be reached or is not configured for logical decoding. When another relay
// holds the slot, Start succeeds and the stream stands by until it can take
// the slot over.
func (s *Stream) Start(ctx context.Context) error {
	if err := s.setup(ctx); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.done = make(chan struct{})
	s.state.Store(int32(StateConnecting))
	go s.run(runCtx)
	return nil
}

// Stop stops reading and waits for the loop to end. Events already handed to
// the handler finish; anything not acknowledged is read again next start.
// Stop may be called more than once.
func (s *Stream) Stop() {
	s.stopped.Do(func() {
		if s.cancel != nil {
			s.cancel()
			<-s.done
		}
		s.state.Store(int32(StateStopped))
	})
}

// Done is closed when the stream has stopped.
func (s *Stream) Done() <-chan struct{} { return s.done }

var errSlotBusy = errors.New("replication slot is held by another session")

func (s *Stream) run(ctx context.Context) {
	defer close(s.done)
	for {
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, errSlotBusy) {
			// Logs why and waits with backoff; it gives up only when ctx ends.
			s.state.Store(int32(StateConnecting))
			if s.retry.Retry(ctx, err) != nil {
				return
			}
			continue
		}
		if s.State() != StateStandby {
			s.log.Info().Str("slot", s.cfg.Slot).Msg("another relay holds the slot; standing by to take over")
		}
		s.state.Store(int32(StateStandby))
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(s.cfg.StandbyInterval)):
		}
	}
}

// jitter spreads d by ±25% so that relays do not retry in lockstep.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.75 + rand.Float64()*0.5))
}

func (s *Stream) replicationConfig() (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(s.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parsing database URL: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["timezone"] = "UTC"
	cfg.RuntimeParams["application_name"] = "relay-outbox"
	return cfg, nil
}

type received struct {
	msg pgproto3.BackendMessage
	err error
}

// session holds one replication connection until it fails or ctx ends.
func (s *Stream) session(ctx context.Context) error {
	cfg, err := s.replicationConfig()
	if err != nil {
		return err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting for replication: %w", err)
	}
	defer conn.Close(context.Background())
	s.retry.Succeeded()

	if confirmed, err := s.confirmedLSN(ctx, conn); err == nil && confirmed > s.AckedLSN() {
		s.acked.Store(uint64(confirmed))
	}
	// Events committed from the server's flushed position on are fresh
	// (Event.Fresh): decoding sends only flushed WAL, so none of them can
	// have reached an earlier session.
	ident, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("identifying the server: %w", err)
	}
	// Restart from the slot's confirmed position (LSN 0 asks the server for it).
	args := []string{"proto_version '1'", "publication_names '" + s.cfg.Publication + "'"}
	if _, ok := s.cfg.Handler.(MessageHandler); ok {
		// pgoutput sends logical decoding messages only when asked to
		// (PostgreSQL 14 and later), every prefix: the loop keeps the
		// handler's.
		args = append(args, "messages 'true'")
	}
	err = pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: args})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" {
			return errSlotBusy
		}
		return fmt.Errorf("starting replication: %w", err)
	}
	if s.State() != StateStreaming {
		s.log.Info().Str("slot", s.cfg.Slot).Str("publication", s.cfg.Publication).Msg("streaming the outbox")
	}
	s.state.Store(int32(StateStreaming))

	sessCtx, cancel := context.WithCancel(ctx)
	readerDone := make(chan struct{})
	// The reader must be gone before the deferred Close runs: the connection
	// is not safe to close while a receive is under way.
	defer func() { cancel(); <-readerDone }()
	// One goroutine reads and this one decodes, hands events over and writes
	// status updates: reads and writes on the connection never overlap in
	// the same direction, and the channel lets the server keep sending while
	// the handler commits.
	msgs := make(chan received, 512)
	go func() {
		defer close(readerDone)
		for {
			m, err := conn.ReceiveMessage(sessCtx)
			// pgproto3 reuses both the message value and its buffer on the
			// next receive, so what crosses the channel must be a copy.
			switch mm := m.(type) {
			case *pgproto3.CopyData:
				m = &pgproto3.CopyData{Data: bytes.Clone(mm.Data)}
			case *pgproto3.ErrorResponse:
				m, err = nil, pgconn.ErrorResponseToPgError(mm)
			case *pgproto3.CopyDone:
				m = &pgproto3.CopyDone{}
			default:
				m = nil
			}
			select {
			case msgs <- received{m, err}:
			case <-sessCtx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	l := loop{s: s, conn: conn, dec: newDecoder(), freshFrom: ident.XLogPos, ack: s.AckedLSN(), committed: s.AckedLSN(), report: time.NewTimer(time.Hour)}
	l.report.Stop()
	defer l.report.Stop()
	// Commits still being confirmed are waited for before leaving, so
	// that the last report says all that is durable.
	defer l.settleOverlapped()
	ticker := time.NewTicker(s.cfg.StatusInterval)
	defer ticker.Stop()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	lingering := false
	defer linger.Stop()
	for {
		select {
		case <-ctx.Done():
			// Report what is durable before leaving; the rest is re-read.
			_ = l.sendStatus(false)
			return ctx.Err()
		case <-ticker.C:
			if err := l.sendStatus(false); err != nil {
				return err
			}
		case <-l.report.C:
			l.reportArmed = false
			if err := l.sendStatus(false); err != nil {
				return err
			}
		case err := <-l.oldestDurable():
			if err := l.confirmOldest(err); err != nil {
				return err
			}
		case <-linger.C:
			lingering = false
			if err := l.flush(ctx); err != nil {
				return err
			}
		case r := <-msgs:
			if r.err != nil {
				return fmt.Errorf("receiving: %w", r.err)
			}
			if err := l.handle(ctx, r.msg); err != nil {
				return err
			}
			// Hand events over when the read-ahead buffer is empty (low
			// latency when idle) or the batch is full (throughput when busy);
			// right after a hand-over, let a steady stream gather for Linger.
			full := len(l.pending) >= s.cfg.MaxBatch
			if !full && (len(msgs) > 0 || lingering) {
				continue
			}
			if wait := s.cfg.Linger - time.Since(l.flushed); s.cfg.Linger > 0 && !full && len(l.pending) > 0 && wait > 0 {
				linger.Reset(wait)
				lingering = true
				continue
			}
			if lingering {
				linger.Stop()
				lingering = false
			}
			if err := l.flush(ctx); err != nil {
				return err
			}
		}
	}
}

// confirmedLSN reads the slot's confirmed position, where streaming resumes.
func (s *Stream) confirmedLSN(ctx context.Context, conn *pgconn.PgConn) (pglogrepl.LSN, error) {
	res, err := conn.Exec(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = "+quoteLiteral(s.cfg.Slot)).ReadAll()
	if err != nil {
		return 0, err
	}
	if len(res) == 0 || len(res[0].Rows) == 0 || res[0].Rows[0][0] == nil {
		return 0, errors.New("slot not found")
	}
	return pglogrepl.ParseLSN(string(res[0].Rows[0][0]))
}

// loop is the state of one replication session.
type loop struct {
	s       *Stream
	conn    *pgconn.PgConn
	dec     *decoder
	pending []Event
	// freshFrom is the server's flushed WAL position when the session
	// connected: events whose commit is at or past it are fresh.
	freshFrom pglogrepl.LSN
	// committed is the end LSN of the last transaction fully read; it becomes
	// ack once every event up to it has been handled.
	committed pglogrepl.LSN
	ack       pglogrepl.LSN
	reported  pglogrepl.LSN
	// flushed is when events were last handed over.
	flushed time.Time
	// reportedAt is when the position was last reported; report, armed
	// when reportArmed, fires when a moved position is due to be.
	reportedAt  time.Time
	report      *time.Timer
	reportArmed bool
	// overlapped are the handler's commits still to be confirmed, oldest
	// first (see PipelinedHandler); overlappedBytes is what their events
	// hold (see MaxOverlappedBytes).
	overlapped      []overlappedCommit
	overlappedBytes int
}

// overlappedCommit is a hand-over whose commit is not yet confirmed.
type overlappedCommit struct {
	durable <-chan error
	// bytes is the payload and headers of its events.
	bytes int
	// ackTo is the position acknowledged once it is confirmed (zero: none
	// moves, its transaction is not fully read).
	ackTo pglogrepl.LSN
}

// MaxOverlapped bounds the commits the handler may have unconfirmed: the
// stream waits for the oldest before handing over more. Fan-out writes
// the events it sent ahead behind, a group of hand-overs in one statement
// up to fanout.DefaultWriteBehind (20 ms) later, so at 1,000 events/s,
// one event per hand-over, 20 to 25 are unconfirmed at once; waiting for
// them would hold the next events back (with 16, a 20-ms window took the
// p90 from commit to WAL decoded from 0.4 to 5.7 ms). 64 leaves room up
// to about 3,000 single-event hand-overs a second; faster, the stream
// reads ahead and hands events over in batches. An unconfirmed commit
// costs the stream only its channel.
const MaxOverlapped = 64

// MaxOverlappedBytes bounds, besides MaxOverlapped, the payloads and
// headers of the events in unconfirmed hand-overs (one hand-over may
// always be unconfirmed, however large). Fan-out keeps the fresh events
// it sent ahead, and those no subscription matches, until their group's
// statement, up to fanout.DefaultWriteBehind later: 64 hand-overs of
// MaxBatch events each could hold 128,000 events in memory, gigabytes
// with payloads of tens of kilobytes. 16 MiB is 16 chunks of 2,000
// events of 500 bytes, the bound before MaxOverlapped grew. Single-event
// hand-overs stay far below it, and a drain, whose chunks are written
// before their commit is awaited, ran as fast with it (12,421-12,774
// events/s against 11,446-12,023 without, alternated).
const MaxOverlappedBytes = 16 << 20

// oldestDurable is the channel of the oldest unconfirmed commit, nil (which
// never receives) when there is none.
func (l *loop) oldestDurable() <-chan error {
	if len(l.overlapped) == 0 {
		return nil
	}
	return l.overlapped[0].durable
}

// confirmOldest takes the outcome of the oldest unconfirmed commit and
// moves the acknowledged position past its events when it committed.
func (l *loop) confirmOldest(err error) error {
	oc := l.overlapped[0]
	l.overlapped[0] = overlappedCommit{}
	l.overlapped = l.overlapped[1:]
	l.overlappedBytes -= oc.bytes
	if err != nil {
		return fmt.Errorf("handling events: %w", err)
	}
	if oc.ackTo > l.ack {
		l.ack = oc.ackTo
		l.s.acked.Store(uint64(l.ack))
		return l.reportSoon()
	}
	return nil
}

// awaitOldest waits for the oldest unconfirmed commit and confirms it.
func (l *loop) awaitOldest(ctx context.Context) error {
	select {
	case err := <-l.overlapped[0].durable:
		return l.confirmOldest(err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settleOverlapped waits, a bounded time, for the commits still
// unconfirmed at the end of a session and acknowledges what they made
// durable. Those not confirmed in time are replayed next session; their
// writes absorb the replay.
func (l *loop) settleOverlapped() {
	if len(l.overlapped) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for len(l.overlapped) > 0 {
		if l.awaitOldest(ctx) != nil {
			return
		}
	}
	_ = l.sendStatus(false)
}

func (l *loop) handle(ctx context.Context, msg pgproto3.BackendMessage) error {
	switch msg := msg.(type) {
	case *pgproto3.CopyData:
		if len(msg.Data) == 0 {
			return nil
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("parsing keepalive: %w", err)
			}
			// Nothing in flight: every transaction before the server's
			// position has been handled, so the slot may move past WAL that
			// other tables wrote. This keeps an idle outbox from retaining WAL.
			if !l.dec.inTx && len(l.pending) == 0 && len(l.overlapped) == 0 && l.committed <= l.ack && ka.ServerWALEnd > l.ack {
				l.ack = ka.ServerWALEnd
				l.committed = ka.ServerWALEnd
				l.s.acked.Store(uint64(l.ack))
			}
			if ka.ReplyRequested {
				return l.sendStatus(true)
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("parsing XLogData: %w", err)
			}
			return l.decode(ctx, xld.WALData)
		}
	case *pgproto3.CopyDone:
		return errors.New("server ended the replication stream")
	}
	return nil
}

func (l *loop) decode(ctx context.Context, data []byte) error {
	m, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("parsing pgoutput message: %w", err)
	}
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		return l.dec.relation(m)
	case *pglogrepl.BeginMessage:
		l.dec.begin(m)
	case *pglogrepl.InsertMessage:
		ev, ok, err := l.dec.insert(m)
		if err != nil {
			return err
		}
		if ok {
			ev.Fresh = ev.CommitLSN >= l.freshFrom
			if l.s.cfg.StampDecode {
				ev.DecodedAt = time.Now()
			}
			l.pending = append(l.pending, ev)
			if len(l.pending) >= l.s.cfg.MaxBatch {
				// A big transaction: hand over a chunk now, acknowledge at commit.
				return l.flush(ctx)
			}
		}
	case *pglogrepl.LogicalDecodingMessage:
		// Only transactional ones: those are decoded at their commit, in
		// order with the events.
		if mh, ok := l.s.cfg.Handler.(MessageHandler); ok && m.Transactional && slices.Contains(mh.MessagePrefixes(), m.Prefix) {
			mh.HandleMessage(Message{Prefix: m.Prefix, Content: bytes.Clone(m.Content), LSN: m.LSN})
		}
	case *pglogrepl.CommitMessage:
		l.dec.inTx = false
		l.committed = m.TransactionEndLSN
	}
	return nil
}

// flush hands pending events to the handler and, when no transaction is
// half-read, moves the acknowledged position to the last commit.
func (l *loop) flush(ctx context.Context) error {
	if len(l.pending) > 0 {
		var durable <-chan error
		var err error
		size := 0 // of the events, for MaxOverlappedBytes
		if ph, ok := l.s.cfg.Handler.(PipelinedHandler); ok {
			for _, ev := range l.pending {
				size += len(ev.Payload) + len(ev.Headers)
			}
			for len(l.overlapped) >= MaxOverlapped ||
				(len(l.overlapped) > 0 && l.overlappedBytes+size > MaxOverlappedBytes) {
				if err := l.awaitOldest(ctx); err != nil {
					return err
				}
			}
			durable, err = ph.StartEvents(ctx, l.pending)
		} else {
			err = l.s.cfg.Handler.HandleEvents(ctx, l.pending)
		}
		if err != nil {
			return fmt.Errorf("handling %d events: %w", len(l.pending), err)
		}
		if durable != nil {
			l.overlapped = append(l.overlapped, overlappedCommit{durable: durable, bytes: size})
			l.overlappedBytes += size
		}
		l.s.events.Add(int64(len(l.pending)))
		clear(l.pending)
		l.pending = l.pending[:0]
		l.flushed = time.Now()
	}
	if !l.dec.inTx && l.committed > l.ack && len(l.overlapped) > 0 {
		// Acknowledged once the commits before it are confirmed.
		l.overlapped[len(l.overlapped)-1].ackTo = l.committed
		return nil
	}
	if !l.dec.inTx && l.committed > l.ack {
		l.ack = l.committed
		l.s.acked.Store(uint64(l.ack))
		return l.reportSoon()
	}
	return nil
}

// reportSoon reports the acknowledged position now if the last report is
// at least ReportDelay old, or arms the report timer for when it will be.
func (l *loop) reportSoon() error {
	since := time.Since(l.reportedAt)
	if d := l.s.cfg.ReportDelay; d <= 0 || since >= d {
		return l.sendStatus(false)
	}
	if !l.reportArmed {
		l.report.Reset(l.s.cfg.ReportDelay - since)
		l.reportArmed = true
	}
	return nil
}

// sendStatus reports the acknowledged position: everything before it is
// durable and the server may release it.
func (l *loop) sendStatus(force bool) error {
	if !force && (l.ack == 0 || l.ack == l.reported) {
		return nil
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), l.conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: l.ack})
	if err != nil {
		return fmt.Errorf("sending standby status: %w", err)
	}
	l.reported = l.ack
	l.reportedAt = time.Now()
	return nil
}

// setup checks wal_level and ensures the publication and the slot.
func (s *Stream) setup(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connecting to database: %w", err)
	}
	defer conn.Close(context.Background())
	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return fmt.Errorf("reading wal_level: %w", err)
	}
	if walLevel != "logical" {
		return fmt.Errorf("wal_level is %q but relay needs \"logical\": run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL", walLevel)
	}
	if err := s.ensurePublication(ctx, conn); err != nil {
		return err
	}
	return s.ensureSlot(ctx, conn)
}

func (s *Stream) ensurePublication(ctx context.Context, conn *pgx.Conn) error {
	var exists, hasOutbox bool
	err := conn.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
		       EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'relay' AND tablename = 'outbox')`,
		s.cfg.Publication).Scan(&exists, &hasOutbox)
	if err != nil {
		return fmt.Errorf("reading publication: %w", err)
	}
	name := pgx.Identifier{s.cfg.Publication}.Sanitize()
	switch {
	case !exists:
		_, err = conn.Exec(ctx, "CREATE PUBLICATION "+name+" FOR TABLE relay.outbox WITH (publish = 'insert')")
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" { // created meanwhile by another relay
			err = nil
		}
		if err == nil {
			s.log.Info().Str("publication", s.cfg.Publication).Msg("created publication on relay.outbox")
		}
	case !hasOutbox:
		_, err = conn.Exec(ctx, "ALTER PUBLICATION "+name+" ADD TABLE relay.outbox")
	}
	if err != nil {
		return fmt.Errorf("ensuring publication %s: %w", s.cfg.Publication, err)
	}
	return nil
}

// ensureSlot creates the slot when it is missing. Events committed before a
// slot exists are not in its stream, so on creation the stream hands the
// handler every outbox row the slot's snapshot can see that has no delivery
// yet and is newer than BackfillWindow: on a first start (or after a lost
// slot) nothing already in the outbox is forgotten.
func (s *Stream) ensureSlot(ctx context.Context, conn *pgx.Conn) error {
	var plugin, database string
	err := conn.QueryRow(ctx, `SELECT plugin, database FROM pg_replication_slots WHERE slot_name = $1`, s.cfg.Slot).Scan(&plugin, &database)
	if err == nil {
		var current string
		if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&current); err != nil {
			return err
		}
		if plugin != "pgoutput" || database != current {
			return fmt.Errorf("replication slot %q exists but uses plugin %q on database %q; relay needs pgoutput on %q (choose another --slot)", s.cfg.Slot, plugin, database, current)
		}
		return nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("reading replication slot: %w", err)
	}

	cfg, err := s.replicationConfig()
	if err != nil {
		return err
	}
	rconn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting for replication: %w", err)
	}
	defer rconn.Close(context.Background())
	res, err := pglogrepl.CreateReplicationSlot(ctx, rconn, s.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" {
			return nil // another relay created it meanwhile
		}
		return fmt.Errorf("creating replication slot %q: %w", s.cfg.Slot, err)
	}
	s.log.Info().Str("slot", s.cfg.Slot).Str("lsn", res.ConsistentPoint).Msg("created replication slot")
	n, err := s.backfill(ctx, conn, res.SnapshotName)
	if err != nil {
		return fmt.Errorf("backfilling events committed before the slot existed: %w", err)
	}
	if n > 0 {
		s.log.Info().Int("num_events", n).Msg("handed over events committed before the slot existed")
	}
	return nil
}

func (s *Stream) backfill(ctx context.Context, conn *pgx.Conn, snapshot string) (int, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshot)); err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, `
		SELECT o.id, o.event_id::text, o.event_type, o.owner, o.key, o.payload::text, o.headers::text, o.created_at,
		       o.target_subscription_id, o.skip_subscription_id
		FROM relay.outbox AS o
		WHERE o.created_at > now() - $1::interval
		  AND NOT EXISTS (SELECT 1 FROM relay.deliveries AS d WHERE d.event_id = o.event_id)
		ORDER BY o.id`, s.cfg.BackfillWindow.String())
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var batch []Event
	total := 0
	for rows.Next() {
		var ev Event
		var payload string
		var headers *string
		if err := rows.Scan(&ev.ID, &ev.EventID, &ev.Type, &ev.Owner, &ev.Key, &payload, &headers, &ev.CreatedAt,
			&ev.TargetSubscriptionID, &ev.SkipSubscriptionID); err != nil {
			return total, err
		}
		ev.Payload = []byte(payload)
		if headers != nil {
			ev.Headers = []byte(*headers)
		}
		ev.CommitTime = ev.CreatedAt
		batch = append(batch, ev)
		if len(batch) >= s.cfg.MaxBatch {
			if err := s.cfg.Handler.HandleEvents(ctx, batch); err != nil {
				return total, err
			}
			total += len(batch)
			batch = batch[:0]
		}
	}
	if err := rows.Err(); err != nil {
		return total, err
	}
	if len(batch) > 0 {
		if err := s.cfg.Handler.HandleEvents(ctx, batch); err != nil {
			return total, err
		}
		total += len(batch)
	}
	return total, nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
