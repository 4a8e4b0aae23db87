DROP VIEW relay.subscription_flow;
DROP FUNCTION relay.acquire_flow(text, bigint[], int[], int[], int[], float8[]);
DROP TABLE relay.subscription_pace;
DROP TABLE relay.flow_leases;
UPDATE relay.delivery_attempts SET outcome = 'retry' WHERE outcome = 'throttled';
ALTER TABLE relay.delivery_attempts
    DROP CONSTRAINT "outcome must be succeeded, retry, throttled, failed or skipped",
    ADD CONSTRAINT "outcome must be succeeded, retry, failed or skipped"
        CHECK (outcome IN ('succeeded', 'retry', 'failed', 'skipped')) NOT VALID;
DROP INDEX relay.deliveries_ordered;
ALTER TABLE relay.deliveries DROP COLUMN ordering_key;
ALTER TABLE relay.settings DROP COLUMN throttle_cap, DROP COLUMN circuit_probe_interval, DROP COLUMN circuit_probe_max;
DROP TRIGGER subscriptions_validate_flow_update ON relay.subscriptions;
DROP TRIGGER subscriptions_validate_flow_insert ON relay.subscriptions;
DROP FUNCTION relay.validate_subscription_flow();
ALTER TABLE relay.subscriptions
    DROP COLUMN rate_limit, DROP COLUMN rate_burst, DROP COLUMN ordering,
    DROP COLUMN held_until, DROP COLUMN hold_reason, DROP COLUMN throttled_since, DROP COLUMN throttle_streak,
    DROP COLUMN failed_attempts_in_row, DROP COLUMN circuit_opened_at, DROP COLUMN circuit_probe_interval;
