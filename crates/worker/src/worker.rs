//! [`Worker`] and its [`WorkerBuilder`]: building and validating the configuration, and
//! the life of a worker from start to a drained shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{
    BearerToken, Config, DEFAULT_CAPACITY, DEFAULT_DRAIN_TIMEOUT, DEFAULT_KILL_GRACE,
};
use crate::context::RunContext;
use crate::error::{HandlerError, WorkerError};
use crate::handler::{FnHandler, Handler, Outcome};
use crate::handlers::StockHandler;
use crate::launcher::Launcher;
use crate::lease_deadline::LeaseDeadlineFile;
use crate::lease_guard::LeaseGuard;
use crate::run_entry::StopReason;
use crate::shared::Shared;
use crate::status::WorkerStatus;
/// How long an exiting worker waits to deliver `RunFinished` messages that are still
/// queued (a coordinator that is down cannot be waited for forever).
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A worker: connects to the coordinator, takes runs, executes them with its handlers.
///
/// ```no_run
/// use cronfleet_worker::{HandlerError, Worker};
///
/// # async fn example() -> Result<(), cronfleet_worker::WorkerError> {
/// let worker = Worker::builder()
///     .coordinators(vec!["http://127.0.0.1:50051".to_owned()])
///     .handler_fn("billing.send_reminders", |ctx| async move {
///         ctx.log("sent\n");
///         Ok::<_, HandlerError>(())
///     })
///     .build()?;
/// worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    launcher: Arc<Launcher>,
}

impl Worker {
    /// A builder with the defaults: capacity 4, node id `<host name>-<pid>`, no labels,
    /// drain timeout 30 s, kill grace 2 s.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// The worker's node id.
    pub fn node_id(&self) -> &str {
        &self.shared.config.node_id
    }

    /// A live view of the worker's state; keep it to watch the worker once `run` owns it.
    pub fn status(&self) -> WorkerStatus {
        WorkerStatus::new(self.shared.subscribe(), Arc::clone(&self.shared.metrics))
    }

    /// Runs the worker until `shutdown` completes, then drains: takes no new runs, lets
    /// the running ones finish within the drain timeout (then cancels them), reports
    /// them, and returns. Must be called within a tokio runtime.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let shared = self.shared;
        let launcher = self.launcher;
        let exit = CancellationToken::new();
        let lease_guard = tokio::spawn({
            let shared = shared.clone();
            async move { shared.guard_lease().await }
        });
        let connection = tokio::spawn(crate::connection::maintain_connection(
            launcher.clone(),
            exit.clone(),
        ));
        info!(
            worker = %shared.config.node_id,
            coordinators = %shared.config.coordinators.join(","),
            capacity = shared.config.capacity,
            handlers = %launcher.handler_names().join(","),
            "worker started"
        );

        shutdown.await;
        shared.stop_accepting();
        let status = WorkerStatus::new(shared.subscribe(), Arc::clone(&shared.metrics));
        let running = status.current().running;
        let drain_timeout = shared.config.drain_timeout;
        info!(worker = %shared.config.node_id, running, drain_timeout_ms = drain_timeout.as_millis() as u64, "draining");
        if status
            .wait_for(drain_timeout, |status| status.running == 0)
            .await
            .is_none()
        {
            warn!(worker = %shared.config.node_id, "drain timeout passed: cancelling the runs left");
            shared.stop_all(&StopReason::ShuttingDown(drain_timeout));
            // Every run task gives up on its handler within this long.
            let patience = shared.config.stop_grace();
            status
                .wait_for(patience, |status| status.running == 0)
                .await;
        }
        if status
            .wait_for(REPORT_TIMEOUT, |status| status.unreported == 0)
            .await
            .is_none()
        {
            warn!(
                worker = %shared.config.node_id,
                unreported = status.current().unreported,
                "exiting with runs not reported: no coordinator to report them to"
            );
        }
        exit.cancel();
        let _ = connection.await;
        lease_guard.abort();
        info!(worker = %shared.config.node_id, "worker stopped");
    }
}

/// Configures a [`Worker`]; errors are reported by [`WorkerBuilder::build`].
pub struct WorkerBuilder {
    coordinators: Vec<String>,
    node_id: Option<String>,
    capacity: u32,
    labels: BTreeMap<String, String>,
    handlers: Vec<(String, Arc<dyn Handler>)>,
    drain_timeout: Duration,
    kill_grace: Duration,
    version: String,
    token: Option<BearerToken>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("coordinators", &self.coordinators)
            .field("node_id", &self.node_id)
            .field("capacity", &self.capacity)
            .field("labels", &self.labels)
            .field(
                "handlers",
                &self
                    .handlers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("drain_timeout", &self.drain_timeout)
            .field("kill_grace", &self.kill_grace)
            .finish()
    }
}

impl Default for WorkerBuilder {
    fn default() -> Self {
        WorkerBuilder {
            coordinators: Vec::new(),
            node_id: None,
            capacity: DEFAULT_CAPACITY,
            labels: BTreeMap::new(),
            handlers: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            token: None,
        }
    }
}

impl WorkerBuilder {
    /// Coordinator URLs (`http://host:port`), tried in turn; any replica will do, a
    /// non-leader sends the worker to the leader.
    pub fn coordinators<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.coordinators = urls.into_iter().map(Into::into).collect();
        self
    }

    /// A name unique in the cluster and stable for the life of the process (default:
    /// `<host name>-<pid>`).
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// How many runs execute at once (default 4).
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// Labels; a job runs only on workers carrying all of its labels.
    pub fn labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// Registers `handler` under `name` (what jobs put in their `handler` field).
    pub fn handler(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.push((name.into(), Arc::new(handler)));
        self
    }

    /// Registers an async closure as a handler. It may return `Ok(())` or an
    /// [`Outcome`].
    pub fn handler_fn<F, Fut, R>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(RunContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
        R: Into<Outcome> + Send + 'static,
    {
        self.handler(name, FnHandler::new(function))
    }

    /// Registers one of the stock handlers (`shell`, `http`, `noop`, `sleep`) under its
    /// own name.
    pub fn stock_handler(mut self, stock: StockHandler) -> Self {
        self.handlers
            .push((stock.name().to_owned(), stock.handler()));
        self
    }

    /// How long a shutting-down worker lets running runs finish before cancelling them
    /// (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long a stopped shell run's processes get between SIGTERM and SIGKILL, and
    /// every handler between being told to stop and being abandoned (default [`DEFAULT_KILL_GRACE`], 2 s).
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// The bearer token to present when connecting, for coordinators started with
    /// `--worker-token` (never logged).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.trim().is_empty()).then(|| BearerToken(token.trim().to_owned()));
        self
    }

    /// The software version sent in `Register` (default: this crate's version).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<Worker, WorkerError> {
        if self.coordinators.is_empty() {
            return Err(WorkerError::NoCoordinators);
        }
        for url in &self.coordinators {
            validate_url(url)?;
        }
        if self.capacity == 0 {
            return Err(WorkerError::ZeroCapacity);
        }
        let node_id = self.node_id.unwrap_or_else(default_node_id);
        if node_id.trim().is_empty() {
            return Err(WorkerError::EmptyNodeId);
        }
        for key in self.labels.keys() {
            if key.trim().is_empty() {
                return Err(WorkerError::InvalidLabel {
                    key: key.clone(),
                    reason: "label keys must not be empty",
                });
            }
        }
        if self.handlers.is_empty() {
            return Err(WorkerError::NoHandlers);
        }
        let mut handlers = BTreeMap::new();
        for (name, handler) in self.handlers {
            if name.is_empty() || name.trim() != name || name.contains(',') {
                return Err(WorkerError::InvalidHandlerName {
                    name,
                    reason: "handler names must be non-empty, without commas or surrounding spaces",
                });
            }
            if handlers.insert(name.clone(), handler).is_some() {
                return Err(WorkerError::DuplicateHandler { name });
            }
        }
        let config = Config {
            coordinators: self.coordinators,
            node_id,
            capacity: self.capacity,
            labels: self.labels,
            drain_timeout: self.drain_timeout,
            kill_grace: self.kill_grace,
            version: self.version,
            token: self.token,
        };
        let lease_deadline = LeaseDeadlineFile::create()
            .map_err(|source| WorkerError::LeaseDeadlineFile { source })?;
        let lease_guard =
            LeaseGuard::new(lease_deadline, config.kill_grace, config.node_id.clone());
        let shared = Arc::new(Shared::new(config, lease_guard));
        let launcher = Arc::new(Launcher::new(shared.clone(), handlers));
        Ok(Worker { shared, launcher })
    }
}

fn validate_url(url: &str) -> Result<(), WorkerError> {
    let invalid = |reason: &str| WorkerError::InvalidCoordinatorUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|error: http::uri::InvalidUri| invalid(&error.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(invalid("the scheme must be http or https")),
        None => return Err(invalid("missing scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("missing host"));
    }
    Ok(())
}

/// `<host name>-<pid>`: unique on a host, recognisable in `cronfleet workers`.
fn default_node_id() -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    let host = if host.is_empty() { "worker" } else { &host };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> WorkerBuilder {
        Worker::builder()
            .coordinators(["http://127.0.0.1:50051"])
            .handler_fn("noop", |_ctx| async { Ok(()) })
    }

    #[test]
    fn defaults_build() {
        let worker = noop().build().unwrap();
        assert!(
            worker
                .node_id()
                .ends_with(&format!("-{}", std::process::id()))
        );
        assert_eq!(worker.shared.config.capacity, DEFAULT_CAPACITY);
        assert_eq!(worker.shared.config.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    }

    #[test]
    fn bad_configurations_are_named() {
        let error = |builder: WorkerBuilder| builder.build().unwrap_err().to_string();
        assert!(error(noop().coordinators(Vec::<String>::new())).contains("no coordinator URL"));
        assert!(error(noop().coordinators(["127.0.0.1:50051"])).contains("\"127.0.0.1:50051\""));
        assert!(error(noop().coordinators(["ftp://h:1"])).contains("http or https"));
        assert!(error(noop().capacity(0)).contains("capacity must be at least 1"));
        assert!(error(noop().node_id(" ")).contains("node id"));
        assert!(
            error(noop().handler_fn("noop", |_ctx| async { Ok(()) }))
                .contains("\"noop\" is registered twice")
        );
        assert!(error(Worker::builder().coordinators(["http://h:1"])).contains("no handlers"));
        let labels = BTreeMap::from([(String::new(), "x".to_owned())]);
        assert!(error(noop().labels(labels)).contains("label keys"));
    }
}
