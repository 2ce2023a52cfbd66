//! `ClusterService`: the leader, the epoch, the coordinators and the workers.
//!
//! Workers connect to the leader only, so a coordinator that does not lead asks the leader
//! for them — once: the forwarded call carries [`FORWARDED`] and is answered locally.

use std::time::Duration;

use cronfleet_proto::v1 as pb;
use cronfleet_proto::v1::cluster_service_client::ClusterServiceClient;
use cronfleet_proto::v1::cluster_service_server::ClusterService;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use super::convert::worker_to_proto;
use super::{AdminError, AdminServices, Call, grpc};
use crate::election::LeaderInfo;

/// Metadata marking a call one coordinator forwarded to the leader.
pub const FORWARDED: &str = "x-cronfleet-forwarded";

/// Bound on connecting to the leader and on its answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

impl AdminServices {
    /// The workers connected to the leader. `forwarded`: another coordinator asked on a
    /// caller's behalf, so this node answers with its own workers and asks no one.
    pub async fn list_workers(
        &self,
        _request: pb::ListWorkersRequest,
        forwarded: bool,
    ) -> Result<pb::ListWorkersResponse, AdminError> {
        Call::plain("ListWorkers")
            .answer(async {
                let workers = self
                    .leader_workers(forwarded)
                    .await
                    .map_err(AdminError::Unavailable)?;
                Ok(pb::ListWorkersResponse { workers })
            })
            .await
    }

    pub async fn get_status(
        &self,
        _request: pb::GetStatusRequest,
    ) -> Result<pb::ClusterStatus, AdminError> {
        Call::plain("GetStatus")
            .answer(async {
                let epoch = self.store().epoch().await?;
                let mut status = pb::ClusterStatus {
                    epoch,
                    ..pb::ClusterStatus::default()
                };
                if let Some(cluster) = &self.state.cluster {
                    status.answered_by = cluster.me.node_id.clone();
                    let election = &cluster.election;
                    match tokio::try_join!(election.leader(), election.coordinators()) {
                        Ok((leader, coordinators)) => {
                            let leader_id = leader.as_ref().map(|leader| leader.node_id.clone());
                            let is_leader =
                                |node: &LeaderInfo| Some(&node.node_id) == leader_id.as_ref();
                            status.leader = leader.map(|node| coordinator_to_proto(&node, true));
                            status.coordinators = coordinators
                                .iter()
                                .map(|node| coordinator_to_proto(node, is_leader(node)))
                                .collect();
                        }
                        Err(error) => status.election_unavailable = error.to_string(),
                    }
                }
                match self.leader_workers(false).await {
                    Ok(workers) => status.workers = workers,
                    Err(why) => status.workers_unavailable = why,
                }
                Ok(status)
            })
            .await
    }
}

/// The gRPC service: each call is the inherent method of the same name.
#[tonic::async_trait]
impl ClusterService for AdminServices {
    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED);
        grpc(AdminServices::list_workers(self, request.into_inner(), forwarded).await)
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        grpc(AdminServices::get_status(self, request.into_inner()).await)
    }
}

impl AdminServices {
    /// The workers connected to the leader: this node's own when it leads (or stands
    /// alone, or the call was forwarded to it), otherwise the leader's, asked over gRPC.
    /// The error says why they cannot be listed.
    async fn leader_workers(&self, forwarded: bool) -> Result<Vec<pb::Worker>, String> {
        let local = || {
            let mut workers = self.state.workers.workers();
            workers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            workers.iter().map(worker_to_proto).collect()
        };
        let Some(cluster) = &self.state.cluster else {
            return Ok(local());
        };
        if forwarded || cluster.leads() {
            return Ok(local());
        }
        let leader = cluster
            .election
            .leader()
            .await
            .map_err(|error| {
                format!("workers connect to the leader, which cannot be found: {error}")
            })?
            .ok_or_else(|| {
                "workers connect to the leader, and there is none at the moment".to_owned()
            })?;
        if leader.node_id == cluster.me.node_id {
            // Elected, but not leading yet (raising the epoch) or any more.
            return Ok(local());
        }
        workers_of(&leader.url, cluster.api_token.as_deref())
            .await
            .map_err(|error| {
                format!(
                    "cannot ask the leader {} at {} for its workers: {error}",
                    leader.node_id, leader.url
                )
            })
    }
}

/// Asks the coordinator at `url` for its workers, marked as forwarded.
async fn workers_of(url: &str, token: Option<&str>) -> Result<Vec<pb::Worker>, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| format!("invalid url: {error}"))?
        .connect_timeout(FORWARD_TIMEOUT)
        .timeout(FORWARD_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| error.to_string())?;
    let mut request = Request::new(pb::ListWorkersRequest {});
    request
        .metadata_mut()
        .insert(FORWARDED, MetadataValue::from_static("1"));
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the API token is not a valid header value".to_owned())?;
        request.metadata_mut().insert("authorization", value);
    }
    let answer = ClusterServiceClient::new(channel)
        .list_workers(request)
        .await
        .map_err(|status| status.message().to_owned())?;
    Ok(answer.into_inner().workers)
}

fn coordinator_to_proto(node: &LeaderInfo, leader: bool) -> pb::Coordinator {
    pb::Coordinator {
        node_id: node.node_id.clone(),
        url: node.url.clone(),
        leader,
    }
}
