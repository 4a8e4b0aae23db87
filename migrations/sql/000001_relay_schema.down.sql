-- Removes everything relay created in the database. The replication slot and
-- publication are managed by `relay run`; the publication loses relay.outbox
-- with the table, and the slot is dropped with `relay slot drop` or by hand.
DROP SCHEMA IF EXISTS relay CASCADE;
