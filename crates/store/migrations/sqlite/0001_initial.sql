-- cronfleet's SQLite schema (embedded single-node mode): the PostgreSQL schema with
-- SQLite types. Times are TEXT in a fixed-width UTC format (YYYY-MM-DDTHH:MM:SS.ffffffZ),
-- so that text order is time order.

-- The leader's fencing epoch (its etcd key's create revision). Leasing and dispatching
-- transactions lock this row in share mode and check it, so a deposed leader cannot
-- lease or dispatch even for one statement once a newer leader has raised it.
CREATE TABLE fencing (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT   NOT NULL
);
INSERT INTO fencing (id, epoch) VALUES (1, 0);

CREATE TABLE jobs (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    name                  TEXT        NOT NULL UNIQUE,
    handler               TEXT        NOT NULL,
    args                  TEXT       NOT NULL,
    schedule_kind         TEXT        NOT NULL CHECK (schedule_kind IN ('every', 'cron', 'at')),
    schedule_expr         TEXT        NOT NULL,
    schedule_start        TEXT,
    tz                    TEXT        NOT NULL,
    priority              INTEGER     NOT NULL,
    max_runs              INTEGER CHECK (max_runs > 0),
    remaining_runs        INTEGER CHECK (remaining_runs >= 0),
    timeout_ms            BIGINT CHECK (timeout_ms > 0),
    retries               INTEGER     NOT NULL CHECK (retries >= 0),
    overlap               TEXT        NOT NULL CHECK (overlap IN ('skip', 'queue', 'replace')),
    catch_up              TEXT        NOT NULL CHECK (catch_up IN ('one', 'all', 'none')),
    catch_up_window_ms    BIGINT CHECK (catch_up_window_ms > 0),
    labels                TEXT       NOT NULL,
    paused                INTEGER     NOT NULL,
    pause_note            TEXT,
    active                INTEGER     NOT NULL,
    next_run_at           TEXT,
    last_run_at           TEXT,
    failure_count         INTEGER     NOT NULL DEFAULT 0,
    first_failure_at      TEXT,
    missed_count          BIGINT      NOT NULL DEFAULT 0,
    overlap_skipped_count BIGINT      NOT NULL DEFAULT 0,
    version               BIGINT      NOT NULL DEFAULT 1,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
);

-- Leasing reads only due jobs through this index: its cost follows the number of due
-- jobs, not the number of jobs.
CREATE INDEX jobs_due ON jobs (next_run_at) WHERE active = 1 AND paused = 0;

CREATE TABLE runs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id              BIGINT      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    slot                TEXT NOT NULL,
    attempt             INTEGER     NOT NULL CHECK (attempt >= 1),
    trigger             TEXT        NOT NULL,
    state               TEXT        NOT NULL CHECK (state IN ('pending', 'dispatched', 'running',
                            'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'skipped', 'missed')),
    slot_count          BIGINT      NOT NULL DEFAULT 1,
    last_slot           TEXT,
    worker              TEXT,
    epoch               BIGINT      NOT NULL,
    created_at          TEXT NOT NULL,
    dispatched_at       TEXT,
    started_at          TEXT,
    finished_at         TEXT,
    deadline            TEXT,
    cancel_requested_at TEXT,
    error               TEXT,
    output              TEXT,
    progress_done       BIGINT,
    progress_remaining  BIGINT,
    trace_id            TEXT,
    -- Invariant 3: a run is identified by (job, slot, attempt); creating it again is a no-op.
    CONSTRAINT runs_job_slot_attempt UNIQUE (job_id, slot, attempt)
);

-- Invariant 1, in the database: at most one active (dispatched or running) run per job.
CREATE UNIQUE INDEX runs_one_active_per_job ON runs (job_id)
    WHERE state IN ('dispatched', 'running');
-- Open runs decide whether a job is busy; pending runs are what the dispatcher reads.
CREATE INDEX runs_open ON runs (job_id, state) WHERE state IN ('pending', 'dispatched', 'running');
CREATE INDEX runs_pending ON runs (id) WHERE state = 'pending';
CREATE INDEX runs_job_history ON runs (job_id, id DESC);
CREATE INDEX runs_state_history ON runs (state, id DESC);
