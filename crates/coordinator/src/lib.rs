//! The coordinator: holds leadership, leases due jobs from the store, dispatches their
//! runs to connected workers, watches heartbeats and deadlines, and serves the admin API.
//!
//! Only the leader schedules and dispatches (`leader/`), and changes runs after their
//! dispatch (`runs.rs`); every replica serves the admin API (`admin/`) and answers workers
//! (`gateway.rs`, the stream; `protocol.rs`, its messages), redirecting them to the leader.
//! A node's state is plain data (`node.rs`) that all of these read.
//! Architecture invariant: every lease and dispatch goes through the store fenced by the
//! leader's epoch; the coordinator keeps no state that a restart could not rebuild from
//! the store and the workers' reports.

pub mod admin;
pub mod alerts;
pub mod auth;
pub mod clock;
pub mod config;
pub mod console;
pub mod election;
pub mod etcd_election;
mod gateway;
mod leader;
pub mod metrics;
mod node;
mod protocol;
mod registry;
pub mod rest;
mod run_trace;
mod runs;
pub mod server;
mod store_wrappers;
pub mod wake;
pub mod workers;

pub use auth::Tokens;
pub use config::CoordinatorConfig;
pub use election::{Election, LeaderInfo, Leadership, LocalElection};
pub use etcd_election::EtcdElection;
pub use server::{CoordinatorError, CoordinatorHandle, start};
