//! The one error type of the testkit: every variant says what failed, with the command and,
//! for servers, the tail of the server's own log, so a failing test explains itself.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a throw-away service could not be found, started, reached or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A required program is not installed where we looked.
    #[error("{program} not found; searched {searched}")]
    BinaryNotFound {
        program: &'static str,
        searched: String,
    },

    /// A program could not be executed at all.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    /// A one-shot command (initdb, id, useradd …) exited unsuccessfully.
    #[error("`{command}` failed ({status}); output:\n{output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },

    /// A one-shot command hung.
    #[error("`{command}` did not finish within {timeout:?}")]
    CommandTimedOut { command: String, timeout: Duration },

    /// A server process exited before it became ready.
    #[error("{} exited during startup ({status}); {server}", server.name)]
    ServerExited {
        status: String,
        server: Box<ServerReport>,
    },

    /// A server process kept running but never answered its readiness check.
    #[error("{} was not ready within {waited:?} (last check: {last_error}); {server}", server.name)]
    NotReady {
        waited: Duration,
        last_error: String,
        server: Box<ServerReport>,
    },

    /// A graceful stop took too long; the server was killed instead.
    #[error("{server} did not stop within {waited:?} after SIG{signal}; it was killed")]
    StopTimedOut {
        server: String,
        waited: Duration,
        signal: &'static str,
    },

    /// `start_again` on a server that is still running.
    #[error("{server} is already running")]
    AlreadyRunning { server: String },

    /// An operation that needs a running server found it stopped.
    #[error("{server} is not running")]
    NotRunning { server: String },

    /// A signal could not be delivered.
    #[error("could not send SIG{signal} to {server} (pid {pid}): {source}")]
    Signal {
        server: String,
        pid: u32,
        signal: &'static str,
        #[source]
        source: io::Error,
    },

    /// File-system trouble with a temp dir or log file.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// No loopback port could be reserved.
    #[error("no free TCP port on 127.0.0.1: {0}")]
    NoFreePort(#[source] io::Error),

    /// A SQL statement or connection against a test server failed.
    #[error("postgres at {url}: {source}")]
    Postgres {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// A PostgreSQL URL that the testkit cannot derive database URLs from.
    #[error("invalid postgres URL {url:?}: {reason}; expected postgres://user@host:port/dbname")]
    InvalidUrl { url: String, reason: &'static str },

    /// A request to etcd's JSON gateway failed or answered unexpectedly.
    #[error("etcd {endpoint}{path}: {detail}")]
    EtcdRequest {
        endpoint: String,
        path: String,
        detail: String,
    },

    /// The running members of an etcd cluster did not agree on a leader in time.
    #[error(
        "etcd cluster {endpoints} has no leader that all running members follow after {waited:?}"
    )]
    NoLeader { endpoints: String, waited: Duration },

    /// Running as root needs an unprivileged OS user for PostgreSQL.
    #[error(
        "OS user {user:?} does not exist and could not be created ({detail}); \
         create it (useradd --system {user}) or run the tests as a non-root user"
    )]
    OsUser { user: String, detail: String },
}

/// What a failed server start leaves to look at (boxed in the error, which stays small).
#[derive(Debug, Clone)]
pub struct ServerReport {
    /// e.g. `postgres on 127.0.0.1:5433`.
    pub name: String,
    /// The command line it was started with.
    pub command: String,
    /// Its log file.
    pub log: PathBuf,
    /// The last lines that start wrote to the log.
    pub log_tail: String,
}

impl std::fmt::Display for ServerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command `{}`; log {}:\n{}",
            self.command,
            self.log.display(),
            self.log_tail
        )
    }
}

impl TestkitError {
    /// Whether a server failed because its port was taken between choosing and binding it;
    /// such a start is retried with fresh ports.
    pub fn is_port_conflict(&self) -> bool {
        match self {
            TestkitError::ServerExited { server, .. } | TestkitError::NotReady { server, .. } => {
                server
                    .log_tail
                    .to_ascii_lowercase()
                    .contains("address already in use")
            }
            _ => false,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
