//! Server processes that cannot outlive the test process, and one-shot commands.
//!
//! Each server runs next to a small `sh` watchdog. The watchdog polls the test process with
//! `kill -0` and, once it is gone (panic=abort, SIGKILL, Ctrl-C — cases where no `Drop`
//! runs), stops the server and removes its temp dir. Without `unsafe` there is no
//! `prctl(PR_SET_PDEATHSIG)` between fork and exec, and that signal would anyway fire when
//! the *thread* that spawned the child exits, which tokio's blocking pool does routinely.
//!
//! Long-lived servers are `std::process` children, not `tokio::process` ones: the
//! process-wide shared Postgres server outlives the runtime of the test that started it, and
//! a tokio child is tied to the runtime that spawned it. Waiting is done by polling
//! `try_wait` from async code, so no runtime thread blocks.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::error::{Result, ServerReport, TestkitError};

/// Runs as `sh -c WATCHDOG watchdog-name PARENT SERVER SIGNAL DIR`.
///
/// While the test process (PARENT) lives it only checks whether the server is still there
/// (and quits when it is not: the test process then owns the cleanup). Once PARENT is gone it
/// sends SIGNAL, gives the server 5 s, sends SIGKILL and deletes DIR.
const WATCHDOG_SCRIPT: &str = r#"
parent=$1 server=$2 signal=$3 dir=$4
while kill -0 "$parent" 2>/dev/null; do
    kill -0 "$server" 2>/dev/null || exit 0
    sleep 0.5
done
kill -s "$signal" "$server" 2>/dev/null
i=0
while [ "$i" -lt 50 ] && kill -0 "$server" 2>/dev/null; do
    sleep 0.1
    i=$((i + 1))
done
kill -s KILL "$server" 2>/dev/null
rm -rf -- "$dir"
"#;

/// How often exit status and readiness are polled.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A signal together with the name the shell and error messages use for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NamedSignal {
    pub(crate) signal: Signal,
    pub(crate) name: &'static str,
}

pub(crate) const SIGINT: NamedSignal = NamedSignal {
    signal: Signal::INT,
    name: "INT",
};
pub(crate) const SIGTERM: NamedSignal = NamedSignal {
    signal: Signal::TERM,
    name: "TERM",
};
pub(crate) const SIGQUIT: NamedSignal = NamedSignal {
    signal: Signal::QUIT,
    name: "QUIT",
};
pub(crate) const SIGKILL: NamedSignal = NamedSignal {
    signal: Signal::KILL,
    name: "KILL",
};

/// How a supervised server is told to go away when nobody will ever call `stop` on it
/// (`Drop`, or the watchdog after the test process died).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Teardown {
    pub(crate) signal: NamedSignal,
    pub(crate) grace: Duration,
}

/// A running server process plus its watchdog.
#[derive(Debug)]
pub(crate) struct Supervised {
    label: String,
    command: String,
    log: PathBuf,
    log_offset: u64,
    server: Child,
    exit: Option<ExitStatus>,
    watchdog: Option<Child>,
    teardown: Teardown,
}

impl Supervised {
    /// Starts `command` with stdout and stderr appended to `log`, in its own process group
    /// (so a Ctrl-C meant for the test runner reaches the runner, whose watchdogs then clean
    /// up, rather than racing them), and starts its watchdog.
    pub(crate) fn spawn(
        mut command: Command,
        label: String,
        log: &Path,
        teardown: Teardown,
        cleanup_dir: &Path,
    ) -> Result<Self> {
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| TestkitError::Io {
                action: "open server log",
                path: log.to_owned(),
                source,
            })?;
        let log_offset = log_file.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log_file.try_clone().map_err(|source| TestkitError::Io {
            action: "duplicate server log handle",
            path: log.to_owned(),
            source,
        })?;
        command
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr)
            .process_group(0);
        let description = describe(&command);
        let server = command.spawn().map_err(|source| TestkitError::Spawn {
            command: description.clone(),
            source,
        })?;

        let mut watchdog = Command::new("sh");
        watchdog
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("cronfleet-testkit-watchdog")
            .arg(std::process::id().to_string())
            .arg(server.id().to_string())
            .arg(teardown.signal.name)
            .arg(cleanup_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut supervised = Supervised {
            label,
            command: description,
            log: log.to_owned(),
            log_offset,
            server,
            exit: None,
            watchdog: None,
            teardown,
        };
        match watchdog.spawn() {
            Ok(child) => supervised.watchdog = Some(child),
            // Dropping `supervised` tears the server down again.
            Err(source) => {
                return Err(TestkitError::Spawn {
                    command: "sh (testkit watchdog)".to_owned(),
                    source,
                });
            }
        }
        Ok(supervised)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.server.id()
    }

    /// The exit status once the server has exited (it is reaped here), else `None`.
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.server.try_wait().ok().flatten();
        }
        self.exit
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends a signal unless the server has already been reaped (its pid could be reused).
    pub(crate) fn signal(&mut self, signal: NamedSignal) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        send_signal(self.pid(), signal).map_err(|source| TestkitError::Signal {
            server: self.label.clone(),
            pid: self.pid(),
            signal: signal.name,
            source,
        })
    }

    /// Polls until the server exits; `None` if it is still running after `timeout`.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGKILL and reap. Waiting right after SIGKILL returns at once, so this does not block.
    pub(crate) fn kill_now(&mut self) {
        if self.exit.is_none() {
            let _ = self.server.kill();
            self.exit = self.server.wait().ok();
        }
    }

    /// Signals, waits up to `timeout`, and kills if the server did not exit in time.
    pub(crate) async fn stop(&mut self, signal: NamedSignal, timeout: Duration) -> Result<()> {
        self.signal(signal)?;
        if self.wait_exit(timeout).await.is_some() {
            return Ok(());
        }
        self.kill_now();
        Err(TestkitError::StopTimedOut {
            server: self.label.clone(),
            waited: timeout,
            signal: signal.name,
        })
    }

    /// Runs `attempt` (a readiness check) but returns the exit error as soon as the server
    /// exits: a check against a port that someone else holds can hang until its timeout.
    pub(crate) async fn unless_exited<T>(&mut self, attempt: impl Future<Output = T>) -> Result<T> {
        let mut attempt = std::pin::pin!(attempt);
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.exited_error(status));
            }
            tokio::select! {
                output = &mut attempt => return Ok(output),
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// The server log written since this process was started, last lines only.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log, self.log_offset)
    }

    fn report(&self) -> Box<ServerReport> {
        Box::new(ServerReport {
            name: self.label.clone(),
            command: self.command.clone(),
            log: self.log.clone(),
            log_tail: self.log_tail(),
        })
    }

    /// Error for a server that exited while we waited for it to become ready.
    pub(crate) fn exited_error(&self, status: ExitStatus) -> TestkitError {
        TestkitError::ServerExited {
            status: status.to_string(),
            server: self.report(),
        }
    }

    /// Error for a server that never answered its readiness check.
    pub(crate) fn not_ready_error(&self, waited: Duration, last_error: String) -> TestkitError {
        TestkitError::NotReady {
            waited,
            last_error,
            server: self.report(),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.is_running() {
            // Blocking here is brief: the teardown signal is an immediate shutdown, and
            // SIGKILL follows after the grace period.
            let _ = send_signal(self.pid(), self.teardown.signal);
            let deadline = Instant::now() + self.teardown.grace;
            while self.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.kill_now();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

pub(crate) fn send_signal(pid: u32, signal: NamedSignal) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
    rustix::process::kill_process(pid, signal.signal).map_err(io::Error::from)
}

/// The pids whose parent is `pid`, read from `/proc` (empty where there is no `/proc`).
pub(crate) fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| proc_stat(candidate).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// Whether `pid` is a live process; zombies count as dead (they hold no resources).
pub(crate) fn is_alive(pid: u32) -> bool {
    match proc_stat(pid) {
        Some((state, _)) => state != 'Z' && state != 'X',
        None => false,
    }
}

/// State letter and parent pid from `/proc/PID/stat`; the command name may contain spaces
/// and parentheses, so fields are counted from the last `)`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The last lines of `path` after byte `from`, bounded so errors stay readable.
pub(crate) fn log_tail(path: &Path, from: u64) -> String {
    const MAX_BYTES: u64 = 8 * 1024;
    const MAX_LINES: usize = 40;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = from.max(len.saturating_sub(MAX_BYTES)).min(len);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(MAX_LINES);
            let tail = lines[skip..].join("\n");
            if tail.trim().is_empty() {
                "(empty)".to_owned()
            } else {
                tail
            }
        }
        Err(err) => format!("(could not read log: {err})"),
    }
}

/// `program arg arg …` for error messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a one-shot command to completion and returns its stdout; a non-zero exit becomes
/// [`TestkitError::CommandFailed`] with the combined output.
pub(crate) async fn run(command: Command, timeout: Duration) -> Result<String> {
    let description = describe(&command);
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => {
            return Err(TestkitError::CommandTimedOut {
                command: description,
                timeout,
            });
        }
        Ok(Err(source)) => {
            return Err(TestkitError::Spawn {
                command: description,
                source,
            });
        }
        Ok(Ok(output)) => output,
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let mut combined = stdout;
    combined.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(TestkitError::CommandFailed {
        command: description,
        status: output.status.to_string(),
        output: combined.trim_end().to_owned(),
    })
}

/// Finds `program` in the directories of `PATH`.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
