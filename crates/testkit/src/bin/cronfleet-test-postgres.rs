//! `cronfleet-test-postgres`: one throw-away PostgreSQL server for a whole test run.
//!
//! Starting a cluster per test binary costs a second or more; the test script starts this
//! once and exports the URL it prints, so every test's `test_database()` creates its
//! database on this server (see `scripts/test`):
//!
//! ```sh
//! coproc PG { exec target/debug/cronfleet-test-postgres; }
//! read -r line <&"${PG[0]}"          # CRONFLEET_TEST_PG_URL=postgres://…
//! export "$line"
//! ```
//!
//! It runs until its stdin reaches end of file (when stdin is a pipe, socket or terminal:
//! a coprocess's stdin closes when the script closes it or dies; a plain background job's
//! stdin is /dev/null and is not watched), until SIGTERM, SIGINT or SIGHUP, or until the
//! process given with `--parent` has exited; then it shuts the server down and deletes its
//! files. If it is killed outright, the server's watchdog does that.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use cronfleet_testkit::{PostgresOptions, PostgresServer, TEST_PG_URL_ENV};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "\
usage: cronfleet-test-postgres [--env-file PATH] [--parent PID] [-c NAME=VALUE]...

Starts a throw-away PostgreSQL server on a free 127.0.0.1 port, prints
CRONFLEET_TEST_PG_URL=postgres://postgres@127.0.0.1:PORT/postgres on stdout once it
accepts connections, and keeps it up until stdin (a pipe or terminal) reaches end of
file, or SIGTERM/SIGINT/SIGHUP.

  --env-file PATH   also write that line to PATH (atomically; removed on exit)
  --parent PID      also stop when process PID has exited (e.g. the test script's $$)
  -c NAME=VALUE     extra server setting, as for `postgres -c`";

#[derive(Debug, Default)]
struct Options {
    env_file: Option<PathBuf>,
    parent: Option<u32>,
    postgres: PostgresOptions,
}

fn parse_args() -> anyhow::Result<Option<Options>> {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--env-file" => options.env_file = Some(value("--env-file")?.into()),
            "--parent" => {
                let pid = value("--parent")?;
                options.parent = Some(
                    pid.parse()
                        .with_context(|| format!("--parent expects a process id, got {pid:?}"))?,
                );
            }
            "-c" => {
                let setting = value("-c")?;
                let Some((name, value)) = setting.split_once('=') else {
                    bail!("-c expects NAME=VALUE, got {setting:?}");
                };
                options.postgres = options.postgres.setting(name, value);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(Some(options))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            say(
                &mut std::io::stderr(),
                &format!("cronfleet-test-postgres: {err:#}"),
            );
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let Some(options) = parse_args()? else {
        say(&mut std::io::stdout(), USAGE);
        return Ok(());
    };
    // Signal handlers first, so a SIGTERM during the start is not fatal before cleanup.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;

    let mut server = PostgresServer::start_with(options.postgres).await?;
    let line = format!("{TEST_PG_URL_ENV}={}", server.admin_url());
    say(&mut std::io::stdout(), &line);
    if let Some(path) = &options.env_file {
        write_atomically(path, &format!("{line}\n"))?;
    }
    say(
        &mut std::io::stderr(),
        &format!(
            "cronfleet-test-postgres: serving {} (data {}, log {}); stop with SIGTERM",
            server.admin_url(),
            server.data_dir().display(),
            server.log_path().display()
        ),
    );

    // A std thread, not tokio's stdin: a blocked tokio stdin read would keep the runtime
    // from shutting down.
    let (stdin_closed_tx, mut stdin_closed) = tokio::sync::oneshot::channel::<()>();
    if stdin_can_close() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = stdin_closed_tx.send(());
        });
    } else {
        // Keep the sender alive so the receiver never completes.
        std::mem::forget(stdin_closed_tx);
    }

    let mut check = tokio::time::interval(Duration::from_millis(500));
    let reason = loop {
        tokio::select! {
            _ = terminate.recv() => break "SIGTERM".to_owned(),
            _ = interrupt.recv() => break "SIGINT".to_owned(),
            _ = hangup.recv() => break "SIGHUP".to_owned(),
            _ = &mut stdin_closed => break "stdin closed".to_owned(),
            _ = check.tick() => {
                if !server.is_running() {
                    remove_env_file(&options.env_file);
                    bail!(
                        "postgres exited unexpectedly; see {}",
                        server.log_path().display()
                    );
                }
                if let Some(pid) = options.parent
                    && !process_exists(pid)
                {
                    break format!("parent process {pid} exited");
                }
            }
        }
    };
    say(
        &mut std::io::stderr(),
        &format!("cronfleet-test-postgres: {reason}, stopping"),
    );
    remove_env_file(&options.env_file);
    server.stop().await?;
    Ok(())
}

/// Writes a line, ignoring errors: whoever started us may have closed the pipe already, and
/// `println!` would panic instead of letting the server be shut down cleanly.
fn say(out: &mut impl Write, line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Whether end of file on stdin means "stop": for a pipe, socket or terminal. /dev/null (a
/// script's background job) or a file would end at once.
fn stdin_can_close() -> bool {
    use std::io::IsTerminal;
    use std::os::unix::fs::FileTypeExt;
    if std::io::stdin().is_terminal() {
        return true;
    }
    std::fs::metadata("/dev/stdin")
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false)
}

fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // EPERM means it exists but belongs to someone else.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Writes via a temp file and rename so a script polling for the file never reads half a
/// line.
fn write_atomically(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, contents).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn remove_env_file(path: &Option<PathBuf>) {
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}
