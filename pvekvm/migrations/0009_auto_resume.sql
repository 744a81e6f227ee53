-- Auto-resume (issue 25): a paused operation records when it paused, since when it has been
-- paused at all (auto-resume gives up auto_resume_for_h after that), how often it was resumed by
-- itself, when it is next due (NULL: it waits for an operator) and the dependency whose fault
-- paused it (proxmox|database|mail|dns, NULL: another fault); see workers/autoresume.py.
ALTER TABLE operations
  ADD COLUMN IF NOT EXISTS paused_at DATETIME(3) NULL AFTER step_started_at,
  ADD COLUMN IF NOT EXISTS paused_since DATETIME(3) NULL AFTER paused_at,
  ADD COLUMN IF NOT EXISTS auto_resumes SMALLINT UNSIGNED NOT NULL DEFAULT 0 AFTER paused_since,
  ADD COLUMN IF NOT EXISTS auto_resume_at DATETIME(3) NULL AFTER auto_resumes,
  ADD COLUMN IF NOT EXISTS pause_dependency VARCHAR(16) NULL AFTER auto_resume_at,
  ADD KEY IF NOT EXISTS ix_operations_auto_resume (status, auto_resume_at);
