//! The coordinator's settings, with the defaults of DESIGN §4 and the runtime issue.

use std::net::SocketAddr;
use std::time::Duration;

use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::policy::AutoPausePolicy;
use cronfleet_core::run::{DEFAULT_OUTPUT_BYTES, MAX_OUTPUT_BYTES};
use cronfleet_store::FinishRules;

use crate::alerts::AlertSettings;
use crate::auth::{Tokens, check_open_api, check_open_workers};
use crate::election::LeaderInfo;

/// What the worker timeout must cover beyond a worker's lease and stop grace: the monitor's
/// pass, scheduling delays, the clocks of two machines running at slightly other rates.
pub const LOSS_MARGIN: Duration = Duration::from_millis(500);
/// The stop grace assumed for a worker that does not announce one (an older version): its
/// kill grace was 5 s then, and it took up to 3 s more to give up on a handler.
pub const UNANNOUNCED_STOP_GRACE: Duration = Duration::from_secs(8);

/// Everything a coordinator needs to know besides its store and election.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub node_id: String,
    /// Where the gRPC services (worker protocol, admin API) listen.
    pub grpc_addr: SocketAddr,
    /// Where `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    /// How workers and clients reach this node (sent to workers that connect to a
    /// non-leader). Defaults to `http://` + the gRPC address.
    pub advertise_url: Option<String>,
    /// A worker whose lease was not renewed for this long is dead: its runs become lost
    /// and are run again. Covers the lease, the worker's stop grace and [`LOSS_MARGIN`]
    /// ([`CoordinatorConfig::admit_stop_grace`]), so a lost run's old attempt is gone.
    pub worker_timeout: Duration,
    /// Workers stop their runs after this long without a lease renewal.
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// The timeout of jobs that set none.
    pub default_timeout: Duration,
    /// How long after its deadline a silent run is declared timed out.
    pub timeout_grace: Duration,
    /// Jobs leased per transaction.
    pub lease_batch: u32,
    /// Runs dispatched per pass.
    pub dispatch_batch: u32,
    pub lease: LeaseSettings,
    /// How many times a slot whose run was lost is run again.
    pub max_losses_per_slot: u32,
    /// Retry backoff of jobs with `--retries`: the first delay, doubling up to the max.
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// When a job that keeps failing is paused.
    pub auto_pause: AutoPausePolicy,
    /// How much of each run's log is kept (its end), at most `MAX_OUTPUT_BYTES`.
    pub run_log_limit: usize,
    /// Run history older than this is deleted by the leader.
    pub run_retention: Duration,
    /// Each job keeps at most this many runs in its history.
    pub runs_per_job: u32,
    /// Bearer tokens of the admin API; empty: open, and then only on loopback.
    pub api_tokens: Tokens,
    /// Bearer tokens workers must present to connect; empty: none asked.
    pub worker_tokens: Tokens,
    /// Serve an admin API without tokens on a non-loopback address all the same.
    pub insecure_open_api: bool,
    /// Take workers without a token on a non-loopback address all the same.
    pub insecure_open_workers: bool,
    /// A Jaeger UI's base URL, for the web console's links to run traces.
    pub jaeger_url: Option<String>,
    /// Alert evaluation and channels.
    pub alerts: AlertSettings,
}

impl CoordinatorConfig {
    pub fn new(node_id: impl Into<String>) -> CoordinatorConfig {
        CoordinatorConfig {
            node_id: node_id.into(),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            advertise_url: None,
            worker_timeout: Duration::from_secs(6),
            lease_ttl: Duration::from_secs(2),
            heartbeat_interval: Duration::from_millis(500),
            default_timeout: Duration::from_secs(3600),
            timeout_grace: Duration::from_secs(10),
            lease_batch: 500,
            dispatch_batch: 500,
            lease: LeaseSettings::default(),
            max_losses_per_slot: 3,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            auto_pause: AutoPausePolicy::default(),
            run_log_limit: DEFAULT_OUTPUT_BYTES,
            run_retention: Duration::from_secs(30 * 24 * 3600),
            runs_per_job: 1000,
            api_tokens: Tokens::default(),
            worker_tokens: Tokens::default(),
            insecure_open_api: false,
            insecure_open_workers: false,
            jaeger_url: None,
            alerts: AlertSettings::default(),
        }
    }

    /// What follows the end of a run that reported `remaining` work left.
    /// This node as the election proclaims it: its id and where it is reached.
    pub fn me(&self) -> LeaderInfo {
        LeaderInfo {
            node_id: self.node_id.clone(),
            url: self
                .advertise_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", self.grpc_addr)),
        }
    }

    pub fn finish_rules(&self, remaining: u64) -> FinishRules {
        FinishRules {
            retry_base_delay: self.retry_base_delay,
            retry_max_delay: self.retry_max_delay,
            jitter: rand::random::<f64>(),
            auto_pause: self.auto_pause,
            remaining,
        }
    }

    /// The longest stop grace a worker may announce: what is left of the worker timeout
    /// — and of the timeout grace, since a run's Assign may arrive up to a lease ttl after
    /// its dispatch and the worker times it out from then — after the lease and the margin.
    pub fn max_stop_grace(&self) -> Duration {
        self.worker_timeout
            .min(self.timeout_grace)
            .saturating_sub(self.lease_ttl)
            .saturating_sub(LOSS_MARGIN)
    }

    /// Whether a worker that needs `stop_grace` after its lease ends to stop its runs may
    /// register: its runs are re-dispatched `worker_timeout` after its last renewal, so
    /// lease + stop grace + margin must fit in it — else a run could start again while its
    /// old attempt still runs. The error says which setting to change.
    pub fn admit_stop_grace(&self, node_id: &str, stop_grace: Duration) -> Result<(), String> {
        if stop_grace <= self.max_stop_grace() {
            return Ok(());
        }
        Err(format!(
            "worker {node_id:?} needs {stop_grace:?} after its lease ends to stop its runs (its kill grace plus 1s), \
             but this coordinator re-runs a dead worker's runs {:?} after its last lease renewal \
             (and a timed-out run {:?} after its timeout): lease ttl {:?} + stop grace + {LOSS_MARGIN:?} must fit in \
             both, so lower the worker's --kill-grace to at most {:?} or raise the coordinators' --worker-timeout \
             (and --timeout-grace) to at least {:?}",
            self.worker_timeout,
            self.timeout_grace,
            self.lease_ttl,
            self.max_stop_grace().saturating_sub(Duration::from_secs(1)),
            self.lease_ttl + stop_grace + LOSS_MARGIN,
        ))
    }

    /// Rejects settings that would break the safety argument.
    pub fn validate(&self) -> Result<(), String> {
        self.alerts.validate()?;
        if self.lease_ttl + LOSS_MARGIN >= self.worker_timeout {
            return Err(format!(
                "the worker lease ttl ({:?}) plus {LOSS_MARGIN:?} must be shorter than the worker timeout ({:?}), \
                 so that a lost worker has stopped its runs before they run elsewhere",
                self.lease_ttl, self.worker_timeout
            ));
        }
        if self.retry_base_delay > self.retry_max_delay {
            return Err(format!(
                "the retry base delay ({:?}) must not exceed the retry max delay ({:?})",
                self.retry_base_delay, self.retry_max_delay
            ));
        }
        if self.heartbeat_interval >= self.lease_ttl {
            return Err(format!(
                "the heartbeat interval ({:?}) must be shorter than the worker lease ttl ({:?})",
                self.heartbeat_interval, self.lease_ttl
            ));
        }
        if self.run_log_limit == 0 || self.run_log_limit > MAX_OUTPUT_BYTES {
            return Err(format!(
                "the run log limit ({} bytes) must be between 1 byte and {} KiB",
                self.run_log_limit,
                MAX_OUTPUT_BYTES / 1024
            ));
        }
        // The admin API is served over gRPC and, under /api/v1, on the HTTP port.
        check_open_api(&self.api_tokens, self.grpc_addr, self.insecure_open_api)?;
        check_open_api(&self.api_tokens, self.http_addr, self.insecure_open_api)?;
        check_open_workers(
            &self.worker_tokens,
            self.grpc_addr,
            self.insecure_open_workers,
        )?;
        Ok(())
    }
}
