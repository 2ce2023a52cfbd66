-- Alerts (issue 19): what a job asks of them, their state, and the outbox that delivers it.

-- Per job: alerts on or off (off: no alert is raised for the job), the dead-man's switch
-- (an alert when no run succeeded within this long) and how long a run is expected to
-- take (a run running longer is stalled).
ALTER TABLE jobs ADD COLUMN alerts_enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE jobs ADD COLUMN alert_if_no_success_ms BIGINT CHECK (alert_if_no_success_ms > 0);
ALTER TABLE jobs ADD COLUMN expected_duration_ms BIGINT CHECK (expected_duration_ms > 0);
-- The evaluator reads only the jobs with a dead-man's switch.
CREATE INDEX jobs_alert_if_no_success ON jobs (id) WHERE alert_if_no_success_ms IS NOT NULL;

-- One row per alert: raised (firing) when its condition starts to hold, resolved when it
-- stops. `subject` names what it is about within its kind (a job id, a run id, a
-- handler, a worker id); at most one alert per kind and subject is firing at a time.
CREATE TABLE alerts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        TEXT        NOT NULL CHECK (kind IN ('failed', 'auto_paused', 'missed_deadline',
                                'stalled', 'no_worker', 'worker_lost')),
    subject     TEXT        NOT NULL,
    state       TEXT        NOT NULL CHECK (state IN ('firing', 'resolved')),
    job_id      BIGINT,
    job_name    TEXT,
    run_id      BIGINT,
    labels      JSONB       NOT NULL,
    message     TEXT        NOT NULL,
    fired_at    TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    acked_at    TIMESTAMPTZ,
    acked_by    TEXT,
    -- The leader's epoch that raised it.
    epoch       BIGINT      NOT NULL
);
CREATE UNIQUE INDEX alerts_one_firing ON alerts (kind, subject) WHERE state = 'firing';

-- The outbox: one row per alert, event (firing or resolved) and channel, written in the
-- transaction that changes the alert, so a change is never lost between the store and a
-- channel; the leader delivers due rows and marks them, fenced by its epoch.
CREATE TABLE alert_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        BIGINT      NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    event           TEXT        NOT NULL CHECK (event IN ('firing', 'resolved')),
    channel         TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    delivered_at    TIMESTAMPTZ,
    abandoned_at    TIMESTAMPTZ,
    last_error      TEXT,
    CONSTRAINT alert_deliveries_once UNIQUE (alert_id, event, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
