-- Alerts (issue 19): what a job asks of them, their state, and the outbox that delivers
-- it (see the PostgreSQL migration).
ALTER TABLE jobs ADD COLUMN alerts_enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE jobs ADD COLUMN alert_if_no_success_ms BIGINT CHECK (alert_if_no_success_ms > 0);
ALTER TABLE jobs ADD COLUMN expected_duration_ms BIGINT CHECK (expected_duration_ms > 0);
CREATE INDEX jobs_alert_if_no_success ON jobs (id) WHERE alert_if_no_success_ms IS NOT NULL;

CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL CHECK (kind IN ('failed', 'auto_paused', 'missed_deadline',
                            'stalled', 'no_worker', 'worker_lost')),
    subject     TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('firing', 'resolved')),
    job_id      BIGINT,
    job_name    TEXT,
    run_id      BIGINT,
    labels      TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    fired_at    TEXT    NOT NULL,
    resolved_at TEXT,
    acked_at    TEXT,
    acked_by    TEXT,
    epoch       BIGINT  NOT NULL
);
CREATE UNIQUE INDEX alerts_one_firing ON alerts (kind, subject) WHERE state = 'firing';

CREATE TABLE alert_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id        BIGINT  NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    event           TEXT    NOT NULL CHECK (event IN ('firing', 'resolved')),
    channel         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL,
    next_attempt_at TEXT    NOT NULL,
    delivered_at    TEXT,
    abandoned_at    TEXT,
    last_error      TEXT,
    CONSTRAINT alert_deliveries_once UNIQUE (alert_id, event, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
