//! `RunService`: one run, the run history filtered by job, state and age, and cancelling
//! a run.

use std::str::FromStr;
use std::time::Duration;

use cronfleet_core::run::{RunState, output_added};
use cronfleet_proto::v1 as pb;
use cronfleet_proto::v1::run_service_server::RunService;
use cronfleet_store::{InFlightRun, RunBacklog};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::convert::{run_filter_from_proto, run_to_proto};
use super::{AdminError, AdminServices, Call, grpc};

/// How often a followed run's log is read again (the leader saves live logs about twice a
/// second).
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// What following a run's log yields, in order: its output as it grows, then how it ended.
#[derive(Clone, Debug, PartialEq)]
pub enum LogEvent {
    /// Output not sent before (the first is the whole kept log so far).
    Output(String),
    /// The run ended in this state: nothing more will come.
    Ended(String),
    /// The log cannot be read any more (the store is unreachable, the run was deleted).
    Failed(String),
}

impl AdminServices {
    /// Follows run `id`'s log until the run ends or the receiver is dropped: what `run logs
    /// --follow`, the REST API and the web console stream. An unknown run is an error here,
    /// before anything is streamed.
    pub async fn follow_run_log(&self, id: i64) -> Result<mpsc::Receiver<LogEvent>, AdminError> {
        let mut run = self.get_run(pb::GetRunRequest { id }).await?;
        let (events, receiver) = mpsc::channel(4);
        let admin = self.clone();
        tokio::spawn(async move {
            let mut shown = String::new();
            loop {
                let added = output_added(&shown, &run.output);
                if !added.is_empty() && events.send(LogEvent::Output(added)).await.is_err() {
                    return; // nobody follows any more
                }
                shown = run.output;
                if ended(&run.state) {
                    let _ = events.send(LogEvent::Ended(run.state)).await;
                    return;
                }
                if events.is_closed() {
                    return;
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
                run = match admin.get_run(pb::GetRunRequest { id }).await {
                    Ok(run) => run,
                    Err(error) => {
                        let _ = events.send(LogEvent::Failed(error.to_string())).await;
                        return;
                    }
                };
            }
        });
        Ok(receiver)
    }

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

    /// Runs past their deadline, runs waiting longer than `waiting`, and runs due per
    /// handler, counted by the store (the console's banner).
    pub async fn run_backlog(&self, waiting: chrono::TimeDelta) -> Result<RunBacklog, AdminError> {
        let now = self.now();
        Call::plain("RunBacklog")
            .answer(async { Ok(self.store().run_backlog(now, now - waiting).await?) })
            .await
    }

    /// Who holds which run (at most `limit`), without the runs' logs.
    pub async fn in_flight_runs(&self, limit: u32) -> Result<Vec<InFlightRun>, AdminError> {
        Call::plain("InFlightRuns")
            .answer(async { Ok(self.store().in_flight_runs(limit).await?) })
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

/// Whether a run in `state` has ended (an unknown state counts as ended: nothing to wait
/// for).
pub fn ended(state: &str) -> bool {
    RunState::from_str(state).map_or(true, RunState::is_final)
}
