package dbwait_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/internal/dbwait"
)

// closedPort is a TCP port on 127.0.0.1 that nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestClassify(t *testing.T) {
	_, refused := pgconn.Connect(context.Background(), fmt.Sprintf("postgres://app@127.0.0.1:%d/x?sslmode=disable&connect_timeout=5", closedPort(t)))
	if refused == nil {
		t.Fatal("connected to a closed port")
	}
	pg := func(code, msg string) error {
		return fmt.Errorf("connecting: %w", &pgconn.PgError{Severity: "FATAL", Code: code, Message: msg})
	}
	for _, tc := range []struct {
		err       error
		want      string
		permanent bool
	}{
		{refused, "connection refused", false},
		{pg("57P03", "the database system is starting up"), "starting up", false},
		{pg("57P03", "the database system is not yet accepting connections"), "starting up", false},
		{pg("57P03", "the database system is shutting down"), "shutting down", false},
		{pg("57P03", "the database system is in recovery mode"), "in recovery", false},
		{pg("57P01", "terminating connection due to administrator command"), "terminated by the server", false},
		{pg("57P02", "terminating connection because of crash of another server process"), "restarting after a crash", false},
		{pg("53300", "sorry, too many clients already"), "too many connections", false},
		{pg("28P01", `password authentication failed for user "app"`), "authentication failed", true},
		{pg("28000", `pg_hba.conf rejects connection for host "127.0.0.1", user "app"`), "authentication failed", true},
		{pg("3D000", `database "x" does not exist`), "database does not exist (yet)", false},
		{pg("XX000", "internal"), "server error XX000", false},
		{&net.DNSError{Err: "no such host", Name: "db", IsNotFound: true}, "host not found", false},
		{&net.DNSError{Err: "server misbehaving", Name: "db"}, "name resolution failed", false},
		{fmt.Errorf("dial: %w", syscall.ECONNRESET), "connection reset", false},
		{fmt.Errorf("dial: %w", syscall.EHOSTUNREACH), "host unreachable", false},
		{fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), "connection closed by the server", false},
		{fmt.Errorf("connecting: %w", context.DeadlineExceeded), "timed out", false},
		{errors.New("something else"), "unavailable", false},
	} {
		got := dbwait.Classify(tc.err)
		if got.Text != tc.want || got.Permanent != tc.permanent {
			t.Errorf("Classify(%v) = %+v, want %q permanent=%v", tc.err, got, tc.want, tc.permanent)
		}
	}
}

func fastRetrier(limit time.Duration, failFast bool, log io.Writer) *dbwait.Retrier {
	return dbwait.New(dbwait.Config{What: "database", Limit: limit, FailOnPermanent: failFast,
		MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, Logger: zerolog.New(log)})
}

// TestWaitLogsEachAttemptThenSucceeds waits through refused and
// starting-up attempts: one log line per failed attempt with its reason,
// then one saying the database is reachable.
func TestWaitLogsEachAttemptThenSucceeds(t *testing.T) {
	var logs bytes.Buffer
	r := fastRetrier(dbwait.Forever, true, &logs)
	errs := []error{
		&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED},
		&pgconn.PgError{Code: "57P03", Message: "the database system is starting up"},
	}
	calls := 0
	err := dbwait.Wait(context.Background(), r, func(context.Context) error {
		calls++
		if calls <= len(errs) {
			if calls == 2 {
				if st, ok := r.Status(); !ok || st.Attempts != 1 || st.Reason.Text != "connection refused" {
					t.Errorf("status during the outage: %+v %v", st, ok)
				}
			}
			return errs[calls-1]
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Wait = %v after %d calls", err, calls)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `"reason":"connection refused"`) || !strings.Contains(lines[0], `"attempt":1`) ||
		!strings.Contains(lines[1], `"reason":"starting up"`) || !strings.Contains(lines[1], `"attempt":2`) ||
		!strings.Contains(lines[2], "database reachable") || !strings.Contains(lines[2], `"failed_attempts":2`) {
		t.Fatalf("log lines:\n%s", logs.String())
	}
	if _, ok := r.Status(); ok {
		t.Fatal("status still reports an outage after success")
	}
}

func TestLimitZeroFailsAtOnce(t *testing.T) {
	calls := 0
	err := dbwait.Wait(context.Background(), fastRetrier(0, true, io.Discard), func(context.Context) error {
		calls++
		return &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
	})
	if calls != 1 || err == nil || !strings.Contains(err.Error(), "database not reachable after 1 attempt(s)") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("calls %d, err %v", calls, err)
	}
}

func TestLimitBoundsTheWait(t *testing.T) {
	limit := 30 * time.Millisecond
	start := time.Now()
	calls := 0
	err := dbwait.Wait(context.Background(), fastRetrier(limit, true, io.Discard), func(context.Context) error {
		calls++
		return &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}
	})
	if err == nil || !strings.Contains(err.Error(), "starting up") || calls < 2 {
		t.Fatalf("after %d calls: %v", calls, err)
	}
	if time.Since(start) < limit {
		t.Fatalf("gave up after %s, before the %s limit", time.Since(start), limit)
	}
}

func TestAuthFailureFailsFastNamingTheRole(t *testing.T) {
	calls := 0
	cause := &pgconn.PgError{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "app"`}
	err := dbwait.Wait(context.Background(), fastRetrier(dbwait.Forever, true, io.Discard), func(context.Context) error {
		calls++
		// A ConnectError carrying the config pgx used, as pgx returns
		// it, joined with the server's answer.
		_, err := pgconn.Connect(context.Background(), fmt.Sprintf("postgres://app:wrong@127.0.0.1:%d/x?sslmode=disable", closedPort(t)))
		var ce *pgconn.ConnectError
		if !errors.As(err, &ce) {
			t.Fatalf("no ConnectError: %v", err)
		}
		return errors.Join(ce, cause)
	})
	var ae *dbwait.AuthError
	if calls != 1 || !errors.As(err, &ae) || ae.Role != "app" || !strings.Contains(err.Error(), `role "app"`) || !strings.Contains(err.Error(), "28P01") {
		t.Fatalf("calls %d, err %v", calls, err)
	}
}

func TestRunningRetrierKeepsRetryingAuthFailures(t *testing.T) {
	var logs bytes.Buffer
	calls := 0
	err := dbwait.Wait(context.Background(), fastRetrier(dbwait.Forever, false, &logs), func(context.Context) error {
		calls++
		if calls < 3 {
			return &pgconn.PgError{Code: "28P01", Message: "password authentication failed"}
		}
		return nil
	})
	if err != nil || calls != 3 || !strings.Contains(logs.String(), `"level":"error"`) {
		t.Fatalf("calls %d, err %v, logs:\n%s", calls, err, logs.String())
	}
}

func TestCancelStopsWaiting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := dbwait.Wait(ctx, fastRetrier(dbwait.Forever, true, io.Discard), func(context.Context) error {
		calls++
		if calls == 3 {
			cancel()
		}
		return &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}
