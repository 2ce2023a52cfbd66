//! `cronfleet workers`: the workers connected to the leader; draining one.

use clap::Args;
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use super::output;

/// List the workers connected to the leader (any coordinator answers: one that does not
/// lead asks the leader), or drain one: it gets no new runs, its runs in progress go on.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cronfleet workers\n  cronfleet workers -o json | jq '.[] | select(.busy == .capacity) | .node_id'\n  cronfleet workers --drain worker-3      # before maintenance\n  cronfleet workers --undrain worker-3"
)]
pub struct WorkersCommand {
    /// Give this worker no new runs (held by the leader across the worker's reconnects,
    /// until --undrain or a change of leader); its runs in progress go on.
    #[arg(long, value_name = "NODE_ID", conflicts_with = "undrain")]
    drain: Option<String>,
    /// Give this drained worker new runs again.
    #[arg(long, value_name = "NODE_ID")]
    undrain: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

impl WorkersCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let format = self.client.format()?;
        let server = Client::connect(&self.client)?;
        let drain = match (self.drain, self.undrain) {
            (Some(node_id), _) => Some((node_id, false)),
            (None, Some(node_id)) => Some((node_id, true)),
            (None, None) => None,
        };
        if let Some((node_id, undo)) = drain {
            let request = pb::DrainWorkerRequest { node_id, undo };
            let worker = server.call(server.cluster().drain_worker(request))?;
            return output::print_workers(&[worker], format);
        }
        let workers = server.call(server.cluster().list_workers(pb::ListWorkersRequest {}))?;
        output::print_workers(&workers.workers, format)
    }
}
