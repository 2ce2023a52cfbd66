//! Reconnect delays: exponential with jitter, so a fleet of workers that lost the same
//! coordinator does not come back in lock-step.

use std::time::Duration;

use rand::Rng;

/// The first delay after a failure.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay between attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The pause between asking again while the coordinators elect a leader: short and not
/// growing, since an election ends within the election TTL and every moment spent asleep
/// after it adds to the failover time.
pub(crate) const ELECTION_RETRY: Duration = Duration::from_millis(250);

/// A delay in [half, full] of `step` ("equal jitter": never much shorter than planned,
/// never in step with the other workers).
pub(crate) fn jittered(step: Duration) -> Duration {
    let half = step / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// Doubling delays from [`INITIAL_BACKOFF`] up to [`MAX_BACKOFF`].
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: INITIAL_BACKOFF,
        }
    }

    /// The delay to wait now: [`jittered`] around the current step.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        jittered(step)
    }

    /// Back to the shortest delay, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new();
        let mut step = INITIAL_BACKOFF;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
            step = (step * 2).min(MAX_BACKOFF);
        }
        assert!(backoff.next_delay() <= MAX_BACKOFF);
        backoff.reset();
        assert!(backoff.next_delay() <= INITIAL_BACKOFF);
    }
}
