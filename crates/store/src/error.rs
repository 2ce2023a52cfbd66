//! The store's errors: what went wrong, said so that an operator or the API can act on it.

use cronfleet_core::apply::ApplyError;
use cronfleet_core::job::InvalidJob;
use cronfleet_core::run::IllegalTransition;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job \"{0}\" not found")]
    JobNotFound(String),
    #[error("run {0} not found")]
    RunNotFound(i64),
    #[error("alert {0} not found")]
    AlertNotFound(i64),
    #[error("a job named \"{0}\" already exists")]
    DuplicateJob(String),
    #[error(
        "job \"{name}\" was changed by someone else: expected version {expected}, found {actual}; \
         read it again and retry"
    )]
    VersionConflict {
        name: String,
        expected: i64,
        actual: i64,
    },
    /// A newer leader has raised the epoch: this node may no longer lease or dispatch.
    #[error(
        "fenced: epoch {ours} is not the epoch in force ({current}); this node is not the leader"
    )]
    Fenced { ours: i64, current: i64 },
    #[error("run {id}: {source}")]
    IllegalTransition {
        id: i64,
        #[source]
        source: IllegalTransition,
    },
    /// The database refused a second active run of one job (invariant 1).
    #[error("job \"{job}\" already has an active run; run {run} must wait")]
    JobBusy { job: String, run: i64 },
    /// A job cannot be deleted while a run of it is in progress.
    #[error(
        "job \"{job}\" has a run in progress (run {run}, {state}{}): cancel it first (cronfleet run cancel {run}), \
         or delete with --force, which cancels it and deletes the job once it has stopped",
        worker.as_deref().map(|worker| format!(" on worker {worker}")).unwrap_or_default()
    )]
    JobActive {
        job: String,
        run: i64,
        state: String,
        worker: Option<String>,
    },
    /// A manual run was asked for while one already waits.
    #[error("job \"{job}\" already has a waiting run ({run}); it starts when the current one ends")]
    AlreadyQueued { job: String, run: i64 },
    #[error(transparent)]
    InvalidJob(#[from] InvalidJob),
    /// An apply that cannot be carried out (a duplicate name, a job another manager owns,
    /// an invalid job in the list).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A stored value that cronfleet cannot read back (edited by hand, or a bug).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("invalid database URL \"{0}\": expected postgres://USER@HOST:PORT/DB or sqlite:PATH")]
    InvalidUrl(String),
    /// A SQLite database another process has open (one process owns a SQLite store).
    #[error(
        "the database {0} is in use by another cronfleet process (a second `cronfleet dev` on the same --data-dir?): \
         stop it, or give this one its own --data-dir"
    )]
    InUse(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// `url` with the password of its user info (`postgres://USER:PASSWORD@HOST/DB`) replaced
/// by `***`, for messages and logs.
pub fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &authority[..colon],
                &url[scheme_end + at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl StoreError {
    /// Fencing: only the epoch in force may lease or dispatch.
    pub(crate) fn check_epoch(ours: i64, current: i64) -> Result<(), StoreError> {
        if ours == current {
            Ok(())
        } else {
            Err(StoreError::Fenced { ours, current })
        }
    }

    /// Whether the error comes from the database being unreachable or restarting, so that
    /// the caller may retry the same call later.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(error) => {
                matches!(
                    error,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Protocol(_)
                ) || error
                    .as_database_error()
                    .and_then(|db| db.code())
                    // Class 57: operator intervention (shutdown, admin restart); 08: connection.
                    .is_some_and(|code| code.starts_with("57") || code.starts_with("08"))
            }
            _ => false,
        }
    }
}

/// Maps a unique-constraint violation to the domain error it means.
pub(crate) fn unique_violation(error: &sqlx::Error) -> Option<&str> {
    let db = error.as_database_error()?;
    db.is_unique_violation()
        .then(|| db.constraint().unwrap_or(db.message()))
}

/// A unique violation on insert or rename of a job means its name is taken.
pub(crate) fn duplicate_name(error: sqlx::Error, name: &str) -> StoreError {
    match unique_violation(&error) {
        Some(_) => StoreError::DuplicateJob(name.to_owned()),
        None => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_is_shown_without_its_password() {
        assert_eq!(
            without_password("postgres://cronfleet:s3cret@db:5432/cronfleet?sslmode=require"),
            "postgres://cronfleet:***@db:5432/cronfleet?sslmode=require"
        );
        assert_eq!(
            without_password("postgres://cronfleet@db/cronfleet"),
            "postgres://cronfleet@db/cronfleet"
        );
        assert_eq!(without_password("sqlite:/data/c.db"), "sqlite:/data/c.db");
        let error = StoreError::InvalidUrl(without_password("mysql://u:p4ss@h/db"));
        assert!(!error.to_string().contains("p4ss"), "{error}");
    }
}
