//! A worker's configuration: the settings the builder validates ([`Config`]), the bearer
//! token it presents, and the defaults and timing constants the protocol relies on.

use std::collections::BTreeMap;
use std::time::Duration;

/// Default for [`crate::WorkerBuilder::capacity`].
pub const DEFAULT_CAPACITY: u32 = 4;
/// Default for [`crate::WorkerBuilder::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`crate::WorkerBuilder::kill_grace`]: with the coordinator's default lease
/// (2 s) and the stop margin (1 s) it fits the default worker timeout (6 s).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// Used when `Registered.heartbeat_interval_ms` is 0 (unset): DESIGN §1's one second.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Used when `Registered.lease_ttl_ms` is 0 (unset).
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// How long, beyond the kill grace, every run may take to be gone once it is told to
/// stop: the shell handler's SIGKILL and reaping, the watchdog's 200 ms poll, an
/// abandoned handler's future being dropped. Sent as part of `Register.stop_grace_ms`.
pub(crate) const STOP_MARGIN: Duration = Duration::from_secs(1);

/// Settings of a worker, validated by the builder.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) coordinators: Vec<String>,
    pub(crate) node_id: String,
    pub(crate) capacity: u32,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) drain_timeout: Duration,
    pub(crate) kill_grace: Duration,
    pub(crate) version: String,
    pub(crate) token: Option<BearerToken>,
}

impl Config {
    /// How long after its lease ends every run of this worker is certainly gone: what the
    /// coordinator must wait before running them elsewhere (`Register.stop_grace_ms`).
    pub(crate) fn stop_grace(&self) -> Duration {
        self.kill_grace + STOP_MARGIN
    }
}

/// A worker token: shown as `***` in `Debug`, so never in a log.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BearerToken(pub(crate) String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}
