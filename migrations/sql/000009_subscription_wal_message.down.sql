CREATE OR REPLACE FUNCTION relay.notify_subscriptions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relay_subscriptions', '');
    RETURN NULL;
END $$;
