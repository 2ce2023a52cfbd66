-- Dispatch needs two more facts per run: when it may start at the earliest (a manual run
-- at a given time, a retry after its backoff), and why a pending run is still waiting.
ALTER TABLE runs ADD COLUMN not_before TEXT;
ALTER TABLE runs ADD COLUMN pending_reason TEXT;
