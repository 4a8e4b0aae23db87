-- Back to version 5: relay.delivery_attempts as one plain table, with the
-- columns, CHECK constraints, keys and index it had before 000006.
--
-- Unlike the way up, this copies every attempt into a new table (and holds
-- the old one locked meanwhile): going down is for development and for
-- undoing a fresh upgrade, not for a large live history.

DROP TABLE IF EXISTS relay.maintenance_state;
ALTER TABLE relay.settings DROP CONSTRAINT IF EXISTS "payload_retention must be null or at least 1 hour";
ALTER TABLE relay.settings DROP COLUMN IF EXISTS payload_retention;

DO $$
DECLARE
    r regclass := to_regclass('relay.delivery_attempts');
    v record;
    views text[] := '{}';
    defs text[] := '{}';
    i integer;
    last_id bigint;
BEGIN
    IF r IS NULL OR (SELECT relkind FROM pg_class WHERE oid = r) <> 'p' THEN
        RETURN;
    END IF;
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

    -- The same lock order as the way up (views, deliveries, attempts).
    FOR i IN 1 .. coalesce(array_length(views, 1), 0) LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', views[i], defs[i]);
    END LOOP;
    LOCK TABLE relay.deliveries IN SHARE ROW EXCLUSIVE MODE;
    LOCK TABLE relay.delivery_attempts IN ACCESS EXCLUSIVE MODE;

    CREATE TABLE relay.delivery_attempts_unpartitioned (LIKE relay.delivery_attempts
        INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION);
    ALTER TABLE relay.delivery_attempts_unpartitioned ALTER COLUMN id DROP DEFAULT;
    ALTER TABLE relay.delivery_attempts_unpartitioned ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
    INSERT INTO relay.delivery_attempts_unpartitioned OVERRIDING SYSTEM VALUE
    SELECT * FROM relay.delivery_attempts;
    ALTER TABLE relay.delivery_attempts_unpartitioned
        ADD CONSTRAINT delivery_attempts_pkey PRIMARY KEY (id),
        ADD CONSTRAINT delivery_attempts_delivery_attempt_key UNIQUE (delivery_id, attempt),
        ADD CONSTRAINT delivery_attempts_delivery_id_fkey FOREIGN KEY (delivery_id) REFERENCES relay.deliveries (id) ON DELETE CASCADE;
    SELECT last_value INTO last_id FROM relay.delivery_attempts_id_seq;

    ALTER TABLE relay.delivery_attempts RENAME TO delivery_attempts_partitioned;
    ALTER TABLE relay.delivery_attempts_unpartitioned RENAME TO delivery_attempts;
    FOR i IN 1 .. coalesce(array_length(views, 1), 0) LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', views[i], defs[i]);
    END LOOP;
    DROP TABLE relay.delivery_attempts_partitioned;

    ALTER SEQUENCE relay.delivery_attempts_unpartitioned_id_seq RENAME TO delivery_attempts_id_seq;
    PERFORM setval('relay.delivery_attempts_id_seq', greatest(last_id, 1));
    CREATE INDEX delivery_attempts_started_at ON relay.delivery_attempts (started_at);
END
$$;

DROP FUNCTION IF EXISTS relay.prepare_attempt_partitions(integer);
DROP FUNCTION IF EXISTS relay.create_attempt_partition(date);
DROP FUNCTION IF EXISTS relay.attempt_partitions();
