package subscriptions

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Delivery statuses (relay.deliveries.status).
const (
	StatusPending    = "pending"
	StatusDelivering = "delivering"
	StatusSucceeded  = "succeeded"
	StatusFailed     = "failed"
	// StatusSkipped ends a delivery that came due outside its window with
	// outside_window = skip; it is never retried, redeliver can send it.
	StatusSkipped = "skipped"
)

// TestEventType is the type of the event the test button sends.
const TestEventType = "webhook.test"

// ValidStatus reports whether s is a delivery status.
func ValidStatus(s string) bool {
	switch s {
	case StatusPending, StatusDelivering, StatusSucceeded, StatusFailed, StatusSkipped:
		return true
	}
	return false
}

// Delivery is one row of relay.deliveries as the delivery log shows it:
// with its event's type and owner and its subscription's name and masked URL
// (relay.mask_url). Ownership of a delivery is that of its subscription.
type Delivery struct {
	ID               int64   `db:"id" json:"id"`
	EventID          string  `db:"event_id" json:"event_id"`
	EventType        string  `db:"event_type" json:"event_type"`
	Owner            *string `db:"owner" json:"owner"`
	SubscriptionID   int64   `db:"subscription_id" json:"subscription_id"`
	SubscriptionName string  `db:"subscription_name" json:"subscription_name"`
	// URL is masked: scheme://host/ and the first three characters of the
	// path, then ***.
	URL            string  `db:"url" json:"url"`
	Status         string  `db:"status" json:"status"`
	Attempts       int     `db:"attempts" json:"attempts"`
	LastStatusCode *int    `db:"last_status_code" json:"last_status_code"`
	LastError      *string `db:"last_error" json:"last_error"`
	LastDurationMS *int    `db:"last_duration_ms" json:"last_duration_ms"`
	// NextAttemptAt is set only while the delivery is pending or delivering.
	NextAttemptAt *time.Time `db:"next_attempt_at" json:"next_attempt_at"`
	CreatedAt     time.Time  `db:"created_at" json:"created_at"`
	CompletedAt   *time.Time `db:"completed_at" json:"completed_at"`
}

// Attempt is one row of relay.delivery_attempts.
type Attempt struct {
	Attempt      int       `db:"attempt" json:"attempt"`
	StartedAt    time.Time `db:"started_at" json:"started_at"`
	DurationMS   *int      `db:"duration_ms" json:"duration_ms"`
	StatusCode   *int      `db:"status_code" json:"status_code"`
	Outcome      string    `db:"outcome" json:"outcome"`
	Error        *string   `db:"error" json:"error"`
	ResponseBody *string   `db:"response_body" json:"response_body"`
	RetryAfter   *string   `db:"retry_after" json:"retry_after"`
}

// DeliveryDetail is a delivery with its event and every attempt, oldest
// first.
type DeliveryDetail struct {
	Delivery
	Key          *string         `json:"key"`
	Payload      json.RawMessage `json:"payload"`
	LastResponse *string         `json:"last_response"`
	AttemptLog   []Attempt       `json:"attempt_log"`
}

// DeliveryListParams filter ListDeliveries. The zero value lists the newest
// deliveries of every owner.
type DeliveryListParams struct {
	// Owner nil is the operator (everything); non-nil keeps the
	// deliveries of that owner's subscriptions.
	Owner *string
	// Status "" means any (see ValidStatus).
	Status string
	// Since, when non-zero, keeps deliveries created at or after it.
	Since time.Time
	// SubscriptionID 0 means any.
	SubscriptionID int64
	// EventType "" means any; otherwise an exact type or a pattern
	// (thread.*).
	EventType string
	// BeforeID, when non-zero, keeps deliveries with a smaller id: the
	// keyset cursor of the next page.
	BeforeID int64
	// Limit 0 means 50.
	Limit int
}

const deliveryColumns = `d.id, d.event_id::text AS event_id, o.event_type, o.owner, d.subscription_id,
	s.name AS subscription_name, relay.mask_url(s.url) AS url, d.status, d.attempts,
	d.last_status_code, d.last_error, d.last_duration_ms,
	CASE WHEN d.status IN ('pending', 'delivering') THEN d.next_attempt_at END AS next_attempt_at,
	d.created_at, d.completed_at`

const deliveryFrom = ` FROM relay.deliveries AS d
	JOIN relay.subscriptions AS s ON s.id = d.subscription_id
	JOIN relay.outbox AS o ON o.event_id = d.event_id`

// ListDeliveries returns deliveries newest first (by id), at most p.Limit.
// The next page starts with BeforeID set to the last id returned.
func (st *Store) ListDeliveries(ctx context.Context, p DeliveryListParams) ([]Delivery, error) {
	if p.Status != "" && !ValidStatus(p.Status) {
		return nil, invalid("status", fmt.Sprintf("status must be one of pending, delivering, succeeded, failed, skipped (got %q)", p.Status))
	}
	if p.EventType != "" && !ValidEventPattern(p.EventType) {
		return nil, invalid("event_type", fmt.Sprintf("event_type %q is not an event type or pattern", p.EventType))
	}
	limit := p.Limit
	if limit <= 0 {
		limit = 50
	}
	var args []any
	conds := []string{ownerClause("s", p.Owner, &args)}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if p.Status != "" {
		conds = append(conds, "d.status = "+arg(p.Status))
	}
	if !p.Since.IsZero() {
		conds = append(conds, "d.created_at >= "+arg(p.Since))
	}
	if p.SubscriptionID != 0 {
		conds = append(conds, "d.subscription_id = "+arg(p.SubscriptionID))
	}
	if p.EventType != "" {
		if strings.HasSuffix(p.EventType, "*") {
			conds = append(conds, arg(p.EventType)+" = ANY (relay.event_type_candidates(o.event_type))")
		} else {
			conds = append(conds, "o.event_type = "+arg(p.EventType))
		}
	}
	if p.BeforeID > 0 {
		conds = append(conds, "d.id < "+arg(p.BeforeID))
	}
	sql := `SELECT ` + deliveryColumns + deliveryFrom + ` WHERE ` + strings.Join(conds, " AND ") +
		` ORDER BY d.id DESC LIMIT ` + strconv.Itoa(limit)
	rows, err := st.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("listing deliveries: %w", translate(err))
	}
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[Delivery])
	if err != nil {
		return nil, fmt.Errorf("listing deliveries: %w", translate(err))
	}
	return ds, nil
}

// GetDelivery returns one delivery with its event and attempts.
func (st *Store) GetDelivery(ctx context.Context, id int64, owner *string) (DeliveryDetail, error) {
	args := []any{id}
	where := ownerClause("s", owner, &args)
	var dd DeliveryDetail
	rows, err := st.pool.Query(ctx, `SELECT `+deliveryColumns+`, o.key, o.payload, d.last_response`+deliveryFrom+
		` WHERE d.id = $1 AND `+where, args...)
	if err != nil {
		return dd, fmt.Errorf("reading delivery %d: %w", id, translate(err))
	}
	dd, err = pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (DeliveryDetail, error) {
		var dd DeliveryDetail
		d := &dd.Delivery
		err := row.Scan(&d.ID, &d.EventID, &d.EventType, &d.Owner, &d.SubscriptionID, &d.SubscriptionName, &d.URL,
			&d.Status, &d.Attempts, &d.LastStatusCode, &d.LastError, &d.LastDurationMS, &d.NextAttemptAt,
			&d.CreatedAt, &d.CompletedAt, &dd.Key, &dd.Payload, &dd.LastResponse)
		return dd, err
	})
	if err != nil {
		return dd, fmt.Errorf("reading delivery %d: %w", id, translate(err))
	}
	rows, err = st.pool.Query(ctx, `SELECT attempt, started_at, duration_ms, status_code, outcome, error, response_body, retry_after
		FROM relay.delivery_attempts WHERE delivery_id = $1 ORDER BY attempt`, id)
	if err != nil {
		return dd, fmt.Errorf("reading attempts of delivery %d: %w", id, translate(err))
	}
	dd.AttemptLog, err = pgx.CollectRows(rows, pgx.RowToStructByName[Attempt])
	if err != nil {
		return dd, fmt.Errorf("reading attempts of delivery %d: %w", id, translate(err))
	}
	if dd.AttemptLog == nil {
		dd.AttemptLog = []Attempt{}
	}
	return dd, nil
}

// Redeliver puts a finished delivery (succeeded, failed or skipped) back in the
// queue now, with a fresh retry schedule (relay.redeliver). A delivery
// still pending or in flight gives ErrConflict.
func (st *Store) Redeliver(ctx context.Context, id int64, owner *string) error {
	args := []any{id}
	where := ownerClause("s", owner, &args)
	err := pgx.BeginFunc(ctx, st.pool, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx, `SELECT d.status FROM relay.deliveries AS d
			JOIN relay.subscriptions AS s ON s.id = d.subscription_id
			WHERE d.id = $1 AND `+where+` FOR UPDATE OF d`, args...).Scan(&status)
		if err != nil {
			return translate(err)
		}
		if status == StatusPending || status == StatusDelivering {
			return fmt.Errorf("%w: delivery %d is already %s", ErrConflict, id, status)
		}
		_, err = tx.Exec(ctx, `SELECT relay.redeliver($1)`, id)
		return translate(err)
	})
	if err != nil {
		return fmt.Errorf("redelivering %d: %w", id, err)
	}
	return nil
}

// EventTypes lists the distinct event types in the outbox, sorted, for
// choosing what to subscribe to. An owner sees the types of its own events;
// the operator (nil) sees all. The test event (TestEventType) is left out. At most 1000 types are returned.
func (st *Store) EventTypes(ctx context.Context, owner *string) ([]string, error) {
	var args []any
	where := ownerClause("o", owner, &args)
	rows, err := st.pool.Query(ctx, `SELECT DISTINCT o.event_type FROM relay.outbox AS o
		WHERE o.event_type <> '`+TestEventType+`' AND `+where+` ORDER BY 1 LIMIT 1000`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing event types: %w", translate(err))
	}
	types, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing event types: %w", translate(err))
	}
	if types == nil {
		types = []string{}
	}
	return types, nil
}
