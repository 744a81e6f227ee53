-- The next queued operation of a service is read with FOR UPDATE: on (service_id) alone the scan
-- locked every operation of the service, the finishing one included, and intake deadlocked with
-- the worker ending it (seen in the 300-service chaos run). (service_id, status, id) lets the
-- scan touch the queued rows only, in the order they start; it serves lookups by service too.
ALTER TABLE operations ADD KEY IF NOT EXISTS ix_operations_service_status (service_id, status, id);
ALTER TABLE operations DROP INDEX IF EXISTS ix_operations_service;
