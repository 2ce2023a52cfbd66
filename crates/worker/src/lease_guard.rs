//! The worker's lease and its self-fencing (DESIGN §2, invariant 1): the lease that
//! `Registered` grants, renewed only by the `LeaseRenewed` that echoes a sent heartbeat's
//! `seq` and counted from when that heartbeat was *sent*, so it always ends on this side
//! first; when it runs out, every run is stopped; and at every renewal the kill-by time
//! (lease end + kill grace) is published through `lease_deadline.rs` for the watchdogs
//! outside the process.
//!
//! [`LeaseState`] is plain data kept under the shared state's lock (`shared.rs`), whose
//! critical sections also stop the runs and drop the link when [`LeaseState::expire_if_past`]
//! says the lease has ended; [`LeaseGuard`] holds what lives outside that lock: the
//! kill-by file and the task that checks the lease at its end.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use crate::lease_deadline::LeaseDeadlineFile;

/// Sent heartbeats remembered for their `LeaseRenewed`: a few lease ttls' worth.
const MAX_HEARTBEATS_IN_FLIGHT: usize = 64;

/// The lease the coordinator grants: valid for `ttl` from `renewed_from`, the time the
/// worker sent the message whose answer renewed it last (a Heartbeat, or the Register).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease {
    pub(crate) ttl: Duration,
    renewed_from: Instant,
}

impl Lease {
    fn expires(&self) -> Instant {
        self.renewed_from + self.ttl
    }
}

/// What a check of the lease finds.
#[derive(Debug)]
pub(crate) enum Expiry {
    /// No lease (not registered, or already fenced).
    NoLease,
    /// Valid until then: check again at that time.
    HeldUntil(Instant),
    /// It has just run out and is gone: the worker must fence itself now.
    Expired(Lease),
}

/// The lease, if any, and the heartbeats whose answers may renew it.
#[derive(Debug, Default)]
pub(crate) struct LeaseState {
    lease: Option<Lease>,
    /// The seq of the last heartbeat sent, and when recent ones were sent.
    heartbeat_seq: u64,
    heartbeats_sent: VecDeque<(u64, Instant)>,
}

impl LeaseState {
    /// A new link's lease, counted from when its `Register` was sent; heartbeats of an
    /// earlier link renew nothing.
    pub(crate) fn grant(&mut self, ttl: Duration, register_sent: Instant) {
        self.lease = Some(Lease {
            ttl,
            renewed_from: register_sent,
        });
        self.heartbeats_sent.clear();
    }

    /// A repeated `Registered` may change the ttl of the lease held.
    pub(crate) fn set_ttl(&mut self, ttl: Duration) {
        if let Some(lease) = &mut self.lease {
            lease.ttl = ttl;
        }
    }

    pub(crate) fn current(&self) -> Option<Lease> {
        self.lease
    }

    pub(crate) fn is_held(&self) -> bool {
        self.lease.is_some()
    }

    /// The seq of the heartbeat about to be sent, remembered with the time it is sent.
    pub(crate) fn next_heartbeat_seq(&mut self) -> u64 {
        self.heartbeat_seq += 1;
        let seq = self.heartbeat_seq;
        if self.heartbeats_sent.len() == MAX_HEARTBEATS_IN_FLIGHT {
            self.heartbeats_sent.pop_front();
        }
        self.heartbeats_sent.push_back((seq, Instant::now()));
        seq
    }

    /// `LeaseRenewed` for heartbeat `seq` of a held lease: the lease now runs from when
    /// that heartbeat was sent — never from when its answer arrived, so the lease ends on
    /// this side before the coordinator's view of it does. `false` when `seq` is not a
    /// heartbeat sent on this link (or one forgotten): it renews nothing.
    pub(crate) fn renew(&mut self, seq: u64) -> bool {
        // Heartbeats are answered in order on the stream: the answer to `seq` also tells
        // that every earlier one was answered. An older coordinator echoes no seq (0): its
        // answer is to the oldest heartbeat not answered yet.
        let position = if seq == 0 {
            (!self.heartbeats_sent.is_empty()).then_some(0)
        } else {
            self.heartbeats_sent
                .iter()
                .position(|(sent_seq, _)| *sent_seq == seq)
        };
        let Some(position) = position else {
            return false;
        };
        let (_, sent) = self.heartbeats_sent[position];
        self.heartbeats_sent.drain(..=position);
        if let Some(lease) = &mut self.lease {
            lease.renewed_from = lease.renewed_from.max(sent);
        }
        true
    }

    /// Whether the lease still holds at `now`; a lease found past its end is dropped, so
    /// that it is reported [`Expiry::Expired`] exactly once.
    pub(crate) fn expire_if_past(&mut self, now: Instant) -> Expiry {
        let Some(lease) = self.lease else {
            return Expiry::NoLease;
        };
        let expires = lease.expires();
        if now < expires {
            return Expiry::HeldUntil(expires);
        }
        self.lease = None;
        Expiry::Expired(lease)
    }
}

/// The lease's guard outside the state lock: the kill-by time for the run watchdogs, and
/// the wake-up for the task that fences the worker at the lease's end.
#[derive(Debug)]
pub(crate) struct LeaseGuard {
    /// The lease's kill-by time for the run watchdogs outside this process.
    kill_by: LeaseDeadlineFile,
    kill_grace: Duration,
    node_id: String,
    /// Wakes the guard task when a lease starts.
    lease_started: Notify,
}

impl LeaseGuard {
    pub(crate) fn new(kill_by: LeaseDeadlineFile, kill_grace: Duration, node_id: String) -> Self {
        LeaseGuard {
            kill_by,
            kill_grace,
            node_id,
            lease_started: Notify::new(),
        }
    }

    /// The file the run watchdogs read the kill-by time from.
    pub(crate) fn kill_by_file(&self) -> &Path {
        self.kill_by.path()
    }

    /// Tells the run watchdogs when this lease's runs must be dead: at its end plus the
    /// kill grace (the worker itself sends SIGTERM at the end and SIGKILL after the
    /// grace; the watchdogs do the SIGKILL should the worker be frozen).
    pub(crate) fn publish_kill_by(&self, lease: Option<Lease>) {
        let Some(lease) = lease else { return };
        let left = lease.expires().saturating_duration_since(Instant::now());
        if let Err(error) = self.kill_by.kill_in(left + self.kill_grace) {
            // The watchdogs keep the previous, earlier time: they kill too soon, never late.
            warn!(worker = %self.node_id, %error, "cannot publish the lease deadline for the run watchdogs");
        }
    }

    /// A lease was granted: the guard task has a lease to watch again.
    pub(crate) fn lease_started(&self) {
        self.lease_started.notify_one();
    }

    /// Runs forever: calls `fence_if_expired` (which returns when the lease next needs
    /// checking, or `None` without a lease) at each lease's end.
    pub(crate) async fn guard(&self, fence_if_expired: impl Fn() -> Option<Instant>) {
        loop {
            match fence_if_expired() {
                Some(check_at) => tokio::time::sleep_until(check_at).await,
                None => self.lease_started.notified().await,
            }
        }
    }
}
