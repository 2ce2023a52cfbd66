-- The web console's Jobs page (issue 18) and its attention banner count failing and
-- paused jobs on every page: without these, each count read all jobs (100,000 in the
-- benchmark). Both are partial, holding only the few failing or paused jobs, and neither
-- column changes on a run's hot path (a success keeps failure_count at 0).
CREATE INDEX jobs_failing ON jobs (failure_count, name) WHERE failure_count > 0;
CREATE INDEX jobs_paused ON jobs (name) WHERE paused;
