//! `JobService`: create, read, change, pause, resume, delete and trigger jobs.

use std::time::Duration;

use cronfleet_core::apply::{ApplyAction, ApplyRequest, DEFAULT_MANAGER};
use cronfleet_core::time::{format_in_zone, parse_time};
use cronfleet_proto::v1 as pb;
use cronfleet_proto::v1::job_service_server::JobService;
use cronfleet_store::{JobQuery, LastRun, StoreError};
use tonic::{Request, Response, Status};

use super::convert::{
    desired_job_from_proto, job_change_to_proto, job_spec_from_proto, job_to_proto, run_to_proto,
    schedule_from_proto,
};
use super::{AdminError, AdminServices, Call, grpc, required_name};

/// A page of [`AdminServices::find_jobs`].
#[derive(Clone, Debug)]
pub struct FoundJobs {
    pub jobs: Vec<FoundJob>,
    /// How many jobs the query selects in all.
    pub total: u64,
}

#[derive(Clone, Debug)]
pub struct FoundJob {
    pub job: pb::Job,
    pub last_run: Option<LastRun>,
}

/// What [`AdminServices::preview_schedule`] answers.
#[derive(Clone, Debug)]
pub struct SchedulePreview {
    /// The schedule in words.
    pub text: String,
    pub tz: chrono_tz::Tz,
    pub slots: Vec<chrono::DateTime<chrono::Utc>>,
}

impl AdminServices {
    pub async fn create_job(&self, request: pb::CreateJobRequest) -> Result<pb::Job, AdminError> {
        let name = request.spec.as_ref().map_or("", |spec| spec.name.as_str());
        Call::job("CreateJob", name)
            .answer(async {
                let spec = request
                    .spec
                    .as_ref()
                    .ok_or_else(|| AdminError::field("spec", "missing; expected a job spec"))?;
                let now = self.now();
                let spec = job_spec_from_proto(spec, now)?;
                let job = self.store().create_job(&spec, now).await?;
                self.wake().await;
                Ok(job_to_proto(&job))
            })
            .await
    }

    pub async fn get_job(&self, request: pb::GetJobRequest) -> Result<pb::Job, AdminError> {
        Call::job("GetJob", &request.name)
            .answer(async {
                let job = self.store().get_job(required_name(&request.name)?).await?;
                Ok(job_to_proto(&job))
            })
            .await
    }

    pub async fn list_jobs(
        &self,
        _request: pb::ListJobsRequest,
    ) -> Result<pb::ListJobsResponse, AdminError> {
        Call::plain("ListJobs")
            .answer(async {
                let jobs = self.store().list_jobs().await?;
                Ok(pb::ListJobsResponse {
                    jobs: jobs.iter().map(job_to_proto).collect(),
                })
            })
            .await
    }

    /// One page of the job list, searched, filtered and sorted by the store (the web
    /// console's Jobs page), each job with its latest run.
    pub async fn find_jobs(&self, query: &JobQuery) -> Result<FoundJobs, AdminError> {
        Call::plain("FindJobs")
            .answer(async {
                let page = self.store().list_jobs_page(query).await?;
                Ok(FoundJobs {
                    jobs: page
                        .jobs
                        .iter()
                        .map(|listed| FoundJob {
                            job: job_to_proto(&listed.job),
                            last_run: listed.last_run,
                        })
                        .collect(),
                    total: page.total,
                })
            })
            .await
    }

    /// How many jobs `query` selects (for the console's counts: no page is read).
    pub async fn count_jobs(&self, query: &JobQuery) -> Result<u64, AdminError> {
        Call::plain("CountJobs")
            .answer(async { Ok(self.store().count_jobs(query).await?) })
            .await
    }

    /// The next `count` slots of `schedule` after now, read as `CreateJob` reads it (so a
    /// bad schedule gets the same message, on the same field).
    pub fn preview_schedule(
        &self,
        schedule: &pb::Schedule,
        count: usize,
    ) -> Result<SchedulePreview, AdminError> {
        let now = self.now();
        let schedule = schedule_from_proto(Some(schedule), now)?;
        Ok(SchedulePreview {
            text: schedule.to_string(),
            tz: schedule.tz(),
            slots: schedule.slots_after(now).take(count).collect(),
        })
    }

    pub async fn update_job(&self, request: pb::UpdateJobRequest) -> Result<pb::Job, AdminError> {
        Call::job("UpdateJob", &request.name)
            .answer(async {
                let name = required_name(&request.name)?;
                let spec = request
                    .spec
                    .as_ref()
                    .ok_or_else(|| AdminError::field("spec", "missing; expected a job spec"))?;
                let now = self.now();
                let spec = job_spec_from_proto(spec, now)?;
                let job = self
                    .store()
                    .update_job(name, request.expected_version, &spec, now)
                    .await?;
                self.wake().await;
                Ok(job_to_proto(&job))
            })
            .await
    }

    pub async fn pause_job(&self, request: pb::PauseJobRequest) -> Result<pb::Job, AdminError> {
        Call::job("PauseJob", &request.name)
            .answer(async {
                let name = required_name(&request.name)?;
                let note = (!request.note.is_empty()).then_some(request.note.as_str());
                let job = self.store().pause_job(name, note, self.now()).await?;
                Ok(job_to_proto(&job))
            })
            .await
    }

    pub async fn resume_job(&self, request: pb::ResumeJobRequest) -> Result<pb::Job, AdminError> {
        Call::job("ResumeJob", &request.name)
            .answer(async {
                let name = required_name(&request.name)?;
                let job = self.store().resume_job(name, self.now()).await?;
                self.wake().await;
                Ok(job_to_proto(&job))
            })
            .await
    }

    pub async fn delete_job(
        &self,
        request: pb::DeleteJobRequest,
    ) -> Result<pb::DeleteJobResponse, AdminError> {
        Call::job("DeleteJob", &request.name)
            .answer(async {
                let name = required_name(&request.name)?;
                match self.store().delete_job(name).await {
                    Err(StoreError::JobActive { .. }) if request.force => {
                        self.delete_once_stopped(name).await?;
                    }
                    result => result?,
                }
                Ok(pb::DeleteJobResponse {})
            })
            .await
    }

    /// `DeleteJob` with force: pauses the job (nothing new starts), cancels its run in
    /// progress, and deletes the job once that run has stopped — never while it may still
    /// run, so a job created again under the name cannot run beside it.
    async fn delete_once_stopped(&self, name: &str) -> Result<(), AdminError> {
        const STOP_WAIT: Duration = Duration::from_secs(30);
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        self.store()
            .pause_job(
                name,
                Some("being deleted: waiting for its run to stop"),
                self.now(),
            )
            .await?;
        self.wake().await;
        loop {
            let error = match self.store().delete_job(name).await {
                Err(StoreError::JobActive { run, .. }) => {
                    self.store()
                        .request_cancel(run, "the job is being deleted", self.now())
                        .await?;
                    self.wake_dispatcher().await;
                    StoreError::JobActive {
                        job: name.to_owned(),
                        run,
                        state: "stopping".to_owned(),
                        worker: None,
                    }
                }
                result => return Ok(result?),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(AdminError::Unavailable(format!(
                    "{error} — it has not stopped within {}s of the cancel (a worker that is gone \
                     has it declared lost within the worker timeout); the job stays paused: delete it again",
                    STOP_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn run_job(
        &self,
        request: pb::RunJobRequest,
    ) -> Result<pb::RunJobResponse, AdminError> {
        Call::job("RunJob", &request.name)
            .answer(async {
                let name = required_name(&request.name)?;
                let now = self.now();
                let at = if request.at.is_empty() {
                    now
                } else {
                    // A local time is read in the job's zone, as its schedule is.
                    let tz = self.store().get_job(name).await?.spec.schedule.tz();
                    let at = parse_time(&request.at, tz).map_err(|e| AdminError::field("at", e))?;
                    if at < now {
                        return Err(AdminError::field(
                            "at",
                            format!(
                                "{} is in the past; expected a time in the future, or none for now",
                                format_in_zone(at, tz)
                            ),
                        ));
                    }
                    at
                };
                let manual = self.store().create_manual_run(name, at, now).await?;
                self.wake_dispatcher().await;
                Ok(pb::RunJobResponse {
                    run: Some(run_to_proto(&manual.run)),
                    queued: manual.queued,
                })
            })
            .await
    }

    pub async fn apply_jobs(
        &self,
        request: pb::ApplyJobsRequest,
    ) -> Result<pb::ApplyJobsResponse, AdminError> {
        Call::plain("ApplyJobs")
            .answer(async {
                let now = self.now();
                // Every spec is read before the store is asked anything.
                let jobs = request
                    .jobs
                    .iter()
                    .enumerate()
                    .map(|(index, spec)| {
                        desired_job_from_proto(spec, now)
                            .map_err(|error| AdminError::in_job(index, &spec.name, error))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let manager = if request.manager.is_empty() {
                    DEFAULT_MANAGER.to_owned()
                } else {
                    request.manager.clone()
                };
                let apply = ApplyRequest {
                    manager,
                    jobs,
                    prune: request.prune,
                };
                let changes = self
                    .store()
                    .apply_jobs(&apply, request.dry_run, now)
                    .await?;
                if !request.dry_run
                    && changes
                        .iter()
                        .any(|change| change.action != ApplyAction::Unchanged)
                {
                    self.wake().await;
                }
                Ok(pb::ApplyJobsResponse {
                    changes: changes.iter().map(job_change_to_proto).collect(),
                })
            })
            .await
    }
}

/// The gRPC service: each call is the inherent method of the same name.
#[tonic::async_trait]
impl JobService for AdminServices {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        grpc(AdminServices::create_job(self, request.into_inner()).await)
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        grpc(AdminServices::get_job(self, request.into_inner()).await)
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        grpc(AdminServices::list_jobs(self, request.into_inner()).await)
    }

    async fn update_job(
        &self,
        request: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        grpc(AdminServices::update_job(self, request.into_inner()).await)
    }

    async fn pause_job(
        &self,
        request: Request<pb::PauseJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        grpc(AdminServices::pause_job(self, request.into_inner()).await)
    }

    async fn resume_job(
        &self,
        request: Request<pb::ResumeJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        grpc(AdminServices::resume_job(self, request.into_inner()).await)
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        grpc(AdminServices::delete_job(self, request.into_inner()).await)
    }

    async fn run_job(
        &self,
        request: Request<pb::RunJobRequest>,
    ) -> Result<Response<pb::RunJobResponse>, Status> {
        grpc(AdminServices::run_job(self, request.into_inner()).await)
    }

    async fn apply_jobs(
        &self,
        request: Request<pb::ApplyJobsRequest>,
    ) -> Result<Response<pb::ApplyJobsResponse>, Status> {
        grpc(AdminServices::apply_jobs(self, request.into_inner()).await)
    }
}
