//! The worker's two error types: [`WorkerError`] for a worker that cannot be built (bad
//! configuration, named precisely), and [`HandlerError`] for a run that failed.

use std::fmt;

/// Why a worker could not be built. Each message names the bad value and what is valid.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("no coordinator URL given: pass at least one, e.g. http://127.0.0.1:50051")]
    NoCoordinators,

    #[error("invalid coordinator URL {url:?}: {reason} (expected e.g. http://127.0.0.1:50051)")]
    InvalidCoordinatorUrl { url: String, reason: String },

    #[error("capacity must be at least 1 (how many runs the worker executes at once), got 0")]
    ZeroCapacity,

    #[error("node id must not be empty")]
    EmptyNodeId,

    #[error("no handlers registered: a worker needs at least one to be useful")]
    NoHandlers,

    #[error("invalid handler name {name:?}: {reason}")]
    InvalidHandlerName { name: String, reason: &'static str },

    #[error("handler {name:?} is registered twice")]
    DuplicateHandler { name: String },

    #[error("unknown stock handler {name:?}: valid handlers are {valid}")]
    UnknownStockHandler { name: String, valid: String },

    #[error("no stock handlers listed: give at least one of {valid}")]
    NoStockHandlers { valid: String },

    #[error("invalid label {key:?}: {reason}")]
    InvalidLabel { key: String, reason: &'static str },

    #[error(
        "cannot create the lease deadline file for the run watchdogs in the temp dir ({dir}): {source}",
        dir = std::env::temp_dir().display()
    )]
    LeaseDeadlineFile {
        #[source]
        source: std::io::Error,
    },
}

/// Why a handler failed: the message becomes the run's `error`.
///
/// Any `std::error::Error` converts into it, so handlers can use `?`; the message keeps the
/// whole cause chain ("connect: connection refused"). Like `anyhow::Error` it does not
/// implement `std::error::Error` itself, which is what makes that blanket conversion
/// possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
}

impl HandlerError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
        }
    }

    /// The message reported as the run's error.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E> From<E> for HandlerError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            // Many errors repeat their source's text in their own; say it once.
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        HandlerError { message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_errors_keep_the_cause_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("fetch the report")]
        struct Outer(#[source] std::io::Error);

        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = HandlerError::from(Outer(inner));
        assert_eq!(error.message(), "fetch the report: refused");
    }
}
