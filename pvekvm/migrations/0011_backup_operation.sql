-- Issue 30: a backup row names the backup_create operation that made it, so that operation's
-- operation.completed event carries the new backup's id (workers/outbox.py completion). NULL:
-- made before this release.
ALTER TABLE backups
  ADD COLUMN IF NOT EXISTS operation_id BIGINT UNSIGNED NULL AFTER note,
  ADD KEY IF NOT EXISTS ix_backups_operation (operation_id);
