-- Relays match fresh events to subscriptions in memory, from a snapshot of
-- those they may send to at once (sink/dispatch/presend.go), and send
-- before the delivery row is written. A change that decides whether a
-- subscription gets an event, or how it is sent (created, deleted, enabled
-- or disabled, its patterns, owner, filter, window, ordering, circuit or
-- hold, its URL, secrets, format, headers, timeout, retries or limits),
-- hand edits included, notifies relay_subscriptions, and every relay stops
-- matching from its snapshot until it has read it again. The relay's
-- frequent health updates (consecutive_failures, last_success_at, ...) do
-- not notify.
CREATE FUNCTION relay.notify_subscriptions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relay_subscriptions', '');
    RETURN NULL;
END $$;

CREATE TRIGGER subscriptions_notify_insert_delete AFTER INSERT OR DELETE ON relay.subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION relay.notify_subscriptions();

CREATE TRIGGER subscriptions_notify_truncate AFTER TRUNCATE ON relay.subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION relay.notify_subscriptions();

CREATE TRIGGER subscriptions_notify_update AFTER UPDATE ON relay.subscriptions
    FOR EACH ROW WHEN (
        OLD.updated_at IS DISTINCT FROM NEW.updated_at
        OR OLD.enabled IS DISTINCT FROM NEW.enabled
        OR OLD.event_types IS DISTINCT FROM NEW.event_types
        OR OLD.owner IS DISTINCT FROM NEW.owner
        OR OLD.window_start IS DISTINCT FROM NEW.window_start
        OR OLD.window_end IS DISTINCT FROM NEW.window_end
        OR OLD.window_time_zone IS DISTINCT FROM NEW.window_time_zone
        OR OLD.ignore_global_window IS DISTINCT FROM NEW.ignore_global_window
        OR OLD.outside_window IS DISTINCT FROM NEW.outside_window
        OR OLD.ordering IS DISTINCT FROM NEW.ordering
        OR OLD.circuit_opened_at IS DISTINCT FROM NEW.circuit_opened_at
        OR OLD.held_until IS DISTINCT FROM NEW.held_until
        OR OLD.url IS DISTINCT FROM NEW.url
        OR OLD.secret IS DISTINCT FROM NEW.secret
        OR OLD.previous_secrets IS DISTINCT FROM NEW.previous_secrets
        OR OLD.format IS DISTINCT FROM NEW.format
        OR OLD.template IS DISTINCT FROM NEW.template
        OR OLD.headers IS DISTINCT FROM NEW.headers
        OR OLD.timeout_ms IS DISTINCT FROM NEW.timeout_ms
        OR OLD.retry_schedule IS DISTINCT FROM NEW.retry_schedule
        OR OLD.max_in_flight IS DISTINCT FROM NEW.max_in_flight
        OR OLD.rate_limit IS DISTINCT FROM NEW.rate_limit
        OR OLD.rate_burst IS DISTINCT FROM NEW.rate_burst
        OR OLD.filter_is_predicate IS DISTINCT FROM NEW.filter_is_predicate
        OR OLD.filter::text IS DISTINCT FROM NEW.filter::text
    ) EXECUTE FUNCTION relay.notify_subscriptions();
