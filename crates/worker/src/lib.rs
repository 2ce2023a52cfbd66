//! The cronfleet worker: an SDK for writing workers in Rust, and the stock handlers of
//! the `cronfleet worker` binary.
//!
//! A worker dials a coordinator (any replica; it follows `NotLeader` to the leader),
//! registers its handlers, labels and capacity, heartbeats, and executes the runs it is
//! assigned, reporting start, progress, output and end over one gRPC stream
//! (`proto/cronfleet/v1/worker.proto`). It keeps no state beyond the runs in flight.
//!
//! ```no_run
//! use cronfleet_worker::handlers::StockHandler;
//! use cronfleet_worker::{HandlerError, Outcome, Worker};
//!
//! # async fn example() -> Result<(), cronfleet_worker::WorkerError> {
//! let worker = Worker::builder()
//!     .coordinators(vec!["http://10.0.0.1:50051".to_owned(), "http://10.0.0.2:50051".to_owned()])
//!     .capacity(8)
//!     .stock_handler(StockHandler::Shell)
//!     .handler_fn("reports.nightly", |ctx| async move {
//!         let pending = 1_000u64;
//!         ctx.progress(200, pending - 200);
//!         Ok::<_, HandlerError>(Outcome::with_remaining(pending - 200))
//!     })
//!     .build()?;
//! worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(())
//! # }
//! ```
//!
//! Code map: `worker.rs` (builder, life and drain), `config.rs` (settings, defaults,
//! `STOP_MARGIN`), `connection.rs` (the protocol loop), `protocol.rs` (every conversion
//! to and from the wire messages), `launcher.rs` (the handlers; admits an assign and
//! starts its run), `shared.rs` (state shared by connection, lease guard and runs; the
//! ordering rules), `lease_guard.rs` (the lease, its renewal and self-fencing, the kill-by
//! time), `run_entry.rs` (one run's record: assignment, stop reason, progress, output),
//! `run.rs` (executing one run: deadline, stop, abandon), `context.rs` (what a handler
//! sees), `lease_deadline.rs` (the lease's kill-by time for the watchdogs), `handlers/`
//! (stock handlers), `status.rs` and `metrics.rs` (what the worker shows), `health.rs`
//! (probes). Dependencies point one way: worker → connection → launcher → run → handler →
//! context → shared → (protocol, lease_guard, run_entry) → (config, status → metrics);
//! `shared.rs` imports none of `launcher`, `run`, `context`, `handler`.
//!
//! Architecture invariant (DESIGN §2, invariant 1): a run never executes past the lease
//! — renewed only by the coordinator's `LeaseRenewed`, counted from when the answered
//! heartbeat was sent — plus the stop grace it announces (`Config::stop_grace`): the
//! lease guard stops every run when the lease ends, a handler that cannot be stopped
//! takes the process down (`run.rs`), and a shell run's processes are killed by a
//! watchdog outside the worker at the kill-by time `lease_deadline.rs` publishes, so
//! even a frozen worker's scripts end on time; they never outlive the run or the worker.

mod backoff;
mod config;
mod connection;
mod context;
mod error;
mod handler;
pub mod handlers;
mod health;
mod launcher;
mod lease_deadline;
mod lease_guard;
mod lock;
mod metrics;
mod output;
mod protocol;
mod run;
mod run_entry;
mod shared;
mod status;
mod worker;

pub use async_trait::async_trait;
pub use config::{DEFAULT_CAPACITY, DEFAULT_DRAIN_TIMEOUT, DEFAULT_KILL_GRACE};
pub use context::RunContext;
pub use error::{HandlerError, WorkerError};
pub use handler::{Handler, Outcome};
pub use health::{DEFAULT_STALL_TIMEOUT, ExecutorWatchdog, health_router, serve_probes};
pub use output::DEFAULT_OUTPUT_BYTES;
pub use status::{Registration, Status, WorkerStatus};
pub use worker::{Worker, WorkerBuilder};
