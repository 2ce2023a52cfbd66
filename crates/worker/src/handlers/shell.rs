//! `shell`: `{"script": "…"}` run by `/bin/sh -c`, its stdout and stderr streamed as the
//! run's log, in a process group of its own that the run owns entirely.
//!
//! `{"script": "…", "memory_limit": "512MiB"}` limits the memory of each of the run's
//! processes: the script starts under `ulimit -v` (`RLIMIT_AS`, inherited by everything it
//! starts), so a runaway allocation fails inside the run — the script fails and is
//! reported, the worker serves on. It is a limit per process, not on the sum of the tree
//! (that would take a cgroup v2 memory controller delegated to the worker, not used here),
//! and it counts address space, which runtimes that reserve much more than they touch
//! (the JVM, Go) exceed early; the run's error says so when a limited run fails.
//!
//! Process-group design:
//! - Each run first starts a small `sh` **watchdog** in a new process group (W), then the
//!   script in that same group. Starting the watchdog first means there is no moment at
//!   which the script runs unwatched, even if the worker is killed between the two spawns.
//! - The watchdog polls the worker with `kill -0` every 200 ms (and checks that it is
//!   still the watchdog's parent, because a SIGKILLed worker that nobody has reaped yet
//!   still answers `kill -0`). Once the worker is gone it SIGKILLs group W — itself and
//!   every process of the script. That is how a script cannot outlive a `kill -9`ed worker
//!   without `unsafe` (`PR_SET_PDEATHSIG` needs `pre_exec`, and fires when the spawning
//!   *thread* exits anyway). It ignores SIGTERM so that stopping the script gracefully
//!   does not take the watchdog down first.
//! - The watchdog also reads the lease's kill-by time that the worker publishes at every
//!   lease renewal (`lease_deadline.rs`; the kernel's boot clock, which it reads without
//!   starting a process) and SIGKILLs group W once it has passed, or once the file is
//!   gone. A worker that is frozen (SIGSTOP, a long pause) answers `kill -0` but renews
//!   nothing, so its scripts die at the end of its lease plus the kill grace all the same
//!   — before the coordinator may run them elsewhere. Limits: the watchdog checks every
//!   200 ms, and a freeze of the whole machine or VM stops it too (it kills within one
//!   check of waking up); a process that leaves the group (`setsid`) escapes it.
//! - Cancel or deadline: SIGTERM to group W, SIGKILL after the kill grace.
//! - When the script exits, whatever it left behind in the group is SIGKILLed with the
//!   watchdog: a run's processes end with the run (a background job still running would
//!   be the job running concurrently with its next run).
//! - If the handler's future is dropped (abandoned by the worker), the group is SIGKILLed.

use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use chrono::SecondsFormat;
use rustix::process::{Pid, Signal};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use super::args::Args;
use crate::output::Utf8Chunks;
use crate::{Handler, HandlerError, Outcome, RunContext};

/// cronfleet's own secrets, taken out of a script's environment: a worker given its
/// token through `CRONFLEET_WORKER_TOKEN` (or a coordinator's variables on the same host)
/// must not hand it to every job it runs.
pub const CRONFLEET_SECRETS: &[&str] = &[
    "CRONFLEET_WORKER_TOKEN",
    "CRONFLEET_API_TOKEN",
    "CRONFLEET_DATABASE_URL",
    "CRONFLEET_ALERT_SMTP",
    "CRONFLEET_ALERT_WEBHOOK",
    "CRONFLEET_ALERT_SLACK",
];

const EXAMPLE: &str = r#"{"script": "pg_dump mydb > /backups/mydb.sql"}"#;
const MEMORY_EXAMPLE: &str = r#"{"script": "./forecast.sh", "memory_limit": "512MiB"}"#;
/// The smallest memory limit: below it `/bin/sh` itself cannot start.
const MIN_MEMORY_LIMIT: u64 = 4 * 1024 * 1024;

/// Sets the memory limit, then becomes the script: `sh -c LIMITED SCRIPT KIB`.
const LIMITED: &str = r#"ulimit -v "$1" || { echo "cronfleet: cannot set the memory limit (ulimit -v $1)" >&2; exit 125; }
exec /bin/sh -c "$0""#;

/// Runs as `sh -c WATCHDOG cronfleet-watchdog WORKER_PID LEASE_DEADLINE_FILE`; see the
/// module docs. `/proc/uptime` reads `12345.67 …`: its first field without the dot is
/// centiseconds, the unit of the kill-by time.
const WATCHDOG: &str = r#"
trap '' TERM INT HUP
worker=$1
lease=$2
set -f
while kill -0 "$worker" 2>/dev/null; do
    if read -r stat < "/proc/$$/stat"; then
        set -- ${stat##*)}
        [ "$2" = "$worker" ] || break
    fi
    read -r kill_by < "$lease" || break
    read -r up _ < /proc/uptime || break
    now=${up%.*}${up#*.}
    [ "$now" -lt "$kill_by" ] || break
    sleep 0.2
done
kill -KILL 0
"#;

/// After the script exits and its group is killed, how long to wait for the rest of its
/// output. Only a process that left the group (`setsid`) can keep the pipe open longer.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs `args.script` with `/bin/sh -c`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellHandler;

#[async_trait]
impl Handler for ShellHandler {
    async fn run(&self, ctx: RunContext) -> Result<Outcome, HandlerError> {
        let ShellArgs {
            script,
            memory_limit,
        } = parse(ctx.args())?;
        let group = ProcessGroup::start(ctx.lease_deadline_file()).map_err(|error| {
            HandlerError::new(format!("cannot start the process watchdog (sh): {error}"))
        })?;
        let (reader, writer) = io::pipe()?;
        let mut child = {
            let mut command = Command::new("/bin/sh");
            match memory_limit {
                None => command.arg("-c").arg(script),
                Some(bytes) => command
                    .arg("-c")
                    .arg(LIMITED)
                    .arg(script)
                    .arg((bytes / 1024).to_string()),
            };
            for secret in CRONFLEET_SECRETS {
                command.env_remove(secret);
            }
            command
                .env("CRONFLEET_JOB", ctx.job())
                .env("CRONFLEET_RUN_ID", ctx.run_id().to_string())
                .env(
                    "CRONFLEET_SLOT",
                    ctx.slot().to_rfc3339_opts(SecondsFormat::AutoSi, true),
                )
                .env("CRONFLEET_ATTEMPT", ctx.attempt().to_string())
                .stdin(Stdio::null())
                .stdout(writer.try_clone()?)
                .stderr(writer)
                .process_group(group.pgid.as_raw_nonzero().get());
            command
                .spawn()
                .map_err(|error| HandlerError::new(format!("cannot start /bin/sh: {error}")))?
            // `command`, and with it our copies of the pipe's write end, is dropped here:
            // the pipe ends when the script's processes are gone.
        };
        let output = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
        let mut streaming = tokio::spawn(stream_output(output, ctx.clone()));

        let status = wait_or_stop(&mut child, &ctx, &group).await;
        group.finish().await;
        if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, &mut streaming)
            .await
            .is_err()
        {
            streaming.abort();
            ctx.log("\n[a process outside the run's process group still holds its output open: stopped reading]\n");
        }
        let status = status
            .map_err(|error| HandlerError::new(format!("cannot wait for the script: {error}")))?;
        let span = tracing::Span::current();
        if let Some(code) = status.code() {
            span.record("exit_code", code);
        }
        if let Some(signal) = status.signal() {
            span.record("signal", signal);
        }
        match describe_failure(status) {
            None => Ok(Outcome::success()),
            Some(failure) => Err(HandlerError::new(match memory_limit {
                None => failure,
                Some(bytes) => format!(
                    "{failure}; each of the run's processes was limited to {} of memory \
                     (memory_limit, as RLIMIT_AS: an allocation beyond it fails), which \
                     may be why",
                    size_words(bytes)
                ),
            })),
        }
    }
}

/// The shell handler's args.
#[derive(Debug, PartialEq, Eq)]
struct ShellArgs<'a> {
    script: &'a str,
    /// Bytes of address space per process.
    memory_limit: Option<u64>,
}

fn parse(args: &serde_json::Value) -> Result<ShellArgs<'_>, HandlerError> {
    let args = Args::new("shell", args, &["script", "memory_limit"], EXAMPLE)?;
    let value = args
        .get("script")
        .ok_or_else(|| args.missing("script", EXAMPLE))?;
    let script = match args.string("script")? {
        Some(script) if !script.trim().is_empty() => script,
        _ => return Err(args.invalid("script", "a non-empty string of shell commands", value)),
    };
    let memory_limit = match args.get("memory_limit") {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => {
            let expected = format!(
                "a size of at least 4MiB (KiB, MiB, GiB; a plain number is bytes), as in \
                 {MEMORY_EXAMPLE}"
            );
            let bytes = match value {
                serde_json::Value::String(text) => parse_size(text),
                serde_json::Value::Number(number) => number.as_u64(),
                _ => None,
            };
            match bytes {
                Some(bytes) if bytes >= MIN_MEMORY_LIMIT => Some(bytes),
                _ => return Err(args.invalid("memory_limit", &expected, value)),
            }
        }
    };
    Ok(ShellArgs {
        script,
        memory_limit,
    })
}

/// `512MiB`, `2 GiB`, `65536KiB`, `1048576` (bytes).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(unit)
}

/// `64 MiB`, `2 GiB`, `1536 MiB`.
fn size_words(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

/// Waits for the script; on cancellation SIGTERM to the group, SIGKILL after the grace.
async fn wait_or_stop(
    child: &mut Child,
    ctx: &RunContext,
    group: &ProcessGroup,
) -> io::Result<ExitStatus> {
    tokio::select! {
        status = child.wait() => return status,
        () = ctx.cancelled() => {}
    }
    group.signal(Signal::TERM);
    match tokio::time::timeout(ctx.kill_grace(), child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            group.signal(Signal::KILL);
            child.wait().await
        }
    }
}

/// Streams the script's output into the run's log until every writer is gone.
async fn stream_output(mut output: pipe::Receiver, ctx: RunContext) {
    let mut buffer = vec![0u8; 8 * 1024];
    let mut text = Utf8Chunks::default();
    loop {
        match output.read(&mut buffer).await {
            Ok(0) => break,
            Ok(read) => ctx.log(text.decode(&buffer[..read])),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                ctx.log(format!("\n[cannot read the script's output: {error}]\n"));
                break;
            }
        }
    }
    ctx.log(text.finish());
}

/// `None` for success, else why the script failed.
fn describe_failure(status: ExitStatus) -> Option<String> {
    match (status.code(), status.signal()) {
        (Some(0), _) => None,
        (Some(code), _) => Some(format!("exit status {code}")),
        (None, Some(signal)) => Some(match signal_name(signal) {
            Some(name) => format!("killed by signal {signal} ({name})"),
            None => format!("killed by signal {signal}"),
        }),
        (None, None) => Some(format!("ended abnormally ({status})")),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// The run's process group, led by its watchdog. Dropping it SIGKILLs the group.
struct ProcessGroup {
    pgid: Pid,
    watchdog: Child,
    /// Set once the group is dead and its leader reaped: its id may then be reused by an
    /// unrelated process group, which must never be signalled.
    finished: bool,
}

impl ProcessGroup {
    fn start(lease_deadline_file: &std::path::Path) -> io::Result<ProcessGroup> {
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("cronfleet-watchdog")
            .arg(std::process::id().to_string())
            .arg(lease_deadline_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pgid = watchdog
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other("the watchdog has no process id"))?;
        Ok(ProcessGroup {
            pgid,
            watchdog,
            finished: false,
        })
    }

    fn signal(&self, signal: Signal) {
        if !self.finished {
            // ESRCH (nobody left in the group) is what we want anyway.
            let _ = rustix::process::kill_process_group(self.pgid, signal);
        }
    }

    /// SIGKILLs whatever is left in the group, watchdog included, and reaps the watchdog.
    async fn finish(mut self) {
        self.signal(Signal::KILL);
        let _ = self.watchdog.wait().await;
        self.finished = true;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // Reached without `finish` only when the handler's future is dropped mid-run.
        self.signal(Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn memory_limits_read_as_sizes() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size(" 2 GiB "), Some(2 << 30));
        assert_eq!(parse_size("65536KiB"), Some(64 << 20));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        for bad in [
            "",
            "MiB",
            "12 MB",
            "1.5GiB",
            "-1MiB",
            "99999999999999999999GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(size_words(64 << 20), "64 MiB");
        assert_eq!(size_words(3 << 29), "1536 MiB");
        assert_eq!(size_words(2 << 30), "2 GiB");
        let args = serde_json::json!({"script": "true", "memory_limit": "64MiB"});
        assert_eq!(
            parse(&args).unwrap(),
            ShellArgs {
                script: "true",
                memory_limit: Some(64 << 20)
            }
        );
        for bad in [
            serde_json::json!("1MiB"),
            serde_json::json!("lots"),
            serde_json::json!(true),
        ] {
            let args = serde_json::json!({"script": "true", "memory_limit": bad});
            let error = parse(&args).unwrap_err().to_string();
            assert!(
                error.contains("args.memory_limit must be a size of at least 4MiB"),
                "{error}"
            );
        }
    }

    #[test]
    fn script_must_be_a_non_empty_string() {
        assert_eq!(
            parse(&json!({"script": "echo hi"})).unwrap().script,
            "echo hi"
        );
        let error = |args| parse(&args).unwrap_err().to_string();
        assert!(error(json!({})).contains("args.script is required"));
        assert!(error(json!({"script": "  "})).contains("args.script must be a non-empty string"));
        assert!(error(json!({"script": ["ls"]})).contains("args.script must be a string"));
        assert!(error(json!({"script": "ls", "cwd": "/"})).contains("unknown field \"cwd\""));
    }

    #[test]
    fn failures_name_the_exit_status_or_signal() {
        assert_eq!(describe_failure(ExitStatus::from_raw(0)), None);
        assert_eq!(
            describe_failure(ExitStatus::from_raw(3 << 8)).as_deref(),
            Some("exit status 3")
        );
        assert_eq!(
            describe_failure(ExitStatus::from_raw(9)).as_deref(),
            Some("killed by signal 9 (SIGKILL)")
        );
    }
}
