//! The run state machine: which states a run passes through and which moves are legal.
//!
//! ```text
//! pending ─► dispatched ─► running ─► succeeded | failed | timed_out | cancelled | lost
//!    │            └──────────────────► (any end state but skipped/missed)
//!    └─► cancelled
//! skipped, missed: created final, for slots that were not run
//! ```
//!
//! A run is *active* while it is dispatched or running: at most one run of a job may be
//! active (DESIGN §2, invariant 1), which the store also enforces with a unique index.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunState {
    /// Created, waiting for a worker.
    Pending,
    /// Sent to a worker, not yet reported as started.
    Dispatched,
    /// The worker reported that the handler started.
    Running,
    Succeeded,
    Failed,
    /// The deadline passed (worker-side cancel, or coordinator-side after deadline + grace).
    TimedOut,
    Cancelled,
    /// The worker holding it went silent past the worker timeout.
    Lost,
    /// A slot not run because the job was still busy (overlap policy `skip`).
    Skipped,
    /// Slots not run because of the catch-up policy or window.
    Missed,
}

impl RunState {
    pub const ALL: [RunState; 10] = [
        RunState::Pending,
        RunState::Dispatched,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Cancelled,
        RunState::Lost,
        RunState::Skipped,
        RunState::Missed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Dispatched => "dispatched",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Cancelled => "cancelled",
            RunState::Lost => "lost",
            RunState::Skipped => "skipped",
            RunState::Missed => "missed",
        }
    }

    /// Dispatched or running: holds the job's single active slot.
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Dispatched | RunState::Running)
    }

    /// Not yet finished: pending, dispatched or running. A job with an open run is busy.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            RunState::Pending | RunState::Dispatched | RunState::Running
        )
    }

    pub fn is_final(self) -> bool {
        !self.is_open()
    }

    /// Whether a run may move from `self` to `next`.
    pub fn can_become(self, next: RunState) -> bool {
        use RunState::*;
        match self {
            Pending => matches!(next, Dispatched | Cancelled),
            Dispatched => matches!(
                next,
                Running | Succeeded | Failed | TimedOut | Cancelled | Lost
            ),
            Running => matches!(next, Succeeded | Failed | TimedOut | Cancelled | Lost),
            Succeeded | Failed | TimedOut | Cancelled | Lost | Skipped | Missed => false,
        }
    }

    /// Moves to `next`, or says why that is not allowed.
    pub fn become_(self, next: RunState) -> Result<RunState, IllegalTransition> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(IllegalTransition {
                from: self,
                to: next,
            })
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownName::new("run state", s, &RunState::ALL.map(RunState::as_str)))
    }
}

/// A run state change the state machine forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} run cannot become {to}")]
pub struct IllegalTransition {
    pub from: RunState,
    pub to: RunState,
}

/// Why a run exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The regular schedule, on time.
    Schedule,
    /// An operator's "run now" or "trigger at".
    Manual,
    /// Another attempt at a slot whose previous attempt failed.
    Retry,
    /// A late slot run by the catch-up policy.
    CatchUp,
    /// The handler finished with work remaining.
    Continuation,
}

impl Trigger {
    pub const ALL: [Trigger; 5] = [
        Trigger::Schedule,
        Trigger::Manual,
        Trigger::Retry,
        Trigger::CatchUp,
        Trigger::Continuation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Retry => "retry",
            Trigger::CatchUp => "catch_up",
            Trigger::Continuation => "continuation",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Trigger {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == s)
            .ok_or_else(|| UnknownName::new("trigger", s, &Trigger::ALL.map(Trigger::as_str)))
    }
}

/// A name that is not one of a fixed set (a state, a trigger, a policy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} \"{value}\"; valid values are {valid}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub valid: String,
}

impl UnknownName {
    pub fn new(what: &'static str, value: &str, valid: &[&str]) -> UnknownName {
        UnknownName {
            what,
            value: value.to_owned(),
            valid: valid.join(", "),
        }
    }
}

/// How much of each run's log is kept unless configured otherwise (`--run-log-limit`);
/// older output is dropped first.
pub const DEFAULT_OUTPUT_BYTES: usize = 64 * 1024;

/// The most of a run's log that can be kept (the limit's upper bound, and the store's cap).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// Keeps the last [`MAX_OUTPUT_BYTES`] of `output`: the store's cap.
pub fn bounded_output(output: &str) -> &str {
    output_tail(output, MAX_OUTPUT_BYTES)
}

/// The last `limit` bytes of `output` (the end of a log is what explains a failure), cut
/// at a character boundary.
pub fn output_tail(output: &str, limit: usize) -> &str {
    if output.len() <= limit {
        return output;
    }
    let mut start = output.len() - limit;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    &output[start..]
}

/// What `now` (the log's kept tail) adds to `shown` (the tail shown before). The kept
/// tail is a window that slides once the log outgrows it: the new part starts after the
/// end of what was shown, found by its last line-or-so.
pub fn output_added(shown: &str, now: &str) -> String {
    if let Some(added) = now.strip_prefix(shown) {
        return added.to_owned();
    }
    // The longest end of `shown` that `now` still holds: up to 256 bytes, at least the
    // last line.
    let last_line = shown
        .trim_end_matches('\n')
        .rfind('\n')
        .map_or(0, |at| at + 1);
    let mut start = shown.len().saturating_sub(256).min(last_line);
    while start <= last_line {
        if shown.is_char_boundary(start)
            && let Some(at) = now.rfind(&shown[start..])
        {
            return now[at + shown.len() - start..].to_owned();
        }
        start += 1;
    }
    format!("[… output dropped: only the last part of a log is kept …]\n{now}")
}

/// How far a handler says it has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub remaining: u64,
}

/// One run of a job, or one record of slots that were not run (`skipped`, `missed`).
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub id: i64,
    pub job_id: i64,
    pub job_name: String,
    /// The scheduled time this run is for (the requested time for a manual run); the first
    /// slot of a skipped or missed range.
    pub slot: DateTime<Utc>,
    /// 1 for the first attempt at a slot.
    pub attempt: u32,
    pub trigger: Trigger,
    pub state: RunState,
    /// How many slots a `skipped` / `missed` record stands for (1 for a run).
    pub slot_count: u64,
    /// The last slot of a `skipped` / `missed` range.
    pub last_slot: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    /// The fencing epoch of the leader that created or last dispatched the run.
    pub epoch: i64,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    /// Set when the run was asked to stop (overlap `replace`, an operator's cancel).
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub output: Option<String>,
    pub progress: Option<Progress>,
    pub trace_id: Option<String>,
    /// Not to be dispatched before this time (a manual run at a given time, a retry after
    /// its backoff).
    pub not_before: Option<DateTime<Utc>>,
    /// Why a pending run is still waiting (e.g. no worker offers its handler).
    pub pending_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::RunState::*;
    use super::*;

    #[test]
    fn the_happy_path_is_legal() {
        let mut state = Pending;
        for next in [Dispatched, Running, Succeeded] {
            state = state.become_(next).unwrap();
        }
        assert_eq!(state, Succeeded);
    }

    #[test]
    fn final_states_never_move() {
        for from in RunState::ALL.into_iter().filter(|s| s.is_final()) {
            for to in RunState::ALL {
                assert_eq!(
                    from.become_(to),
                    Err(IllegalTransition { from, to }),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn the_legal_moves_are_exactly_these() {
        let legal: Vec<(RunState, RunState)> = RunState::ALL
            .into_iter()
            .flat_map(|from| RunState::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.can_become(*to))
            .collect();
        let expected = vec![
            (Pending, Dispatched),
            (Pending, Cancelled),
            (Dispatched, Running),
            (Dispatched, Succeeded),
            (Dispatched, Failed),
            (Dispatched, TimedOut),
            (Dispatched, Cancelled),
            (Dispatched, Lost),
            (Running, Succeeded),
            (Running, Failed),
            (Running, TimedOut),
            (Running, Cancelled),
            (Running, Lost),
        ];
        assert_eq!(legal, expected);
    }

    #[test]
    fn a_pending_run_cannot_be_lost_or_finish_without_a_worker() {
        assert!(!Pending.can_become(Lost));
        assert!(!Pending.can_become(Succeeded));
        assert!(!Pending.can_become(Running));
        assert_eq!(
            Pending.become_(Running).unwrap_err().to_string(),
            "a pending run cannot become running"
        );
    }

    #[test]
    fn active_and_open_are_what_the_invariants_need() {
        let active: Vec<_> = RunState::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        assert_eq!(active, vec![Dispatched, Running]);
        let open: Vec<_> = RunState::ALL.into_iter().filter(|s| s.is_open()).collect();
        assert_eq!(open, vec![Pending, Dispatched, Running]);
    }

    #[test]
    fn output_keeps_the_end_within_the_bound() {
        assert_eq!(bounded_output("short"), "short");
        let long = format!("{}END", "é".repeat(MAX_OUTPUT_BYTES));
        let kept = bounded_output(&long);
        assert!(kept.len() <= MAX_OUTPUT_BYTES);
        assert!(kept.len() >= MAX_OUTPUT_BYTES - 1);
        assert!(kept.ends_with("END"));
    }

    #[test]
    fn names_round_trip_and_unknown_names_say_what_is_valid() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(state));
        }
        for trigger in Trigger::ALL {
            assert_eq!(trigger.as_str().parse::<Trigger>(), Ok(trigger));
        }
        let err = "done".parse::<RunState>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown run state \"done\"; valid values are pending, dispatched, running, \
             succeeded, failed, timed_out, cancelled, lost, skipped, missed"
        );
    }

    #[test]
    fn follow_prints_each_piece_of_a_log_once() {
        assert_eq!(output_added("", "a\nb\n"), "a\nb\n");
        assert_eq!(output_added("a\nb\n", "a\nb\nc\n"), "c\n");
        assert_eq!(output_added("a\nb\n", "a\nb\n"), "");
        // The window slid: the first line fell out, the new one came in.
        assert_eq!(
            output_added("line 1\nline 2\n", "line 2\nline 3\n"),
            "line 3\n"
        );
        // Nothing in common any more: say so and print the whole tail.
        assert!(output_added("old\n", "new\n").ends_with("]\nnew\n"));
    }
}
