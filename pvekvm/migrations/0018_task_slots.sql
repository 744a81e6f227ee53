-- Clone slots become task slots (steps/slots.py): the same rows also bound backups per node
-- (vzdump's global lock), so the tables are named for what they hold. schema.sql has made the
-- new tables by now; the claims in flight move over (slot rows are only lock rows). Safe to
-- run again after a partial run (DDL does not roll back).
CREATE TABLE IF NOT EXISTS clone_claims (
  operation_id BIGINT UNSIGNED NOT NULL PRIMARY KEY, slot VARCHAR(130) NOT NULL);
INSERT IGNORE INTO task_claims (operation_id, slot) SELECT operation_id, slot FROM clone_claims;
DROP TABLE IF EXISTS clone_claims;
DROP TABLE IF EXISTS clone_slots;
