//! Run policies as data and as pure decisions: overlap, catch-up, retry backoff and
//! failure tracking with auto-pause (DESIGN §3).
//!
//! Nothing here reads a clock or a random source: `now` and `jitter` are arguments.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::run::UnknownName;

/// What happens when a slot comes while the job still has an open run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OverlapPolicy {
    /// Record the slot as skipped (the default).
    #[default]
    Skip,
    /// Keep at most one waiting run; it starts when the current one ends.
    Queue,
    /// Cancel the current run; the new one starts once the cancellation has completed.
    Replace,
}

impl OverlapPolicy {
    pub const ALL: [OverlapPolicy; 3] = [
        OverlapPolicy::Skip,
        OverlapPolicy::Queue,
        OverlapPolicy::Replace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::Queue => "queue",
            OverlapPolicy::Replace => "replace",
        }
    }
}

/// What to do with slots that came due while nothing could run them (downtime, overload,
/// a pause).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CatchUpPolicy {
    /// Run once for all missed slots (the default; Odoo's `doall = False`).
    #[default]
    One,
    /// Run every missed slot, one after another, at most [`MAX_CATCH_UP_RUNS`].
    All,
    /// Run none of them; go on with the next slot.
    None,
}

impl CatchUpPolicy {
    pub const ALL: [CatchUpPolicy; 3] =
        [CatchUpPolicy::One, CatchUpPolicy::All, CatchUpPolicy::None];

    pub fn as_str(self) -> &'static str {
        match self {
            CatchUpPolicy::One => "one",
            CatchUpPolicy::All => "all",
            CatchUpPolicy::None => "none",
        }
    }
}

/// The most runs one catch-up creates under [`CatchUpPolicy::All`]; older slots are counted
/// as missed.
pub const MAX_CATCH_UP_RUNS: usize = 1000;

macro_rules! named_enum_text {
    ($ty:ty, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .into_iter()
                    .find(|value| value.as_str() == s)
                    .ok_or_else(|| UnknownName::new($what, s, &<$ty>::ALL.map(<$ty>::as_str)))
            }
        }
    };
}

named_enum_text!(OverlapPolicy, "overlap policy");
named_enum_text!(CatchUpPolicy, "catch-up policy");

/// The catch-up policy with its optional window: missed slots older than `now - window`
/// are only counted, never run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CatchUp {
    pub policy: CatchUpPolicy,
    pub window: Option<Duration>,
}

/// The runs a job currently has that are not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenRuns {
    /// A run is dispatched or running.
    pub active: bool,
    /// How many runs wait (pending) to be dispatched.
    pub pending: u32,
}

impl OpenRuns {
    pub fn is_busy(self) -> bool {
        self.active || self.pending > 0
    }
}

/// What to do with a new run for a job, given its open runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlapDecision {
    /// The job is idle: create the run.
    Start,
    /// Do not run this slot; record it as skipped.
    Skip,
    /// Create the run as the job's one waiting run.
    Queue,
    /// Create the run, cancel the runs that are waiting now, and ask the active run (if
    /// any) to stop; the new run is dispatched only when nothing else is active.
    Replace {
        cancel_pending: bool,
        cancel_active: bool,
    },
}

/// Applies the overlap policy to one new run.
pub fn decide_overlap(policy: OverlapPolicy, open: OpenRuns) -> OverlapDecision {
    if !open.is_busy() {
        return OverlapDecision::Start;
    }
    match policy {
        OverlapPolicy::Skip => OverlapDecision::Skip,
        // The active run may be accompanied by one waiting run, never more.
        OverlapPolicy::Queue if open.pending == 0 => OverlapDecision::Queue,
        OverlapPolicy::Queue => OverlapDecision::Skip,
        OverlapPolicy::Replace => OverlapDecision::Replace {
            cancel_pending: open.pending > 0,
            cancel_active: open.active,
        },
    }
}

/// Retries with capped exponential backoff and jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first one.
    pub retries: u32,
    /// The delay before the first retry (before jitter).
    pub base_delay: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Whether a run that failed at `attempt` (1 for the first) gets another attempt.
    pub fn should_retry(&self, attempt: u32) -> bool {
        attempt <= self.retries
    }

    /// The delay before attempt `failed_attempt + 1`.
    ///
    /// The exponential delay `base · 2^(failed_attempt-1)` is capped at `max_delay`, then
    /// "equal jitter" keeps half of it and randomises the other half with `jitter` in
    /// [0, 1): retries never come sooner than half the backoff, and many jobs failing
    /// together do not retry in lock-step.
    pub fn backoff(&self, failed_attempt: u32, jitter: f64) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(63);
        let factor = 1u64 << exponent;
        let exponential = self
            .base_delay
            .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
            .unwrap_or(self.max_delay);
        let capped = exponential.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Consecutive failures of a job, reset by a success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureStreak {
    pub failure_count: u32,
    pub first_failure_at: Option<DateTime<Utc>>,
}

impl FailureStreak {
    /// The streak after a run finished at `now`; `succeeded` resets it.
    pub fn after_run(self, succeeded: bool, now: DateTime<Utc>) -> FailureStreak {
        if succeeded {
            FailureStreak::default()
        } else {
            FailureStreak {
                failure_count: self.failure_count.saturating_add(1),
                first_failure_at: Some(self.first_failure_at.unwrap_or(now)),
            }
        }
    }
}

/// When a failing job is paused: after at least `min_failures` consecutive failures that
/// span at least `min_span` (Odoo pauses a cron failing ≥ 5 times over ≥ 7 days).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoPausePolicy {
    pub min_failures: u32,
    pub min_span: Duration,
}

impl Default for AutoPausePolicy {
    fn default() -> Self {
        AutoPausePolicy {
            min_failures: 5,
            min_span: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// How the note of a job paused by [`AutoPausePolicy`] begins, so views can tell an
/// automatic pause from an operator's.
pub const AUTO_PAUSE_NOTE_PREFIX: &str = "paused automatically:";

impl AutoPausePolicy {
    /// The reason to pause the job now, if the streak calls for it.
    pub fn pause_reason(&self, streak: FailureStreak, now: DateTime<Utc>) -> Option<String> {
        let first = streak.first_failure_at?;
        let span = (now - first).to_std().unwrap_or_default();
        (streak.failure_count >= self.min_failures && span >= self.min_span).then(|| {
            format!(
                "{AUTO_PAUSE_NOTE_PREFIX} {} consecutive failures since {}",
                streak.failure_count,
                first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn an_idle_job_always_starts() {
        for policy in OverlapPolicy::ALL {
            assert_eq!(
                decide_overlap(policy, OpenRuns::default()),
                OverlapDecision::Start
            );
        }
    }

    #[test]
    fn skip_skips_whenever_the_job_is_busy() {
        for open in [
            OpenRuns {
                active: true,
                pending: 0,
            },
            OpenRuns {
                active: false,
                pending: 1,
            },
            OpenRuns {
                active: true,
                pending: 1,
            },
        ] {
            assert_eq!(
                decide_overlap(OverlapPolicy::Skip, open),
                OverlapDecision::Skip
            );
        }
    }

    #[test]
    fn queue_keeps_at_most_one_waiting_run() {
        let running = OpenRuns {
            active: true,
            pending: 0,
        };
        assert_eq!(
            decide_overlap(OverlapPolicy::Queue, running),
            OverlapDecision::Queue
        );
        let running_and_waiting = OpenRuns {
            active: true,
            pending: 1,
        };
        assert_eq!(
            decide_overlap(OverlapPolicy::Queue, running_and_waiting),
            OverlapDecision::Skip
        );
    }

    #[test]
    fn replace_cancels_what_is_there() {
        assert_eq!(
            decide_overlap(
                OverlapPolicy::Replace,
                OpenRuns {
                    active: true,
                    pending: 1
                }
            ),
            OverlapDecision::Replace {
                cancel_pending: true,
                cancel_active: true
            }
        );
        assert_eq!(
            decide_overlap(
                OverlapPolicy::Replace,
                OpenRuns {
                    active: true,
                    pending: 0
                }
            ),
            OverlapDecision::Replace {
                cancel_pending: false,
                cancel_active: true
            }
        );
        assert_eq!(
            decide_overlap(
                OverlapPolicy::Replace,
                OpenRuns {
                    active: false,
                    pending: 1
                }
            ),
            OverlapDecision::Replace {
                cancel_pending: true,
                cancel_active: false
            }
        );
    }

    #[test]
    fn policy_names_round_trip_and_errors_list_valid_values() {
        for policy in OverlapPolicy::ALL {
            assert_eq!(policy.to_string().parse::<OverlapPolicy>(), Ok(policy));
        }
        for policy in CatchUpPolicy::ALL {
            assert_eq!(policy.to_string().parse::<CatchUpPolicy>(), Ok(policy));
        }
        assert_eq!(
            "sometimes"
                .parse::<OverlapPolicy>()
                .unwrap_err()
                .to_string(),
            "unknown overlap policy \"sometimes\"; valid values are skip, queue, replace"
        );
        assert_eq!(
            "many".parse::<CatchUpPolicy>().unwrap_err().to_string(),
            "unknown catch-up policy \"many\"; valid values are one, all, none"
        );
    }

    #[test]
    fn retries_stop_after_the_configured_number() {
        let policy = RetryPolicy {
            retries: 2,
            ..RetryPolicy::default()
        };
        assert!(policy.should_retry(1));
        assert!(policy.should_retry(2));
        assert!(!policy.should_retry(3));
        assert!(!RetryPolicy::default().should_retry(1));
    }

    #[test]
    fn backoff_doubles_then_caps_and_jitter_spans_the_upper_half() {
        let policy = RetryPolicy {
            retries: 10,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        };
        assert_eq!(policy.backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(policy.backoff(1, 1.0), Duration::from_secs(2));
        assert_eq!(policy.backoff(2, 1.0), Duration::from_secs(4));
        assert_eq!(policy.backoff(3, 0.5), Duration::from_secs(6));
        assert_eq!(policy.backoff(6, 1.0), Duration::from_secs(60));
        assert_eq!(policy.backoff(60, 0.0), Duration::from_secs(30));
        assert_eq!(policy.backoff(u32::MAX, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let streak = FailureStreak::default()
            .after_run(false, t(0))
            .after_run(false, t(10));
        assert_eq!(
            streak,
            FailureStreak {
                failure_count: 2,
                first_failure_at: Some(t(0))
            }
        );
        assert_eq!(streak.after_run(true, t(20)), FailureStreak::default());
    }

    #[test]
    fn auto_pause_needs_both_the_count_and_the_span() {
        let policy = AutoPausePolicy::default();
        let week = 7 * 24 * 3600;
        let mut streak = FailureStreak::default();
        for i in 0..5 {
            streak = streak.after_run(false, t(i * 3600));
        }
        assert_eq!(
            policy.pause_reason(streak, t(week - 1)),
            None,
            "5 failures, < 7 days"
        );
        let reason = policy
            .pause_reason(streak, t(week))
            .expect("5 failures over 7 days");
        assert!(reason.contains("5 consecutive failures"), "{reason}");

        let four = FailureStreak {
            failure_count: 4,
            first_failure_at: Some(t(0)),
        };
        assert_eq!(
            policy.pause_reason(four, t(30 * week)),
            None,
            "4 failures, long ago"
        );
        assert_eq!(policy.pause_reason(FailureStreak::default(), t(week)), None);
    }
}
