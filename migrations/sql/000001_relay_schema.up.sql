-- relay schema, version 1.
--
-- This file is the public SQL contract of relay (see DESIGN.md §3): every table,
-- view and function here may be used by applications in any language. Bad rows
-- are refused at INSERT/UPDATE with messages that name the problem, either by
-- CHECK constraints whose names are sentences (cheap, on the hot outbox path) or
-- by validation triggers (subscriptions and settings, which need to read
-- relay.settings or give richer hints).

CREATE SCHEMA IF NOT EXISTS relay;

-- generate_secret returns a Standard Webhooks secret: whsec_ + base64 of 32
-- bytes. The bytes are the SHA-256 of two random UUIDs (244 bits from the
-- server's strong random source), so no extension such as pgcrypto is needed.
CREATE FUNCTION relay.generate_secret() RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT 'whsec_' || encode(sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())), 'base64')
$$;

-- mask_url hides everything of a URL but its scheme, host and the first three
-- characters of its path, as the brief asks for logs:
-- https://hooks.make.com/abc123?token=x becomes https://hooks.make.com/abc***.
CREATE FUNCTION relay.mask_url(url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN m IS NULL THEN '***'
        ELSE m[1] || m[2] || '/' || left(ltrim(coalesce(m[3], ''), '/'), 3) || '***'
    END
    FROM regexp_match(url, '^([A-Za-z][A-Za-z0-9+.-]*://)(?:[^@/?#]*@)?([^/?#]*)(/[^?#]*)?') AS m
$$;

-- is_valid_event_type: lowercase dotted words, e.g. thread.created.
CREATE FUNCTION relay.is_valid_event_type(t text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' AND length(t) <= 200
$$;

-- is_valid_event_pattern: an exact event type, a prefix pattern (thread.*) or *.
CREATE FUNCTION relay.is_valid_event_pattern(p text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p = '*' OR (p ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$' AND length(p) <= 200)
$$;

-- event_type_candidates lists the patterns that match an event type: for
-- a.b.c it is {*, a.*, a.b.*, a.b.c}. Fan-out matches subscriptions with
-- event_types && candidates, served by a GIN index.
CREATE FUNCTION relay.event_type_candidates(event_type text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(c) FROM (
        SELECT '*' AS c
        UNION ALL
        SELECT array_to_string(parts[1:n], '.') || '.*'
        FROM string_to_array(event_type, '.') AS parts, generate_series(1, cardinality(parts) - 1) AS n
        UNION ALL
        SELECT event_type
    ) AS candidates
$$;

------------------------------------------------------------------------------
-- settings: one row of global switches.
------------------------------------------------------------------------------
CREATE TABLE relay.settings (
    id                      boolean PRIMARY KEY DEFAULT true
                            CONSTRAINT "relay.settings holds exactly one row" CHECK (id),
    paused                  boolean NOT NULL DEFAULT false,
    paused_reason           text,
    paused_at               timestamptz,
    absence_days            text[] NOT NULL DEFAULT '{}',
    window_start            time,
    window_end              time,
    window_time_zone        text NOT NULL DEFAULT 'UTC',
    failure_alert_threshold integer NOT NULL DEFAULT 5,
    disable_after           interval NOT NULL DEFAULT '5 days',
    retention               interval NOT NULL DEFAULT '7 days',
    allow_http              boolean NOT NULL DEFAULT false,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

COMMENT ON COLUMN relay.settings.absence_days IS 'Weekday names (monday … sunday) on which nothing is sent; deliveries wait.';
COMMENT ON COLUMN relay.settings.allow_http IS 'Lets subscriptions use http:// URLs. Development and tests only.';
COMMENT ON COLUMN relay.settings.disable_after IS 'A subscription failing continuously for longer than this is disabled.';

CREATE FUNCTION relay.check_time_zone(tz text, col text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM now() AT TIME ZONE tz;
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION '% "%" is not a known time zone', col, tz
        USING ERRCODE = 'check_violation', COLUMN = col,
              HINT = 'Use an IANA name such as Europe/Paris or UTC.';
END
$$;

CREATE FUNCTION relay.validate_settings() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    IF NEW.absence_days IS NULL THEN
        NEW.absence_days := '{}';
    END IF;
    FOREACH d IN ARRAY NEW.absence_days LOOP
        IF d IS NULL OR d NOT IN ('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday') THEN
            RAISE EXCEPTION 'absence_days: "%" is not a weekday name', d
                USING ERRCODE = 'check_violation', COLUMN = 'absence_days',
                      HINT = 'Use lowercase English names: monday, tuesday, … sunday.';
        END IF;
    END LOOP;
    IF (NEW.window_start IS NULL) <> (NEW.window_end IS NULL) THEN
        RAISE EXCEPTION 'window_start and window_end must both be set or both be null'
            USING ERRCODE = 'check_violation', COLUMN = 'window_start';
    END IF;
    PERFORM relay.check_time_zone(NEW.window_time_zone, 'window_time_zone');
    IF NEW.failure_alert_threshold IS NULL OR NEW.failure_alert_threshold < 1 THEN
        RAISE EXCEPTION 'failure_alert_threshold must be at least 1 (got %)', NEW.failure_alert_threshold
            USING ERRCODE = 'check_violation', COLUMN = 'failure_alert_threshold';
    END IF;
    IF NEW.disable_after IS NULL OR NEW.disable_after <= interval '0' THEN
        RAISE EXCEPTION 'disable_after must be a positive interval (got %)', NEW.disable_after
            USING ERRCODE = 'check_violation', COLUMN = 'disable_after';
    END IF;
    IF NEW.retention IS NULL OR NEW.retention < interval '1 hour' THEN
        RAISE EXCEPTION 'retention must be at least 1 hour (got %)', NEW.retention
            USING ERRCODE = 'check_violation', COLUMN = 'retention';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER settings_validate BEFORE INSERT OR UPDATE ON relay.settings
    FOR EACH ROW EXECUTE FUNCTION relay.validate_settings();

INSERT INTO relay.settings DEFAULT VALUES;

------------------------------------------------------------------------------
-- outbox: the event log applications insert into.
------------------------------------------------------------------------------
CREATE TABLE relay.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid NOT NULL DEFAULT gen_random_uuid(),
    event_type  text NOT NULL
                CONSTRAINT "event_type must be lowercase dotted words like thread.created"
                CHECK (relay.is_valid_event_type(event_type)),
    owner       text
                CONSTRAINT "owner must be null or a non-empty string" CHECK (owner <> ''),
    key         text,
    payload     jsonb NOT NULL
                CONSTRAINT "payload must be a JSON object" CHECK (jsonb_typeof(payload) = 'object'),
    headers     jsonb
                CONSTRAINT "headers must be null or a JSON object" CHECK (headers IS NULL OR jsonb_typeof(headers) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- target_subscription_id sends the event to that one subscription only
    -- (the test button); skip_subscription_id keeps it from one subscription
    -- (an alert about a failing subscription is never sent to itself).
    target_subscription_id bigint,
    skip_subscription_id   bigint,
    CONSTRAINT outbox_event_id_key UNIQUE (event_id)
);

-- The relay never updates outbox rows, and logical decoding needs only the
-- inserted values, so the default replica identity (primary key) is enough.
CREATE INDEX outbox_created_at ON relay.outbox (created_at);
CREATE INDEX outbox_event_type ON relay.outbox (event_type);

COMMENT ON TABLE relay.outbox IS 'Insert events here inside your own transactions; relay delivers them after commit.';

-- emit inserts one event and returns its id (sent to receivers as webhook-id).
CREATE FUNCTION relay.emit(event_type text, payload jsonb DEFAULT '{}', owner text DEFAULT NULL, key text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    IF event_type IS NULL OR NOT relay.is_valid_event_type(event_type) THEN
        RAISE EXCEPTION 'event_type must be lowercase dotted words like thread.created (got %)', coalesce(quote_literal(event_type), 'NULL')
            USING ERRCODE = 'check_violation', COLUMN = 'event_type';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object (got %)', coalesce(jsonb_typeof(payload), 'NULL')
            USING ERRCODE = 'check_violation', COLUMN = 'payload';
    END IF;
    INSERT INTO relay.outbox (event_type, payload, owner, key)
    VALUES (emit.event_type, emit.payload, emit.owner, emit.key)
    RETURNING outbox.event_id INTO id;
    RETURN id;
END
$$;

------------------------------------------------------------------------------
-- subscriptions: the webhooks.
------------------------------------------------------------------------------
CREATE TABLE relay.subscriptions (
    id                      bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    owner                   text,
    name                    text NOT NULL,
    url                     text NOT NULL,
    event_types             text[] NOT NULL,
    secret                  text NOT NULL DEFAULT relay.generate_secret(),
    -- previous_secrets: [{"secret": "...", "expires_at": "..."}], secrets still
    -- inside their rotation grace period; each adds a signature.
    previous_secrets        jsonb NOT NULL DEFAULT '[]',
    enabled                 boolean NOT NULL DEFAULT true,
    format                  text NOT NULL DEFAULT 'json',
    template                text,
    headers                 jsonb NOT NULL DEFAULT '{}',
    timeout_ms              integer NOT NULL DEFAULT 10000,
    retry_schedule          interval[] NOT NULL DEFAULT '{1 minute,5 minutes,15 minutes}',
    max_in_flight           integer NOT NULL DEFAULT 8,
    window_start            time,
    window_end              time,
    window_time_zone        text NOT NULL DEFAULT 'UTC',
    ignore_global_window    boolean NOT NULL DEFAULT false,
    consecutive_failures    integer NOT NULL DEFAULT 0,
    failing_since           timestamptz,
    last_success_at         timestamptz,
    last_failure_at         timestamptz,
    last_error              text,
    alerted_at              timestamptz,
    disabled_reason         text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX subscriptions_event_types ON relay.subscriptions USING gin (event_types) WHERE enabled;
CREATE INDEX subscriptions_owner ON relay.subscriptions (owner);

COMMENT ON COLUMN relay.subscriptions.event_types IS 'Exact types (thread.created), prefixes (thread.*) or *.';
COMMENT ON COLUMN relay.subscriptions.retry_schedule IS 'Delays after the first attempt; {} means no retry.';

-- validate_subscription refuses bad rows with a message naming the column,
-- and keeps updated_at. It runs on INSERT and on UPDATE of the configuration
-- columns only, so the relay's frequent health updates stay cheap and an
-- existing http:// subscription does not break when allow_http is turned off.
CREATE FUNCTION relay.validate_subscription() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    allow_http boolean;
    p text;
    i interval;
    h record;
BEGIN
    IF NEW.owner IS NOT NULL AND btrim(NEW.owner) = '' THEN
        RAISE EXCEPTION 'owner must be null (operator) or a non-empty string'
            USING ERRCODE = 'check_violation', COLUMN = 'owner';
    END IF;
    IF NEW.name IS NULL OR btrim(NEW.name) = '' THEN
        RAISE EXCEPTION 'name must not be empty'
            USING ERRCODE = 'check_violation', COLUMN = 'name';
    END IF;
    IF length(NEW.name) > 200 THEN
        RAISE EXCEPTION 'name must be at most 200 characters (got %)', length(NEW.name)
            USING ERRCODE = 'check_violation', COLUMN = 'name';
    END IF;

    IF TG_OP = 'INSERT' OR NEW.url IS DISTINCT FROM OLD.url THEN
        IF NEW.url IS NULL OR NEW.url !~ '^[A-Za-z][A-Za-z0-9+.-]*://' THEN
            RAISE EXCEPTION 'url must be an absolute https:// URL (got %)', coalesce(quote_literal(relay.mask_url(NEW.url)), 'NULL')
                USING ERRCODE = 'check_violation', COLUMN = 'url';
        END IF;
        SELECT s.allow_http INTO allow_http FROM relay.settings AS s;
        IF NEW.url ~* '^http://' THEN
            IF NOT coalesce(allow_http, false) THEN
                RAISE EXCEPTION 'url must use https:// (got %)', quote_literal(relay.mask_url(NEW.url))
                    USING ERRCODE = 'check_violation', COLUMN = 'url',
                          HINT = 'http:// is accepted only when relay.settings.allow_http is true (development and tests).';
            END IF;
        ELSIF NEW.url !~* '^https://' THEN
            RAISE EXCEPTION 'url must use https:// (got %)', quote_literal(relay.mask_url(NEW.url))
                USING ERRCODE = 'check_violation', COLUMN = 'url';
        END IF;
        IF NEW.url !~ '^[A-Za-z]+://([A-Za-z0-9._~%!$&''()*+,;=:-]+@)?([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?([/?#][^[:space:]]*)?$' THEN
            RAISE EXCEPTION 'url % has no valid host name, or contains spaces', quote_literal(relay.mask_url(NEW.url))
                USING ERRCODE = 'check_violation', COLUMN = 'url';
        END IF;
        IF length(NEW.url) > 2000 THEN
            RAISE EXCEPTION 'url must be at most 2000 characters'
                USING ERRCODE = 'check_violation', COLUMN = 'url';
        END IF;
    END IF;

    IF NEW.event_types IS NULL OR cardinality(NEW.event_types) = 0 THEN
        RAISE EXCEPTION 'event_types must list at least one event type or pattern'
            USING ERRCODE = 'check_violation', COLUMN = 'event_types',
                  HINT = 'Use exact types (thread.created), prefixes (thread.*) or * for everything.';
    END IF;
    FOREACH p IN ARRAY NEW.event_types LOOP
        IF p IS NULL OR NOT relay.is_valid_event_pattern(p) THEN
            RAISE EXCEPTION 'event_types: % is not an event type or pattern', coalesce(quote_literal(p), 'NULL')
                USING ERRCODE = 'check_violation', COLUMN = 'event_types',
                      HINT = 'Use exact types (thread.created), prefixes (thread.*) or * for everything.';
        END IF;
    END LOOP;

    IF NEW.format IS NULL OR NEW.format NOT IN ('json', 'slack', 'discord') THEN
        RAISE EXCEPTION 'format must be one of json, slack, discord (got %)', coalesce(quote_literal(NEW.format), 'NULL')
            USING ERRCODE = 'check_violation', COLUMN = 'format';
    END IF;

    IF NEW.timeout_ms IS NULL OR NEW.timeout_ms < 1000 OR NEW.timeout_ms > 60000 THEN
        RAISE EXCEPTION 'timeout_ms must be between 1000 and 60000 (got %)', coalesce(NEW.timeout_ms::text, 'NULL')
            USING ERRCODE = 'check_violation', COLUMN = 'timeout_ms';
    END IF;

    IF NEW.retry_schedule IS NULL THEN
        RAISE EXCEPTION 'retry_schedule must be an array of positive intervals ({} means no retry)'
            USING ERRCODE = 'check_violation', COLUMN = 'retry_schedule';
    END IF;
    IF cardinality(NEW.retry_schedule) > 20 THEN
        RAISE EXCEPTION 'retry_schedule may hold at most 20 delays (got %)', cardinality(NEW.retry_schedule)
            USING ERRCODE = 'check_violation', COLUMN = 'retry_schedule';
    END IF;
    FOREACH i IN ARRAY NEW.retry_schedule LOOP
        IF i IS NULL OR i <= interval '0' THEN
            RAISE EXCEPTION 'retry_schedule: every delay must be a positive interval (got %)', coalesce(i::text, 'NULL')
                USING ERRCODE = 'check_violation', COLUMN = 'retry_schedule';
        END IF;
        IF i > interval '7 days' THEN
            RAISE EXCEPTION 'retry_schedule: a delay may be at most 7 days (got %)', i
                USING ERRCODE = 'check_violation', COLUMN = 'retry_schedule';
        END IF;
    END LOOP;

    IF NEW.max_in_flight IS NULL OR NEW.max_in_flight < 1 OR NEW.max_in_flight > 256 THEN
        RAISE EXCEPTION 'max_in_flight must be between 1 and 256 (got %)', coalesce(NEW.max_in_flight::text, 'NULL')
            USING ERRCODE = 'check_violation', COLUMN = 'max_in_flight';
    END IF;

    IF NEW.headers IS NULL OR jsonb_typeof(NEW.headers) <> 'object' THEN
        RAISE EXCEPTION 'headers must be a JSON object of header names to string values'
            USING ERRCODE = 'check_violation', COLUMN = 'headers';
    END IF;
    FOR h IN SELECT key, value FROM jsonb_each(NEW.headers) LOOP
        IF h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' THEN
            RAISE EXCEPTION 'headers: % is not a valid header name', quote_literal(h.key)
                USING ERRCODE = 'check_violation', COLUMN = 'headers';
        END IF;
        IF lower(h.key) ~ '^(webhook-|x-relay-)' OR lower(h.key) IN ('content-type', 'content-length', 'host', 'user-agent', 'transfer-encoding', 'connection') THEN
            RAISE EXCEPTION 'headers: % is set by relay and cannot be overridden', quote_literal(h.key)
                USING ERRCODE = 'check_violation', COLUMN = 'headers';
        END IF;
        IF jsonb_typeof(h.value) <> 'string' OR h.value #>> '{}' ~ '[\r\n]' THEN
            RAISE EXCEPTION 'headers: the value of % must be a single-line string', quote_literal(h.key)
                USING ERRCODE = 'check_violation', COLUMN = 'headers';
        END IF;
    END LOOP;

    IF (NEW.window_start IS NULL) <> (NEW.window_end IS NULL) THEN
        RAISE EXCEPTION 'window_start and window_end must both be set or both be null'
            USING ERRCODE = 'check_violation', COLUMN = 'window_start';
    END IF;
    PERFORM relay.check_time_zone(NEW.window_time_zone, 'window_time_zone');

    IF NEW.secret IS NULL OR NEW.secret !~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$' THEN
        RAISE EXCEPTION 'secret must be whsec_ followed by base64 of at least 24 bytes'
            USING ERRCODE = 'check_violation', COLUMN = 'secret',
                  HINT = 'Leave it out to have one generated.';
    END IF;

    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER subscriptions_validate_insert BEFORE INSERT ON relay.subscriptions
    FOR EACH ROW EXECUTE FUNCTION relay.validate_subscription();
CREATE TRIGGER subscriptions_validate_update
    BEFORE UPDATE OF owner, name, url, event_types, secret, enabled, format, template, headers,
        timeout_ms, retry_schedule, max_in_flight, window_start, window_end, window_time_zone,
        ignore_global_window ON relay.subscriptions
    FOR EACH ROW EXECUTE FUNCTION relay.validate_subscription();

------------------------------------------------------------------------------
-- deliveries: one row per (event, subscription).
------------------------------------------------------------------------------
CREATE TABLE relay.deliveries (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id            uuid NOT NULL REFERENCES relay.outbox (event_id) ON DELETE CASCADE,
    subscription_id     bigint NOT NULL REFERENCES relay.subscriptions (id) ON DELETE CASCADE,
    status              text NOT NULL DEFAULT 'pending'
                        CONSTRAINT "status must be pending, delivering, succeeded or failed"
                        CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed')),
    attempts            integer NOT NULL DEFAULT 0,
    -- cycle_attempts counts attempts since the delivery was last queued
    -- (created, redelivered or replayed); the retry schedule follows it.
    cycle_attempts      integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    locked_until        timestamptz,
    locked_by           text,
    last_status_code    integer,
    last_error          text,
    last_response       text,
    last_duration_ms    integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    CONSTRAINT deliveries_event_subscription_key UNIQUE (event_id, subscription_id)
);

CREATE INDEX deliveries_due ON relay.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON relay.deliveries (locked_until) WHERE status = 'delivering';
CREATE INDEX deliveries_subscription_created ON relay.deliveries (subscription_id, created_at);
CREATE INDEX deliveries_failed ON relay.deliveries (completed_at) WHERE status = 'failed';

------------------------------------------------------------------------------
-- delivery_attempts: one row per HTTP attempt.
------------------------------------------------------------------------------
CREATE TABLE relay.delivery_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     bigint NOT NULL REFERENCES relay.deliveries (id) ON DELETE CASCADE,
    attempt         integer NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     integer,
    status_code     integer,
    outcome         text NOT NULL
                    CONSTRAINT "outcome must be succeeded, retry or failed"
                    CHECK (outcome IN ('succeeded', 'retry', 'failed')),
    error           text,
    response_body   text,
    retry_after     text,
    CONSTRAINT delivery_attempts_delivery_attempt_key UNIQUE (delivery_id, attempt)
);

CREATE INDEX delivery_attempts_started_at ON relay.delivery_attempts (started_at);

------------------------------------------------------------------------------
-- api_tokens: owner-scoped tokens for the admin API (only a hash is kept).
------------------------------------------------------------------------------
CREATE TABLE relay.api_tokens (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner           text NOT NULL CONSTRAINT "token owner must not be empty" CHECK (owner <> ''),
    name            text NOT NULL DEFAULT '',
    token_hash      bytea NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    revoked_at      timestamptz
);

------------------------------------------------------------------------------
-- Views.
------------------------------------------------------------------------------

-- delivery_log: one row per attempt, with what a person needs to read it.
CREATE VIEW relay.delivery_log AS
SELECT
    a.id                AS attempt_id,
    a.delivery_id,
    d.event_id,
    d.subscription_id,
    s.name              AS subscription_name,
    relay.mask_url(s.url) AS url,
    o.event_type,
    o.owner,
    a.attempt,
    a.outcome,
    d.status            AS delivery_status,
    a.status_code,
    a.duration_ms,
    a.error,
    a.response_body,
    a.retry_after,
    a.started_at
FROM relay.delivery_attempts AS a
JOIN relay.deliveries AS d ON d.id = a.delivery_id
JOIN relay.subscriptions AS s ON s.id = d.subscription_id
JOIN relay.outbox AS o ON o.event_id = d.event_id;

-- subscription_health: per subscription, the last 24 hours and the backlog.
CREATE VIEW relay.subscription_health AS
SELECT
    s.id                AS subscription_id,
    s.owner,
    s.name,
    relay.mask_url(s.url) AS url,
    s.enabled,
    s.disabled_reason,
    s.consecutive_failures,
    s.failing_since,
    s.last_success_at,
    s.last_failure_at,
    s.last_error,
    coalesce(d24.deliveries, 0)  AS deliveries_24h,
    coalesce(d24.succeeded, 0)   AS succeeded_24h,
    coalesce(d24.failed, 0)      AS failed_24h,
    CASE WHEN coalesce(d24.succeeded, 0) + coalesce(d24.failed, 0) = 0 THEN NULL
         ELSE round(d24.succeeded::numeric / (d24.succeeded + d24.failed), 4) END AS success_rate_24h,
    a24.p50_duration_ms,
    a24.p95_duration_ms,
    coalesce(b.backlog, 0)       AS backlog,
    b.oldest_pending_age
FROM relay.subscriptions AS s
LEFT JOIN LATERAL (
    SELECT count(*) AS deliveries,
           count(*) FILTER (WHERE d.status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE d.status = 'failed') AS failed
    FROM relay.deliveries AS d
    WHERE d.subscription_id = s.id AND d.created_at > now() - interval '24 hours'
) AS d24 ON true
LEFT JOIN LATERAL (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS p50_duration_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) AS p95_duration_ms
    FROM relay.delivery_attempts AS a
    JOIN relay.deliveries AS d ON d.id = a.delivery_id
    WHERE d.subscription_id = s.id AND a.started_at > now() - interval '24 hours'
) AS a24 ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS backlog, now() - min(d.created_at) AS oldest_pending_age
    FROM relay.deliveries AS d
    WHERE d.subscription_id = s.id AND d.status IN ('pending', 'delivering')
) AS b ON true;

-- dead_letters: failed deliveries with their last error.
CREATE VIEW relay.dead_letters AS
SELECT
    d.id                AS delivery_id,
    d.event_id,
    d.subscription_id,
    s.name              AS subscription_name,
    relay.mask_url(s.url) AS url,
    o.event_type,
    o.owner,
    d.attempts,
    d.last_status_code,
    d.last_error,
    d.last_response,
    d.created_at,
    d.completed_at      AS failed_at
FROM relay.deliveries AS d
JOIN relay.subscriptions AS s ON s.id = d.subscription_id
JOIN relay.outbox AS o ON o.event_id = d.event_id
WHERE d.status = 'failed';

------------------------------------------------------------------------------
-- Functions for operators and applications.
------------------------------------------------------------------------------

-- redeliver puts one delivery back in the queue now, with a fresh retry
-- schedule. A delivery already queued or in flight is left alone. Returns the
-- delivery's status afterwards.
CREATE FUNCTION relay.redeliver(delivery_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    st text;
BEGIN
    IF delivery_id IS NULL THEN
        RAISE EXCEPTION 'delivery_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE relay.deliveries AS d
    SET status = 'pending', next_attempt_at = now(), cycle_attempts = 0,
        completed_at = NULL, locked_until = NULL, locked_by = NULL
    WHERE d.id = redeliver.delivery_id AND d.status IN ('succeeded', 'failed')
    RETURNING d.status INTO st;
    IF st IS NULL THEN
        SELECT d.status INTO st FROM relay.deliveries AS d WHERE d.id = redeliver.delivery_id;
        IF st IS NULL THEN
            RAISE EXCEPTION 'delivery % does not exist', delivery_id USING ERRCODE = 'no_data_found';
        END IF;
    ELSE
        PERFORM pg_notify('relay_deliveries', '');
    END IF;
    RETURN st;
END
$$;

-- replay re-queues the failed deliveries of one subscription created in
-- [since, until). Returns how many were queued.
CREATE FUNCTION relay.replay(subscription_id bigint, since timestamptz, until timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    IF since IS NULL OR until IS NULL THEN
        RAISE EXCEPTION 'since and until must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF since >= until THEN
        RAISE EXCEPTION 'since (%) must be before until (%)', since, until USING ERRCODE = 'check_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM relay.subscriptions AS s WHERE s.id = replay.subscription_id) THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE relay.deliveries AS d
    SET status = 'pending', next_attempt_at = now(), cycle_attempts = 0,
        completed_at = NULL, locked_until = NULL, locked_by = NULL
    WHERE d.subscription_id = replay.subscription_id AND d.status = 'failed'
      AND d.created_at >= since AND d.created_at < until;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('relay_deliveries', '');
    END IF;
    RETURN n;
END
$$;

-- rotate_secret gives a subscription a new secret and keeps the old one
-- signing for the grace period, so receivers can switch without dropping
-- requests. Returns the new secret.
CREATE FUNCTION relay.rotate_secret(subscription_id bigint, grace interval DEFAULT '24 hours')
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    new_secret text := relay.generate_secret();
    found_id bigint;
BEGIN
    IF grace IS NULL OR grace < interval '0' OR grace > interval '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 and 30 days (got %)', coalesce(grace::text, 'NULL')
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE relay.subscriptions AS s
    SET previous_secrets = (
            SELECT coalesce(jsonb_agg(p ORDER BY p->>'expires_at' DESC), '[]'::jsonb)
            FROM (
                SELECT jsonb_build_object('secret', s.secret, 'expires_at', now() + grace) AS p
                WHERE grace > interval '0'
                UNION ALL
                SELECT p FROM jsonb_array_elements(s.previous_secrets) AS p
                WHERE (p->>'expires_at')::timestamptz > now()
            ) AS kept
        ),
        secret = new_secret
    WHERE s.id = rotate_secret.subscription_id
    RETURNING s.id INTO found_id;
    IF found_id IS NULL THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN new_secret;
END
$$;

-- pause stops all sending: deliveries stay pending until resume.
CREATE FUNCTION relay.pause(reason text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
    UPDATE relay.settings SET paused = true, paused_reason = reason, paused_at = now();
    SELECT pg_notify('relay_settings', 'paused');
$$;

CREATE FUNCTION relay.resume() RETURNS void
LANGUAGE sql AS $$
    UPDATE relay.settings SET paused = false, paused_reason = NULL, paused_at = NULL;
    SELECT pg_notify('relay_settings', 'resumed');
$$;
