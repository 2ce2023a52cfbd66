//! `ClusterService`: the leader, the epoch, the coordinators and the workers.
//!
//! Workers connect to the leader only, so a coordinator that does not lead asks the leader
//! for them, and has the leader drain one — once: the forwarded call carries
//! [`FORWARDED`] and is answered locally.

use std::time::Duration;

use cronfleet_proto::v1 as pb;
use cronfleet_proto::v1::cluster_service_client::ClusterServiceClient;
use cronfleet_proto::v1::cluster_service_server::ClusterService;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
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

    /// Stops (or with `undo`, resumes) giving new runs to a worker, on the leader: this
    /// node when it leads, otherwise the leader, asked once over gRPC.
    pub async fn drain_worker(
        &self,
        request: pb::DrainWorkerRequest,
        forwarded: bool,
    ) -> Result<pb::Worker, AdminError> {
        Call::plain("DrainWorker")
            .answer(async {
                if request.node_id.is_empty() {
                    return Err(AdminError::field(
                        "node_id",
                        "missing; expected the id of a connected worker",
                    ));
                }
                match self
                    .worker_owner(forwarded)
                    .await
                    .map_err(AdminError::Unavailable)?
                {
                    None => {
                        let worker = self
                            .state
                            .workers
                            .drain(&request.node_id, !request.undo)
                            .ok_or(AdminError::WorkerNotFound(request.node_id.clone()))?;
                        if request.undo {
                            // Runs may be waiting for exactly this worker.
                            self.wake_dispatcher().await;
                        }
                        Ok(worker_to_proto(&worker))
                    }
                    Some(leader) => {
                        let token = self
                            .state
                            .cluster
                            .as_ref()
                            .and_then(|c| c.api_token.as_deref());
                        let mut client = leader_client(&leader.url).await.map_err(|error| {
                            AdminError::Unavailable(format!(
                                "cannot reach the leader {} at {}: {error}",
                                leader.node_id, leader.url
                            ))
                        })?;
                        let call = forwarded_request(request.clone(), token)
                            .map_err(AdminError::Unavailable)?;
                        match client.drain_worker(call).await {
                            Ok(answer) => Ok(answer.into_inner()),
                            Err(status) if status.code() == tonic::Code::NotFound => {
                                Err(AdminError::WorkerNotFound(request.node_id.clone()))
                            }
                            Err(status) => Err(AdminError::Unavailable(format!(
                                "the leader {} refused: {}",
                                leader.node_id,
                                status.message()
                            ))),
                        }
                    }
                }
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

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED);
        grpc(AdminServices::drain_worker(self, request.into_inner(), forwarded).await)
    }
}

impl AdminServices {
    /// The workers connected to the leader: this node's own when it leads (or stands
    /// alone, or the call was forwarded to it), otherwise the leader's, asked over gRPC.
    /// The error says why they cannot be listed.
    async fn leader_workers(&self, forwarded: bool) -> Result<Vec<pb::Worker>, String> {
        let Some(leader) = self.worker_owner(forwarded).await? else {
            let mut workers = self.state.workers.workers();
            workers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            return Ok(workers.iter().map(worker_to_proto).collect());
        };
        let token = self
            .state
            .cluster
            .as_ref()
            .and_then(|c| c.api_token.as_deref());
        let asked = async {
            let mut client = leader_client(&leader.url).await?;
            let request = forwarded_request(pb::ListWorkersRequest {}, token)?;
            let answer = client
                .list_workers(request)
                .await
                .map_err(|status| status.message().to_owned())?;
            Ok::<_, String>(answer.into_inner().workers)
        };
        asked.await.map_err(|error| {
            format!(
                "cannot ask the leader {} at {} for its workers: {error}",
                leader.node_id, leader.url
            )
        })
    }

    /// Who answers a call about workers: `None` for this node — when it leads, stands
    /// alone, was asked on another's behalf, or is elected but not leading yet (raising
    /// the epoch) or any more —, otherwise the leader the workers connect to.
    async fn worker_owner(&self, forwarded: bool) -> Result<Option<LeaderInfo>, String> {
        let Some(cluster) = &self.state.cluster else {
            return Ok(None);
        };
        if forwarded || cluster.leads() {
            return Ok(None);
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
        Ok((leader.node_id != cluster.me.node_id).then_some(leader))
    }
}

/// A client of the coordinator at `url`, with the forwarding timeouts.
async fn leader_client(url: &str) -> Result<ClusterServiceClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| format!("invalid url: {error}"))?
        .connect_timeout(FORWARD_TIMEOUT)
        .timeout(FORWARD_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| error.to_string())?;
    Ok(ClusterServiceClient::new(channel))
}

/// `message` as a call forwarded to the leader, presenting `token`.
fn forwarded_request<T>(message: T, token: Option<&str>) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, MetadataValue::from_static("1"));
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the API token is not a valid header value".to_owned())?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

fn coordinator_to_proto(node: &LeaderInfo, leader: bool) -> pb::Coordinator {
    pb::Coordinator {
        node_id: node.node_id.clone(),
        url: node.url.clone(),
        leader,
    }
}
