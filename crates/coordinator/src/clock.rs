//! Time, injected: the coordinator asks a [`Clock`] for `now`, so tests can control it.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// Where the coordinator gets the current time.
pub trait Clock: Send + Sync + Debug + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
