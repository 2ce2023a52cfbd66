//! The lease decision for one due job: which of its due slots become runs, which are
//! counted as missed or skipped, and where its schedule goes next.
//!
//! The store calls [`plan_lease`] inside its leasing transaction for every job it locked,
//! then writes the plan. Keeping the decision here means the catch-up, overlap and
//! max-runs rules are tested once, for both store back-ends, without a database.
//!
//! A due slot is *on time* when it is no older than the misfire threshold at lease time;
//! older slots are *late* and fall to the catch-up policy. Only late slots can be missed.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::policy::{
    CatchUp, CatchUpPolicy, MAX_CATCH_UP_RUNS, OpenRuns, OverlapDecision, OverlapPolicy,
    decide_overlap,
};
use crate::run::Trigger;
use crate::schedule::Schedule;

/// Settings of the leasing scheduler that shape every plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// A slot leased later than this after its time is late, not on time.
    pub misfire_threshold: Duration,
    /// At most this many slots are counted one by one when a long outage left many behind
    /// (cron schedules are counted by iteration); the missed counter stops there.
    pub max_counted_slots: u64,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            misfire_threshold: Duration::from_secs(1),
            max_counted_slots: 1_000_000,
        }
    }
}

/// What the plan needs to know of a due job.
#[derive(Clone, Copy, Debug)]
pub struct DueJob<'a> {
    pub schedule: &'a Schedule,
    /// The earliest slot not yet leased.
    pub next_run_at: DateTime<Utc>,
    /// Scheduled runs left; `None` is unlimited.
    pub remaining_runs: Option<u32>,
    pub catch_up: CatchUp,
    pub overlap: OverlapPolicy,
    pub open_runs: OpenRuns,
}

/// A run to create, in the state `pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedRun {
    pub slot: DateTime<Utc>,
    pub trigger: Trigger,
}

/// A contiguous range of slots recorded as one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRange {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub count: u64,
}

/// The outcome of leasing one job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeasePlan {
    /// Runs to create, in slot order; the dispatcher runs them one after another.
    pub runs: Vec<PlannedRun>,
    /// Slots not run because the job was busy (overlap).
    pub skipped: Option<SlotRange>,
    /// Late slots not run because of the catch-up policy, window or max runs.
    pub missed: Option<SlotRange>,
    /// Cancel the job's waiting runs (overlap `replace`).
    pub cancel_pending: bool,
    /// Ask the job's active run to stop (overlap `replace`).
    pub cancel_active: bool,
    /// The job's next slot; `None` when it has none left (it becomes inactive).
    pub next_run_at: Option<DateTime<Utc>>,
    pub remaining_runs: Option<u32>,
}

/// Decides what leasing `job` at `now` does. A job that is not due yet gets an empty plan
/// that leaves it as it is.
pub fn plan_lease(job: &DueJob<'_>, now: DateTime<Utc>, settings: &LeaseSettings) -> LeasePlan {
    if job.next_run_at > now || job.remaining_runs == Some(0) {
        return LeasePlan {
            next_run_at: (job.remaining_runs != Some(0)).then_some(job.next_run_at),
            remaining_runs: job.remaining_runs,
            ..LeasePlan::default()
        };
    }
    let due = DueSlots::new(job, now, settings);
    let mut chosen = due.choose(job.catch_up, now, settings.misfire_threshold);
    if let Some(remaining) = job.remaining_runs {
        // Max runs: the latest slots win, as they are the most useful to run.
        let keep = usize::try_from(remaining).unwrap_or(usize::MAX);
        if chosen.len() > keep {
            chosen.drain(..chosen.len() - keep);
        }
    }

    let mut plan = LeasePlan::default();
    let (to_run, to_skip) = match decide_overlap(job.overlap, job.open_runs) {
        OverlapDecision::Start => (chosen.len(), 0),
        OverlapDecision::Skip => (0, chosen.len()),
        OverlapDecision::Queue => (chosen.len().min(1), chosen.len().saturating_sub(1)),
        OverlapDecision::Replace {
            cancel_pending,
            cancel_active,
        } => {
            plan.cancel_pending = cancel_pending;
            plan.cancel_active = cancel_active;
            (chosen.len().min(1), chosen.len().saturating_sub(1))
        }
    };
    // Of the chosen slots, the latest ones run; the earlier ones are skipped.
    let skipped_slots = &chosen[..to_skip];
    plan.runs = chosen[chosen.len() - to_run..].to_vec();
    plan.skipped = range_of(skipped_slots.iter().map(|run| run.slot));

    let missed_count = due.total.saturating_sub(chosen.len() as u64);
    if missed_count > 0 {
        let first_chosen = chosen.first().map(|run| run.slot);
        let last_missed = match first_chosen {
            Some(slot) => job.schedule.prev_slot_before(slot).unwrap_or(due.first),
            None => due.last,
        };
        plan.missed = Some(SlotRange {
            first: due.first,
            last: last_missed,
            count: missed_count,
        });
    }

    let created = u32::try_from(plan.runs.len()).unwrap_or(u32::MAX);
    plan.remaining_runs = job.remaining_runs.map(|left| left.saturating_sub(created));
    plan.next_run_at = if plan.remaining_runs == Some(0) {
        None
    } else {
        job.schedule.next_slot_after(now)
    };
    plan
}

/// The due slots of a job: those from its `next_run_at` up to and including `now`.
struct DueSlots<'a> {
    schedule: &'a Schedule,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    total: u64,
}

impl<'a> DueSlots<'a> {
    fn new(job: &DueJob<'a>, now: DateTime<Utc>, settings: &LeaseSettings) -> DueSlots<'a> {
        let last = job
            .schedule
            .prev_slot_before(now + TimeDelta::nanoseconds(1))
            .filter(|last| *last >= job.next_run_at)
            .unwrap_or(job.next_run_at);
        let total = job
            .schedule
            .count_slots_between(job.next_run_at, now, settings.max_counted_slots)
            .max(1);
        DueSlots {
            schedule: job.schedule,
            first: job.next_run_at,
            last,
            total,
        }
    }

    /// The slots the catch-up policy runs, oldest first, with their triggers.
    fn choose(
        &self,
        catch_up: CatchUp,
        now: DateTime<Utc>,
        threshold: Duration,
    ) -> Vec<PlannedRun> {
        let on_time_since = now - TimeDelta::from_std(threshold).unwrap_or(TimeDelta::MAX);
        let window_start = catch_up
            .window
            .and_then(|window| TimeDelta::from_std(window).ok())
            .map_or(self.first, |window| (now - window).max(self.first));
        let runnable = |slot: DateTime<Utc>| slot >= on_time_since || slot >= window_start;
        let planned = |slot: DateTime<Utc>| PlannedRun {
            slot,
            trigger: if slot >= on_time_since {
                Trigger::Schedule
            } else {
                Trigger::CatchUp
            },
        };
        match catch_up.policy {
            CatchUpPolicy::None => runnable_latest(self.last, on_time_since)
                .map(planned)
                .into_iter()
                .collect(),
            CatchUpPolicy::One => (runnable(self.last))
                .then(|| planned(self.last))
                .into_iter()
                .collect(),
            CatchUpPolicy::All => {
                let mut slots = Vec::new();
                let mut slot = Some(self.last);
                while let Some(current) = slot {
                    if current < self.first
                        || !runnable(current)
                        || slots.len() == MAX_CATCH_UP_RUNS
                    {
                        break;
                    }
                    slots.push(planned(current));
                    slot = self.schedule.prev_slot_before(current);
                }
                slots.reverse();
                slots
            }
        }
    }
}

/// Under catch-up `none` only an on-time slot runs.
fn runnable_latest(last: DateTime<Utc>, on_time_since: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (last >= on_time_since).then_some(last)
}

fn range_of(slots: impl Iterator<Item = DateTime<Utc>>) -> Option<SlotRange> {
    slots.fold(None, |range, slot| {
        Some(match range {
            None => SlotRange {
                first: slot,
                last: slot,
                count: 1,
            },
            Some(range) => SlotRange {
                last: slot,
                count: range.count + 1,
                ..range
            },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Interval;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const START: i64 = 1_800_000_000;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(START + secs, 0).unwrap()
    }

    fn every_second() -> Schedule {
        Schedule::every(
            Interval::Elapsed(TimeDelta::seconds(1)),
            t(0),
            chrono_tz::UTC,
        )
    }

    fn job<'a>(schedule: &'a Schedule, next: DateTime<Utc>, policy: CatchUpPolicy) -> DueJob<'a> {
        DueJob {
            schedule,
            next_run_at: next,
            remaining_runs: None,
            catch_up: CatchUp {
                policy,
                window: None,
            },
            overlap: OverlapPolicy::Skip,
            open_runs: OpenRuns::default(),
        }
    }

    fn slots(plan: &LeasePlan) -> Vec<DateTime<Utc>> {
        plan.runs.iter().map(|run| run.slot).collect()
    }

    #[test]
    fn an_on_time_slot_runs_under_every_policy_and_nothing_is_missed() {
        let schedule = every_second();
        for policy in CatchUpPolicy::ALL {
            // Leased 5 ms after its slot.
            let now = t(10) + TimeDelta::milliseconds(5);
            let plan = plan_lease(
                &job(&schedule, t(10), policy),
                now,
                &LeaseSettings::default(),
            );
            assert_eq!(
                plan.runs,
                vec![PlannedRun {
                    slot: t(10),
                    trigger: Trigger::Schedule
                }],
                "{policy}"
            );
            assert_eq!(plan.missed, None);
            assert_eq!(plan.next_run_at, Some(t(11)));
        }
    }

    #[test]
    fn a_job_not_yet_due_is_left_alone() {
        let schedule = every_second();
        let plan = plan_lease(
            &job(&schedule, t(10), CatchUpPolicy::One),
            t(9),
            &LeaseSettings::default(),
        );
        assert!(plan.runs.is_empty());
        assert_eq!(plan.next_run_at, Some(t(10)));
    }

    #[test]
    fn catch_up_one_runs_the_latest_late_slot_and_counts_the_rest() {
        let schedule = every_second();
        // Down from slot 10 to 20.5: slots 10..=20 are due, 20 is on time (0.5 s late).
        let now = t(20) + TimeDelta::milliseconds(500);
        let plan = plan_lease(
            &job(&schedule, t(10), CatchUpPolicy::One),
            now,
            &LeaseSettings::default(),
        );
        assert_eq!(slots(&plan), vec![t(20)]);
        assert_eq!(
            plan.missed,
            Some(SlotRange {
                first: t(10),
                last: t(19),
                count: 10
            })
        );

        // With a threshold under the lateness, the run is a catch-up run.
        let strict = LeaseSettings {
            misfire_threshold: Duration::from_millis(100),
            ..LeaseSettings::default()
        };
        let plan = plan_lease(&job(&schedule, t(10), CatchUpPolicy::One), now, &strict);
        assert_eq!(plan.runs[0].trigger, Trigger::CatchUp);
    }

    #[test]
    fn catch_up_none_runs_nothing_late() {
        let schedule = every_second();
        let strict = LeaseSettings {
            misfire_threshold: Duration::from_millis(100),
            ..LeaseSettings::default()
        };
        let now = t(20) + TimeDelta::milliseconds(500);
        let plan = plan_lease(&job(&schedule, t(10), CatchUpPolicy::None), now, &strict);
        assert!(plan.runs.is_empty());
        assert_eq!(
            plan.missed,
            Some(SlotRange {
                first: t(10),
                last: t(20),
                count: 11
            })
        );
        assert_eq!(plan.next_run_at, Some(t(21)));
    }

    #[test]
    fn catch_up_all_runs_every_late_slot_in_order() {
        let schedule = every_second();
        let now = t(20) + TimeDelta::milliseconds(500);
        let plan = plan_lease(
            &job(&schedule, t(10), CatchUpPolicy::All),
            now,
            &LeaseSettings::default(),
        );
        assert_eq!(slots(&plan), (10..=20).map(t).collect::<Vec<_>>());
        assert!(
            plan.runs[..10]
                .iter()
                .all(|run| run.trigger == Trigger::CatchUp)
        );
        assert_eq!(plan.runs[10].trigger, Trigger::Schedule);
        assert_eq!(plan.missed, None);
    }

    #[test]
    fn catch_up_all_is_capped_and_counts_the_oldest_as_missed() {
        let schedule = every_second();
        let now = t(5000);
        let plan = plan_lease(
            &job(&schedule, t(0), CatchUpPolicy::All),
            now,
            &LeaseSettings::default(),
        );
        assert_eq!(plan.runs.len(), MAX_CATCH_UP_RUNS);
        assert_eq!(plan.runs.first().unwrap().slot, t(4001));
        assert_eq!(plan.runs.last().unwrap().slot, t(5000));
        assert_eq!(
            plan.missed,
            Some(SlotRange {
                first: t(0),
                last: t(4000),
                count: 4001
            })
        );
    }

    #[test]
    fn the_catch_up_window_limits_what_runs_and_counts_the_rest() {
        let schedule = every_second();
        let mut due = job(&schedule, t(0), CatchUpPolicy::All);
        due.catch_up.window = Some(Duration::from_secs(5));
        let plan = plan_lease(&due, t(100), &LeaseSettings::default());
        assert_eq!(slots(&plan), (95..=100).map(t).collect::<Vec<_>>());
        assert_eq!(plan.missed.map(|m| m.count), Some(95));

        // `one` with a window shorter than the slot's age and the interval: nothing runs.
        let hourly = Schedule::every(Interval::Elapsed(TimeDelta::hours(1)), t(0), chrono_tz::UTC);
        let mut due = job(&hourly, t(0), CatchUpPolicy::One);
        due.catch_up.window = Some(Duration::from_secs(60));
        let plan = plan_lease(&due, t(3 * 3600 + 1800), &LeaseSettings::default());
        assert!(plan.runs.is_empty());
        assert_eq!(plan.missed.map(|m| m.count), Some(4));
    }

    #[test]
    fn max_runs_limits_the_runs_and_ends_the_job() {
        let schedule = every_second();
        let mut due = job(&schedule, t(10), CatchUpPolicy::All);
        due.remaining_runs = Some(2);
        let plan = plan_lease(&due, t(20), &LeaseSettings::default());
        assert_eq!(slots(&plan), vec![t(19), t(20)]);
        assert_eq!(plan.remaining_runs, Some(0));
        assert_eq!(
            plan.next_run_at, None,
            "no runs left: the job becomes inactive"
        );
        assert_eq!(plan.missed.map(|m| m.count), Some(9));

        due.remaining_runs = Some(5);
        due.catch_up.policy = CatchUpPolicy::One;
        let plan = plan_lease(&due, t(20), &LeaseSettings::default());
        assert_eq!(plan.remaining_runs, Some(4));
        assert_eq!(plan.next_run_at, Some(t(21)));
    }

    #[test]
    fn a_one_off_job_runs_once_and_ends() {
        let schedule = Schedule::at(t(50), chrono_tz::UTC);
        let plan = plan_lease(
            &job(&schedule, t(50), CatchUpPolicy::One),
            t(50),
            &LeaseSettings::default(),
        );
        assert_eq!(slots(&plan), vec![t(50)]);
        assert_eq!(plan.next_run_at, None);
    }

    #[test]
    fn a_busy_job_skips_queues_or_replaces() {
        let schedule = every_second();
        let mut due = job(&schedule, t(10), CatchUpPolicy::One);
        due.open_runs = OpenRuns {
            active: true,
            pending: 0,
        };
        let now = t(10);

        due.overlap = OverlapPolicy::Skip;
        let plan = plan_lease(&due, now, &LeaseSettings::default());
        assert!(plan.runs.is_empty());
        assert_eq!(
            plan.skipped,
            Some(SlotRange {
                first: t(10),
                last: t(10),
                count: 1
            })
        );
        assert_eq!(
            plan.next_run_at,
            Some(t(11)),
            "a skipped slot still advances the job"
        );

        due.overlap = OverlapPolicy::Queue;
        let plan = plan_lease(&due, now, &LeaseSettings::default());
        assert_eq!(slots(&plan), vec![t(10)]);
        assert_eq!(plan.skipped, None);

        due.overlap = OverlapPolicy::Replace;
        let plan = plan_lease(&due, now, &LeaseSettings::default());
        assert_eq!(slots(&plan), vec![t(10)]);
        assert!(plan.cancel_active);
        assert!(!plan.cancel_pending);
    }

    #[test]
    fn a_busy_job_queues_only_its_latest_catch_up_slot() {
        let schedule = every_second();
        let mut due = job(&schedule, t(10), CatchUpPolicy::All);
        due.overlap = OverlapPolicy::Queue;
        due.open_runs = OpenRuns {
            active: true,
            pending: 0,
        };
        let plan = plan_lease(&due, t(14), &LeaseSettings::default());
        assert_eq!(slots(&plan), vec![t(14)]);
        assert_eq!(
            plan.skipped,
            Some(SlotRange {
                first: t(10),
                last: t(13),
                count: 4
            })
        );
        assert_eq!(plan.remaining_runs, None);
    }

    proptest! {
        #[test]
        fn every_due_slot_is_run_missed_or_skipped_exactly_once(
            late in 0i64..5000,
            interval in 1i64..120,
            policy in prop::sample::select(CatchUpPolicy::ALL.to_vec()),
            overlap in prop::sample::select(OverlapPolicy::ALL.to_vec()),
            active in any::<bool>(),
            pending in 0u32..2,
            remaining in prop::option::of(0u32..5),
            window in prop::option::of(1u64..3000),
        ) {
            let schedule = Schedule::every(Interval::Elapsed(TimeDelta::seconds(interval)), t(0), chrono_tz::UTC);
            let due = DueJob {
                schedule: &schedule,
                next_run_at: t(0),
                remaining_runs: remaining,
                catch_up: CatchUp { policy, window: window.map(Duration::from_secs) },
                overlap,
                open_runs: OpenRuns { active, pending },
            };
            let now = t(late);
            let plan = plan_lease(&due, now, &LeaseSettings::default());
            let due_count = if remaining == Some(0) { 0 } else { (late / interval + 1) as u64 };
            let run = plan.runs.len() as u64;
            let skipped = plan.skipped.map_or(0, |r| r.count);
            let missed = plan.missed.map_or(0, |r| r.count);
            prop_assert_eq!(run + skipped + missed, due_count);
            prop_assert!(plan.runs.len() <= MAX_CATCH_UP_RUNS);
            prop_assert!(plan.runs.windows(2).all(|w| w[0].slot < w[1].slot));
            prop_assert!(plan.runs.iter().all(|r| r.slot <= now));
            if let Some(next) = plan.next_run_at {
                prop_assert!(next > now);
            }
            if let (Some(left), Some(before)) = (plan.remaining_runs, remaining) {
                prop_assert_eq!(left as u64 + run, before as u64);
            }
        }
    }
}
