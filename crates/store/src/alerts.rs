//! The alerts' part of the store ([`AlertStore`]): the facts the leader's evaluator
//! reads, the alerts it raises and resolves (fenced, with their outbox rows in the same
//! transaction), the outbox the leader delivers, and what the admin API lists and acks.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cronfleet_core::alert::{
    AlertKind, AlertState, AutoPausedJob, Condition, DeadlineJob, FailingJob, FiringAlert,
    RunningRun, UnservedRuns,
};
use sqlx::types::Json;

use crate::StoreError;

/// An alert as stored, with its deliveries when listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub id: i64,
    pub kind: AlertKind,
    pub subject: String,
    pub state: AlertState,
    pub job_id: Option<i64>,
    pub job_name: Option<String>,
    pub run_id: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub message: String,
    pub fired_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acked_at: Option<DateTime<Utc>>,
    pub acked_by: Option<String>,
    /// The epoch of the leader that raised it.
    pub epoch: i64,
    /// Filled by [`AlertStore::list_alerts`] only.
    pub deliveries: Vec<DeliveryStatus>,
}

impl Alert {
    pub fn firing(&self) -> FiringAlert {
        FiringAlert {
            id: self.id,
            kind: self.kind,
            subject: self.subject.clone(),
        }
    }
}

/// Where one event of an alert stands on one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryStatus {
    pub channel: String,
    pub event: AlertState,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub abandoned_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// An outbox row claimed for sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub alert: Alert,
    pub event: AlertState,
    pub channel: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// How an attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed; try again at the given time.
    RetryAt(DateTime<Utc>, String),
    /// Failed for good (too many attempts, too old, or the channel is unknown here).
    Abandoned(String),
}

/// The facts the evaluator reads from the store: either candidates (each read at most the
/// limit asked for, to raise alerts from) or the facts of given jobs and runs (those of
/// the firing alerts, to keep or resolve them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertFacts {
    /// Jobs whose failure streak is on, then jobs whose last slot was given up lost (so
    /// up to twice the limit).
    pub failing: Vec<FailingJob>,
    pub auto_paused: Vec<AutoPausedJob>,
    pub deadlines: Vec<DeadlineJob>,
    pub running: Vec<RunningRun>,
    pub unserved: Vec<UnservedRuns>,
}

/// An alert to raise and the channels it goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaiseAlert {
    pub condition: Condition,
    pub channels: Vec<String>,
}

/// A firing alert to resolve and the channels its resolution goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveAlert {
    pub id: i64,
    pub channels: Vec<String>,
}

/// Which alerts to list, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    pub kind: Option<AlertKind>,
    pub job: Option<String>,
    /// Only alerts with a smaller id (the next page).
    pub before: Option<i64>,
    pub limit: u32,
}

impl Default for AlertFilter {
    fn default() -> AlertFilter {
        AlertFilter {
            state: None,
            kind: None,
            job: None,
            before: None,
            limit: 100,
        }
    }
}

/// The firing alerts of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertCount {
    pub kind: AlertKind,
    pub firing: u64,
    /// Of those, not acknowledged.
    pub unacked: u64,
}

/// The most alerts a list returns at once.
pub const MAX_ALERT_PAGE: u32 = 1000;

#[async_trait]
pub trait AlertStore: Send + Sync + std::fmt::Debug {
    /// Candidates to raise alerts from, each read at most `limit` long; runs count as
    /// unserved when pending and due since before `unserved_since`. (Times are judged in
    /// `core::alert`, against the caller's clock.)
    async fn alert_candidates(
        &self,
        unserved_since: DateTime<Utc>,
        limit: u32,
    ) -> Result<AlertFacts, StoreError>;

    /// The facts of these jobs and runs, whatever their number (those of the firing
    /// alerts): what is not returned does not hold. `unserved` is left empty.
    async fn alert_facts_of(&self, jobs: &[i64], runs: &[i64]) -> Result<AlertFacts, StoreError>;

    /// The firing alerts, oldest first, at most `limit`.
    async fn firing_alerts(&self, limit: u32) -> Result<Vec<Alert>, StoreError>;

    /// Raises and resolves alerts in one transaction fenced by `epoch`, with an outbox row
    /// per alert, event and channel. A raise whose kind and subject already fire, or a
    /// resolve of an alert no longer firing, changes nothing (and sends nothing). Returns
    /// the alerts changed.
    async fn change_alerts(
        &self,
        epoch: i64,
        now: DateTime<Utc>,
        raise: &[RaiseAlert],
        resolve: &[ResolveAlert],
    ) -> Result<Vec<Alert>, StoreError>;

    /// Claims up to `limit` outbox rows due at `now` (fenced by `epoch`): each counts an
    /// attempt and is not due again before `hold_until`, so a leader that dies while
    /// sending leaves it to its successor after that.
    async fn claim_deliveries(
        &self,
        epoch: i64,
        now: DateTime<Utc>,
        hold_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Records how attempt `attempt` went (fenced by `epoch`). Only the latest attempt of a
    /// row still undelivered counts: a late answer to an attempt whose claim ran out (and
    /// that was sent again) changes nothing.
    async fn finish_delivery(
        &self,
        epoch: i64,
        id: i64,
        attempt: u32,
        now: DateTime<Utc>,
        outcome: &DeliveryOutcome,
    ) -> Result<(), StoreError>;

    /// Alerts, newest first, with their deliveries.
    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError>;

    /// Acknowledges an alert (someone is on it): the console's banner and the firing
    /// counts leave it out; it still resolves by itself.
    async fn ack_alert(&self, id: i64, by: &str, now: DateTime<Utc>) -> Result<Alert, StoreError>;

    /// Firing alerts per kind (every kind, zero included).
    async fn count_alerts(&self) -> Result<Vec<AlertCount>, StoreError>;

    /// Deletes up to `limit` alerts resolved before `resolved_before`, with their
    /// deliveries (history retention). Returns how many.
    async fn prune_alerts(
        &self,
        resolved_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;
}

/// The columns of an [`AlertRow`], for `alerts`.
macro_rules! alert_columns {
    () => {
        "alerts.id, alerts.kind, alerts.subject, alerts.state, alerts.job_id, alerts.job_name, \
         alerts.run_id, alerts.labels, alerts.message, alerts.fired_at, alerts.resolved_at, \
         alerts.acked_at, alerts.acked_by, alerts.epoch"
    };
}
pub(crate) use alert_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct AlertRow {
    id: i64,
    kind: String,
    subject: String,
    state: String,
    job_id: Option<i64>,
    job_name: Option<String>,
    run_id: Option<i64>,
    labels: Json<BTreeMap<String, String>>,
    message: String,
    fired_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    acked_at: Option<DateTime<Utc>>,
    acked_by: Option<String>,
    epoch: i64,
}

impl TryFrom<AlertRow> for Alert {
    type Error = StoreError;

    fn try_from(row: AlertRow) -> Result<Alert, StoreError> {
        let corrupt = |e: cronfleet_core::run::UnknownName| StoreError::Corrupt(e.to_string());
        Ok(Alert {
            id: row.id,
            kind: row.kind.parse().map_err(corrupt)?,
            subject: row.subject,
            state: row.state.parse().map_err(corrupt)?,
            job_id: row.job_id,
            job_name: row.job_name,
            run_id: row.run_id,
            labels: row.labels.0,
            message: row.message,
            fired_at: row.fired_at,
            resolved_at: row.resolved_at,
            acked_at: row.acked_at,
            acked_by: row.acked_by,
            epoch: row.epoch,
            deliveries: Vec::new(),
        })
    }
}

pub(crate) fn alerts_of(rows: Vec<AlertRow>) -> Result<Vec<Alert>, StoreError> {
    rows.into_iter().map(Alert::try_from).collect()
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    pub alert_id: i64,
    channel: String,
    event: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    abandoned_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

/// Attaches delivery rows (of the listed alerts) to their alerts.
pub(crate) fn with_deliveries(
    mut alerts: Vec<Alert>,
    rows: Vec<DeliveryRow>,
) -> Result<Vec<Alert>, StoreError> {
    for row in rows {
        let event = row
            .event
            .parse()
            .map_err(|e: cronfleet_core::run::UnknownName| StoreError::Corrupt(e.to_string()))?;
        if let Some(alert) = alerts.iter_mut().find(|a| a.id == row.alert_id) {
            alert.deliveries.push(DeliveryStatus {
                channel: row.channel,
                event,
                attempts: u32::try_from(row.attempts).unwrap_or_default(),
                next_attempt_at: row.next_attempt_at,
                delivered_at: row.delivered_at,
                abandoned_at: row.abandoned_at,
                last_error: row.last_error,
            });
        }
    }
    Ok(alerts)
}

/// A claimed outbox row with its alert's columns.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimedRow {
    delivery_id: i64,
    event: String,
    channel: String,
    attempts: i32,
    created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    alert: AlertRow,
}

impl TryFrom<ClaimedRow> for Delivery {
    type Error = StoreError;

    fn try_from(row: ClaimedRow) -> Result<Delivery, StoreError> {
        Ok(Delivery {
            id: row.delivery_id,
            event: row
                .event
                .parse()
                .map_err(|e: cronfleet_core::run::UnknownName| {
                    StoreError::Corrupt(e.to_string())
                })?,
            channel: row.channel,
            attempts: u32::try_from(row.attempts).unwrap_or_default(),
            created_at: row.created_at,
            alert: row.alert.try_into()?,
        })
    }
}

/// A failing job as both back-ends select it.
#[derive(sqlx::FromRow)]
pub(crate) struct FailingRow {
    id: i64,
    name: String,
    labels: Json<BTreeMap<String, String>>,
    failure_count: i32,
    first_failure_at: Option<DateTime<Utc>>,
    last_run_id: Option<i64>,
    last_state: Option<String>,
    last_error: Option<String>,
    retry_in_flight: bool,
}

impl From<FailingRow> for FailingJob {
    fn from(row: FailingRow) -> FailingJob {
        FailingJob {
            job_id: row.id,
            name: row.name,
            labels: row.labels.0,
            failures: u32::try_from(row.failure_count).unwrap_or_default(),
            first_failure_at: row.first_failure_at,
            last_run_id: row.last_run_id,
            last_state: row.last_state,
            last_error: row.last_error,
            retry_in_flight: row.retry_in_flight,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PausedRow {
    id: i64,
    name: String,
    labels: Json<BTreeMap<String, String>>,
    pause_note: Option<String>,
}

impl From<PausedRow> for AutoPausedJob {
    fn from(row: PausedRow) -> AutoPausedJob {
        AutoPausedJob {
            job_id: row.id,
            name: row.name,
            labels: row.labels.0,
            note: row.pause_note.unwrap_or_default(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeadlineRow {
    id: i64,
    name: String,
    labels: Json<BTreeMap<String, String>>,
    alert_if_no_success_ms: i64,
    last_success_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<DeadlineRow> for DeadlineJob {
    type Error = StoreError;

    fn try_from(row: DeadlineRow) -> Result<DeadlineJob, StoreError> {
        let window = u64::try_from(row.alert_if_no_success_ms).map_err(|_| {
            StoreError::Corrupt(format!(
                "job {}: alert_if_no_success_ms {} is negative",
                row.id, row.alert_if_no_success_ms
            ))
        })?;
        Ok(DeadlineJob {
            job_id: row.id,
            name: row.name,
            labels: row.labels.0,
            window: Duration::from_millis(window),
            last_success_at: row.last_success_at,
            defined_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RunningRow {
    run_id: i64,
    job_id: i64,
    name: String,
    labels: Json<BTreeMap<String, String>>,
    started_at: DateTime<Utc>,
    expected_duration_ms: Option<i64>,
}

impl From<RunningRow> for RunningRun {
    fn from(row: RunningRow) -> RunningRun {
        RunningRun {
            run_id: row.run_id,
            job_id: row.job_id,
            job_name: row.name,
            labels: row.labels.0,
            started_at: row.started_at,
            expected_duration: row
                .expected_duration_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UnservedRow {
    handler: String,
    labels: Json<BTreeMap<String, String>>,
    runs: i64,
    oldest_due_at: DateTime<Utc>,
}

impl From<UnservedRow> for UnservedRuns {
    fn from(row: UnservedRow) -> UnservedRuns {
        UnservedRuns {
            handler: row.handler,
            labels: row.labels.0,
            runs: u64::try_from(row.runs).unwrap_or_default(),
            oldest_due_at: row.oldest_due_at,
        }
    }
}

/// The facts from the rows both back-ends read.
pub(crate) fn facts_from(
    failing: Vec<FailingRow>,
    auto_paused: Vec<PausedRow>,
    deadlines: Vec<DeadlineRow>,
    running: Vec<RunningRow>,
    unserved: Vec<UnservedRow>,
) -> Result<AlertFacts, StoreError> {
    Ok(AlertFacts {
        failing: failing.into_iter().map(Into::into).collect(),
        auto_paused: auto_paused.into_iter().map(Into::into).collect(),
        deadlines: deadlines
            .into_iter()
            .map(DeadlineJob::try_from)
            .collect::<Result<_, _>>()?,
        running: running.into_iter().map(Into::into).collect(),
        unserved: unserved.into_iter().map(Into::into).collect(),
    })
}

/// Every kind with its counts, from the `(kind, firing, unacked)` rows of both back-ends.
pub(crate) fn counts(rows: Vec<(String, i64, i64)>) -> Vec<AlertCount> {
    AlertKind::ALL
        .into_iter()
        .map(|kind| {
            let row = rows.iter().find(|(k, _, _)| k == kind.as_str());
            let count = |n: i64| u64::try_from(n).unwrap_or_default();
            AlertCount {
                kind,
                firing: row.map_or(0, |r| count(r.1)),
                unacked: row.map_or(0, |r| count(r.2)),
            }
        })
        .collect()
}

/// An outbox row's columns after an attempt.
pub(crate) struct OutcomeColumns<'a> {
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub abandoned_at: Option<DateTime<Utc>>,
    pub error: Option<&'a str>,
}

pub(crate) fn outcome_columns(now: DateTime<Utc>, outcome: &DeliveryOutcome) -> OutcomeColumns<'_> {
    let (next_attempt_at, delivered_at, abandoned_at, error) = match outcome {
        DeliveryOutcome::Delivered => (None, Some(now), None, None),
        DeliveryOutcome::RetryAt(at, error) => (Some(*at), None, None, Some(error.as_str())),
        DeliveryOutcome::Abandoned(error) => (None, None, Some(now), Some(error.as_str())),
    };
    OutcomeColumns {
        next_attempt_at,
        delivered_at,
        abandoned_at,
        error,
    }
}

/// The statements both back-ends run, written with PostgreSQL's `$N` placeholders; SQLite
/// runs them through [`sqlite_placeholders`].
pub(crate) mod sql {
    /// Whether a retry (or a lost run's rerun) of the job is still to come.
    const RETRY_IN_FLIGHT: &str = "EXISTS (SELECT 1 FROM runs p WHERE p.job_id = j.id \
           AND p.state IN ('pending', 'dispatched', 'running') AND p.attempt > 1) AS retry_in_flight";

    /// Which rows a fact statement reads.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Scope<'a> {
        /// Rows with no alert of their kind firing yet, in id order, at most `$1`: each
        /// pass raises the next ones.
        Candidates,
        /// The rows a back-end's condition names (`AND j.id IN (…)` on `$1`), whatever
        /// their number: the subjects of the firing alerts.
        Of(&'a str),
    }

    impl Scope<'_> {
        /// The end of a statement over `alias` (`j` for jobs, `r` for runs) about alerts of
        /// `kind` whose subject is `prefix:` and the row's id (`core::alert`'s subjects).
        fn tail(self, kind: &str, prefix: &str, alias: &str) -> String {
            match self {
                Scope::Candidates => format!(
                    " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.state = 'firing' \
                       AND a.kind = '{kind}' AND a.subject = '{prefix}:' || {alias}.id) \
                     ORDER BY {alias}.id LIMIT $1"
                ),
                Scope::Of(condition) => condition.to_owned(),
            }
        }
    }

    /// Jobs whose failure streak is on, with their last failed run and whether a retry is
    /// to come.
    pub fn failing(scope: Scope) -> String {
        let scope = scope.tail("failed", "job", "j");
        format!(
            "SELECT j.id, j.name, j.labels, j.failure_count, j.first_failure_at, \
               (SELECT r.id FROM runs r WHERE r.job_id = j.id \
                  AND r.state IN ('failed', 'timed_out', 'lost') ORDER BY r.id DESC LIMIT 1) AS last_run_id, \
               (SELECT r.state FROM runs r WHERE r.job_id = j.id \
                  AND r.state IN ('failed', 'timed_out', 'lost') ORDER BY r.id DESC LIMIT 1) AS last_state, \
               (SELECT r.error FROM runs r WHERE r.job_id = j.id \
                  AND r.state IN ('failed', 'timed_out', 'lost') ORDER BY r.id DESC LIMIT 1) AS last_error, \
               {RETRY_IN_FLIGHT} \
             FROM jobs j WHERE j.failure_count > 0 AND j.alerts_enabled{scope}"
        )
    }

    /// A lost run does not extend the failure streak (it says nothing about the job), yet
    /// a slot given up after its last loss is a failure to tell: jobs whose latest ended
    /// run is lost. As candidates, only the jobs of the newest `$1` lost runs are looked
    /// at (an alert is resolved from a read of its own job, so a cut here only delays
    /// raising one).
    pub fn finally_lost(scope: Scope) -> String {
        let jobs = match scope {
            Scope::Candidates => {
                "(SELECT DISTINCT job_id FROM \
                   (SELECT job_id FROM runs WHERE state = 'lost' ORDER BY id DESC LIMIT $1) newest) lost \
                 JOIN jobs j ON j.id = lost.job_id"
            }
            Scope::Of(_) => "jobs j",
        };
        let scope = scope.tail("failed", "job", "j");
        format!(
            "SELECT j.id, j.name, j.labels, j.failure_count, j.first_failure_at, \
               r.id AS last_run_id, r.state AS last_state, r.error AS last_error, {RETRY_IN_FLIGHT} \
             FROM {jobs} \
             JOIN runs r ON r.id = (SELECT e.id FROM runs e WHERE e.job_id = j.id \
                  AND e.state IN ('succeeded', 'failed', 'timed_out', 'lost', 'cancelled') \
                  ORDER BY e.id DESC LIMIT 1) \
             WHERE r.state = 'lost' AND j.failure_count = 0 AND j.alerts_enabled{scope}"
        )
    }

    /// Jobs the failure-streak rule paused.
    pub fn auto_paused(scope: Scope) -> String {
        let scope = scope.tail("auto_paused", "job", "j");
        format!(
            "SELECT j.id, j.name, j.labels, j.pause_note FROM jobs j \
             WHERE j.paused AND j.alerts_enabled AND {}{scope}",
            crate::job_query::auto_pause_note_sql()
        )
    }

    /// Jobs with a dead-man's switch, running (not paused, not finished), with their last
    /// success and their last change.
    pub fn deadlines(scope: Scope) -> String {
        let scope = scope.tail("missed_deadline", "job", "j");
        format!(
            "SELECT j.id, j.name, j.labels, j.alert_if_no_success_ms, \
               (SELECT MAX(r.finished_at) FROM runs r WHERE r.job_id = j.id AND r.state = 'succeeded') \
                 AS last_success_at, \
               j.updated_at \
             FROM jobs j \
             WHERE j.alert_if_no_success_ms IS NOT NULL AND j.alerts_enabled AND j.active \
               AND NOT j.paused{scope}"
        )
    }

    /// Running runs; `scope` filters on `r.id`.
    pub fn running(scope: Scope) -> String {
        let scope = scope.tail("stalled", "run", "r");
        format!(
            "SELECT r.id AS run_id, j.id AS job_id, j.name, j.labels, r.started_at, \
               j.expected_duration_ms \
             FROM runs r JOIN jobs j ON j.id = r.job_id \
             WHERE r.state = 'running' AND r.started_at IS NOT NULL AND j.alerts_enabled{scope}"
        )
    }

    /// Pending runs due (created, and not held back) before `$1`, per handler and labels.
    pub const UNSERVED: &str = "SELECT j.handler, j.labels, COUNT(*) AS runs, \
           MIN(COALESCE(r.not_before, r.created_at)) AS oldest_due_at \
         FROM runs r JOIN jobs j ON j.id = r.job_id \
         WHERE r.state = 'pending' AND COALESCE(r.not_before, r.created_at) < $1 \
         GROUP BY j.handler, j.labels ORDER BY j.handler LIMIT $2";

    pub const FIRING: &str = concat!(
        "SELECT ",
        alert_columns!(),
        " FROM alerts WHERE state = 'firing' ORDER BY id LIMIT $1"
    );

    pub const RAISE: &str = concat!(
        "INSERT INTO alerts (kind, subject, state, job_id, job_name, run_id, labels, message, \
           fired_at, epoch) \
         VALUES ($1, $2, 'firing', $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (kind, subject) WHERE state = 'firing' DO NOTHING RETURNING ",
        alert_columns!()
    );

    pub const RESOLVE: &str = concat!(
        "UPDATE alerts SET state = 'resolved', resolved_at = $2 WHERE id = $1 AND state = 'firing' \
         RETURNING ",
        alert_columns!()
    );

    pub const OUTBOX: &str = "INSERT INTO alert_deliveries \
           (alert_id, event, channel, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (alert_id, event, channel) DO NOTHING";

    pub const FINISH_DELIVERY: &str = "UPDATE alert_deliveries SET \
           next_attempt_at = COALESCE($2, next_attempt_at), delivered_at = $3, abandoned_at = $4, \
           last_error = COALESCE($5, last_error) \
         WHERE id = $1 AND attempts = $6 AND delivered_at IS NULL AND abandoned_at IS NULL";

    pub const LIST: &str = concat!(
        "SELECT ",
        alert_columns!(),
        " FROM alerts \
         WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) AND (CAST($2 AS TEXT) IS NULL OR kind = $2) \
           AND (CAST($3 AS TEXT) IS NULL OR job_name = $3) AND (CAST($4 AS BIGINT) IS NULL OR id < $4) \
         ORDER BY id DESC LIMIT $5"
    );

    pub const DELIVERY_COLUMNS: &str = "SELECT alert_id, channel, event, attempts, next_attempt_at, \
           delivered_at, abandoned_at, last_error FROM alert_deliveries ";

    pub const ACK: &str = concat!(
        "UPDATE alerts SET acked_at = $2, acked_by = $3 WHERE id = $1 RETURNING ",
        alert_columns!()
    );

    pub const PRUNE: &str = "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts \
           WHERE state = 'resolved' AND resolved_at < $1 ORDER BY id LIMIT $2)";

    pub const COUNT: &str = "SELECT kind, COUNT(*), \
           SUM(CASE WHEN acked_at IS NULL THEN 1 ELSE 0 END) \
         FROM alerts WHERE state = 'firing' GROUP BY kind";
}

/// A statement of [`sql`] for SQLite: `$N` placeholders become `?N`.
pub(crate) fn sqlite_placeholders(statement: &str) -> sqlx::AssertSqlSafe<String> {
    // Only ever applied to the statements above, which hold no `$` but placeholders.
    let mut out = String::with_capacity(statement.len());
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    sqlx::AssertSqlSafe(out)
}
