-- Declarative jobs (`cronfleet apply`): the manager whose apply created or adopted a job.
-- NULL for a job defined one by one (`job create`), which an apply never prunes.
ALTER TABLE jobs ADD COLUMN managed_by TEXT;
-- An apply reads its manager's jobs to find the ones to prune.
CREATE INDEX jobs_managed_by ON jobs (managed_by) WHERE managed_by IS NOT NULL;
