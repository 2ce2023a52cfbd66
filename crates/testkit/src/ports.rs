//! Free loopback TCP ports for test servers.
//!
//! A port is chosen by binding it and releasing it again, so another process can take it
//! before the server binds: callers retry a failed start with fresh ports
//! ([`crate::TestkitError::is_port_conflict`]). Ports are taken from *below* the kernel's
//! ephemeral range where possible: a killed server is later restarted on the same port, and
//! in the meantime an outgoing connection could otherwise get that port as its source port.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, TestkitError};

/// Ports handed out by this process, never handed out twice (two servers started at the same
/// moment would otherwise be offered the same just-released port).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Lowest port ever chosen; below it live well-known services.
const LOWEST_PORT: u16 = 10_000;

/// A loopback TCP port that was free a moment ago and has not been handed out before by
/// this process.
pub fn free_port() -> Result<u16> {
    let range = below_ephemeral_range();
    if let Some((low, high)) = range {
        for _ in 0..200 {
            let port = low + (random_u64() % u64::from(high - low)) as u16;
            if try_reserve(port) {
                return Ok(port);
            }
        }
    }
    // Fall back to letting the kernel choose, from the ephemeral range.
    for _ in 0..100 {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(TestkitError::NoFreePort)?;
        let port = listener
            .local_addr()
            .map_err(TestkitError::NoFreePort)?
            .port();
        drop(listener);
        if lock_handed_out().insert(port) {
            return Ok(port);
        }
    }
    Err(TestkitError::NoFreePort(std::io::Error::other(
        "every port offered was already handed out by this process",
    )))
}

/// `count` distinct free ports.
pub(crate) fn free_ports(count: usize) -> Result<Vec<u16>> {
    (0..count).map(|_| free_port()).collect()
}

fn try_reserve(port: u16) -> bool {
    let mut handed_out = lock_handed_out();
    if handed_out.contains(&port) {
        return false;
    }
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        return false;
    }
    handed_out.insert(port)
}

fn lock_handed_out() -> std::sync::MutexGuard<'static, BTreeSet<u16>> {
    // A panic while holding the lock leaves the set consistent, so poisoning is ignored.
    HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `[LOWEST_PORT, start of ephemeral range)` if that is a usable range (Linux only).
fn below_ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = text.split_whitespace().next()?.parse().ok()?;
    (low > LOWEST_PORT + 1_000).then_some((LOWEST_PORT, low))
}

/// Randomness for port choice and unique names without another dependency: std's
/// `RandomState` is seeded randomly per process.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    STATE
        .get_or_init(RandomState::new)
        .hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports = free_ports(20).unwrap();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for port in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }
}
