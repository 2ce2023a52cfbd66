//! The leader's store, wrapped rather than sprinkled: [`InstrumentedStore`] counts every
//! failed call in `cronfleet_store_errors_total` (by operation and kind), and
//! [`RetryingStore`] retries a call while the store is unreachable — for the worker
//! reports, which must not be dropped while PostgreSQL restarts. Both implement
//! [`LeaderStore`] over the store they wrap, so the code that calls them does not change.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::run::{Progress, Run};
use cronfleet_store::{
    DispatchCursor, DispatchableRun, FinishOrder, FinishRules, Finished, LeaderStore, Lease, Lost,
    RunTransition, SoleLeadership, StoreError,
};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::CoordinatorMetrics;

/// Counts the failures of the store it wraps. An answer about the data (not found, an
/// illegal move, a busy job) is not a failure of the store and is not counted.
#[derive(Debug)]
pub(crate) struct InstrumentedStore {
    inner: Arc<dyn LeaderStore>,
    metrics: Arc<CoordinatorMetrics>,
}

impl InstrumentedStore {
    pub(crate) fn new(inner: Arc<dyn LeaderStore>, metrics: Arc<CoordinatorMetrics>) -> Self {
        InstrumentedStore { inner, metrics }
    }

    async fn call<T, F, Fut>(&self, operation: &'static str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let result = call().await;
        if let Err(error) = &result
            && matches!(
                error,
                StoreError::Database(_)
                    | StoreError::Corrupt(_)
                    | StoreError::Fenced { .. }
                    | StoreError::Migrate(_)
            )
        {
            self.metrics.store_error(operation, error);
        }
        result
    }
}

/// Retries the calls of the store it wraps while the store is unreachable, with a growing
/// pause, for at most `give_up_after` and never past `stop` (the term's end). A call it
/// gives up on, or one stopped by `stop`, answers the last error.
#[derive(Debug)]
pub(crate) struct RetryingStore {
    inner: Arc<dyn LeaderStore>,
    give_up_after: Duration,
    stop: CancellationToken,
}

impl RetryingStore {
    pub(crate) fn new(
        inner: Arc<dyn LeaderStore>,
        give_up_after: Duration,
        stop: CancellationToken,
    ) -> Self {
        RetryingStore {
            inner,
            give_up_after,
            stop,
        }
    }

    async fn call<T, F, Fut>(&self, operation: &'static str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let result = call().await;
            match &result {
                Err(error) if error.is_transient() && started.elapsed() < self.give_up_after => {
                    warn!(operation, %error, "store unavailable; retrying");
                }
                _ => return result,
            }
            tokio::select! {
                () = self.stop.cancelled() => return result,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// `impl LeaderStore` for a wrapper with an inherent `call(operation, || future)` that
/// runs each call of its `inner` store its way.
macro_rules! leader_store_through_call {
    ($wrapper:ty) => {
        #[async_trait::async_trait]
        impl LeaderStore for $wrapper {
            async fn raise_epoch(&self, epoch: i64) -> Result<i64, StoreError> {
                self.call("raise_epoch", || self.inner.raise_epoch(epoch))
                    .await
            }

            async fn claim_sole_leadership(
                &self,
            ) -> Result<Option<Box<dyn SoleLeadership>>, StoreError> {
                self.call("claim_sole_leadership", || {
                    self.inner.claim_sole_leadership()
                })
                .await
            }

            async fn earliest_next_run_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
                self.call("earliest_next_run_at", || self.inner.earliest_next_run_at())
                    .await
            }

            async fn lease_due(
                &self,
                now: DateTime<Utc>,
                epoch: i64,
                limit: u32,
                settings: &LeaseSettings,
            ) -> Result<Lease, StoreError> {
                self.call("lease_due", || {
                    self.inner.lease_due(now, epoch, limit, settings)
                })
                .await
            }

            async fn dispatchable_runs(
                &self,
                now: DateTime<Utc>,
                after: Option<DispatchCursor>,
                limit: u32,
            ) -> Result<Vec<DispatchableRun>, StoreError> {
                self.call("dispatchable_runs", || {
                    self.inner.dispatchable_runs(now, after, limit)
                })
                .await
            }

            async fn set_pending_reason(
                &self,
                run_ids: &[i64],
                reason: Option<&str>,
            ) -> Result<(), StoreError> {
                self.call("set_pending_reason", || {
                    self.inner.set_pending_reason(run_ids, reason)
                })
                .await
            }

            async fn earliest_not_before(
                &self,
                now: DateTime<Utc>,
            ) -> Result<Option<DateTime<Utc>>, StoreError> {
                self.call("earliest_not_before", || {
                    self.inner.earliest_not_before(now)
                })
                .await
            }

            async fn count_backlog(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
                self.call("count_backlog", || self.inner.count_backlog(now))
                    .await
            }

            async fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
                self.call("active_runs", || self.inner.active_runs()).await
            }

            async fn transition_run(
                &self,
                id: i64,
                transition: &RunTransition,
                now: DateTime<Utc>,
            ) -> Result<Run, StoreError> {
                self.call("transition_run", || {
                    self.inner.transition_run(id, transition, now)
                })
                .await
            }

            async fn transition_runs(
                &self,
                batch: &[(i64, RunTransition)],
                now: DateTime<Utc>,
            ) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
                self.call("transition_runs", || self.inner.transition_runs(batch, now))
                    .await
            }

            async fn finish_run(
                &self,
                id: i64,
                transition: &RunTransition,
                rules: &FinishRules,
                now: DateTime<Utc>,
            ) -> Result<Finished, StoreError> {
                self.call("finish_run", || {
                    self.inner.finish_run(id, transition, rules, now)
                })
                .await
            }

            async fn finish_runs(
                &self,
                batch: &[FinishOrder],
                now: DateTime<Utc>,
            ) -> Result<Vec<Result<Finished, StoreError>>, StoreError> {
                self.call("finish_runs", || self.inner.finish_runs(batch, now))
                    .await
            }

            async fn mark_lost(
                &self,
                id: i64,
                epoch: i64,
                reason: &str,
                max_losses: u32,
                now: DateTime<Utc>,
            ) -> Result<Lost, StoreError> {
                self.call("mark_lost", || {
                    self.inner.mark_lost(id, epoch, reason, max_losses, now)
                })
                .await
            }

            async fn record_progress(&self, id: i64, progress: Progress) -> Result<(), StoreError> {
                self.call("record_progress", || {
                    self.inner.record_progress(id, progress)
                })
                .await
            }

            async fn record_output(&self, id: i64, output: &str) -> Result<(), StoreError> {
                self.call("record_output", || self.inner.record_output(id, output))
                    .await
            }

            async fn prune_runs(
                &self,
                created_before: DateTime<Utc>,
                keep_per_job: u32,
                limit: u32,
            ) -> Result<u64, StoreError> {
                self.call("prune_runs", || {
                    self.inner.prune_runs(created_before, keep_per_job, limit)
                })
                .await
            }
        }
    };
}

leader_store_through_call!(InstrumentedStore);
leader_store_through_call!(RetryingStore);
