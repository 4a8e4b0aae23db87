-- relay schema, version 3: subscriptions that say more.
--
--   * payload filters: relay.subscriptions.filter, a jsonpath evaluated
--     against the payload in the fan-out statement;
--   * what a subscription does outside its delivery window:
--     relay.subscriptions.outside_window (defer, send or skip), and the
--     'skipped' delivery status that skip leads to;
--   * the event-type catalog relay.event_types, and the optional
--     relay.settings.strict_event_types that makes relay.outbox refuse types
--     not in it;
--   * relay.emit with headers (W3C traceparent and tracestate travel there).
--
-- Nothing here replaces a function or trigger of versions 1 and 2 except
-- relay.redeliver, which must also take skipped deliveries back.

------------------------------------------------------------------------------
-- Payload filters.
------------------------------------------------------------------------------

-- jsonpath_is_predicate tells how a filter is tested. A predicate
-- ($.channel == "email", exists($.refund), $.a > 1 && $.b < 2) is tested
-- with @@: the event matches when the predicate is true. Any other path
-- ($.amount ? (@ > 100), $.tags[*] ? (@ == "vip")) is tested with @?: the
-- event matches when the path selects something. A predicate is what yields
-- exactly one boolean (or unknown, shown as null) on an empty object, in lax
-- and strict mode alike; a path yields nothing there.
--
-- Run on the empty object, the filter also shows at INSERT whatever would
-- fail on every payload (a $variable, which fan-out never binds), so such a
-- filter is refused with the column named instead of breaking fan-out later.
-- Declared IMMUTABLE so that a generated column can keep its result: it
-- depends on nothing but its argument.
CREATE FUNCTION relay.jsonpath_is_predicate(filter jsonpath) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n integer;
    kind text;
BEGIN
    IF filter IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT count(*), min(jsonb_typeof(r)) INTO n, kind
    FROM jsonb_path_query('{}'::jsonb, filter, '{}', true) AS r;
    RETURN n = 1 AND kind IN ('boolean', 'null');
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'filter % cannot be evaluated: %', quote_literal(filter::text), SQLERRM
        USING ERRCODE = 'check_violation', COLUMN = 'filter',
              HINT = 'A filter sees the event payload as $ and cannot use $variables, e.g. $.amount ? (@ > 100) or $.channel == "email".';
END
$$;

-- payload_matches is the one definition of "this payload passes this
-- filter", used by fan-out and by the admin API's filter check. A NULL
-- filter passes everything. The _tz forms of the jsonpath functions have
-- the semantics of the @@ and @? operators (silent: a missing key or a type
-- mismatch is simply no match) and, unlike them, may compare datetimes with
-- and without a time zone instead of raising an error in the middle of
-- fan-out. Written as one SQL expression so the planner inlines it.
CREATE FUNCTION relay.payload_matches(payload jsonb, filter jsonpath, is_predicate boolean) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN filter IS NULL THEN true
        WHEN is_predicate THEN coalesce(jsonb_path_match_tz(payload, filter, '{}', true), false)
        ELSE coalesce(jsonb_path_exists_tz(payload, filter, '{}', true), false)
    END
$$;

ALTER TABLE relay.subscriptions
    ADD COLUMN filter jsonpath
        CONSTRAINT "filter must be at most 2000 characters" CHECK (length(filter::text) <= 2000),
    ADD COLUMN filter_is_predicate boolean
        GENERATED ALWAYS AS (relay.jsonpath_is_predicate(filter)) STORED;

-- Fan-out asks whether any enabled subscription has a filter before it
-- parses payloads; this index answers that at once.
CREATE INDEX subscriptions_filtered ON relay.subscriptions (id) WHERE enabled AND filter IS NOT NULL;

COMMENT ON COLUMN relay.subscriptions.filter IS
    'Optional jsonpath on the payload: a predicate ($.channel == "email") must be true, a path ($.amount ? (@ > 100)) must select something. NULL: every event of the subscribed types.';
COMMENT ON COLUMN relay.subscriptions.filter_is_predicate IS
    'Kept by PostgreSQL: true when filter is a predicate (tested with @@), false when it is a path (tested with @?).';

------------------------------------------------------------------------------
-- Outside the delivery window: defer, send or skip.
------------------------------------------------------------------------------
ALTER TABLE relay.subscriptions
    ADD COLUMN outside_window text NOT NULL DEFAULT 'defer'
        CONSTRAINT "outside_window must be defer, send or skip" CHECK (outside_window IN ('defer', 'send', 'skip')),
    ADD CONSTRAINT "outside_window cannot be send with a window of its own"
        CHECK (outside_window <> 'send' OR window_start IS NULL);

COMMENT ON COLUMN relay.subscriptions.outside_window IS
    'When a delivery window (the subscription''s, or the global one unless ignore_global_window) is closed: defer waits for it to open, send goes out anyway, skip ends a new delivery as skipped (redeliver can still send it). Pause and absence days always defer.';

-- The configuration columns of version 3 move updated_at like the older
-- ones (a running relay re-reads a subscription whose updated_at moved).
CREATE FUNCTION relay.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER subscriptions_touch BEFORE UPDATE OF filter, outside_window ON relay.subscriptions
    FOR EACH ROW EXECUTE FUNCTION relay.touch_updated_at();

-- A skipped delivery is finished like a succeeded or failed one, and its
-- one attempt row (outcome skipped, the reason in error) puts it in the log.
-- NOT VALID: the old constraints guaranteed a subset of the new ones, so no
-- existing row needs the scan (deliveries and attempts may be large).
ALTER TABLE relay.deliveries
    DROP CONSTRAINT "status must be pending, delivering, succeeded or failed",
    ADD CONSTRAINT "status must be pending, delivering, succeeded, failed, skipped"
        CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed', 'skipped')) NOT VALID;

ALTER TABLE relay.delivery_attempts
    DROP CONSTRAINT "outcome must be succeeded, retry or failed",
    ADD CONSTRAINT "outcome must be succeeded, retry, failed or skipped"
        CHECK (outcome IN ('succeeded', 'retry', 'failed', 'skipped')) NOT VALID;

-- redeliver puts one delivery back in the queue now, with a fresh retry
-- schedule. A delivery already queued or in flight is left alone. Returns the
-- delivery's status afterwards. Version 3: a skipped delivery can be sent too
-- (its subscription's window then defers it, it is not skipped again).
CREATE OR REPLACE FUNCTION relay.redeliver(delivery_id bigint) RETURNS text
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
    WHERE d.id = redeliver.delivery_id AND d.status IN ('succeeded', 'failed', 'skipped')
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

------------------------------------------------------------------------------
-- The event-type catalog.
------------------------------------------------------------------------------
CREATE TABLE relay.event_types (
    name        text PRIMARY KEY
                CONSTRAINT "name must be lowercase dotted words like thread.created"
                CHECK (relay.is_valid_event_type(name)),
    description text NOT NULL DEFAULT ''
                CONSTRAINT "description must be at most 2000 characters" CHECK (length(description) <= 2000),
    example     jsonb
                CONSTRAINT "example must be null or a JSON object (a sample payload)"
                CHECK (example IS NULL OR jsonb_typeof(example) = 'object'),
    json_schema jsonb
                CONSTRAINT "json_schema must be null or a JSON object (a JSON Schema)"
                CHECK (json_schema IS NULL OR jsonb_typeof(json_schema) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE relay.event_types IS
    'The event types your application emits, with a description, an example payload and an optional JSON Schema. The console offers them when a webhook is created; with relay.settings.strict_event_types, relay.outbox refuses other types.';

CREATE TRIGGER event_types_touch BEFORE UPDATE ON relay.event_types
    FOR EACH ROW EXECUTE FUNCTION relay.touch_updated_at();

-- relay's own events, so the catalog documents them and strict mode never
-- refuses them (the check below lets relay.* and webhook.test through even
-- if these rows are deleted).
INSERT INTO relay.event_types (name, description, example) VALUES
    ('relay.subscription.failing',
     'A webhook of this owner reached relay.settings.failure_alert_threshold consecutive failed deliveries. Sent to the owner''s other webhooks.',
     '{"subscription_id": 7, "subscription_name": "CRM sync", "consecutive_failures": 5, "last_error": "HTTP 503"}'),
    ('relay.subscription.disabled',
     'A webhook of this owner was disabled: its endpoint answered 410 Gone or kept failing past relay.settings.disable_after.',
     '{"subscription_id": 7, "subscription_name": "CRM sync", "reason": "endpoint answered 410 Gone"}'),
    ('webhook.test',
     'Sent by the Test button (POST /api/webhooks/{id}/test, relay subs test) to one webhook only; never retried.',
     '{"message": "Test event from relay", "subscription_id": 7, "subscription_name": "CRM sync"}');

ALTER TABLE relay.settings
    ADD COLUMN strict_event_types boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN relay.settings.strict_event_types IS
    'When true, relay.outbox refuses an event_type that is not in relay.event_types (relay''s own relay.* and webhook.test always pass).';

-- check_known_event_type is the strict mode's check. Its trigger is
-- enabled only while strict_event_types is true (see sync_strict_event_types),
-- so the outbox insert path pays nothing when the setting is off.
CREATE FUNCTION relay.check_known_event_type() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event_type LIKE 'relay.%' OR NEW.event_type = 'webhook.test'
       OR EXISTS (SELECT 1 FROM relay.event_types AS t WHERE t.name = NEW.event_type) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'event_type % is not in the event-type catalog relay.event_types', quote_literal(NEW.event_type)
        USING ERRCODE = 'check_violation', COLUMN = 'event_type',
              HINT = 'relay.settings.strict_event_types is on: add the type first (INSERT INTO relay.event_types (name, description) VALUES (...)), or turn the setting off.';
END
$$;

CREATE TRIGGER outbox_known_event_type BEFORE INSERT ON relay.outbox
    FOR EACH ROW EXECUTE FUNCTION relay.check_known_event_type();
ALTER TABLE relay.outbox DISABLE TRIGGER outbox_known_event_type;

-- sync_strict_event_types enables or disables the outbox check when the
-- setting changes. ALTER TABLE takes a short lock on relay.outbox: inserts
-- wait for the settings transaction to commit, which is what makes the
-- switch exact.
CREATE FUNCTION relay.sync_strict_event_types() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.strict_event_types IS DISTINCT FROM OLD.strict_event_types THEN
        IF NEW.strict_event_types THEN
            ALTER TABLE relay.outbox ENABLE TRIGGER outbox_known_event_type;
        ELSE
            ALTER TABLE relay.outbox DISABLE TRIGGER outbox_known_event_type;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER settings_strict_event_types AFTER UPDATE OF strict_event_types ON relay.settings
    FOR EACH ROW EXECUTE FUNCTION relay.sync_strict_event_types();

------------------------------------------------------------------------------
-- relay.emit with headers.
------------------------------------------------------------------------------

-- emit with headers inserts one event whose headers (a JSON object of
-- header names to string values, e.g. {"traceparent": "00-…-01"}) are sent
-- with every attempt to every subscription. A new overload, so calls of the
-- four-argument emit keep working; the headers argument has no default so
-- that no call is ambiguous: pass NULL for owner or key you do not set.
CREATE FUNCTION relay.emit(event_type text, payload jsonb, owner text, key text, headers jsonb)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
    h record;
BEGIN
    IF event_type IS NULL OR NOT relay.is_valid_event_type(event_type) THEN
        RAISE EXCEPTION 'event_type must be lowercase dotted words like thread.created (got %)', coalesce(quote_literal(event_type), 'NULL')
            USING ERRCODE = 'check_violation', COLUMN = 'event_type';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object (got %)', coalesce(jsonb_typeof(payload), 'NULL')
            USING ERRCODE = 'check_violation', COLUMN = 'payload';
    END IF;
    IF headers IS NOT NULL THEN
        IF jsonb_typeof(headers) <> 'object' THEN
            RAISE EXCEPTION 'headers must be null or a JSON object of header names to string values (got %)', jsonb_typeof(headers)
                USING ERRCODE = 'check_violation', COLUMN = 'headers';
        END IF;
        FOR h IN SELECT e.key, e.value FROM jsonb_each(headers) AS e LOOP
            IF h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' THEN
                RAISE EXCEPTION 'headers: % is not a valid header name', quote_literal(h.key)
                    USING ERRCODE = 'check_violation', COLUMN = 'headers';
            END IF;
            IF jsonb_typeof(h.value) <> 'string' OR h.value #>> '{}' ~ '[\r\n]' THEN
                RAISE EXCEPTION 'headers: the value of % must be a single-line string', quote_literal(h.key)
                    USING ERRCODE = 'check_violation', COLUMN = 'headers';
            END IF;
        END LOOP;
    END IF;
    INSERT INTO relay.outbox (event_type, payload, owner, key, headers)
    VALUES (emit.event_type, emit.payload, emit.owner, emit.key, emit.headers)
    RETURNING outbox.event_id INTO id;
    RETURN id;
END
$$;
