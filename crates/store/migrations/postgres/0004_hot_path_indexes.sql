-- Indexes (and one column) for the hot path, found by the benchmark (crates/bench, issue 8).
-- Leasing takes due jobs by priority, then next_run_at. With the due index alone, every
-- lease read and sorted *all* due jobs to keep the first batch: with 100,000 due at once that was 60 ms per 500 jobs and 40 % of
-- the database's time. This index yields a batch in order without the sort; the lease
-- query is planned with its actual `now` each time, so with few jobs due the planner
-- keeps the due index (cost independent of the number of jobs).
CREATE INDEX jobs_due_by_priority ON jobs (priority, next_run_at) WHERE active AND NOT paused;
-- The dispatcher's next wake-up for delayed runs (retries, manual runs at a time): only
-- the few pending runs that have a not_before, instead of every pending run.
CREATE INDEX runs_pending_not_before ON runs (not_before)
    WHERE state = 'pending' AND not_before IS NOT NULL;
-- The dispatcher takes pending runs by their job's priority, then age. Reading the
-- priority through the jobs table meant checking and sorting every pending run on every
-- pass (180 ms per pass with 100,000 waiting). A waiting run carries its job's priority
-- (set when the run is created, changed with the job's), so this index hands the
-- dispatcher its batch in order and the per-run checks stop after one batch.
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET priority = jobs.priority FROM jobs
    WHERE jobs.id = runs.job_id AND runs.state = 'pending';
CREATE INDEX runs_dispatch_order ON runs (priority, id) WHERE state = 'pending';
