//! The admin API's errors and their one mapping to gRPC statuses and HTTP statuses (the
//! REST API, `crate::rest`): an error gets its gRPC code here ([`AdminError::code`]), and
//! the code its HTTP status and REST name ([`http_status`], [`code_name`]).
//!
//! | error                                                        | gRPC code             | HTTP |
//! |--------------------------------------------------------------|-----------------------|------|
//! | [`AdminError::InvalidField`], [`InvalidJob`], `StoreError::InvalidJob`, `StoreError::Apply` (but `OwnedByAnother`) | `INVALID_ARGUMENT` | 400 |
//! | [`AdminError::InJob`]                                         | that of the job's error | |
//! | `StoreError::JobNotFound`, `RunNotFound`, `AlertNotFound`     | `NOT_FOUND`           | 404  |
//! | `StoreError::DuplicateJob`                                   | `ALREADY_EXISTS`      | 409  |
//! | `StoreError::VersionConflict`, `AlreadyQueued`, `JobBusy`, `JobActive`, `IllegalTransition`, `ApplyError::OwnedByAnother` | `FAILED_PRECONDITION` | 409 |
//! | `StoreError::Fenced`, any error with `is_transient()`, [`AdminError::Unavailable`] | `UNAVAILABLE` | 503 |
//! | anything else (`Corrupt`, other database errors, migrations) | `INTERNAL`            | 500  |
//! | a missing or wrong bearer token (`crate::auth`)              | `UNAUTHENTICATED`     | 401  |
//!
//! `FAILED_PRECONDITION` is HTTP 409 Conflict rather than 400: every such refusal is about
//! the state of a job or run (a newer version, a waiting run), not about the request.
//!
//! `AlreadyQueued` is `FAILED_PRECONDITION` rather than `ABORTED`: retrying the same call
//! at once cannot help, the job's waiting run has to start first (gRPC's rule for
//! choosing between the two). The same goes for a version conflict, where the caller must
//! read the job again before retrying.
//!
//! Messages are the errors' own Display: lowercase, no trailing period, naming the field,
//! the bad value and what would be valid.

use cronfleet_core::apply::{ApplyError, position};
use cronfleet_core::job::InvalidJob;
use cronfleet_store::StoreError;
use tonic::{Code, Status};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A request field that cannot be read; `message` comes from the parser that refused
    /// it (and already names the bad value and what would be valid).
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    InvalidJob(#[from] InvalidJob),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bad job in a list (`ApplyJobs`): its position and name, and what is wrong with it.
    #[error("{}: {error}", position(*.index, .name))]
    InJob {
        index: usize,
        name: String,
        error: Box<AdminError>,
    },
    /// Something this call needs is out of reach now (the leader, etcd); the message says
    /// what and why.
    #[error("{0}")]
    Unavailable(String),
    /// No worker of this id is connected to the leader.
    #[error("no worker {0:?} is connected to the leader; `cronfleet workers` lists those that are")]
    WorkerNotFound(String),
}

impl AdminError {
    /// A field that failed to parse, keeping the parser's message.
    pub fn field(field: &'static str, error: impl std::fmt::Display) -> AdminError {
        AdminError::InvalidField {
            field,
            message: error.to_string(),
        }
    }

    /// `error`, said of the job at `index` of a list.
    pub fn in_job(index: usize, name: &str, error: AdminError) -> AdminError {
        AdminError::InJob {
            index,
            name: name.to_owned(),
            error: Box::new(error),
        }
    }

    /// The gRPC code this error is answered with (see the module table).
    pub fn code(&self) -> Code {
        match self {
            AdminError::InvalidField { .. } | AdminError::InvalidJob(_) => Code::InvalidArgument,
            AdminError::InJob { error, .. } => error.code(),
            AdminError::Store(error) => store_code(error),
            AdminError::Unavailable(_) => Code::Unavailable,
            AdminError::WorkerNotFound(_) => Code::NotFound,
        }
    }

    /// The request field this error is about, as a request names it: `cron`, or
    /// `jobs[2].cron` for a job in a list. `None` when the error is not about one field.
    pub fn field_name(&self) -> Option<String> {
        match self {
            AdminError::InvalidField { field, .. } => Some((*field).to_owned()),
            AdminError::InvalidJob(error) | AdminError::Store(StoreError::InvalidJob(error)) => {
                Some(error.field.to_owned())
            }
            AdminError::InJob { index, error, .. } => Some(match error.field_name() {
                Some(field) => format!("jobs[{index}].{field}"),
                None => format!("jobs[{index}]"),
            }),
            AdminError::Store(StoreError::Apply(error)) => Some(match error {
                ApplyError::InvalidManager(_) => "manager".to_owned(),
                ApplyError::DuplicateName { second, .. } => format!("jobs[{second}].name"),
                ApplyError::OwnedByAnother { index, .. } => format!("jobs[{index}]"),
                ApplyError::InvalidJob { index, error, .. } => {
                    format!("jobs[{index}].{}", error.field)
                }
            }),
            _ => None,
        }
    }
}

/// The HTTP status of a gRPC code (see the module table).
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// A gRPC code's name as the REST API's errors give it: `invalid_argument`, `not_found`, …
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

fn store_code(error: &StoreError) -> Code {
    match error {
        StoreError::InvalidJob(_) => Code::InvalidArgument,
        StoreError::Apply(ApplyError::OwnedByAnother { .. }) => Code::FailedPrecondition,
        StoreError::Apply(_) => Code::InvalidArgument,
        StoreError::JobNotFound(_) | StoreError::RunNotFound(_) | StoreError::AlertNotFound(_) => {
            Code::NotFound
        }
        StoreError::DuplicateJob(_) => Code::AlreadyExists,
        StoreError::VersionConflict { .. }
        | StoreError::AlreadyQueued { .. }
        | StoreError::JobBusy { .. }
        | StoreError::JobActive { .. }
        | StoreError::IllegalTransition { .. } => Code::FailedPrecondition,
        // The admin API makes no fenced calls; should one ever be refused, another replica
        // (the leader) can serve it.
        StoreError::Fenced { .. } => Code::Unavailable,
        error if error.is_transient() => Code::Unavailable,
        _ => Code::Internal,
    }
}

impl From<AdminError> for Status {
    fn from(error: AdminError) -> Status {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_error_gets_its_code_and_message() {
        let cases: Vec<(AdminError, Code, &str)> = vec![
            (
                AdminError::field("tz", "unknown time zone \"Mars/Base\""),
                Code::InvalidArgument,
                "tz: unknown time zone \"Mars/Base\"",
            ),
            (
                InvalidJob::new("max_runs", "0", "at least 1").into(),
                Code::InvalidArgument,
                "invalid max_runs \"0\": expected at least 1",
            ),
            (
                StoreError::InvalidJob(InvalidJob::new("at", "x", "a time in the future")).into(),
                Code::InvalidArgument,
                "invalid at \"x\": expected a time in the future",
            ),
            (
                StoreError::JobNotFound("nightly".into()).into(),
                Code::NotFound,
                "job \"nightly\" not found",
            ),
            (
                StoreError::RunNotFound(7).into(),
                Code::NotFound,
                "run 7 not found",
            ),
            (
                StoreError::DuplicateJob("nightly".into()).into(),
                Code::AlreadyExists,
                "a job named \"nightly\" already exists",
            ),
            (
                StoreError::VersionConflict {
                    name: "nightly".into(),
                    expected: 1,
                    actual: 2,
                }
                .into(),
                Code::FailedPrecondition,
                "expected version 1, found 2",
            ),
            (
                StoreError::AlreadyQueued {
                    job: "nightly".into(),
                    run: 3,
                }
                .into(),
                Code::FailedPrecondition,
                "already has a waiting run (3)",
            ),
            (
                AdminError::in_job(
                    2,
                    "nightly",
                    AdminError::field("cron", "invalid cron expression \"61 * * * *\""),
                ),
                Code::InvalidArgument,
                "jobs[2] (nightly): cron: invalid cron expression \"61 * * * *\"",
            ),
            (
                StoreError::Apply(ApplyError::DuplicateName {
                    name: "nightly".into(),
                    first: 0,
                    second: 3,
                })
                .into(),
                Code::InvalidArgument,
                "jobs[3]: the name \"nightly\" is also the name of jobs[0]",
            ),
            (
                StoreError::Apply(ApplyError::OwnedByAnother {
                    index: 0,
                    name: "nightly".into(),
                    owner: "team-b".into(),
                    manager: "apply".into(),
                })
                .into(),
                Code::FailedPrecondition,
                "belongs to manager \"team-b\"",
            ),
            (
                StoreError::Database(sqlx_io_error()).into(),
                Code::Unavailable,
                "database error",
            ),
            (
                StoreError::Corrupt("bad tz".into()).into(),
                Code::Internal,
                "stored data is invalid: bad tz",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(
                status.message().contains(message),
                "{:?} lacks {message:?}",
                status.message()
            );
            assert!(!status.message().ends_with('.'), "{}", status.message());
        }
    }

    fn sqlx_io_error() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))
    }
}
