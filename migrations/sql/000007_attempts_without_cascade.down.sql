-- Back to version 6: attempts reference their delivery again, ON DELETE
-- CASCADE. Attempts whose delivery is gone (left by retention until their
-- day's partition is dropped) are removed first: the constraint is checked
-- on every row as it is added.
DELETE FROM relay.delivery_attempts AS a
WHERE NOT EXISTS (SELECT 1 FROM relay.deliveries AS d WHERE d.id = a.delivery_id);
ALTER TABLE relay.delivery_attempts ADD CONSTRAINT delivery_attempts_delivery_id_fkey
    FOREIGN KEY (delivery_id) REFERENCES relay.deliveries (id) ON DELETE CASCADE;
