//! `ClusterService`: the workers connected to this coordinator.

use cronfleet_proto::v1 as pb;
use cronfleet_proto::v1::cluster_service_server::ClusterService;
use tonic::{Request, Response, Status};

use super::convert::worker_to_proto;
use super::{AdminServices, Call};

#[tonic::async_trait]
impl ClusterService for AdminServices {
    async fn list_workers(
        &self,
        _request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        Call::plain("ListWorkers")
            .answer(async {
                let mut workers = self.state.workers.workers();
                workers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
                Ok(pb::ListWorkersResponse {
                    workers: workers.iter().map(worker_to_proto).collect(),
                })
            })
            .await
    }
}
