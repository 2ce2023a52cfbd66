//! Alerts: the evaluator's facts, alert changes with their outbox rows, deliveries, and the
//! admin API's list and ack ([`crate::AlertStore`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::{PostgresStore, check_epoch};
use crate::StoreError;
use crate::alerts::{
    Alert, AlertCount, AlertFacts, AlertFilter, AlertRow, AlertStore, ClaimedRow, Delivery,
    DeliveryOutcome, DeliveryRow, FailingRow, MAX_ALERT_PAGE, RaiseAlert, ResolveAlert,
    alert_columns, alerts_of, counts, facts_from, outcome_columns, sql, sql::Scope,
    with_deliveries,
};

/// Reads the rows of a fact statement with its binds.
macro_rules! read {
    ($store:expr, $sql:expr, $($bind:expr),+) => {
        sqlx::query_as(AssertSqlSafe($sql))
            $(.bind($bind))+
            .fetch_all(&$store.pool)
            .await?
    };
}

#[async_trait]
impl AlertStore for PostgresStore {
    async fn alert_candidates(
        &self,
        unserved_since: DateTime<Utc>,
        limit: u32,
    ) -> Result<AlertFacts, StoreError> {
        let limit = i64::from(limit);
        let mut failing: Vec<FailingRow> = read!(self, sql::failing(Scope::Candidates), limit);
        failing.extend(read!(self, sql::finally_lost(Scope::Candidates), limit));
        facts_from(
            failing,
            read!(self, sql::auto_paused(Scope::Candidates), limit),
            read!(self, sql::deadlines(Scope::Candidates), limit),
            read!(self, sql::running(Scope::Candidates), limit),
            read!(self, sql::UNSERVED, unserved_since, limit),
        )
    }

    async fn alert_facts_of(&self, jobs: &[i64], runs: &[i64]) -> Result<AlertFacts, StoreError> {
        let (of_jobs, of_runs) = (" AND j.id = ANY($1)", " AND r.id = ANY($1)");
        let mut facts = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if !jobs.is_empty() {
            facts.0 = read!(self, sql::failing(Scope::Of(of_jobs)), jobs);
            facts
                .0
                .extend(read!(self, sql::finally_lost(Scope::Of(of_jobs)), jobs));
            facts.1 = read!(self, sql::auto_paused(Scope::Of(of_jobs)), jobs);
            facts.2 = read!(self, sql::deadlines(Scope::Of(of_jobs)), jobs);
        }
        if !runs.is_empty() {
            facts.3 = read!(self, sql::running(Scope::Of(of_runs)), runs);
        }
        facts_from(facts.0, facts.1, facts.2, facts.3, Vec::new())
    }

    async fn firing_alerts(&self, limit: u32) -> Result<Vec<Alert>, StoreError> {
        let rows: Vec<AlertRow> = sqlx::query_as(sql::FIRING)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        alerts_of(rows)
    }

    async fn change_alerts(
        &self,
        epoch: i64,
        now: DateTime<Utc>,
        raise: &[RaiseAlert],
        resolve: &[ResolveAlert],
    ) -> Result<Vec<Alert>, StoreError> {
        let mut tx = self.pool.begin().await?;
        check_epoch(&mut tx, epoch).await?;
        let mut changed = Vec::new();
        for alert in raise {
            let c = &alert.condition;
            let row: Option<AlertRow> = sqlx::query_as(sql::RAISE)
                .bind(c.kind.as_str())
                .bind(&c.subject)
                .bind(c.job_id)
                .bind(&c.job_name)
                .bind(c.run_id)
                .bind(Json(&c.labels))
                .bind(&c.message)
                .bind(now)
                .bind(epoch)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                let raised = Alert::try_from(row)?;
                outbox(&mut tx, raised.id, "firing", &alert.channels, now).await?;
                changed.push(raised);
            }
        }
        for alert in resolve {
            let row: Option<AlertRow> = sqlx::query_as(sql::RESOLVE)
                .bind(alert.id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                let resolved = Alert::try_from(row)?;
                outbox(&mut tx, resolved.id, "resolved", &alert.channels, now).await?;
                changed.push(resolved);
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn claim_deliveries(
        &self,
        epoch: i64,
        now: DateTime<Utc>,
        hold_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut tx = self.pool.begin().await?;
        check_epoch(&mut tx, epoch).await?;
        let rows: Vec<ClaimedRow> = sqlx::query_as(concat!(
            "UPDATE alert_deliveries d SET attempts = d.attempts + 1, next_attempt_at = $2 \
             FROM alerts \
             WHERE d.id IN (SELECT id FROM alert_deliveries \
                 WHERE delivered_at IS NULL AND abandoned_at IS NULL AND next_attempt_at <= $1 \
                   AND NOT EXISTS (SELECT 1 FROM alert_deliveries f WHERE f.alert_id = alert_deliveries.alert_id \
                     AND f.channel = alert_deliveries.channel AND f.event = 'firing' \
                     AND alert_deliveries.event = 'resolved' \
                     AND f.delivered_at IS NULL AND f.abandoned_at IS NULL) \
                 ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
               AND alerts.id = d.alert_id \
             RETURNING d.id AS delivery_id, d.event, d.channel, d.attempts, d.created_at, ",
            alert_columns!()
        ))
        .bind(now)
        .bind(hold_until)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }

    async fn finish_delivery(
        &self,
        epoch: i64,
        id: i64,
        attempt: u32,
        now: DateTime<Utc>,
        outcome: &DeliveryOutcome,
    ) -> Result<(), StoreError> {
        let columns = outcome_columns(now, outcome);
        let mut tx = self.pool.begin().await?;
        check_epoch(&mut tx, epoch).await?;
        sqlx::query(sql::FINISH_DELIVERY)
            .bind(id)
            .bind(columns.next_attempt_at)
            .bind(columns.delivered_at)
            .bind(columns.abandoned_at)
            .bind(columns.error)
            .bind(i64::from(attempt))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let rows: Vec<AlertRow> = sqlx::query_as(sql::LIST)
            .bind(filter.state.map(|s| s.as_str()))
            .bind(filter.kind.map(|k| k.as_str()))
            .bind(filter.job.as_deref())
            .bind(filter.before)
            .bind(i64::from(filter.limit.min(MAX_ALERT_PAGE)))
            .fetch_all(&self.pool)
            .await?;
        let alerts = alerts_of(rows)?;
        let ids: Vec<i64> = alerts.iter().map(|a| a.id).collect();
        let deliveries: Vec<DeliveryRow> = sqlx::query_as(AssertSqlSafe(format!(
            "{}WHERE alert_id = ANY($1) ORDER BY id",
            sql::DELIVERY_COLUMNS
        )))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        with_deliveries(alerts, deliveries)
    }

    async fn ack_alert(&self, id: i64, by: &str, now: DateTime<Utc>) -> Result<Alert, StoreError> {
        let row: Option<AlertRow> = sqlx::query_as(sql::ACK)
            .bind(id)
            .bind(now)
            .bind(by)
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or(StoreError::AlertNotFound(id))?.try_into()
    }

    async fn count_alerts(&self) -> Result<Vec<AlertCount>, StoreError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as(sql::COUNT).fetch_all(&self.pool).await?;
        Ok(counts(rows))
    }

    async fn prune_alerts(
        &self,
        resolved_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let pruned = sqlx::query(sql::PRUNE)
            .bind(resolved_before)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?;
        Ok(pruned.rows_affected())
    }
}

async fn outbox(
    tx: &mut sqlx::PgConnection,
    alert_id: i64,
    event: &str,
    channels: &[String],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for channel in channels {
        sqlx::query(sql::OUTBOX)
            .bind(alert_id)
            .bind(event)
            .bind(channel)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
