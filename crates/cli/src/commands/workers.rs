//! `cronfleet workers`: the workers connected to the leader.

use clap::Args;
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use super::output;

/// List the workers connected to the leader (any coordinator answers: one that does not
/// lead asks the leader).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cronfleet workers\n  cronfleet workers -o json | jq '.[] | select(.busy == .capacity) | .node_id'"
)]
pub struct WorkersCommand {
    #[command(flatten)]
    client: ClientArgs,
}

impl WorkersCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let format = self.client.format()?;
        let server = Client::connect(&self.client)?;
        let workers = server.call(server.cluster().list_workers(pb::ListWorkersRequest {}))?;
        output::print_workers(&workers.workers, format)
    }
}
