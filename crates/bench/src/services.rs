//! The services a benchmark run uses — a throw-away PostgreSQL and etcd from the testkit,
//! or the ones given by URL — a fresh database per scenario, and seeding: jobs are created
//! through the store once (so a row is exactly what the store writes) and copied in SQL.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use cronfleet_core::job::JobSpec;
use cronfleet_core::schedule::Schedule;
use cronfleet_store::{JobStore, PostgresStore};
use cronfleet_testkit::{EtcdServer, PostgresOptions, PostgresServer, create_database_on};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// PostgreSQL and etcd for the whole run.
#[derive(Debug)]
pub struct Services {
    pub pg_admin_url: String,
    pub etcd_url: String,
    _postgres: Option<PostgresServer>,
    _etcd: Option<EtcdServer>,
}

impl Services {
    /// Uses the given services, or starts throw-away ones.
    pub async fn start(pg_url: Option<&str>, etcd: Option<&str>) -> anyhow::Result<Services> {
        let (pg_admin_url, postgres) = match pg_url {
            Some(url) => (url.to_owned(), None),
            None => {
                // The testkit's defaults (fsync=off, full_page_writes=off) plus room for
                // a 1M-job table in memory.
                let options = PostgresOptions::default()
                    .setting("shared_buffers", "512MB")
                    .setting("max_wal_size", "4GB")
                    // The profile of the database side: which statements the time goes to.
                    .setting("shared_preload_libraries", "pg_stat_statements")
                    .setting("pg_stat_statements.track_utility", "off");
                let server = PostgresServer::start_with(options)
                    .await
                    .context("start a throw-away PostgreSQL")?;
                (server.admin_url(), Some(server))
            }
        };
        let (etcd_url, etcd) = match etcd {
            Some(url) => (url.to_owned(), None),
            None => {
                let server = EtcdServer::start()
                    .await
                    .context("start a throw-away etcd")?;
                (server.client_url(), Some(server))
            }
        };
        Ok(Services {
            pg_admin_url,
            etcd_url,
            _postgres: postgres,
            _etcd: etcd,
        })
    }

    /// A fresh database with cronfleet's schema.
    pub async fn database(&self) -> anyhow::Result<Database> {
        let created = create_database_on(&self.pg_admin_url).await?;
        let store = PostgresStore::connect(&created.url).await?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&created.url)
            .await?;
        Ok(Database {
            url: created.url,
            store,
            pool,
        })
    }

    /// What the run reports about PostgreSQL: its version and the settings that matter.
    pub async fn postgres_facts(&self) -> anyhow::Result<serde_json::Value> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.pg_admin_url)
            .await?;
        let mut facts = serde_json::Map::new();
        for setting in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "shared_buffers",
            "max_wal_size",
        ] {
            let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                .fetch_one(&pool)
                .await?;
            facts.insert(setting.to_owned(), json!(value));
        }
        pool.close().await;
        Ok(serde_json::Value::Object(facts))
    }
}

/// One scenario's database.
#[derive(Debug)]
pub struct Database {
    pub url: String,
    pub store: PostgresStore,
    /// For the benchmark's own queries.
    pub pool: PgPool,
}

/// How many job rows one copying statement inserts.
const SEED_CHUNK: u64 = 100_000;

impl Database {
    /// Creates `count` jobs named `PREFIX-0` … like `spec` (whose name is replaced): the
    /// first through the store as if created at `created`, the rest copied from its row
    /// in SQL (only the name differs). Vacuums and analyses the table afterwards.
    pub async fn seed(
        &self,
        prefix: &str,
        count: u64,
        spec: &JobSpec,
        created: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if count == 0 {
            return Ok(());
        }
        let template = format!("{prefix}-0");
        let mut spec = spec.clone();
        spec.name = template.clone();
        self.store
            .create_job(&spec, created)
            .await
            .with_context(|| format!("create job {template}"))?;
        let columns: String = sqlx::query_scalar(
            "SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = 'jobs' \
             AND table_schema = current_schema() AND column_name NOT IN ('id', 'name')",
        )
        .fetch_one(&self.pool)
        .await?;
        let copy = format!(
            "INSERT INTO jobs (name, {columns}) SELECT $2 || '-' || g, {columns} \
             FROM jobs, generate_series($3::bigint, $4::bigint) AS g WHERE name = $1"
        );
        let mut first = 1;
        while first < count {
            let last = (first + SEED_CHUNK - 1).min(count - 1);
            sqlx::query(sqlx::AssertSqlSafe(copy.clone()))
                .bind(&template)
                .bind(prefix)
                .bind(i64::try_from(first)?)
                .bind(i64::try_from(last)?)
                .execute(&self.pool)
                .await?;
            first = last + 1;
        }
        sqlx::query("VACUUM ANALYZE jobs")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Runs one statement of the scenario's own (shaping seeded rows).
    pub async fn execute(&self, sql: &'static str) -> anyhow::Result<()> {
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    /// The fencing epoch in force.
    pub async fn epoch(&self) -> anyhow::Result<i64> {
        Ok(self.store.epoch().await?)
    }

    /// Runs in a final state.
    pub async fn ended_runs(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE state IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'lost')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Succeeded runs whose end was recorded in `[from, to)`.
    pub async fn succeeded_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE state = 'succeeded' AND finished_at >= $1 AND finished_at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Starts the statement profile afresh (`pg_stat_statements`, when the server has it
    /// loaded); returns whether it is available.
    pub async fn reset_statement_profile(&self) -> bool {
        let created = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&self.pool)
            .await;
        created.is_ok()
            && sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&self.pool)
                .await
                .is_ok()
    }

    /// The statements that took the most database time since the reset, for this database:
    /// total and mean milliseconds, calls, rows, and the start of the statement text.
    pub async fn statement_profile(&self, top: i64) -> anyhow::Result<serde_json::Value> {
        let rows: Vec<(f64, f64, i64, i64, String)> = sqlx::query_as(
            "SELECT total_exec_time, mean_exec_time, calls, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) \
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY total_exec_time DESC LIMIT $1",
        )
        .bind(top)
        .fetch_all(&self.pool)
        .await?;
        Ok(json!(rows
            .into_iter()
            .map(|(total, mean, calls, rows, query)| json!({
                "total_ms": total, "mean_ms": mean, "calls": calls, "rows": rows, "query": query,
            }))
            .collect::<Vec<_>>()))
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// A job spec for the benchmark: `handler` with `args`, on `schedule`.
pub fn spec(handler: &str, args: serde_json::Value, schedule: Schedule) -> JobSpec {
    let mut spec = JobSpec::new("template", handler, schedule);
    spec.args = args;
    spec
}

/// `every INTERVAL` from `start`, in UTC.
pub fn every(interval: &str, start: DateTime<Utc>) -> anyhow::Result<Schedule> {
    let interval = cronfleet_core::duration::Interval::parse(interval)?;
    Ok(Schedule::every(interval, start, chrono_tz::UTC))
}

/// Now plus `duration`.
pub fn after(duration: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::TimeDelta::from_std(duration).unwrap_or_default()
}
