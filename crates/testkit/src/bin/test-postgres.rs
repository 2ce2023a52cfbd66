//! `test-postgres`: one throw-away PostgreSQL server for a whole test run.
//!
//! Starting a cluster per test binary costs seconds; a test script starts this once, in the
//! background, and exports the URL it prints so that every test's `test_database()` creates
//! its database on this server:
//!
//! ```sh
//! target/debug/test-postgres --env-file "$tmp/pg.env" --parent $$ &
//! until [ -s "$tmp/pg.env" ]; do sleep 0.1; done   # also check the job is still alive
//! export "$(cat "$tmp/pg.env")"                     # CRONFLEET_TEST_PG_URL=postgres://…
//! ```
//!
//! It runs until SIGTERM, SIGINT or SIGHUP, until stdin reaches end of file (only with
//! `--stdin`: a background job in a script has stdin on /dev/null), or until the process
//! given with `--parent` has exited; then it shuts the server down and deletes its files.
//! If it is killed outright, the server's watchdog does that.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use cronfleet_testkit::{PostgresOptions, PostgresServer, TEST_PG_URL_ENV};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "\
usage: test-postgres [--env-file PATH] [--parent PID] [--stdin] [-c NAME=VALUE]...

Starts a throw-away PostgreSQL server on a free 127.0.0.1 port, prints
CRONFLEET_TEST_PG_URL=postgres://postgres@127.0.0.1:PORT/postgres on stdout once it
accepts connections, and keeps it up until SIGTERM/SIGINT/SIGHUP.

  --env-file PATH   also write that line to PATH (atomically; removed on exit)
  --parent PID      stop when process PID has exited (e.g. the test script's $$)
  --stdin           stop when stdin reaches end of file
  -c NAME=VALUE     extra server setting, as for `postgres -c`";

#[derive(Debug, Default)]
struct Options {
    env_file: Option<PathBuf>,
    parent: Option<u32>,
    watch_stdin: bool,
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
                options.parent = Some(pid.parse().with_context(|| {
                    format!("--parent expects a process id, got {pid:?}")
                })?);
            }
            "--stdin" => options.watch_stdin = true,
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
            eprintln!("test-postgres: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let Some(options) = parse_args()? else {
        println!("{USAGE}");
        return Ok(());
    };
    // Signal handlers first, so a SIGTERM during the start is not fatal before cleanup.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;

    let mut server = PostgresServer::start_with(options.postgres).await?;
    let line = format!("{TEST_PG_URL_ENV}={}", server.admin_url());
    println!("{line}");
    if let Some(path) = &options.env_file {
        write_atomically(path, &format!("{line}\n"))?;
    }
    eprintln!(
        "test-postgres: serving {} (data {}, log {}); stop with SIGTERM",
        server.admin_url(),
        server.data_dir().display(),
        server.log_path().display()
    );

    // A std thread, not tokio's stdin: a blocked tokio stdin read would keep the runtime
    // from shutting down.
    let (stdin_closed_tx, mut stdin_closed) = tokio::sync::oneshot::channel::<()>();
    if options.watch_stdin {
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
    eprintln!("test-postgres: {reason}, stopping");
    remove_env_file(&options.env_file);
    server.stop().await?;
    Ok(())
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
