//! `RunService`: one run, the run history filtered by job, state and age, and cancelling
//! a run.

use cronfleet_proto::v1 as pb;
use cronfleet_proto::v1::run_service_server::RunService;
use tonic::{Request, Response, Status};

use super::convert::{run_filter_from_proto, run_to_proto};
use super::{AdminError, AdminServices, Call, grpc};

impl AdminServices {
    pub async fn get_run(&self, request: pb::GetRunRequest) -> Result<pb::Run, AdminError> {
        Call::run("GetRun", request.id)
            .answer(async {
                let run = self.store().get_run(request.id).await?;
                Ok(run_to_proto(&run))
            })
            .await
    }

    pub async fn list_runs(
        &self,
        request: pb::ListRunsRequest,
    ) -> Result<pb::ListRunsResponse, AdminError> {
        let job = (!request.job.is_empty()).then_some(request.job.as_str());
        let call = Call {
            job,
            ..Call::plain("ListRuns")
        };
        call.answer(async {
            let filter = run_filter_from_proto(&request)?;
            if let Some(job) = &filter.job {
                // A misspelt job name must say so, not look like a job that never ran.
                self.store().get_job(job).await?;
            }
            let runs = self.store().list_runs(&filter).await?;
            Ok(pb::ListRunsResponse {
                runs: runs.iter().map(run_to_proto).collect(),
            })
        })
        .await
    }

    pub async fn cancel_run(&self, request: pb::CancelRunRequest) -> Result<pb::Run, AdminError> {
        Call::run("CancelRun", request.id)
            .answer(async {
                let reason = if request.reason.is_empty() {
                    "cancelled by an operator"
                } else {
                    request.reason.as_str()
                };
                let run = self
                    .store()
                    .request_cancel(request.id, reason, self.now())
                    .await?;
                // A cancelled pending run frees its job for the next one.
                self.wake_dispatcher().await;
                Ok(run_to_proto(&run))
            })
            .await
    }
}

/// The gRPC service: each call is the inherent method of the same name.
#[tonic::async_trait]
impl RunService for AdminServices {
    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        grpc(AdminServices::get_run(self, request.into_inner()).await)
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        grpc(AdminServices::list_runs(self, request.into_inner()).await)
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        grpc(AdminServices::cancel_run(self, request.into_inner()).await)
    }
}
