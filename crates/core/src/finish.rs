//! What follows a run's end (DESIGN §3): the job's failure streak changes, a failed or
//! timed-out run with retries left gets its next attempt at the same slot after a backoff,
//! a success with work left gets a continuation at once, and a job that keeps failing is
//! paused instead of retried.
//!
//! [`plan_finish`] decides it from the run's end, the job as it was before that end and
//! the coordinator's rules; the store writes the plan in the transaction that records the
//! end, so a crash cannot separate a run's end from its follow-up. `now` and the jitter are
//! arguments: nothing here reads a clock or a random source.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::policy::{AutoPausePolicy, FailureStreak, RetryPolicy};
use crate::run::{RunState, Trigger};

/// The coordinator's settings that decide what follows a run's end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinishRules {
    /// Retry backoff: the delay before the first retry, doubling, capped.
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// In [0, 1): spreads the retries of jobs that failed together. The caller draws it.
    pub jitter: f64,
    pub auto_pause: AutoPausePolicy,
    /// Work the handler reported as left; a success with work left continues at once.
    pub remaining: u64,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunEnd {
    pub slot: DateTime<Utc>,
    /// 1 for the first attempt at the slot.
    pub attempt: u32,
    /// The final state the run reached.
    pub state: RunState,
}

/// What of its job a run's end depends on, as the job stood before this end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobStanding {
    /// Extra attempts after the first one (the job's `retries`).
    pub retries: u32,
    pub paused: bool,
    /// The failure streak before this end.
    pub failures: FailureStreak,
}

/// What a run's end does to its job's failure streak: `succeeded` resets it, `failed` and
/// `timed_out` extend it, anything else (`cancelled`, `lost`) says nothing about the job's
/// health and leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreakChange {
    Unchanged,
    Reset,
    Failure,
}

impl StreakChange {
    /// The change a run reaching `state` makes.
    pub fn of(state: RunState) -> StreakChange {
        match state {
            RunState::Succeeded => StreakChange::Reset,
            RunState::Failed | RunState::TimedOut => StreakChange::Failure,
            _ => StreakChange::Unchanged,
        }
    }

    /// The streak after the change, made at `now`.
    pub fn apply(self, streak: FailureStreak, now: DateTime<Utc>) -> FailureStreak {
        match self {
            StreakChange::Unchanged => streak,
            StreakChange::Reset => streak.after_run(true, now),
            StreakChange::Failure => streak.after_run(false, now),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StreakChange::Unchanged => "unchanged",
            StreakChange::Reset => "reset",
            StreakChange::Failure => "failure",
        }
    }
}

/// A run to create after another ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowUp {
    pub slot: DateTime<Utc>,
    pub attempt: u32,
    /// [`Trigger::Retry`] or [`Trigger::Continuation`].
    pub trigger: Trigger,
    /// Not dispatched before this time (a retry's backoff); `None`: at once.
    pub not_before: Option<DateTime<Utc>>,
}

/// What follows a run's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishPlan {
    pub streak_change: StreakChange,
    /// The job's failure streak after this end.
    pub streak: FailureStreak,
    pub follow_up: Option<FollowUp>,
    /// Set when this end pauses the job; then nothing follows.
    pub pause_reason: Option<String>,
}

/// Decides what follows `end` for a job that stood as `job` before it, at `now`.
///
/// The auto-pause rule is judged on the streak *after* this end: the failure that
/// completes the streak pauses the job rather than being retried once more. A job already
/// paused is not paused again (an operator's note stays) and keeps its retries.
pub fn plan_finish(
    end: RunEnd,
    job: JobStanding,
    rules: &FinishRules,
    now: DateTime<Utc>,
) -> FinishPlan {
    let streak_change = StreakChange::of(end.state);
    let streak = streak_change.apply(job.failures, now);
    let mut plan = FinishPlan {
        streak_change,
        streak,
        follow_up: None,
        pause_reason: None,
    };
    match end.state {
        RunState::Failed | RunState::TimedOut => {
            if !job.paused
                && let Some(reason) = rules.auto_pause.pause_reason(streak, now)
            {
                plan.pause_reason = Some(reason);
                return plan;
            }
            let retry = RetryPolicy {
                retries: job.retries,
                base_delay: rules.retry_base_delay,
                max_delay: rules.retry_max_delay,
            };
            plan.follow_up = retry.should_retry(end.attempt).then(|| {
                let backoff = retry.backoff(end.attempt, rules.jitter);
                FollowUp {
                    slot: end.slot,
                    attempt: end.attempt.saturating_add(1),
                    trigger: Trigger::Retry,
                    not_before: Some(now + TimeDelta::from_std(backoff).unwrap_or_default()),
                }
            });
        }
        RunState::Succeeded if rules.remaining > 0 => {
            // At once, behind the runs already waiting (dispatch goes by priority, then age).
            plan.follow_up = Some(FollowUp {
                slot: now,
                attempt: 1,
                trigger: Trigger::Continuation,
                not_before: None,
            });
        }
        _ => {}
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    const WEEK: i64 = 7 * 24 * 3600;

    fn rules() -> FinishRules {
        FinishRules {
            retry_base_delay: Duration::from_secs(10),
            retry_max_delay: Duration::from_secs(60),
            jitter: 0.0,
            auto_pause: AutoPausePolicy::default(),
            remaining: 0,
        }
    }

    fn healthy(retries: u32) -> JobStanding {
        JobStanding {
            retries,
            paused: false,
            failures: FailureStreak::default(),
        }
    }

    fn end(state: RunState, attempt: u32) -> RunEnd {
        RunEnd {
            slot: t(-100),
            attempt,
            state,
        }
    }

    /// Four failures since a week ago: the next one completes the default auto-pause rule.
    fn one_failure_from_pausing() -> FailureStreak {
        FailureStreak {
            failure_count: 4,
            first_failure_at: Some(t(-WEEK)),
        }
    }

    #[test]
    fn a_failure_with_retries_left_is_retried_at_the_same_slot_after_the_backoff() {
        let plan = plan_finish(end(RunState::Failed, 1), healthy(2), &rules(), t(0));
        assert_eq!(
            plan.follow_up,
            Some(FollowUp {
                slot: t(-100),
                attempt: 2,
                trigger: Trigger::Retry,
                // Half of the 10 s base with jitter 0.
                not_before: Some(t(5)),
            })
        );
        assert_eq!(plan.pause_reason, None);
        let second = plan_finish(
            end(RunState::Failed, 2),
            healthy(2),
            &FinishRules {
                jitter: 0.5,
                ..rules()
            },
            t(0),
        );
        // 20 s doubled backoff, half of it plus half of the other half.
        assert_eq!(second.follow_up.unwrap().not_before, Some(t(15)));
    }

    #[test]
    fn the_last_attempt_is_not_retried() {
        let plan = plan_finish(end(RunState::Failed, 3), healthy(2), &rules(), t(0));
        assert_eq!(plan.follow_up, None);
        let no_retries = plan_finish(end(RunState::Failed, 1), healthy(0), &rules(), t(0));
        assert_eq!(no_retries.follow_up, None);
    }

    #[test]
    fn a_timeout_counts_as_a_failure() {
        let plan = plan_finish(end(RunState::TimedOut, 1), healthy(1), &rules(), t(0));
        assert_eq!(plan.streak_change, StreakChange::Failure);
        assert_eq!(plan.follow_up.unwrap().trigger, Trigger::Retry);
    }

    #[test]
    fn a_failure_extends_the_streak_from_its_first_failure() {
        let first = plan_finish(end(RunState::Failed, 1), healthy(0), &rules(), t(0));
        assert_eq!(
            first.streak,
            FailureStreak {
                failure_count: 1,
                first_failure_at: Some(t(0))
            }
        );
        let job = JobStanding {
            failures: first.streak,
            ..healthy(0)
        };
        let second = plan_finish(end(RunState::Failed, 1), job, &rules(), t(30));
        assert_eq!(
            second.streak,
            FailureStreak {
                failure_count: 2,
                first_failure_at: Some(t(0))
            }
        );
    }

    #[test]
    fn a_success_resets_the_streak_and_continues_only_with_work_left() {
        let job = JobStanding {
            failures: one_failure_from_pausing(),
            ..healthy(3)
        };
        let done = plan_finish(end(RunState::Succeeded, 2), job, &rules(), t(0));
        assert_eq!(done.streak_change, StreakChange::Reset);
        assert_eq!(done.streak, FailureStreak::default());
        assert_eq!(done.follow_up, None);
        let more = FinishRules {
            remaining: 7,
            ..rules()
        };
        let continued = plan_finish(end(RunState::Succeeded, 2), job, &more, t(0));
        assert_eq!(
            continued.follow_up,
            Some(FollowUp {
                slot: t(0),
                attempt: 1,
                trigger: Trigger::Continuation,
                not_before: None,
            })
        );
    }

    #[test]
    fn cancelled_and_lost_runs_leave_the_streak_and_nothing_follows() {
        let job = JobStanding {
            failures: one_failure_from_pausing(),
            ..healthy(3)
        };
        let more = FinishRules {
            remaining: 7,
            ..rules()
        };
        for state in [RunState::Cancelled, RunState::Lost] {
            let plan = plan_finish(end(state, 1), job, &more, t(0));
            assert_eq!(plan.streak_change, StreakChange::Unchanged, "{state}");
            assert_eq!(plan.streak, one_failure_from_pausing(), "{state}");
            assert_eq!(plan.follow_up, None, "{state}");
            assert_eq!(plan.pause_reason, None, "{state}");
        }
    }

    #[test]
    fn the_failure_that_completes_the_streak_pauses_the_job_instead_of_a_retry() {
        let job = JobStanding {
            failures: one_failure_from_pausing(),
            ..healthy(3)
        };
        let plan = plan_finish(end(RunState::Failed, 1), job, &rules(), t(0));
        assert_eq!(plan.streak.failure_count, 5);
        assert_eq!(plan.follow_up, None);
        let reason = plan
            .pause_reason
            .expect("5 failures over a week pause the job");
        assert!(reason.contains("5 consecutive failures"), "{reason}");

        // One failure short: retried.
        let short = JobStanding {
            failures: FailureStreak {
                failure_count: 3,
                ..one_failure_from_pausing()
            },
            ..job
        };
        let plan = plan_finish(end(RunState::Failed, 1), short, &rules(), t(0));
        assert_eq!(plan.pause_reason, None);
        assert!(plan.follow_up.is_some());
    }

    #[test]
    fn a_paused_job_is_not_paused_again_and_keeps_its_retries() {
        let job = JobStanding {
            paused: true,
            failures: one_failure_from_pausing(),
            ..healthy(3)
        };
        let plan = plan_finish(end(RunState::Failed, 1), job, &rules(), t(0));
        assert_eq!(plan.pause_reason, None);
        assert_eq!(plan.follow_up.unwrap().attempt, 2);
        assert_eq!(plan.streak.failure_count, 5);
    }

    #[test]
    fn streak_change_names_are_those_the_store_switches_on() {
        assert_eq!(StreakChange::Unchanged.as_str(), "unchanged");
        assert_eq!(StreakChange::Reset.as_str(), "reset");
        assert_eq!(StreakChange::Failure.as_str(), "failure");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn final_state() -> impl Strategy<Value = RunState> {
            prop::sample::select(
                RunState::ALL
                    .into_iter()
                    .filter(|state| state.is_final())
                    .collect::<Vec<_>>(),
            )
        }

        fn any_rules() -> impl Strategy<Value = FinishRules> {
            (
                1u64..600,
                1u64..3600,
                0.0f64..1.0,
                0u32..8,
                0u64..(2 * WEEK as u64),
                0u64..3,
            )
                .prop_map(|(base, max, jitter, min_failures, span, remaining)| {
                    FinishRules {
                        retry_base_delay: Duration::from_secs(base),
                        retry_max_delay: Duration::from_secs(max),
                        jitter,
                        auto_pause: AutoPausePolicy {
                            min_failures,
                            min_span: Duration::from_secs(span),
                        },
                        remaining,
                    }
                })
        }

        fn any_job() -> impl Strategy<Value = JobStanding> {
            (
                0u32..6,
                any::<bool>(),
                0u32..10,
                prop::option::of(0i64..(3 * WEEK)),
            )
                .prop_map(|(retries, paused, count, age)| JobStanding {
                    retries,
                    paused,
                    failures: FailureStreak {
                        failure_count: count,
                        first_failure_at: age.filter(|_| count > 0).map(|age| t(-age)),
                    },
                })
        }

        fn any_end() -> impl Strategy<Value = RunEnd> {
            (final_state(), 1u32..10, -WEEK..WEEK).prop_map(|(state, attempt, slot)| RunEnd {
                slot: t(slot),
                attempt,
                state,
            })
        }

        proptest! {
            #[test]
            fn a_retry_keeps_the_slot_stays_within_retries_and_waits_within_the_backoff_bounds(
                end in any_end(), job in any_job(), rules in any_rules(), now in 0i64..WEEK,
            ) {
                let now = t(now);
                let plan = plan_finish(end, job, &rules, now);
                if let Some(next) = plan.follow_up.filter(|next| next.trigger == Trigger::Retry) {
                    prop_assert!(matches!(end.state, RunState::Failed | RunState::TimedOut));
                    prop_assert_eq!(next.slot, end.slot);
                    prop_assert_eq!(next.attempt, end.attempt + 1);
                    prop_assert!(next.attempt - 1 <= job.retries, "attempt {} with {} retries", next.attempt, job.retries);
                    let capped = rules
                        .retry_base_delay
                        .saturating_mul(1 << (end.attempt - 1).min(31))
                        .min(rules.retry_max_delay);
                    let wait = (next.not_before.unwrap() - now).to_std().unwrap();
                    prop_assert!(wait >= capped / 2, "{wait:?} < half of {capped:?}");
                    prop_assert!(wait <= capped && wait <= rules.retry_max_delay, "{wait:?} > {capped:?}");
                    prop_assert!(wait >= rules.retry_base_delay.min(rules.retry_max_delay) / 2);
                }
            }

            #[test]
            fn a_pause_and_a_follow_up_never_come_together(
                end in any_end(), job in any_job(), rules in any_rules(), now in 0i64..WEEK,
            ) {
                let plan = plan_finish(end, job, &rules, t(now));
                prop_assert!(plan.pause_reason.is_none() || plan.follow_up.is_none());
            }

            #[test]
            fn only_a_failure_of_an_unpaused_job_pauses_it(
                end in any_end(), job in any_job(), rules in any_rules(), now in 0i64..WEEK,
            ) {
                let plan = plan_finish(end, job, &rules, t(now));
                if plan.pause_reason.is_some() {
                    prop_assert!(!job.paused);
                    prop_assert!(matches!(end.state, RunState::Failed | RunState::TimedOut));
                    prop_assert!(plan.streak.failure_count >= rules.auto_pause.min_failures);
                }
                if end.state == RunState::Succeeded {
                    prop_assert_eq!(plan.pause_reason, None);
                    prop_assert_eq!(plan.streak, FailureStreak::default());
                }
            }

            #[test]
            fn the_streak_follows_the_end(
                end in any_end(), job in any_job(), rules in any_rules(), now in 0i64..WEEK,
            ) {
                let now = t(now);
                let plan = plan_finish(end, job, &rules, now);
                let expected = match end.state {
                    RunState::Succeeded => job.failures.after_run(true, now),
                    RunState::Failed | RunState::TimedOut => job.failures.after_run(false, now),
                    _ => job.failures,
                };
                prop_assert_eq!(plan.streak, expected);
                prop_assert_eq!(plan.streak_change.apply(job.failures, now), plan.streak);
            }

            #[test]
            fn a_continuation_follows_only_a_success_with_work_left(
                end in any_end(), job in any_job(), rules in any_rules(), now in 0i64..WEEK,
            ) {
                let now = t(now);
                let plan = plan_finish(end, job, &rules, now);
                let continues = end.state == RunState::Succeeded && rules.remaining > 0;
                let continuation = plan.follow_up.filter(|next| next.trigger == Trigger::Continuation);
                prop_assert_eq!(continuation.is_some(), continues);
                if let Some(next) = continuation {
                    prop_assert_eq!((next.slot, next.attempt, next.not_before), (now, 1, None));
                }
                if !matches!(end.state, RunState::Failed | RunState::TimedOut | RunState::Succeeded) {
                    prop_assert_eq!(plan.follow_up, None);
                    prop_assert_eq!(plan.pause_reason, None);
                }
            }
        }
    }
}
