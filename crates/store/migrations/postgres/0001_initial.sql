-- cronfleet's PostgreSQL schema: jobs, their runs, and the fencing epoch.

-- The leader's fencing epoch (its etcd key's create revision). Leasing and dispatching
-- transactions lock this row in share mode and check it, so a deposed leader cannot
-- lease or dispatch even for one statement once a newer leader has raised it.
CREATE TABLE fencing (
    id    SMALLINT PRIMARY KEY CHECK (id = 1),
    epoch BIGINT   NOT NULL
);
INSERT INTO fencing (id, epoch) VALUES (1, 0);

CREATE TABLE jobs (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                  TEXT        NOT NULL UNIQUE,
    handler               TEXT        NOT NULL,
    args                  JSONB       NOT NULL,
    schedule_kind         TEXT        NOT NULL CHECK (schedule_kind IN ('every', 'cron', 'at')),
    schedule_expr         TEXT        NOT NULL,
    schedule_start        TIMESTAMPTZ,
    tz                    TEXT        NOT NULL,
    priority              INTEGER     NOT NULL,
    max_runs              INTEGER CHECK (max_runs > 0),
    remaining_runs        INTEGER CHECK (remaining_runs >= 0),
    timeout_ms            BIGINT CHECK (timeout_ms > 0),
    retries               INTEGER     NOT NULL CHECK (retries >= 0),
    overlap               TEXT        NOT NULL CHECK (overlap IN ('skip', 'queue', 'replace')),
    catch_up              TEXT        NOT NULL CHECK (catch_up IN ('one', 'all', 'none')),
    catch_up_window_ms    BIGINT CHECK (catch_up_window_ms > 0),
    labels                JSONB       NOT NULL,
    paused                BOOLEAN     NOT NULL,
    pause_note            TEXT,
    active                BOOLEAN     NOT NULL,
    next_run_at           TIMESTAMPTZ,
    last_run_at           TIMESTAMPTZ,
    failure_count         INTEGER     NOT NULL DEFAULT 0,
    first_failure_at      TIMESTAMPTZ,
    missed_count          BIGINT      NOT NULL DEFAULT 0,
    overlap_skipped_count BIGINT      NOT NULL DEFAULT 0,
    version               BIGINT      NOT NULL DEFAULT 1,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
) WITH (
    -- Leasing rewrites next_run_at on every slot: leave room for HOT updates and vacuum
    -- the dead index entries it leaves early (STACK.md, "due-index bloat").
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

-- Leasing reads only due jobs through this index: its cost follows the number of due
-- jobs, not the number of jobs.
CREATE INDEX jobs_due ON jobs (next_run_at) WHERE active AND NOT paused;

CREATE TABLE runs (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id              BIGINT      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    slot                TIMESTAMPTZ NOT NULL,
    attempt             INTEGER     NOT NULL CHECK (attempt >= 1),
    trigger             TEXT        NOT NULL,
    state               TEXT        NOT NULL CHECK (state IN ('pending', 'dispatched', 'running',
                            'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'skipped', 'missed')),
    slot_count          BIGINT      NOT NULL DEFAULT 1,
    last_slot           TIMESTAMPTZ,
    worker              TEXT,
    epoch               BIGINT      NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    dispatched_at       TIMESTAMPTZ,
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    deadline            TIMESTAMPTZ,
    cancel_requested_at TIMESTAMPTZ,
    error               TEXT,
    output              TEXT,
    progress_done       BIGINT,
    progress_remaining  BIGINT,
    trace_id            TEXT,
    -- Invariant 3: a run is identified by (job, slot, attempt); creating it again is a no-op.
    CONSTRAINT runs_job_slot_attempt UNIQUE (job_id, slot, attempt)
) WITH (autovacuum_vacuum_scale_factor = 0.02);

-- Invariant 1, in the database: at most one active (dispatched or running) run per job.
CREATE UNIQUE INDEX runs_one_active_per_job ON runs (job_id)
    WHERE state IN ('dispatched', 'running');
-- Open runs decide whether a job is busy; pending runs are what the dispatcher reads.
CREATE INDEX runs_open ON runs (job_id, state) WHERE state IN ('pending', 'dispatched', 'running');
CREATE INDEX runs_pending ON runs (id) WHERE state = 'pending';
CREATE INDEX runs_job_history ON runs (job_id, id DESC);
CREATE INDEX runs_state_history ON runs (state, id DESC);
