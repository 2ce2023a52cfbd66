//! The wire contract of cronfleet, generated from `proto/cronfleet/v1`: the worker
//! protocol (`WorkerService`) and the admin API (`JobService`, `RunService`,
//! `ClusterService`), plus conversions between protobuf timestamps and chrono.
//!
//! Architecture invariant: generated code and lossless conversions only; no behaviour.

/// `cronfleet.v1`: messages, clients and servers.
pub mod v1 {
    #![allow(clippy::all, missing_debug_implementations)]
    tonic::include_proto!("cronfleet.v1");
}

use chrono::{DateTime, Utc};

/// A protobuf timestamp for a chrono time.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// An optional protobuf timestamp for an optional chrono time.
pub fn timestamp_opt(time: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    time.map(timestamp)
}

/// A chrono time for a protobuf timestamp; `None` if it is out of chrono's range.
pub fn datetime(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let time = DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap();
        assert_eq!(datetime(&timestamp(time)), Some(time));
        assert_eq!(
            datetime(&prost_types::Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
    }
}
