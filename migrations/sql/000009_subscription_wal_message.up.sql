-- A change of subscriptions that notifies relay_subscriptions (migration
-- 000008) also writes a logical decoding message, prefix
-- relay.subscriptions, content the transaction's id, with its
-- transaction. The notification reaches a relay after the commit, so an
-- event committed a moment after the change could still be matched by the
-- relay's snapshot from before it (sent to a subscription just disabled,
-- or to its former owner). The message is decoded by the relay that holds
-- the slot in commit order with the events: it drops its snapshot before
-- it matches any event committed after the change, and keeps a new one
-- only once that one sees the transaction (sink/dispatch/presend.go).
-- pg_logical_emit_message needs no privilege beyond a write to the WAL,
-- which the statement that fired the trigger makes anyway.
CREATE OR REPLACE FUNCTION relay.notify_subscriptions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relay_subscriptions', '');
    PERFORM pg_logical_emit_message(true, 'relay.subscriptions', pg_current_xact_id()::text);
    RETURN NULL;
END $$;
