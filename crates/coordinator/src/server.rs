//! Starting and stopping a coordinator: its gRPC services (worker protocol and admin
//! API), its HTTP health endpoints, and the leadership loop that runs the leader's loops
//! for as long as each term lasts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use cronfleet_proto::v1::worker_service_server::WorkerServiceServer;
use cronfleet_store::{Changes, JobStore, LeaderStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tracing::{debug, error, info, warn};

use crate::admin::{AdminServices, ClusterContext};
use crate::alerts::AlertSender;
use crate::clock::Clock;
use crate::config::CoordinatorConfig;
use crate::console::{self, ConsoleSettings};
use crate::election::Election;
use crate::gateway::WorkerGateway;
use crate::leader;
use crate::metrics::{self, CoordinatorMetrics, LeadershipChange};
use crate::node::{Node, Role, Term};
use crate::protocol;
use crate::registry::Registry;
use crate::rest;
use crate::run_trace::RunTraces;
use crate::store_wrappers::InstrumentedStore;
use crate::wake::Wakeup;
use crate::workers::WorkerDirectory;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("grpc server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("http server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// A running coordinator.
#[derive(Debug)]
pub struct CoordinatorHandle {
    /// Where the gRPC services listen (the port is the real one when 0 was asked for).
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: CancellationToken,
    role: watch::Receiver<Role>,
    tasks: JoinSet<Result<(), CoordinatorError>>,
}

impl CoordinatorHandle {
    /// Whether this coordinator leads now, and under which epoch.
    pub fn leader_epoch(&self) -> Option<i64> {
        self.role.borrow().term().map(|term| term.epoch)
    }

    /// Waits until this coordinator leads (its epoch raised, its loops started) and
    /// returns the epoch; `None` if it stopped first.
    pub async fn until_leading(&self) -> Option<i64> {
        let mut role = self.role.clone();
        let leading = role
            .wait_for(|role| matches!(role, Role::Leader(_)))
            .await
            .ok()?;
        leading.term().map(|term| term.epoch)
    }

    /// Asks the coordinator to stop: it stops dispatching, tells its workers to drain
    /// and reconnect, and resigns leadership.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the coordinator has stopped (after [`CoordinatorHandle::shutdown`], or a
    /// fatal error).
    pub async fn wait(mut self) -> Result<(), CoordinatorError> {
        let mut outcome = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Err(error)) if outcome.is_ok() => {
                    self.shutdown.cancel();
                    outcome = Err(error);
                }
                Err(panic) => error!(%panic, "a coordinator task panicked"),
                _ => {}
            }
        }
        outcome
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, CoordinatorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CoordinatorError::Bind { addr, source })
}

/// Starts a coordinator. It serves until [`CoordinatorHandle::shutdown`].
pub async fn start(
    config: CoordinatorConfig,
    store: Arc<dyn Store>,
    election: Arc<dyn Election>,
    clock: Arc<dyn Clock>,
) -> Result<CoordinatorHandle, CoordinatorError> {
    config.validate().map_err(CoordinatorError::Config)?;
    let grpc_listener = bind(config.grpc_addr).await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| CoordinatorError::Bind {
            addr: config.grpc_addr,
            source,
        })?;
    let http_listener = bind(config.http_addr).await?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| CoordinatorError::Bind {
            addr: config.http_addr,
            source,
        })?;

    // The real address, should the configured port have been 0.
    let config = CoordinatorConfig {
        grpc_addr,
        ..config
    };
    let (role, role_receiver) = watch::channel(Role::Follower);
    let registry = Arc::new(Registry::default());
    let scheduler_wake = Wakeup::default();
    let metrics = CoordinatorMetrics::new();
    let leader_store: Arc<dyn LeaderStore> = store.clone();
    let console_url = config.alerts.console_url.clone().unwrap_or_else(|| {
        if http_addr.ip().is_unspecified() && !config.alerts.channels.is_empty() {
            warn!(
                %http_addr,
                "alerts link to the console at http://{http_addr}, an address nobody can open: set --console-url"
            );
        }
        format!("http://{http_addr}")
    });
    let alert_sender = AlertSender::new(config.alerts.smtp.as_ref(), &console_url)
        .map_err(CoordinatorError::Config)?;
    let node = Arc::new(Node {
        config,
        store: Arc::new(InstrumentedStore::new(leader_store, Arc::clone(&metrics))),
        clock: Arc::clone(&clock),
        election,
        registry: Arc::clone(&registry),
        scheduler_wake: scheduler_wake.clone(),
        dispatcher_wake: Wakeup::default(),
        role,
        traces: RunTraces::default(),
        metrics,
        alerts: store.clone(),
        alert_sender,
        delivery_wake: Wakeup::default(),
    });
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let directory: Arc<dyn WorkerDirectory> = registry;
    let admin = AdminServices::new(Arc::clone(&store), clock, scheduler_wake, directory)
        .with_dispatch_wakeup(node.dispatcher_wake.clone())
        .with_cluster(ClusterContext {
            election: Arc::clone(&node.election),
            me: node.config.me(),
            role: role_receiver.clone(),
            api_token: node.config.api_tokens.first().map(str::to_owned),
        });
    let rest_api = rest::router(admin.clone(), node.config.api_tokens.clone());
    let console = console::router(
        admin.clone(),
        node.config.api_tokens.clone(),
        ConsoleSettings {
            trace_url: node.config.jaeger_url.clone(),
        },
    );
    // Without tokens, a page elsewhere must not drive the console or the API: through a
    // name of its own that resolves to this machine (DNS rebinding), or by posting to
    // localhost from its own origin.
    let web = console.merge(rest_api);
    let web = if node.config.api_tokens.is_empty() && !node.config.insecure_open_api {
        console::only_local_requests(web)
    } else {
        web
    };
    let (jobs, runs, cluster, alerts) = admin.routes();
    let admin_auth = node.config.api_tokens.interceptor("--api-token");
    let gateway = WorkerServiceServer::new(WorkerGateway::new(Arc::clone(&node)));
    let grpc = tonic::transport::Server::builder()
        // Admin calls continue their caller's trace (the worker stream is left out).
        .trace_fn(cronfleet_telemetry::grpc_request_span)
        .add_service(InterceptedService::new(
            gateway,
            node.config.worker_tokens.interceptor("--worker-token"),
        ))
        .add_service(InterceptedService::new(jobs, admin_auth.clone()))
        .add_service(InterceptedService::new(runs, admin_auth.clone()))
        .add_service(InterceptedService::new(cluster, admin_auth.clone()))
        .add_service(InterceptedService::new(alerts, admin_auth))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(grpc_listener),
            shutdown.clone().cancelled_owned(),
        );
    tasks.spawn(async move { grpc.await.map_err(CoordinatorError::from) });

    let http = health_routes(Arc::clone(&node), store.clone()).merge(web);
    let http_shutdown = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(http_listener, http)
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await
            .map_err(CoordinatorError::Http)
    });

    tasks.spawn(relay_changes(Arc::clone(&node), store, shutdown.clone()));
    tasks.spawn(lead_while_elected(Arc::clone(&node), shutdown.clone()));
    info!(node = %node.config.node_id, %grpc_addr, %http_addr, "coordinator started");
    Ok(CoordinatorHandle {
        grpc_addr,
        http_addr,
        shutdown,
        role: role_receiver,
        tasks,
    })
}

/// `/healthz`: the process serves. `/readyz`: it can reach its store. `/metrics`:
/// Prometheus metrics.
fn health_routes(node: Arc<Node>, jobs: Arc<dyn JobStore>) -> Router {
    let scraped = Arc::clone(&node);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let node = Arc::clone(&scraped);
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                        scrape(&node).await,
                    )
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let jobs = Arc::clone(&jobs);
                async move {
                    match jobs.epoch().await {
                        Ok(_) => (StatusCode::OK, "ready".to_owned()),
                        Err(error) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("store unavailable: {error}"),
                        ),
                    }
                }
            }),
        )
}

/// Wakes this node's scheduler and dispatcher whenever any coordinator announces a change
/// through the store (a job created or a run triggered on a replica that does not lead),
/// for as long as the coordinator runs. A store without announcements ends it at once.
async fn relay_changes(
    node: Arc<Node>,
    changes: Arc<dyn Changes>,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    const REOPEN_PAUSE: Duration = Duration::from_secs(1);
    let wake = || {
        node.scheduler_wake.wake();
        node.dispatcher_wake.wake();
    };
    loop {
        match changes.change_feed().await {
            Ok(None) => return Ok(()),
            Ok(Some(mut feed)) => {
                // Announcements made while there was no feed are gone: look once.
                wake();
                loop {
                    let changed = tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        changed = feed.changed() => changed,
                    };
                    match changed {
                        Ok(()) => wake(),
                        Err(error) => {
                            warn!(%error, "lost the store's change announcements; reopening");
                            break;
                        }
                    }
                }
            }
            Err(error) => warn!(%error, "cannot listen to the store's change announcements"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(REOPEN_PAUSE) => {}
        }
    }
}

/// The metrics text, with what is measured at scrape time brought up to date: the
/// connected workers and, on the leader, the backlog.
async fn scrape(node: &Node) -> String {
    let now = node.clock.now();
    node.metrics.set_workers(&node.registry.workers(), now);
    if matches!(*node.role.borrow(), Role::Leader(_)) {
        match node.store.count_backlog(now).await {
            Ok(backlog) => node.metrics.set_backlog(backlog),
            Err(error) => debug!(%error, "cannot count the backlog for this scrape"),
        }
    } else {
        node.metrics.set_backlog(0);
    }
    node.metrics.render()
}

/// Campaigns, leads for as long as the term lasts, steps down, campaigns again — until
/// shutdown.
async fn lead_while_elected(
    node: Arc<Node>,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    loop {
        let leadership = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            won = node.election.campaign() => won,
        };
        let leadership = match leadership {
            Ok(leadership) => leadership,
            Err(error) => {
                warn!(%error, "campaign failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Raise the epoch before doing anything: from now on the store refuses every
        // statement of an earlier leader.
        match node.store.raise_epoch(leadership.epoch).await {
            Ok(current) if current == leadership.epoch => {}
            Ok(current) => {
                warn!(
                    ours = leadership.epoch,
                    current, "a newer leader already raised the epoch"
                );
                let _ = node.election.resign(&leadership).await;
                continue;
            }
            Err(error) => {
                warn!(%error, "cannot raise the epoch; giving the leadership back");
                let _ = node.election.resign(&leadership).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let term = Term {
            epoch: leadership.epoch,
            since: node.clock.now(),
            ended: leadership.lost.clone(),
        };
        info!(epoch = term.epoch, node = %node.config.node_id, "leading");
        node.metrics
            .leadership(LeadershipChange::Acquired, Some(term.epoch));
        node.role.send_replace(Role::Leader(term.clone()));
        let mut loops = JoinSet::new();
        leader::spawn_loops(&node, &term, &mut loops);

        let shutting_down = tokio::select! {
            () = shutdown.cancelled() => true,
            () = term.ended.cancelled() => false,
        };
        // Stop leasing and dispatching first, then let the workers go.
        term.ended.cancel();
        node.role.send_replace(Role::Follower);
        while loops.join_next().await.is_some() {}
        node.traces.clear();
        node.metrics.leadership(
            if shutting_down {
                LeadershipChange::Resigned
            } else {
                LeadershipChange::Lost
            },
            None,
        );
        drain_workers(
            &node,
            if shutting_down {
                "coordinator shutting down"
            } else {
                "leadership lost"
            },
        );
        if shutting_down {
            if let Err(error) = node.election.resign(&leadership).await {
                warn!(%error, "resigning failed");
            }
            info!(epoch = term.epoch, "stopped leading: shutdown");
            return Ok(());
        }
        warn!(epoch = term.epoch, "stopped leading: leadership lost");
    }
}

/// Tells every worker to take nothing new from this node, then ends their streams so they
/// reconnect (to the next leader).
fn drain_workers(node: &Node, reason: &str) {
    for sender in node.registry.disconnect_all() {
        let _ = sender.try_send(protocol::drain(reason));
    }
}
