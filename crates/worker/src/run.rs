//! Executing one run: the handler in its own task, stopped at the deadline or on request,
//! abandoned if it does not stop, and exactly one `RunFinished` at the end.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinError;
use tracing::field::Empty;
use tracing::{Instrument, error, info_span, warn};

use crate::context::RunContext;
use crate::error::HandlerError;
use crate::handler::{Handler, Outcome};
use crate::protocol;
use crate::run_entry::StopReason;
use crate::shared::Shared;

/// How much longer than the kill grace a stopped handler may take to return: a shell
/// handler needs the grace, then a moment to SIGKILL and reap its processes.
const HANDLER_EXIT_MARGIN: Duration = Duration::from_millis(500);

/// How long to wait for an abandoned handler's future to be dropped. Together with
/// [`HANDLER_EXIT_MARGIN`] within [`crate::config::STOP_MARGIN`], the time the coordinator
/// is told to allow beyond the kill grace.
const ABANDON_TIMEOUT: Duration = Duration::from_millis(500);

/// The exit status of a worker that had to end itself because a handler could not be
/// stopped (EX_SOFTWARE).
const UNSTOPPABLE_HANDLER_EXIT: i32 = 70;

/// Runs `handler` for `ctx` and reports the result. When the args could not be parsed
/// the run fails without calling the handler.
pub(crate) async fn execute(shared: Arc<Shared>, ctx: RunContext, handler: Arc<dyn Handler>) {
    let run = &ctx.entry().assignment;
    // The run's part of its trace on this worker, a child of the coordinator's dispatch.
    let span = info_span!(
        "execute",
        otel.kind = "consumer",
        run_id = run.run_id,
        job = %run.job,
        slot = %run.slot,
        attempt = run.attempt,
        trigger = %run.trigger,
        worker = %shared.config.node_id,
        epoch = run.epoch,
        outcome = Empty,
        otel.status_description = Empty,
    );
    cronfleet_telemetry::follow(
        &span,
        cronfleet_telemetry::extract_btree(&run.trace_context),
    );
    let result = match run.args_error.clone() {
        Some(error) => Err(HandlerError::new(error)),
        None => {
            supervise(&shared, ctx.clone(), handler, &span)
                .instrument(span.clone())
                .await
        }
    };
    let run = ctx.entry();
    // Before the result seals the run: if the lease ran out meanwhile, that is why the
    // handler ended (the stop reason is set first, so the outcome says ABORTED).
    shared.check_lease();
    let finished = run.seal(result.map(|outcome| outcome.remaining()));
    span.record(
        "outcome",
        protocol::run_outcome(&finished.ending).as_str_name(),
    );
    let error = finished.ending.error();
    if !error.is_empty() {
        span.record("otel.status_description", error.as_str());
    }
    span.in_scope(|| shared.finish_run(run, finished));
}

async fn supervise(
    shared: &Shared,
    ctx: RunContext,
    handler: Arc<dyn Handler>,
    execute: &tracing::Span,
) -> Result<Outcome, HandlerError> {
    let run = ctx.entry();
    // What the handler records: the shell's exit code or signal, the HTTP status.
    let span = info_span!(
        parent: execute,
        "handler",
        handler = %run.assignment.handler,
        exit_code = Empty,
        signal = Empty,
        http.response.status_code = Empty,
        otel.status_description = Empty,
    );
    let token = run.token.clone();
    let deadline = run.assignment.deadline;
    // The timeout counts from the Assign's arrival on this machine's monotonic clock, so
    // a skew between the coordinator's clock and ours changes nothing; only an Assign of
    // an older coordinator (no timeout) is timed by its wall-clock deadline.
    let until_deadline = match run.assignment.timeout {
        Some(timeout) => Some(tokio::time::Instant::from_std(run.assigned) + timeout),
        None => deadline.map(|deadline| {
            let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::Instant::now() + left
        }),
    };
    // What the stop says: the coordinator's deadline, or now if it gave none.
    let passed = move || StopReason::DeadlinePassed(deadline.unwrap_or_else(Utc::now));
    if until_deadline.is_some_and(|at| at <= tokio::time::Instant::now()) {
        // Already late (a slow dispatch): do not start work that must stop at once.
        run.stop(passed());
        return Err(HandlerError::new(
            "the deadline had passed before the run started",
        ));
    }

    let run_for_task = ctx.clone();
    let handler_span = span.clone();
    let mut task = tokio::spawn(
        async move {
            let result = handler.run(run_for_task).await;
            if let Err(error) = &result {
                tracing::Span::current().record("otel.status_description", error.message());
            }
            result
        }
        .instrument(handler_span),
    );
    let deadline_reached = async {
        match until_deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        joined = &mut task => return joined_result(joined),
        () = deadline_reached => run.stop(passed()),
        () = token.cancelled() => {}
    }
    let patience = shared.config.kill_grace + HANDLER_EXIT_MARGIN;
    match tokio::time::timeout(patience, &mut task).await {
        Ok(joined) => joined_result(joined),
        Err(_) => {
            // Dropping the handler's future is all that can be done without its help;
            // the stock shell handler kills its process group when dropped. The drop
            // happens on the task's next poll: wait for it, so that RunFinished never
            // precedes it (unless the handler blocks its thread, hence the bound).
            task.abort();
            if tokio::time::timeout(ABANDON_TIMEOUT, task).await.is_err() {
                // The handler blocks its thread and cannot be dropped: nothing in this
                // process can prove it stopped. Reporting the run over would let it run
                // again elsewhere alongside it, so the worker ends instead — the only stop
                // that is certain — within the stop grace it promised the coordinator.
                error!(
                    run_id = run.run_id(),
                    job = %run.assignment.job,
                    worker = %shared.config.node_id,
                    "handler ignored cancellation and blocks its thread: the worker exits so that the run certainly stops"
                );
                std::process::exit(UNSTOPPABLE_HANDLER_EXIT);
            }
            warn!(
                run_id = run.run_id(),
                job = %run.assignment.job,
                worker = %shared.config.node_id,
                patience_ms = patience.as_millis() as u64,
                "handler ignored cancellation: abandoned"
            );
            Err(HandlerError::new(format!(
                "the handler did not stop within {} ms of being told to and was abandoned",
                patience.as_millis()
            )))
        }
    }
}

fn joined_result(
    joined: Result<Result<Outcome, HandlerError>, JoinError>,
) -> Result<Outcome, HandlerError> {
    match joined {
        Ok(result) => result,
        Err(error) if error.is_panic() => {
            let panic = error.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic payload".to_owned());
            Err(HandlerError::new(format!("handler panicked: {message}")))
        }
        Err(_) => Err(HandlerError::new("handler task was cancelled")),
    }
}
