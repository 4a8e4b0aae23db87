package subscriptions

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Stats summarise deliveries over a window (the last 24 hours for a
// webhook's page, the last N days for the monitoring table).
type Stats struct {
	// Deliveries counts deliveries created in the window, by status below
	// (Pending includes delivering).
	Deliveries int64 `db:"deliveries" json:"deliveries"`
	Succeeded  int64 `db:"succeeded" json:"succeeded"`
	Failed     int64 `db:"failed" json:"failed"`
	Pending    int64 `db:"pending" json:"pending"`
	// SuccessRate is Succeeded / (Succeeded + Failed), between 0 and 1; nil
	// when no delivery of the window has finished.
	SuccessRate *float64 `db:"success_rate" json:"success_rate"`
	// Attempts counts HTTP attempts started in the window; Timeouts those
	// that ended without an answer because the subscription's timeout
	// expired (error "timeout after …").
	Attempts int64 `db:"attempts" json:"attempts"`
	Timeouts int64 `db:"timeouts" json:"timeouts"`
	// TimeoutRate is Timeouts / Attempts; nil without attempts.
	TimeoutRate *float64 `db:"timeout_rate" json:"timeout_rate"`
	// Durations of the window's attempts in milliseconds; nil without any.
	AvgDurationMS *float64 `db:"avg_duration_ms" json:"avg_duration_ms"`
	P50DurationMS *float64 `db:"p50_duration_ms" json:"p50_duration_ms"`
	P95DurationMS *float64 `db:"p95_duration_ms" json:"p95_duration_ms"`
	// Backlog counts deliveries waiting or in flight now, whatever their
	// age; OldestPendingSeconds is the age of the oldest of them.
	Backlog              int64    `db:"backlog" json:"backlog"`
	OldestPendingSeconds *float64 `db:"oldest_pending_seconds" json:"oldest_pending_seconds"`
}

// SubscriptionStats are one subscription's Stats with its health record.
type SubscriptionStats struct {
	SubscriptionID      int64      `db:"subscription_id" json:"subscription_id"`
	Name                string     `db:"name" json:"name"`
	Owner               *string    `db:"owner" json:"owner"`
	Enabled             bool       `db:"enabled" json:"enabled"`
	ConsecutiveFailures int        `db:"consecutive_failures" json:"consecutive_failures"`
	LastSuccessAt       *time.Time `db:"last_success_at" json:"last_success_at"`
	LastFailureAt       *time.Time `db:"last_failure_at" json:"last_failure_at"`
	LastError           *string    `db:"last_error" json:"last_error"`
	DisabledReason      *string    `db:"disabled_reason" json:"disabled_reason"`
	Stats
}

// Summary is the monitoring table: every subscription in scope and the
// total over them.
type Summary struct {
	Window        time.Duration       `json:"-"`
	Overall       Stats               `json:"overall"`
	Subscriptions []SubscriptionStats `json:"subscriptions"`
}

// timeoutCond selects attempts that ended on the subscription's timeout
// (package sink writes "timeout after <duration>").
const timeoutCond = `a.status_code IS NULL AND a.error LIKE 'timeout%'`

// statsSelect computes Stats from the lateral subqueries d (deliveries), a
// (attempts) and b (backlog) of statsFrom.
const statsSelect = `
	coalesce(d.deliveries, 0) AS deliveries, coalesce(d.succeeded, 0) AS succeeded,
	coalesce(d.failed, 0) AS failed, coalesce(d.pending, 0) AS pending,
	CASE WHEN coalesce(d.succeeded, 0) + coalesce(d.failed, 0) = 0 THEN NULL
	     ELSE d.succeeded::float8 / (d.succeeded + d.failed) END AS success_rate,
	coalesce(a.attempts, 0) AS attempts, coalesce(a.timeouts, 0) AS timeouts,
	CASE WHEN coalesce(a.attempts, 0) = 0 THEN NULL ELSE a.timeouts::float8 / a.attempts END AS timeout_rate,
	a.avg_duration_ms, a.p50_duration_ms, a.p95_duration_ms,
	coalesce(b.backlog, 0) AS backlog, b.oldest_pending_seconds`

// statsLaterals scopes the subqueries with condition subCond on d.subscription_id
// (e.g. "= s.id") and the window $1.
func statsLaterals(subCond string) string {
	return `
	LEFT JOIN LATERAL (
		SELECT count(*) AS deliveries,
		       count(*) FILTER (WHERE d.status = 'succeeded') AS succeeded,
		       count(*) FILTER (WHERE d.status = 'failed') AS failed,
		       count(*) FILTER (WHERE d.status IN ('pending', 'delivering')) AS pending
		FROM relay.deliveries AS d
		WHERE d.subscription_id ` + subCond + ` AND d.created_at > now() - $1::interval
	) AS d ON true
	LEFT JOIN LATERAL (
		SELECT count(*) AS attempts,
		       count(*) FILTER (WHERE ` + timeoutCond + `) AS timeouts,
		       avg(a.duration_ms)::float8 AS avg_duration_ms,
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS p50_duration_ms,
		       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) AS p95_duration_ms
		FROM relay.delivery_attempts AS a
		JOIN relay.deliveries AS d ON d.id = a.delivery_id
		WHERE d.subscription_id ` + subCond + ` AND a.started_at > now() - $1::interval
	) AS a ON true
	LEFT JOIN LATERAL (
		SELECT count(*) AS backlog, extract(epoch FROM now() - min(d.created_at))::float8 AS oldest_pending_seconds
		FROM relay.deliveries AS d
		WHERE d.subscription_id ` + subCond + ` AND d.status IN ('pending', 'delivering')
	) AS b ON true`
}

const healthSelect = `s.id AS subscription_id, s.name, s.owner, s.enabled, s.consecutive_failures,
	s.last_success_at, s.last_failure_at, s.last_error, s.disabled_reason,`

// Stats returns one subscription's delivery statistics over the last
// window (24 hours when window <= 0) with its health record.
func (st *Store) Stats(ctx context.Context, id int64, owner *string, window time.Duration) (SubscriptionStats, error) {
	if window <= 0 {
		window = 24 * time.Hour
	}
	args := []any{window, id}
	where := ownerClause("s", owner, &args)
	sql := `SELECT ` + healthSelect + statsSelect + ` FROM relay.subscriptions AS s ` + statsLaterals("= s.id") +
		` WHERE s.id = $2 AND ` + where
	rows, err := st.pool.Query(ctx, sql, args...)
	if err != nil {
		return SubscriptionStats{}, fmt.Errorf("reading stats of subscription %d: %w", id, translate(err))
	}
	s, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[SubscriptionStats])
	if err != nil {
		return SubscriptionStats{}, fmt.Errorf("reading stats of subscription %d: %w", id, translate(err))
	}
	return s, nil
}

// Summary returns the statistics of every subscription in owner's scope
// (every subscription for nil) over the last window, and the total over
// them (whose health fields are meaningless and left zero).
func (st *Store) Summary(ctx context.Context, owner *string, window time.Duration) (Summary, error) {
	if window <= 0 {
		window = 24 * time.Hour
	}
	sum := Summary{Window: window}
	args := []any{window}
	where := ownerClause("s", owner, &args)
	rows, err := st.pool.Query(ctx, `SELECT `+healthSelect+statsSelect+` FROM relay.subscriptions AS s `+
		statsLaterals("= s.id")+` WHERE `+where+` ORDER BY s.id`, args...)
	if err != nil {
		return Summary{}, fmt.Errorf("reading stats: %w", translate(err))
	}
	sum.Subscriptions, err = pgx.CollectRows(rows, pgx.RowToStructByName[SubscriptionStats])
	if err != nil {
		return Summary{}, fmt.Errorf("reading stats: %w", translate(err))
	}
	rows, err = st.pool.Query(ctx, `SELECT `+statsSelect+` FROM (SELECT 1) AS one `+
		statsLaterals(`IN (SELECT s.id FROM relay.subscriptions AS s WHERE `+where+`)`), args...)
	if err != nil {
		return Summary{}, fmt.Errorf("reading overall stats: %w", translate(err))
	}
	sum.Overall, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Stats])
	if err != nil {
		return Summary{}, fmt.Errorf("reading overall stats: %w", translate(err))
	}
	return sum, nil
}

// HourCount is one bar of the hourly chart: the deliveries created in the
// hour starting at Start, by their status now (Pending includes
// delivering).
type HourCount struct {
	Start     time.Time `db:"start" json:"start"`
	Succeeded int64     `db:"succeeded" json:"succeeded"`
	Failed    int64     `db:"failed" json:"failed"`
	Pending   int64     `db:"pending" json:"pending"`
}

// MaxHours bounds Hourly's series (a week of hourly bars).
const MaxHours = 7 * 24

// Hourly counts the deliveries of the last hours hours (1 to MaxHours), per
// hour, oldest first: hours buckets, the last one being the current hour
// (so the series covers hours-1 full hours and the current one). It is
// scoped to owner like every Store call, and to one subscription when
// subscriptionID is not 0 (another owner's answers ErrNotFound). Counting
// happens in PostgreSQL, over the (subscription_id, created_at) index, so
// the chart is right however many deliveries an hour holds.
func (st *Store) Hourly(ctx context.Context, owner *string, subscriptionID int64, hours int) ([]HourCount, error) {
	if hours < 1 || hours > MaxHours {
		return nil, invalid("hours", fmt.Sprintf("hours must be between 1 and %d", MaxHours))
	}
	if subscriptionID != 0 {
		if _, err := st.Get(ctx, subscriptionID, owner); err != nil {
			return nil, err
		}
	}
	args := []any{hours, subscriptionID}
	where := ownerClause("s", owner, &args)
	rows, err := st.pool.Query(ctx, `
		WITH bounds AS (
			SELECT date_trunc('hour', now()) - ($1::int - 1) * interval '1 hour' AS first
		), counts AS (
			SELECT date_trunc('hour', d.created_at) AS start,
			       count(*) FILTER (WHERE d.status = 'succeeded') AS succeeded,
			       count(*) FILTER (WHERE d.status = 'failed') AS failed,
			       count(*) FILTER (WHERE d.status IN ('pending', 'delivering')) AS pending
			FROM relay.deliveries AS d
			JOIN relay.subscriptions AS s ON s.id = d.subscription_id
			WHERE d.created_at >= (SELECT first FROM bounds)
			  AND ($2::bigint = 0 OR d.subscription_id = $2) AND `+where+`
			GROUP BY 1
		)
		SELECT h.start, coalesce(c.succeeded, 0) AS succeeded, coalesce(c.failed, 0) AS failed,
		       coalesce(c.pending, 0) AS pending
		FROM bounds, generate_series(bounds.first, date_trunc('hour', now()), interval '1 hour') AS h(start)
		LEFT JOIN counts AS c ON c.start = h.start
		ORDER BY h.start`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading hourly counts: %w", translate(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[HourCount])
	if err != nil {
		return nil, fmt.Errorf("reading hourly counts: %w", translate(err))
	}
	return out, nil
}
