DROP TRIGGER IF EXISTS subscriptions_notify_update ON relay.subscriptions;
DROP TRIGGER IF EXISTS subscriptions_notify_truncate ON relay.subscriptions;
DROP TRIGGER IF EXISTS subscriptions_notify_insert_delete ON relay.subscriptions;
DROP FUNCTION IF EXISTS relay.notify_subscriptions();
