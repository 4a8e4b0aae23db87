-- 000002: names, owners, header values and templates refuse control
-- characters, and templates and headers get size and count limits.
--
-- Free text of a subscription reaches terminals (relay subs list), logs, HTTP
-- requests and web pages: an ESC or BEL in a name rewrote the operator's
-- terminal, and a control character in a header value was accepted here and
-- then refused by the sender on every attempt. The Go side (package
-- subscriptions) gives the same messages before a round trip.
--
-- relay.validate_subscription is replaced starting from its newest
-- definition (000001); the new checks run only when the text is written, so
-- rows written before this migration can still be disabled or edited.

-- first_control_char returns the first C0 control (U+0001-U+001F; PostgreSQL
-- text cannot hold U+0000), DEL or C1 control (U+0080-U+009F) of s that is
-- not in allowed, written U+XXXX, or NULL when there is none (and for a NULL
-- s).
CREATE FUNCTION relay.first_control_char(s text, allowed text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'U+' || lpad(upper(to_hex(ascii(t.ch))), 4, '0')
    FROM regexp_split_to_table(CASE WHEN s ~ '[\u0001-\u001f\u007f-\u009f]' THEN s END, '') WITH ORDINALITY AS t(ch, n)
    WHERE t.ch ~ '[\u0001-\u001f\u007f-\u009f]' AND strpos(allowed, t.ch) = 0
    ORDER BY t.n
    LIMIT 1
$$;

CREATE OR REPLACE FUNCTION relay.validate_subscription() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    allow_http boolean;
    p text;
    i interval;
    h record;
    c text;
BEGIN
    IF NEW.owner IS NOT NULL AND btrim(NEW.owner) = '' THEN
        RAISE EXCEPTION 'owner must be null (operator) or a non-empty string'
            USING ERRCODE = 'check_violation', COLUMN = 'owner';
    END IF;
    -- Text checks run when the text is written, so that a row written before
    -- 000002 can still be disabled or edited in its other columns.
    IF TG_OP = 'INSERT' OR NEW.owner IS DISTINCT FROM OLD.owner THEN
        c := relay.first_control_char(NEW.owner, '');
        IF c IS NOT NULL THEN
            RAISE EXCEPTION 'owner must not contain control characters (found %)', c
                USING ERRCODE = 'check_violation', COLUMN = 'owner';
        END IF;
    END IF;
    IF NEW.name IS NULL OR btrim(NEW.name) = '' THEN
        RAISE EXCEPTION 'name must not be empty'
            USING ERRCODE = 'check_violation', COLUMN = 'name';
    END IF;
    IF length(NEW.name) > 200 THEN
        RAISE EXCEPTION 'name must be at most 200 characters (got %)', length(NEW.name)
            USING ERRCODE = 'check_violation', COLUMN = 'name';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name THEN
        c := relay.first_control_char(NEW.name, '');
        IF c IS NOT NULL THEN
            RAISE EXCEPTION 'name must not contain control characters (found %)', c
                USING ERRCODE = 'check_violation', COLUMN = 'name';
        END IF;
    END IF;

    IF TG_OP = 'INSERT' OR NEW.template IS DISTINCT FROM OLD.template THEN
        IF length(NEW.template) > 10000 THEN
            RAISE EXCEPTION 'template must be at most 10000 characters (got %)', length(NEW.template)
                USING ERRCODE = 'check_violation', COLUMN = 'template';
        END IF;
        c := relay.first_control_char(NEW.template, E'\t\n\r');
        IF c IS NOT NULL THEN
            RAISE EXCEPTION 'template must not contain control characters (found %)', c
                USING ERRCODE = 'check_violation', COLUMN = 'template';
        END IF;
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
    IF (TG_OP = 'INSERT' OR NEW.headers IS DISTINCT FROM OLD.headers)
            AND (SELECT count(*) FROM jsonb_object_keys(NEW.headers)) > 20 THEN
        RAISE EXCEPTION 'headers may hold at most 20 headers (got %)', (SELECT count(*) FROM jsonb_object_keys(NEW.headers))
            USING ERRCODE = 'check_violation', COLUMN = 'headers';
    END IF;
    FOR h IN SELECT key, value FROM jsonb_each(NEW.headers) ORDER BY key LOOP
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
        IF TG_OP = 'INSERT' OR NEW.headers IS DISTINCT FROM OLD.headers THEN
            IF length(h.key) > 128 THEN
                RAISE EXCEPTION 'headers: a header name may be at most 128 characters (got %)', length(h.key)
                    USING ERRCODE = 'check_violation', COLUMN = 'headers';
            END IF;
            IF length(h.value #>> '{}') > 4096 THEN
                RAISE EXCEPTION 'headers: the value of % may be at most 4096 characters (got %)', quote_literal(h.key), length(h.value #>> '{}')
                    USING ERRCODE = 'check_violation', COLUMN = 'headers';
            END IF;
            c := relay.first_control_char(h.value #>> '{}', E'\t');
            IF c IS NOT NULL THEN
                RAISE EXCEPTION 'headers: the value of % must not contain control characters (found %)', quote_literal(h.key), c
                    USING ERRCODE = 'check_violation', COLUMN = 'headers';
            END IF;
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
