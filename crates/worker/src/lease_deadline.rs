//! The lease's kill-by time, published in a file for the run watchdogs: small `sh`
//! processes outside the worker (see `handlers/shell.rs`) that SIGKILL a run's process
//! group once the time passes. The worker rewrites the file at every lease renewal, so a
//! worker that is frozen (SIGSTOP, a long pause) or cut off stops renewing it, and its
//! runs' processes die on time without its help (DESIGN §2, invariant 1).
//!
//! The time is on the kernel's boot clock (`/proc/uptime`, in centiseconds): monotonic,
//! counting suspended time too, and readable by `sh` without starting a process — unlike
//! the wall clock, a step of the system time does not move it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Written before the first lease: every watchdog that reads it kills at once.
const EXPIRED: u64 = 0;

/// The file with one worker's kill-by time; removed when dropped.
#[derive(Debug)]
pub(crate) struct LeaseDeadlineFile {
    path: PathBuf,
}

impl LeaseDeadlineFile {
    /// A new file under the temp dir, already expired.
    pub(crate) fn create() -> io::Result<LeaseDeadlineFile> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let path = std::env::temp_dir().join(format!(
            "cronfleet-lease-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = LeaseDeadlineFile { path };
        file.write_centiseconds(EXPIRED)?;
        Ok(file)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Publishes that every run must be dead `from_now` from now.
    pub(crate) fn kill_in(&self, from_now: Duration) -> io::Result<()> {
        let now = boot_clock_centiseconds()?;
        // Rounded up: the watchdog may kill a little late, never early.
        let add = u64::try_from(from_now.as_millis().div_ceil(10)).unwrap_or(u64::MAX);
        self.write_centiseconds(now.saturating_add(add))
    }

    /// Written to a temp file and renamed, so a watchdog never reads half a number.
    fn write_centiseconds(&self, at: u64) -> io::Result<()> {
        let partial = self.path.with_extension("partial");
        std::fs::write(&partial, format!("{at}\n"))?;
        std::fs::rename(&partial, &self.path)
    }
}

impl Drop for LeaseDeadlineFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The boot clock as `/proc/uptime` shows it (`12345.67 …`), in centiseconds: the same
/// reading the watchdog makes.
pub(crate) fn boot_clock_centiseconds() -> io::Result<u64> {
    let uptime = std::fs::read_to_string("/proc/uptime")?;
    parse_uptime(&uptime).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/uptime: {uptime:?}"),
        )
    })
}

fn parse_uptime(text: &str) -> Option<u64> {
    let first = text.split_whitespace().next()?;
    let (seconds, hundredths) = first.split_once('.')?;
    if hundredths.len() != 2 {
        return None;
    }
    let seconds: u64 = seconds.parse().ok()?;
    let hundredths: u64 = hundredths.parse().ok()?;
    Some(seconds * 100 + hundredths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_read_in_centiseconds_as_the_watchdog_reads_it() {
        assert_eq!(parse_uptime("12345.67 54321.00\n"), Some(1_234_567));
        assert_eq!(parse_uptime("0.05 0.01"), Some(5));
        assert_eq!(parse_uptime("12345 1"), None);
        assert_eq!(parse_uptime("12.3 1"), None);
        assert!(boot_clock_centiseconds().unwrap() > 0);
    }

    #[test]
    fn the_file_starts_expired_holds_the_kill_by_time_and_goes_with_its_owner() {
        let file = LeaseDeadlineFile::create().unwrap();
        let path = file.path().to_owned();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n");
        let before = boot_clock_centiseconds().unwrap();
        file.kill_in(Duration::from_millis(2_001)).unwrap();
        let at: u64 = std::fs::read_to_string(&path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(at >= before + 201 && at <= boot_clock_centiseconds().unwrap() + 201);
        drop(file);
        assert!(!path.exists());
    }
}
