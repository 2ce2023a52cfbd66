//! The scheduling domain of cronfleet: schedules, run policies and the run state machine.
//!
//! Everything here is pure: no I/O, no clocks, no randomness. Time (`now`) and jitter are
//! passed in by the caller, so every rule can be tested exactly and without sleeping.
//!
//! Architecture invariant: this crate depends on nothing else of cronfleet's, and on no
//! async runtime, database or network crate.

pub mod alert;
pub mod apply;
pub mod duration;
pub mod finish;
pub mod job;
pub mod lease;
pub mod policy;
pub mod run;
pub mod schedule;
pub mod time;
