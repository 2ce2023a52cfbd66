//! Throw-away real services for cronfleet's tests: PostgreSQL servers and etcd clusters
//! started from the machine's binaries on free loopback ports, in temp dirs, with fault
//! controls (stop, kill, start again on the same data and ports).
//!
//! - [`PostgresServer`]: one cluster; [`test_database`] gives each test a fresh database on
//!   one server shared by the whole run (`CRONFLEET_TEST_PG_URL`) or by the test process.
//! - [`EtcdServer`] and [`EtcdCluster`]: single nodes and multi-member clusters.
//! - [`free_port`]: loopback ports for servers the tests start themselves.
//! - [`otlp::Collector`]: an OTLP trace collector that keeps the spans it receives.
//!
//! No process started here outlives the test process: `Drop` stops it, and a small `sh`
//! watchdog next to every server stops it and deletes its files when the test process dies
//! without running destructors (see `process.rs`).
//!
//! What the machine needs: PostgreSQL 15+ server binaries (found via `CRONFLEET_PG_BINDIR`,
//! `pg_config --bindir`, `/usr/lib/postgresql/*/bin` or PATH), etcd 3.4+ (`CRONFLEET_ETCD_BIN`
//! or PATH), `sh`, and when the tests run as root `setpriv` (util-linux) plus a `postgres` OS
//! user, which is created with `useradd --system` if missing.
//!
//! Architecture invariant: this crate depends on nothing of cronfleet's, so every crate may
//! use it in its tests.

mod error;
mod etcd;
mod http;
pub mod otlp;
mod ports;
mod postgres;
mod process;
mod test_database;

pub use error::{Result, ServerReport, TestkitError};
pub use etcd::{ETCD_BIN_ENV, EtcdCluster, EtcdServer, find_etcd};
pub use http::http_get;
pub use ports::free_port;
pub use postgres::{
    CreatedDatabase, PG_BINDIR_ENV, PostgresOptions, PostgresServer, create_database_on,
    drop_database_on, find_postgres_bindir, url_with_database,
};
pub use test_database::{TEST_PG_URL_ENV, TestDatabase, shared_admin_url, test_database};
