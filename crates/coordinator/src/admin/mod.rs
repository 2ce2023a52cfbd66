//! The admin API: the gRPC `JobService`, `RunService`, `ClusterService` and `AlertService` of
//! `proto/cronfleet/v1/admin.proto`, served by every coordinator, leader or not.
//!
//! Mounting it:
//!
//! ```ignore
//! let admin = AdminServices::new(store, Arc::new(SystemClock), wakeup.clone(), workers);
//! let (jobs, runs, cluster) = admin.routes();
//! tonic::transport::Server::builder()
//!     .add_service(jobs)
//!     .add_service(runs)
//!     .add_service(cluster)
//!     .add_service(worker_service)         // anything else on the same port
//!     .serve(addr)
//!     .await?;
//! ```
//!
//! A coordinator whose dispatcher sleeps on a wake-up of its own passes it with
//! [`AdminServices::with_dispatch_wakeup`], so a manual run is dispatched at once.
//! [`AdminServices::into_routes`] gives all three as one `tonic::service::Routes`
//! instead, for `Server::builder().add_routes(…)` or `.into_axum_router()`.
//!
//! Every call is an inherent method of [`AdminServices`] taking the request message and
//! answering the reply message or an [`AdminError`]: read the request ([`convert`]), call
//! the [`Store`] with the clock's `now`, wake the leader's loops when what they wait for
//! changed. The gRPC services are thin shells over these methods, and so is the REST API
//! (`crate::rest`), so both give the same answers and the same errors, mapped to a gRPC
//! code and an HTTP status in one place ([`error`]). Each call is logged at debug with its
//! method, job (or run) and outcome.

mod alerts;
mod cluster;
pub mod convert;
pub mod error;
mod jobs;
mod runs;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use cronfleet_proto::v1::alert_service_server::AlertServiceServer;
use cronfleet_proto::v1::cluster_service_server::ClusterServiceServer;
use cronfleet_proto::v1::job_service_server::JobServiceServer;
use cronfleet_proto::v1::run_service_server::RunServiceServer;
use cronfleet_store::{AlertStore, Changes, JobStore, Store};
use tokio::sync::watch;
use tonic::{Code, Response, Status};

use crate::clock::Clock;
use crate::election::{Election, LeaderInfo};
use crate::node::Role;
use crate::wake::Wakeup;
use crate::workers::WorkerDirectory;
pub use alerts::alert_to_proto;
pub use error::AdminError;
pub use jobs::{FoundJob, FoundJobs, SchedulePreview};
pub use runs::{LogEvent, ended};

/// The admin API over a store. Cheap to clone: all three services share one state.
#[derive(Clone, Debug)]
pub struct AdminServices {
    state: Arc<AdminState>,
}

#[derive(Clone, Debug)]
struct AdminState {
    /// What the admin API needs of the store: jobs and runs, and announcing changes.
    store: Arc<dyn JobStore>,
    changes: Arc<dyn Changes>,
    alerts: Arc<dyn AlertStore>,
    clock: Arc<dyn Clock>,
    /// Signalled when jobs or manual runs change, so the scheduler and dispatcher look
    /// again instead of sleeping until their previous deadline.
    wakeup: Wakeup,
    /// Also signalled for a manual run, when the dispatcher sleeps on a signal of its own
    /// (a manual run is pending at once: there is nothing for the scheduler to lease).
    dispatch_wakeup: Option<Wakeup>,
    workers: Arc<dyn WorkerDirectory>,
    /// This coordinator's place in its cluster; without it, `ClusterService` knows only
    /// this node's workers and no election.
    cluster: Option<ClusterContext>,
}

/// Who this coordinator is among its peers, for `ClusterService`.
#[derive(Clone, Debug)]
pub(crate) struct ClusterContext {
    pub election: Arc<dyn Election>,
    pub me: LeaderInfo,
    pub role: watch::Receiver<Role>,
    /// Presented when asking the leader (coordinators share their admin tokens).
    pub api_token: Option<String>,
}

impl ClusterContext {
    fn leads(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader(_))
    }
}

impl AdminServices {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        wakeup: Wakeup,
        workers: Arc<dyn WorkerDirectory>,
    ) -> AdminServices {
        AdminServices {
            state: Arc::new(AdminState {
                store: store.clone(),
                alerts: store.clone(),
                changes: store,
                clock,
                wakeup,
                dispatch_wakeup: None,
                workers,
                cluster: None,
            }),
        }
    }

    fn with_state(self, change: impl FnOnce(&mut AdminState)) -> AdminServices {
        let mut state = AdminState::clone(&self.state);
        change(&mut state);
        AdminServices {
            state: Arc::new(state),
        }
    }

    /// Wakes `dispatcher` too after a manual run (`RunJob`), for a coordinator whose
    /// dispatcher does not wait on the wake-up given to [`AdminServices::new`].
    #[must_use]
    pub fn with_dispatch_wakeup(self, dispatcher: Wakeup) -> AdminServices {
        self.with_state(|state| state.dispatch_wakeup = Some(dispatcher))
    }

    /// Answers `ClusterService` for a coordinator in a cluster: the election's view, and
    /// the leader's workers (asked from the leader when this node does not lead).
    #[must_use]
    pub(crate) fn with_cluster(self, cluster: ClusterContext) -> AdminServices {
        self.with_state(|state| state.cluster = Some(cluster))
    }

    /// The four tonic servers, to add to a `tonic::transport::Server` one by one (and
    /// to configure one by one: message limits, compression).
    pub fn routes(
        self,
    ) -> (
        JobServiceServer<AdminServices>,
        RunServiceServer<AdminServices>,
        ClusterServiceServer<AdminServices>,
        AlertServiceServer<AdminServices>,
    ) {
        (
            JobServiceServer::new(self.clone()),
            RunServiceServer::new(self.clone()),
            ClusterServiceServer::new(self.clone()),
            AlertServiceServer::new(self),
        )
    }

    /// All four services as one set of routes, for `Server::builder().add_routes(…)` or
    /// `.into_axum_router()`.
    pub fn into_routes(self) -> tonic::service::Routes {
        let (jobs, runs, cluster, alerts) = self.routes();
        tonic::service::Routes::new(jobs)
            .add_service(runs)
            .add_service(cluster)
            .add_service(alerts)
    }

    fn store(&self) -> &dyn JobStore {
        self.state.store.as_ref()
    }

    /// The clock's now (the console reads it too).
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.state.clock.now()
    }

    /// Jobs changed: this node's scheduler looks again, and so does the leader's, wherever
    /// it runs (through the store's change announcement).
    async fn wake(&self) {
        self.state.wakeup.wake();
        self.announce().await;
    }

    /// A run is pending now: whoever dispatches must look.
    async fn wake_dispatcher(&self) {
        self.state.wakeup.wake();
        if let Some(dispatcher) = &self.state.dispatch_wakeup {
            dispatcher.wake();
        }
        self.announce().await;
    }

    /// The change is committed either way; without the announcement the leader notices
    /// it at its next deadline instead of now.
    async fn announce(&self) {
        if let Err(error) = self.state.changes.announce_change().await {
            tracing::warn!(%error, "cannot announce a change to the other coordinators");
        }
    }
}

/// What a call is about, for its log line.
#[derive(Clone, Copy, Debug)]
struct Call<'a> {
    method: &'static str,
    job: Option<&'a str>,
    run: Option<i64>,
}

impl<'a> Call<'a> {
    fn job(method: &'static str, job: &'a str) -> Call<'a> {
        Call {
            method,
            job: Some(job),
            run: None,
        }
    }

    fn run(method: &'static str, run: i64) -> Call<'a> {
        Call {
            method,
            job: None,
            run: Some(run),
        }
    }

    fn plain(method: &'static str) -> Call<'a> {
        Call {
            method,
            job: None,
            run: None,
        }
    }

    /// Runs the call and logs its outcome.
    async fn answer<T>(
        self,
        call: impl Future<Output = Result<T, AdminError>>,
    ) -> Result<T, AdminError> {
        let started = Instant::now();
        let result = call.await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Call { method, job, run } = self;
        match &result {
            Ok(_) => tracing::debug!(method, job, run, elapsed_ms, "admin call"),
            Err(error) => {
                let code = error.code();
                // Bad requests are the caller's business; a failing store is the operator's.
                match code {
                    Code::Internal => {
                        tracing::error!(method, job, run, elapsed_ms, %error, "admin call failed");
                    }
                    Code::Unavailable => {
                        tracing::warn!(method, job, run, elapsed_ms, %error, "admin call failed");
                    }
                    _ => {
                        tracing::debug!(method, job, run, elapsed_ms, ?code, %error, "admin call refused");
                    }
                }
            }
        }
        result
    }
}

/// An admin call's answer over gRPC: the status of [`AdminError::code`].
fn grpc<T>(result: Result<T, AdminError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

/// A request's job name: required, and otherwise looked up as it is (an unknown or
/// malformed name is simply not found).
fn required_name(name: &str) -> Result<&str, AdminError> {
    if name.is_empty() {
        Err(AdminError::field(
            "name",
            "missing; expected the name of a job",
        ))
    } else {
        Ok(name)
    }
}
