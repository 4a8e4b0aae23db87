-- Undoes version 3. Skipped deliveries become failed (with their reason
-- kept in last_error) so that the version 1 constraints hold again.

DROP FUNCTION relay.emit(text, jsonb, text, text, jsonb);

DROP TRIGGER settings_strict_event_types ON relay.settings;
DROP FUNCTION relay.sync_strict_event_types();
DROP TRIGGER outbox_known_event_type ON relay.outbox;
DROP FUNCTION relay.check_known_event_type();
ALTER TABLE relay.settings DROP COLUMN strict_event_types;
DROP TABLE relay.event_types;

UPDATE relay.delivery_attempts SET outcome = 'failed' WHERE outcome = 'skipped';
UPDATE relay.deliveries SET status = 'failed' WHERE status = 'skipped';
ALTER TABLE relay.delivery_attempts
    DROP CONSTRAINT "outcome must be succeeded, retry, failed or skipped",
    ADD CONSTRAINT "outcome must be succeeded, retry or failed"
        CHECK (outcome IN ('succeeded', 'retry', 'failed'));
ALTER TABLE relay.deliveries
    DROP CONSTRAINT "status must be pending, delivering, succeeded, failed, skipped",
    ADD CONSTRAINT "status must be pending, delivering, succeeded or failed"
        CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed'));

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

DROP TRIGGER subscriptions_touch ON relay.subscriptions;
DROP INDEX relay.subscriptions_filtered;
ALTER TABLE relay.subscriptions
    DROP CONSTRAINT "outside_window cannot be send with a window of its own",
    DROP COLUMN outside_window,
    DROP COLUMN filter_is_predicate,
    DROP COLUMN filter;
DROP FUNCTION relay.touch_updated_at();
DROP FUNCTION relay.payload_matches(jsonb, jsonpath, boolean);
DROP FUNCTION relay.jsonpath_is_predicate(jsonpath);
