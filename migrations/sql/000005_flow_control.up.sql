-- Flow control belongs to the endpoint: a subscription's pace, its
-- concurrency across every relay, the throttle window a 429 announces, its
-- circuit and per-key order live here so that all relays obey them.

------------------------------------------------------------------------------
-- Configuration (validated below, editable from SQL, the API, the CLI and
-- the console).
------------------------------------------------------------------------------
ALTER TABLE relay.subscriptions
    ADD COLUMN rate_limit double precision,
    ADD COLUMN rate_burst integer,
    ADD COLUMN ordering text NOT NULL DEFAULT 'none',
    -- Runtime state, written by the relays (not configuration: it does not
    -- move updated_at).
    ADD COLUMN held_until timestamptz,
    ADD COLUMN hold_reason text,
    ADD COLUMN throttled_since timestamptz,
    ADD COLUMN throttle_streak integer NOT NULL DEFAULT 0,
    ADD COLUMN failed_attempts_in_row integer NOT NULL DEFAULT 0,
    ADD COLUMN circuit_opened_at timestamptz,
    ADD COLUMN circuit_probe_interval interval;

COMMENT ON COLUMN relay.subscriptions.rate_limit IS 'Requests per second across all relays; NULL is unlimited. Slack subscriptions get 1 by default.';
COMMENT ON COLUMN relay.subscriptions.rate_burst IS 'Requests that may go at once after a quiet spell; NULL is one second of rate_limit (at least 1).';
COMMENT ON COLUMN relay.subscriptions.ordering IS 'none, or key: deliveries of events sharing an outbox key go one at a time, in commit order.';
COMMENT ON COLUMN relay.subscriptions.held_until IS 'No request is sent to the subscription before this time (throttle window or open circuit).';
COMMENT ON COLUMN relay.subscriptions.hold_reason IS 'Why held_until is set: throttled, rate limit headers or circuit open.';
COMMENT ON COLUMN relay.subscriptions.throttled_since IS 'First throttled attempt since the last success; throttle_cap measures from it.';
COMMENT ON COLUMN relay.subscriptions.failed_attempts_in_row IS 'Failed attempts (throttled ones aside) since the last success; the circuit opens at failure_alert_threshold.';
COMMENT ON COLUMN relay.subscriptions.circuit_opened_at IS 'Set while the circuit is open: one probe per circuit_probe_interval, nothing else is sent.';

-- validate_subscription_flow checks the flow-control columns and gives
-- Slack subscriptions their default pace. It is a trigger of its own so the
-- main validation trigger can change without it.
CREATE FUNCTION relay.validate_subscription_flow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Slack accepts about one message per second per webhook: a Slack
    -- subscription gets that pace unless one is given (an UPDATE may set
    -- it back to NULL, unlimited, afterwards).
    IF NEW.format = 'slack' AND NEW.rate_limit IS NULL
       AND (TG_OP = 'INSERT' OR (OLD.format <> 'slack' AND OLD.rate_limit IS NULL)) THEN
        NEW.rate_limit := 1;
    END IF;
    IF NEW.rate_limit IS NOT NULL AND (NEW.rate_limit <> NEW.rate_limit OR NEW.rate_limit <= 0 OR NEW.rate_limit > 10000) THEN
        RAISE EXCEPTION 'rate_limit must be a number of requests per second above 0 and at most 10000, or null for no limit (got %)', NEW.rate_limit
            USING ERRCODE = 'check_violation', COLUMN = 'rate_limit';
    END IF;
    IF NEW.rate_burst IS NOT NULL AND (NEW.rate_burst < 1 OR NEW.rate_burst > 10000) THEN
        RAISE EXCEPTION 'rate_burst must be between 1 and 10000, or null for one second of rate_limit (got %)', NEW.rate_burst
            USING ERRCODE = 'check_violation', COLUMN = 'rate_burst';
    END IF;
    IF NEW.ordering IS NULL OR NEW.ordering NOT IN ('none', 'key') THEN
        RAISE EXCEPTION 'ordering must be none or key (got %)', coalesce(quote_literal(NEW.ordering), 'NULL')
            USING ERRCODE = 'check_violation', COLUMN = 'ordering',
                  HINT = 'key sends the deliveries of events sharing an outbox key one at a time, in commit order.';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER subscriptions_validate_flow_insert BEFORE INSERT ON relay.subscriptions
    FOR EACH ROW EXECUTE FUNCTION relay.validate_subscription_flow();
CREATE TRIGGER subscriptions_validate_flow_update BEFORE UPDATE OF rate_limit, rate_burst, ordering, format ON relay.subscriptions
    FOR EACH ROW EXECUTE FUNCTION relay.validate_subscription_flow();

ALTER TABLE relay.settings
    ADD COLUMN throttle_cap interval NOT NULL DEFAULT '24 hours'
        CONSTRAINT "throttle_cap must be a positive interval" CHECK (throttle_cap > interval '0'),
    ADD COLUMN circuit_probe_interval interval NOT NULL DEFAULT '10 seconds'
        CONSTRAINT "circuit_probe_interval must be a positive interval" CHECK (circuit_probe_interval > interval '0'),
    ADD COLUMN circuit_probe_max interval NOT NULL DEFAULT '10 minutes'
        CONSTRAINT "circuit_probe_max must be a positive interval" CHECK (circuit_probe_max > interval '0');

COMMENT ON COLUMN relay.settings.throttle_cap IS 'A delivery whose subscription has been throttled continuously for longer fails, with the reason.';
COMMENT ON COLUMN relay.settings.circuit_probe_interval IS 'First interval between probes of an open circuit; it doubles after each failed probe.';
COMMENT ON COLUMN relay.settings.circuit_probe_max IS 'Longest interval between probes of an open circuit.';

------------------------------------------------------------------------------
-- Per-key order: ordering_key is the event's key, set at fan-out only for
-- subscriptions with ordering = key, so unordered deliveries never touch
-- the index below.
------------------------------------------------------------------------------
ALTER TABLE relay.deliveries ADD COLUMN ordering_key text;
CREATE INDEX deliveries_ordered ON relay.deliveries (subscription_id, ordering_key, id)
    WHERE ordering_key IS NOT NULL AND status IN ('pending', 'delivering');

------------------------------------------------------------------------------
-- Attempts: a throttled attempt is recorded; it spends no retry.
------------------------------------------------------------------------------
ALTER TABLE relay.delivery_attempts
    DROP CONSTRAINT "outcome must be succeeded, retry, failed or skipped",
    ADD CONSTRAINT "outcome must be succeeded, retry, throttled, failed or skipped"
        CHECK (outcome IN ('succeeded', 'retry', 'throttled', 'failed', 'skipped')) NOT VALID;

------------------------------------------------------------------------------
-- Concurrency across relays: each relay leases its share of a
-- subscription's max_in_flight; the shares never add up to more, and a dead
-- relay's share ends with its lease.
------------------------------------------------------------------------------
CREATE TABLE relay.flow_leases (
    subscription_id bigint NOT NULL REFERENCES relay.subscriptions (id) ON DELETE CASCADE,
    worker_id       text NOT NULL,
    slots           integer NOT NULL,
    want            integer NOT NULL,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (subscription_id, worker_id)
);

-- Pace across relays: one token bucket per rate-limited subscription.
CREATE TABLE relay.subscription_pace (
    subscription_id bigint PRIMARY KEY REFERENCES relay.subscriptions (id) ON DELETE CASCADE,
    tokens          double precision NOT NULL,
    refilled_at     timestamptz NOT NULL
);

-- acquire_flow is how a relay asks for the right to send. For each
-- subscription ids[i] it says how many requests it wants in flight
-- (want[i]), how many it has in flight now (sending[i]), how many
-- tokens it would spend now (want_tokens[i]) and how long its lease should
-- last (lease_secs[i]: longer than a request may take); it gets its share of
-- max_in_flight (never less than what it has in flight, never more than
-- what the other relays' unexpired leases leave; when several relays want
-- some, each gets at most an even share), tokens from the subscription's
-- bucket, and the hold in force. A relay wanting nothing gives its share
-- back. One advisory lock per subscription serialises relays.
CREATE FUNCTION relay.acquire_flow(worker text, ids bigint[], want int[], sending int[], want_tokens int[], lease_secs float8[])
RETURNS TABLE (subscription_id bigint, slots int, tokens int, next_token_at timestamptz, held_until timestamptz, circuit_open boolean, lease_until timestamptz, db_now timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    i int;
    sid bigint;
    s record;
    t timestamptz;
    others int;
    rivals int;
    g int;
    cap double precision;
    bucket double precision;
    at timestamptz;
    give int;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(ids), 0) LOOP
        sid := ids[i];
        PERFORM pg_advisory_xact_lock(1919250017, (sid % 2147483647)::int);
        t := clock_timestamp();
        SELECT sub.max_in_flight, sub.rate_limit, sub.rate_burst, sub.held_until, sub.circuit_opened_at IS NOT NULL AS circuit INTO s
        FROM relay.subscriptions AS sub WHERE sub.id = sid;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        subscription_id := sid; held_until := s.held_until; circuit_open := s.circuit; db_now := t;
        tokens := 0; next_token_at := NULL;
        IF want[i] <= 0 AND sending[i] <= 0 THEN
            DELETE FROM relay.flow_leases AS l WHERE l.subscription_id = sid AND l.worker_id = worker;
            slots := 0; lease_until := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT coalesce(sum(l.slots), 0), count(*) FILTER (WHERE l.want > 0) INTO others, rivals
        FROM relay.flow_leases AS l
        WHERE l.subscription_id = sid AND l.worker_id <> worker AND l.expires_at > t;
        g := least(want[i], greatest(s.max_in_flight - others, 0));
        IF rivals > 0 THEN
            g := least(g, ceil(s.max_in_flight::numeric / (rivals + 1))::int);
        END IF;
        g := greatest(g, sending[i]);
        slots := g; lease_until := t + make_interval(secs => lease_secs[i]);
        INSERT INTO relay.flow_leases AS l (subscription_id, worker_id, slots, want, expires_at)
        VALUES (sid, worker, g, want[i], t + make_interval(secs => lease_secs[i]))
        ON CONFLICT ON CONSTRAINT flow_leases_pkey
        DO UPDATE SET slots = excluded.slots, want = excluded.want, expires_at = excluded.expires_at;
        IF s.rate_limit IS NOT NULL AND want_tokens[i] > 0 AND (s.held_until IS NULL OR s.held_until <= t) THEN
            cap := coalesce(s.rate_burst, greatest(1, floor(s.rate_limit)));
            SELECT p.tokens, p.refilled_at INTO bucket, at FROM relay.subscription_pace AS p WHERE p.subscription_id = sid;
            IF NOT FOUND THEN
                bucket := cap;
            ELSE
                bucket := least(cap, bucket + s.rate_limit * greatest(extract(epoch FROM t - at)::double precision, 0));
            END IF;
            give := least(want_tokens[i], floor(bucket)::int);
            bucket := bucket - give;
            INSERT INTO relay.subscription_pace AS p (subscription_id, tokens, refilled_at) VALUES (sid, bucket, t)
            ON CONFLICT ON CONSTRAINT subscription_pace_pkey DO UPDATE SET tokens = excluded.tokens, refilled_at = excluded.refilled_at;
            tokens := give;
            IF bucket < 1 THEN
                next_token_at := t + make_interval(secs => (1 - bucket) / s.rate_limit);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
    -- Leases of relays gone for a while.
    DELETE FROM relay.flow_leases AS l WHERE l.expires_at < clock_timestamp() - interval '10 minutes';
END
$$;

-- subscription_flow: where each subscription stands on flow control.
CREATE VIEW relay.subscription_flow AS
SELECT
    s.id                AS subscription_id,
    s.owner,
    s.name,
    s.rate_limit,
    coalesce(s.rate_burst, CASE WHEN s.rate_limit IS NOT NULL THEN greatest(1, floor(s.rate_limit))::int END) AS rate_burst,
    s.max_in_flight,
    s.ordering,
    coalesce(l.in_flight_slots, 0) AS leased_slots,
    coalesce(l.relays, 0)          AS relays,
    CASE WHEN s.held_until > now() THEN s.held_until END AS held_until,
    CASE WHEN s.held_until > now() THEN s.hold_reason END AS hold_reason,
    s.throttled_since,
    s.circuit_opened_at IS NOT NULL AS circuit_open,
    s.circuit_opened_at,
    s.circuit_probe_interval,
    s.failed_attempts_in_row
FROM relay.subscriptions AS s
LEFT JOIN LATERAL (
    SELECT sum(fl.slots) AS in_flight_slots, count(*) AS relays
    FROM relay.flow_leases AS fl
    WHERE fl.subscription_id = s.id AND fl.expires_at > now()
) AS l ON true;
