//! `cronfleet alerts`: the alerts the leader raised and resolved; acknowledging one.

use clap::Args;
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use super::output;

/// List alerts, newest first (firing ones by default), or acknowledge one.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cronfleet alerts                      # what fires now\n  cronfleet alerts --all --job nightly-report\n  cronfleet alerts --kind missed_deadline -o json\n  cronfleet alerts --ack 42 --by alice  # someone is on it"
)]
pub struct AlertsCommand {
    /// Resolved alerts too, not only firing ones.
    #[arg(long, conflicts_with = "state")]
    all: bool,
    /// Only alerts in this state: firing, resolved.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only alerts of this kind: failed, auto_paused, missed_deadline, stalled, no_worker,
    /// worker_lost.
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// Only this job's alerts.
    #[arg(long, value_name = "NAME")]
    job: Option<String>,
    /// At most this many (at most 1000).
    #[arg(long, default_value_t = 100, value_name = "N")]
    limit: u32,
    /// Only alerts with a smaller id (the next page).
    #[arg(long, value_name = "ID")]
    before: Option<i64>,
    /// Acknowledge this alert: someone is on it (the console's banner leaves it out; it
    /// still resolves by itself).
    #[arg(long, value_name = "ID", conflicts_with_all = ["all", "state", "kind", "job", "before"])]
    ack: Option<i64>,
    /// Who acknowledges (with --ack) [default: $USER].
    #[arg(long, value_name = "NAME", requires = "ack")]
    by: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

impl AlertsCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let format = self.client.format()?;
        let server = Client::connect(&self.client)?;
        if let Some(id) = self.ack {
            let by = self
                .by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_default();
            let alert = server.call(server.alerts().ack_alert(pb::AckAlertRequest { id, by }))?;
            return output::print_alerts(&[alert], format);
        }
        let state = match (self.all, self.state) {
            (true, _) => String::new(),
            (false, Some(state)) => state,
            (false, None) => "firing".to_owned(),
        };
        let request = pb::ListAlertsRequest {
            state,
            kind: self.kind.unwrap_or_default(),
            job: self.job.unwrap_or_default(),
            before: self.before.unwrap_or(0),
            limit: self.limit,
        };
        let alerts = server.call(server.alerts().list_alerts(request))?;
        output::print_alerts(&alerts.alerts, format)
    }
}
