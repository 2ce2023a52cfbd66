//! Persistent state of cronfleet: jobs, their runs, alerts and the fencing epoch, behind
//! four traits, one per consumer — [`JobStore`] for the admin API, [`LeaderStore`] for the
//! leader's loops and the worker gateway, [`Changes`] for the change feed, [`AlertStore`]
//! for the alert loops and the alert API — joined in
//! [`Store`], with two implementations: [`PostgresStore`] for clusters and [`SqliteStore`]
//! for the embedded single-node mode. Migrations are embedded and run when a store is
//! opened.
//!
//! Architecture invariant: the store decides nothing. Which slots run, which are missed,
//! which state moves are legal and what follows a run's end are decided by
//! `cronfleet-core`; this crate reads what the decisions need and writes them, atomically.
//! Both back-ends pass the same behaviour tests (`tests/behaviour.rs`).

#[macro_use]
mod rows;
mod alerts;
mod changes;
mod error;
mod job_query;
mod jobs;
mod leader;
mod lease_writes;
mod postgres;
mod sqlite;

pub use alerts::{
    Alert, AlertCount, AlertFacts, AlertFilter, AlertStore, Delivery, DeliveryOutcome,
    DeliveryStatus, MAX_ALERT_PAGE, RaiseAlert, ResolveAlert,
};
pub use changes::{ChangeFeed, Changes};
pub use cronfleet_core::finish::FinishRules;
pub use error::{StoreError, without_password};
pub use job_query::{
    DEFAULT_PAGE_SIZE, JobPage, JobQuery, JobSort, JobStatus, LabelFilter, LastRun, ListedJob,
    MAX_PAGE_SIZE,
};
pub use jobs::{InFlightRun, JobStore, ManualRun, RunBacklog, RunFilter, RunOrder};
pub use leader::{
    DispatchCursor, DispatchableRun, FinishOrder, Finished, LeaderStore, Lease, Lost,
    RequestedCancel, RunTransition, SoleLeadership, UnreadableJob,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Opens the store a URL names: `postgres://…` (or `postgresql://…`) for PostgreSQL,
/// `sqlite:PATH` (or `sqlite://PATH`) for a SQLite file, created if missing.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresStore::connect(url).await?))
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Ok(std::sync::Arc::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ))
    } else {
        Err(StoreError::InvalidUrl(error::without_password(url)))
    }
}

/// The whole storage contract, what a back-end implements. A component takes the part it
/// uses: `let jobs: Arc<dyn JobStore> = store.clone();`. No method name appears in two of
/// the parts, so calls on a `dyn Store` are never ambiguous (bring the part's trait into
/// scope to call its methods).
pub trait Store: JobStore + LeaderStore + Changes + AlertStore {}

impl<T: JobStore + LeaderStore + Changes + AlertStore + ?Sized> Store for T {}
