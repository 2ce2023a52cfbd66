//! `cronfleet status`: the cluster at a glance — leader, epoch, coordinators, workers.

use clap::Args;
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use super::output;

/// Show the leader (node id and URL), the fencing epoch, the coordinators taking part in
/// the election and the workers connected to the leader. Any coordinator answers.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cronfleet status\n  cronfleet status -o json | jq -r '.leader.url'\n  cronfleet status --server http://coordinator-2:50051"
)]
pub struct StatusCommand {
    #[command(flatten)]
    client: ClientArgs,
}

impl StatusCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let format = self.client.format()?;
        let server = Client::connect(&self.client)?;
        let status = server.call(server.cluster().get_status(pb::GetStatusRequest {}))?;
        output::print_status(&status, format)
    }
}
