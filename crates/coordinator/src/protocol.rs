//! The coordinator's side of the worker protocol's wire form
//! (proto/cronfleet/v1/worker.proto): every worker message is read into the coordinator's
//! terms here, and every coordinator message is built here. Nothing else in the crate
//! looks inside a `WorkerMessage` or builds a `CoordinatorMessage`, so an outcome is
//! decoded once and a field means one thing.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use cronfleet_core::run::{Progress, Run, RunState};
use cronfleet_proto::v1::{
    Assign, Cancel, CoordinatorMessage, Drain, LeaseRenewed, NotLeader, Register, Registered,
    RunFinished, RunOutcome, coordinator_message, worker_message,
};
use cronfleet_proto::{timestamp, timestamp_opt};
use cronfleet_store::DispatchableRun;
use tonic::Status;

use crate::config::UNANNOUNCED_STOP_GRACE;
use crate::election::LeaderInfo;

/// What goes down a worker's stream.
pub(crate) type Outgoing = Result<CoordinatorMessage, Status>;

fn message(kind: coordinator_message::Kind) -> Outgoing {
    Ok(CoordinatorMessage { kind: Some(kind) })
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// A worker's first message, checked.
#[derive(Debug)]
pub(crate) struct Registration {
    pub node_id: String,
    pub handlers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    pub draining: bool,
    pub version: String,
    /// How long the worker may need, once its lease has run out, to have stopped its runs
    /// (an old worker that does not say gets [`UNANNOUNCED_STOP_GRACE`]).
    pub stop_grace: Duration,
    /// The runs the worker still holds from an earlier session.
    pub held_runs: HashSet<i64>,
}

/// Reads the first message of a worker stream, which must be a valid `Register`.
pub(crate) fn read_register(first: Option<worker_message::Kind>) -> Result<Registration, Status> {
    let Some(worker_message::Kind::Register(register)) = first else {
        return Err(Status::invalid_argument(
            "the first message on a worker stream must be register",
        ));
    };
    let Register {
        node_id,
        handlers,
        labels,
        capacity,
        held_runs,
        highest_epoch: _,
        version,
        draining,
        stop_grace_ms,
    } = register;
    if node_id.is_empty() || capacity == 0 {
        return Err(Status::invalid_argument(format!(
            "invalid register from \"{node_id}\": node_id must be set and capacity at least 1 (got {capacity})"
        )));
    }
    Ok(Registration {
        node_id,
        handlers,
        labels: labels.into_iter().collect(),
        capacity,
        draining,
        version,
        stop_grace: match stop_grace_ms {
            0 => UNANNOUNCED_STOP_GRACE,
            ms => Duration::from_millis(u64::from(ms)),
        },
        held_runs: held_runs.iter().map(|run| run.run_id).collect(),
    })
}

/// A worker's message after its registration.
#[derive(Debug, PartialEq)]
pub(crate) enum WorkerReport {
    /// The lease renewal request, answered with its `seq`.
    Heartbeat {
        seq: u64,
        draining: bool,
    },
    /// A chunk of a run's live output.
    Log {
        run_id: i64,
        text: String,
    },
    Started {
        run_id: i64,
    },
    Progress {
        run_id: i64,
        progress: Progress,
    },
    Finished(ReportedEnd),
    /// A second `Register` on one stream: ignored.
    Register,
}

/// Reads one worker message.
pub(crate) fn read_report(kind: worker_message::Kind) -> WorkerReport {
    match kind {
        worker_message::Kind::Heartbeat(heartbeat) => WorkerReport::Heartbeat {
            seq: heartbeat.seq,
            draining: heartbeat.draining,
        },
        worker_message::Kind::RunLog(log) => WorkerReport::Log {
            run_id: log.run_id,
            text: log.text,
        },
        worker_message::Kind::RunStarted(started) => WorkerReport::Started {
            run_id: started.run_id,
        },
        worker_message::Kind::RunProgress(progress) => WorkerReport::Progress {
            run_id: progress.run_id,
            progress: Progress {
                done: progress.done,
                remaining: progress.remaining,
            },
        },
        worker_message::Kind::RunFinished(finished) => {
            WorkerReport::Finished(read_run_finished(finished))
        }
        worker_message::Kind::Register(_) => WorkerReport::Register,
    }
}

/// How a run ended, as its worker reported it.
#[derive(Debug, PartialEq)]
pub(crate) struct ReportedEnd {
    pub run_id: i64,
    pub end: RunEnd,
}

#[derive(Debug, PartialEq)]
pub(crate) enum RunEnd {
    /// The handler ran to an end (or was stopped by a timeout or a cancel): a final state.
    Completed {
        state: RunState,
        error: Option<String>,
        /// The output the worker sent with the end, if any.
        output: Option<String>,
        /// Work the handler reported as left.
        remaining: u64,
    },
    /// The worker stopped the run on its own before it completed (its lease ran out, it
    /// shut down): the run did not complete, has stopped, and its slot runs again.
    Aborted { error: String },
    /// The worker never started the run (it is draining, or out of step).
    Rejected { error: String },
}

fn read_run_finished(finished: RunFinished) -> ReportedEnd {
    let outcome = RunOutcome::try_from(finished.outcome).unwrap_or(RunOutcome::Unspecified);
    let state = match outcome {
        RunOutcome::Succeeded => RunState::Succeeded,
        RunOutcome::Failed | RunOutcome::Unspecified => RunState::Failed,
        RunOutcome::TimedOut => RunState::TimedOut,
        RunOutcome::Cancelled => RunState::Cancelled,
        RunOutcome::Aborted => {
            return ReportedEnd {
                run_id: finished.run_id,
                end: RunEnd::Aborted {
                    error: finished.error,
                },
            };
        }
        RunOutcome::Rejected => {
            return ReportedEnd {
                run_id: finished.run_id,
                end: RunEnd::Rejected {
                    error: finished.error,
                },
            };
        }
    };
    let non_empty = |text: String| (!text.is_empty()).then_some(text);
    ReportedEnd {
        run_id: finished.run_id,
        end: RunEnd::Completed {
            state,
            error: non_empty(finished.error),
            output: non_empty(finished.output),
            remaining: finished.remaining,
        },
    }
}

/// The answer of a coordinator that does not lead: where the leader is, or (empty) that
/// there is none yet and the worker should ask again shortly.
pub(crate) fn not_leader(leader: Option<LeaderInfo>) -> Outgoing {
    message(coordinator_message::Kind::NotLeader(NotLeader {
        leader_url: leader.as_ref().map(|l| l.url.clone()).unwrap_or_default(),
        leader_node_id: leader.map(|l| l.node_id).unwrap_or_default(),
    }))
}

/// The leader's settings a registered worker keeps to.
#[derive(Clone, Debug)]
pub(crate) struct SessionTerms {
    pub coordinator_id: String,
    pub epoch: i64,
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub log_limit_bytes: usize,
}

pub(crate) fn registered(terms: SessionTerms) -> Outgoing {
    message(coordinator_message::Kind::Registered(Registered {
        coordinator_id: terms.coordinator_id,
        epoch: terms.epoch,
        lease_ttl_ms: millis(terms.lease_ttl),
        heartbeat_interval_ms: millis(terms.heartbeat_interval),
        log_limit_bytes: u32::try_from(terms.log_limit_bytes).unwrap_or(u32::MAX),
    }))
}

/// The lease renewal: the answer to the heartbeat numbered `seq`.
pub(crate) fn lease_renewed(epoch: i64, seq: u64) -> Outgoing {
    message(coordinator_message::Kind::LeaseRenewed(LeaseRenewed {
        epoch,
        seq,
    }))
}

pub(crate) fn cancel(run_id: i64, reason: &str) -> Outgoing {
    message(coordinator_message::Kind::Cancel(Cancel {
        run_id,
        reason: reason.to_owned(),
    }))
}

pub(crate) fn drain(reason: &str) -> Outgoing {
    message(coordinator_message::Kind::Drain(Drain {
        reason: reason.to_owned(),
    }))
}

/// The assign of a run the store has just recorded as dispatched under `epoch`; the
/// worker times it out `timeout` after it arrives.
pub(crate) fn assign(
    run: &Run,
    candidate: &DispatchableRun,
    timeout: Duration,
    epoch: i64,
    trace_context: std::collections::HashMap<String, String>,
) -> Outgoing {
    message(coordinator_message::Kind::Assign(Assign {
        run_id: run.id,
        job: run.job_name.clone(),
        slot: Some(timestamp(run.slot)),
        attempt: run.attempt,
        handler: candidate.handler.clone(),
        args_json: candidate.args.to_string(),
        deadline: timestamp_opt(run.deadline),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        epoch,
        trigger: run.trigger.as_str().to_owned(),
        trace_context,
    }))
}

#[cfg(test)]
mod tests {
    use cronfleet_proto::v1::{HeldRun, RunStarted};

    use super::*;

    fn finished(outcome: RunOutcome, error: &str, output: &str) -> worker_message::Kind {
        worker_message::Kind::RunFinished(RunFinished {
            run_id: 7,
            outcome: outcome.into(),
            error: error.to_owned(),
            output: output.to_owned(),
            finished_at: None,
            remaining: 3,
        })
    }

    #[test]
    fn every_outcome_reads_into_one_end() {
        let completed = |state, error: Option<&str>, output: Option<&str>| {
            WorkerReport::Finished(ReportedEnd {
                run_id: 7,
                end: RunEnd::Completed {
                    state,
                    error: error.map(str::to_owned),
                    output: output.map(str::to_owned),
                    remaining: 3,
                },
            })
        };
        assert_eq!(
            read_report(finished(RunOutcome::Succeeded, "", "out")),
            completed(RunState::Succeeded, None, Some("out"))
        );
        assert_eq!(
            read_report(finished(RunOutcome::Failed, "boom", "")),
            completed(RunState::Failed, Some("boom"), None)
        );
        // An outcome this build does not know is a failure, never a success.
        assert_eq!(
            read_report(worker_message::Kind::RunFinished(RunFinished {
                outcome: 99,
                ..RunFinished::default()
            })),
            WorkerReport::Finished(ReportedEnd {
                run_id: 0,
                end: RunEnd::Completed {
                    state: RunState::Failed,
                    error: None,
                    output: None,
                    remaining: 0
                }
            })
        );
        assert_eq!(
            read_report(finished(RunOutcome::TimedOut, "", "")),
            completed(RunState::TimedOut, None, None)
        );
        assert_eq!(
            read_report(finished(RunOutcome::Cancelled, "", "")),
            completed(RunState::Cancelled, None, None)
        );
        assert_eq!(
            read_report(finished(RunOutcome::Aborted, "lease", "ignored")),
            WorkerReport::Finished(ReportedEnd {
                run_id: 7,
                end: RunEnd::Aborted {
                    error: "lease".to_owned()
                }
            })
        );
        assert_eq!(
            read_report(finished(RunOutcome::Rejected, "draining", "")),
            WorkerReport::Finished(ReportedEnd {
                run_id: 7,
                end: RunEnd::Rejected {
                    error: "draining".to_owned()
                }
            })
        );
        assert_eq!(
            read_report(worker_message::Kind::RunStarted(RunStarted {
                run_id: 5,
                started_at: None
            })),
            WorkerReport::Started { run_id: 5 }
        );
    }

    #[test]
    fn a_register_must_come_first_and_name_a_worker_with_capacity() {
        let register = |node_id: &str, capacity, stop_grace_ms| {
            Some(worker_message::Kind::Register(Register {
                node_id: node_id.to_owned(),
                capacity,
                stop_grace_ms,
                held_runs: vec![HeldRun {
                    run_id: 4,
                    epoch: 1,
                }],
                ..Register::default()
            }))
        };
        let read = read_register(register("w1", 2, 1500)).unwrap();
        assert_eq!(read.stop_grace, Duration::from_millis(1500));
        assert_eq!(read.held_runs, HashSet::from([4]));
        assert_eq!(
            read_register(register("w1", 2, 0)).unwrap().stop_grace,
            UNANNOUNCED_STOP_GRACE
        );
        let refused = read_register(register("w1", 0, 0)).unwrap_err();
        assert!(refused.message().contains("capacity at least 1 (got 0)"));
        assert!(read_register(register("", 1, 0)).is_err());
        let not_first = read_register(Some(worker_message::Kind::Heartbeat(
            cronfleet_proto::v1::Heartbeat::default(),
        )))
        .unwrap_err();
        assert!(not_first.message().contains("must be register"));
        assert!(read_register(None).is_err());
    }
}
