-- relay schema, version 6: the attempt history partitioned by day.
--
-- relay.delivery_attempts becomes a table partitioned by RANGE (started_at),
-- one partition per UTC day, named delivery_attempts_YYYYMMDD. Retention
-- drops whole partitions instead of deleting rows (internal/retention), and
-- relay creates the partitions ahead itself (internal/partitions calls
-- relay.prepare_attempt_partitions); no extension is needed.
--
-- Existing installs: the current table is not copied. It becomes the first
-- partition, relay.delivery_attempts_until_YYYYMMDD, covering every time
-- before a UTC midnight at least a day ahead (B below). The steps are split
-- into three transactions so that the only long step, proving that every
-- row is older than B, runs without blocking the applications or relay:
--
--   1. ADD CONSTRAINT ... CHECK (started_at < B) NOT VALID: instant; new
--      rows are checked from now on (they are recorded with started_at =
--      now, well before B).
--   2. VALIDATE CONSTRAINT: reads the table under SHARE UPDATE EXCLUSIVE,
--      which lets inserts, updates and reads go on (the same for any other
--      CHECK still NOT VALID: the parent's must hold on the partition).
--   3. One short transaction: rename the table, create the partitioned
--      parent, ATTACH the old table FOR VALUES FROM (MINVALUE) TO (B) (the
--      valid CHECK proves the bound, so ATTACH does not scan), recreate the
--      views that read the table, and create the partitions of the next
--      days.
--
-- The script therefore contains COMMITs: golang-migrate sends it as one
-- simple query, in which each COMMIT ends the implicit transaction so far.
-- If it stops half-way, the database is left marked dirty at version 6 and
-- every step below is written to be run again (force the version back to 5,
-- then migrate up).
--
-- Global uniqueness of (delivery_id, attempt) cannot be a constraint of a
-- partitioned table (a unique index must contain started_at). Each
-- partition keeps UNIQUE (delivery_id, attempt) and PRIMARY KEY (id) of its
-- own, and the recorder inserts an attempt only together with the update of
-- its delivery by the relay holding the lease, so a second row for the same
-- attempt cannot be written.

------------------------------------------------------------------------------
-- 1. The bound, not yet validated. B is the UTC midnight after tomorrow, or
--    the one after the newest attempt if that is later (index lookup).
------------------------------------------------------------------------------
DO $$
DECLARE
    b timestamptz := (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '2 days') AT TIME ZONE 'UTC';
    r regclass := to_regclass('relay.delivery_attempts');
    newest timestamptz;
BEGIN
    IF r IS NOT NULL AND (SELECT relkind FROM pg_class WHERE oid = r) = 'r' THEN
        SELECT max(started_at) INTO newest FROM relay.delivery_attempts;
        IF newest >= b THEN
            b := (date_trunc('day', newest AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC';
        END IF;
    END IF;
    IF r IS NOT NULL AND (SELECT relkind FROM pg_class WHERE oid = r) = 'r'
       AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = r AND conname = 'delivery_attempts_first_partition_bound') THEN
        EXECUTE format('ALTER TABLE relay.delivery_attempts ADD CONSTRAINT delivery_attempts_first_partition_bound CHECK (started_at < %L) NOT VALID', b);
    END IF;
END
$$;
COMMIT;

------------------------------------------------------------------------------
-- 2. Prove it for the rows already there, without blocking writers.
------------------------------------------------------------------------------
DO $$
DECLARE
    r regclass := to_regclass('relay.delivery_attempts');
    c name;
BEGIN
    IF r IS NOT NULL AND (SELECT relkind FROM pg_class WHERE oid = r) = 'r' THEN
        -- Every CHECK still NOT VALID (the bound, and any an earlier
        -- migration added so, like the outcome checks of 000003 and
        -- 000005): a partition must satisfy the parent's constraints for
        -- real to be attached.
        FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = r AND contype = 'c' AND NOT convalidated LOOP
            EXECUTE format('ALTER TABLE relay.delivery_attempts VALIDATE CONSTRAINT %I', c);
        END LOOP;
    END IF;
END
$$;
COMMIT;

------------------------------------------------------------------------------
-- 3. The swap, in one short transaction.
------------------------------------------------------------------------------

-- attempt_partitions lists the partitions of relay.delivery_attempts with
-- the range each one holds: from_at is -infinity for the first partition of
-- an upgraded install. detach_pending is true for a partition whose
-- DETACH ... CONCURRENTLY (by hand) was interrupted; retention finishes it.
CREATE OR REPLACE FUNCTION relay.attempt_partitions()
RETURNS TABLE (partition regclass, from_at timestamptz, to_at timestamptz, detach_pending boolean)
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass,
           CASE WHEN m[1] = 'MINVALUE' THEN '-infinity'::timestamptz ELSE btrim(m[1], '''')::timestamptz END,
           CASE WHEN m[2] = 'MAXVALUE' THEN 'infinity'::timestamptz ELSE btrim(m[2], '''')::timestamptz END,
           i.inhdetachpending
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \((.*)\) TO \((.*)\)') AS m
    WHERE i.inhparent = to_regclass('relay.delivery_attempts')
    ORDER BY 2
$$;

-- create_attempt_partition makes sure the UTC day `day` has a partition and
-- returns it: the existing one, a new relay.delivery_attempts_YYYYMMDD, or
-- the partition that already covers the day (the first one of an upgraded
-- install). A new partition is created empty, given its own primary key and
-- UNIQUE (delivery_id, attempt), then attached: ATTACH takes only a SHARE
-- UPDATE EXCLUSIVE lock on the parent, so recording and reading go on.
CREATE OR REPLACE FUNCTION relay.create_attempt_partition(day date) RETURNS regclass
LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz;
    hi timestamptz;
    name text;
    covering regclass;
BEGIN
    IF day IS NULL THEN
        RAISE EXCEPTION 'day must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    lo := day::timestamp AT TIME ZONE 'UTC';
    hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
    name := 'delivery_attempts_' || to_char(day, 'YYYYMMDD');
    SELECT p.partition INTO covering FROM relay.attempt_partitions() AS p
    WHERE p.from_at < hi AND p.to_at > lo AND NOT p.detach_pending
    ORDER BY p.from_at LIMIT 1;
    IF covering IS NOT NULL THEN
        RETURN covering;
    END IF;
    IF to_regclass(format('relay.%I', name)) IS NOT NULL THEN
        RAISE EXCEPTION 'relay.% exists but is not a partition of relay.delivery_attempts', name
            USING ERRCODE = 'duplicate_table',
                  HINT = 'Attach it (FOR VALUES FROM the day''s UTC midnight TO the next) or drop it.';
    END IF;
    EXECUTE format('CREATE TABLE relay.%I (LIKE relay.delivery_attempts INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION)', name);
    EXECUTE format('ALTER TABLE relay.%I ADD CONSTRAINT %I PRIMARY KEY (id), ADD CONSTRAINT %I UNIQUE (delivery_id, attempt)',
                   name, name || '_pkey', name || '_delivery_attempt_key');
    EXECUTE format('ALTER TABLE relay.delivery_attempts ATTACH PARTITION relay.%I FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    RETURN format('relay.%I', name)::regclass;
END
$$;

-- prepare_attempt_partitions makes sure today (UTC) and the next days_ahead
-- days have a partition, and returns how many it created. relay calls it at
-- start and every hour; call it yourself if you record attempts without a
-- running relay.
CREATE OR REPLACE FUNCTION relay.prepare_attempt_partitions(days_ahead integer DEFAULT 3) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    d date;
    before integer;
BEGIN
    IF days_ahead IS NULL OR days_ahead < 0 OR days_ahead > 366 THEN
        RAISE EXCEPTION 'days_ahead must be between 0 and 366 (got %)', coalesce(days_ahead::text, 'NULL')
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT count(*) INTO before FROM relay.attempt_partitions();
    FOR d IN SELECT generate_series(today, today + days_ahead, interval '1 day')::date LOOP
        PERFORM relay.create_attempt_partition(d);
    END LOOP;
    RETURN (SELECT count(*) FROM relay.attempt_partitions()) - before;
END
$$;

DO $$
DECLARE
    r regclass := to_regclass('relay.delivery_attempts');
    b timestamptz;
    first_name text;
    seq_last bigint;
    seq_called boolean;
    v record;
    views text[] := '{}';
    defs text[] := '{}';
    i integer;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = r) = 'p' THEN
        RETURN; -- already partitioned (a re-run after a later step failed)
    END IF;

    -- The views reading the table, with their definitions as written now
    -- (naming relay.delivery_attempts): after the rename they would read
    -- the first partition only, so they are replaced below, unchanged.
    FOR v IN
        SELECT DISTINCT vc.oid::regclass AS view, pg_get_viewdef(vc.oid) AS def
        FROM pg_depend AS dep
        JOIN pg_rewrite AS rw ON rw.oid = dep.objid
        JOIN pg_class AS vc ON vc.oid = rw.ev_class
        WHERE dep.classid = 'pg_rewrite'::regclass AND dep.refobjid = r AND vc.oid <> r
    LOOP
        views := views || v.view::text;
        defs := defs || v.def;
    END LOOP;

    -- Locks, in the order the others take them, so that none of them can
    -- deadlock with this transaction: a query of a view locks the view
    -- before its tables, and the recorder updates relay.deliveries before
    -- it inserts attempts. Replacing a view by its own definition takes its
    -- lock and nothing else; the foreign key below needs SHARE ROW
    -- EXCLUSIVE on relay.deliveries. Fan-out and recording wait for the few
    -- milliseconds of catalog changes that follow.
    FOR i IN 1 .. coalesce(array_length(views, 1), 0) LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', views[i], defs[i]);
    END LOOP;
    LOCK TABLE relay.deliveries IN SHARE ROW EXCLUSIVE MODE;
    LOCK TABLE ONLY relay.delivery_attempts IN ACCESS EXCLUSIVE MODE;

    SELECT substring(pg_get_constraintdef(c.oid) FROM '''(.*)''')::timestamptz INTO b
    FROM pg_constraint AS c
    WHERE c.conrelid = r AND c.conname = 'delivery_attempts_first_partition_bound' AND c.convalidated;
    IF b IS NULL THEN
        RAISE EXCEPTION 'relay.delivery_attempts has no validated delivery_attempts_first_partition_bound constraint';
    END IF;
    first_name := 'delivery_attempts_until_' || to_char(b AT TIME ZONE 'UTC', 'YYYYMMDD');

    -- The identity's sequence belongs to the old table's column and would
    -- go with it when retention drops that partition: hand its position to
    -- a sequence of the parent's own.
    EXECUTE 'SELECT last_value, is_called FROM ' || pg_get_serial_sequence('relay.delivery_attempts', 'id') INTO seq_last, seq_called;
    ALTER TABLE relay.delivery_attempts ALTER COLUMN id DROP IDENTITY;
    ALTER TABLE relay.delivery_attempts RENAME TO delivery_attempts_first;
    EXECUTE format('ALTER TABLE relay.delivery_attempts_first RENAME TO %I', first_name);
    EXECUTE format('ALTER TABLE relay.%I RENAME CONSTRAINT delivery_attempts_pkey TO %I', first_name, first_name || '_pkey');
    EXECUTE format('ALTER TABLE relay.%I RENAME CONSTRAINT delivery_attempts_delivery_attempt_key TO %I', first_name, first_name || '_delivery_attempt_key');
    EXECUTE format('ALTER INDEX relay.delivery_attempts_started_at RENAME TO %I', first_name || '_started_at_idx');

    CREATE SEQUENCE relay.delivery_attempts_id_seq AS bigint;
    PERFORM setval('relay.delivery_attempts_id_seq', seq_last, seq_called);

    -- The parent has the old table's columns, defaults and CHECK
    -- constraints, whatever earlier migrations made them (LIKE), less the
    -- temporary bound, which only the first partition keeps until it is
    -- attached.
    EXECUTE format('CREATE TABLE relay.delivery_attempts (LIKE relay.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION) PARTITION BY RANGE (started_at)', first_name);
    ALTER TABLE relay.delivery_attempts DROP CONSTRAINT delivery_attempts_first_partition_bound;
    ALTER TABLE relay.delivery_attempts ALTER COLUMN id SET DEFAULT nextval('relay.delivery_attempts_id_seq');
    ALTER SEQUENCE relay.delivery_attempts_id_seq OWNED BY relay.delivery_attempts.id;
    COMMENT ON TABLE relay.delivery_attempts IS
        'One row per HTTP attempt, partitioned by UTC day of started_at (relay.attempt_partitions()); retention drops whole days.';

    -- The foreign key of the parent adopts the old table's one (same
    -- definition), so attaching does not check the rows again.
    ALTER TABLE relay.delivery_attempts ADD CONSTRAINT delivery_attempts_delivery_id_fkey
        FOREIGN KEY (delivery_id) REFERENCES relay.deliveries (id) ON DELETE CASCADE;
    -- An index of the parent, created on each new partition; the old
    -- table's index on started_at becomes its first member.
    CREATE INDEX delivery_attempts_started_at ON ONLY relay.delivery_attempts (started_at);

    EXECUTE format('ALTER TABLE relay.delivery_attempts ATTACH PARTITION relay.%I FOR VALUES FROM (MINVALUE) TO (%L)', first_name, b);
    EXECUTE format('ALTER INDEX relay.delivery_attempts_started_at ATTACH PARTITION relay.%I', first_name || '_started_at_idx');
    -- The partition bound now says what the CHECK said.
    EXECUTE format('ALTER TABLE relay.%I DROP CONSTRAINT delivery_attempts_first_partition_bound', first_name);

    FOR i IN 1 .. coalesce(array_length(views, 1), 0) LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', views[i], defs[i]);
    END LOOP;

    PERFORM relay.prepare_attempt_partitions(3);
END
$$;

------------------------------------------------------------------------------
-- Payload retention: response bodies of succeeded attempts may go sooner
-- than the rest of the history.
------------------------------------------------------------------------------
ALTER TABLE relay.settings ADD COLUMN IF NOT EXISTS payload_retention interval;
ALTER TABLE relay.settings DROP CONSTRAINT IF EXISTS "payload_retention must be null or at least 1 hour";
ALTER TABLE relay.settings ADD CONSTRAINT "payload_retention must be null or at least 1 hour"
    CHECK (payload_retention IS NULL OR payload_retention >= interval '1 hour');
COMMENT ON COLUMN relay.settings.payload_retention IS
    'Response bodies of succeeded deliveries (delivery_attempts.response_body, deliveries.last_response) are cleared once older than this; NULL keeps them for the whole retention. Event payloads are kept: redelivery needs them.';

-- maintenance_state is where relay's maintenance jobs keep their progress,
-- so that a restart does not read the history again.
CREATE TABLE IF NOT EXISTS relay.maintenance_state (
    id                      boolean PRIMARY KEY DEFAULT true
                            CONSTRAINT "relay.maintenance_state holds exactly one row" CHECK (id),
    -- Response bodies of succeeded attempts started before this are gone.
    payloads_cleared_before timestamptz
);
INSERT INTO relay.maintenance_state DEFAULT VALUES ON CONFLICT DO NOTHING;
