//! Throw-away PostgreSQL servers: `initdb` into a temp dir, `postgres` on a free loopback
//! port, fault controls (stop, kill, start again on the same data and port), and fresh
//! databases on demand.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (containers, CI) the
//! cluster belongs to the `postgres` OS user, which is created if missing.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

use crate::error::{Result, TestkitError};
use crate::ports::{free_port, random_u64};
use crate::process::{
    self, POLL_INTERVAL, SIGINT, SIGKILL, SIGQUIT, Supervised, Teardown, child_pids, is_alive,
    send_signal,
};

/// Environment variable naming the directory with `initdb` and `postgres`.
pub const PG_BINDIR_ENV: &str = "CRONFLEET_PG_BINDIR";

/// The superuser role of every test cluster, and the OS user that owns it when the tests run
/// as root.
const SUPERUSER: &str = "postgres";

const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;

/// Settings every test server gets. `fsync=off` and `full_page_writes=off` only risk data
/// on an OS crash, which a throw-away cluster does not care about. `synchronous_commit` is
/// deliberately left on: with it off, [`PostgresServer::kill`] would lose the last few
/// hundred milliseconds of *acknowledged* commits (they wait in shared memory for the WAL
/// writer), which would make fault tests of "no run is lost / none runs twice" lie. With
/// `fsync=off` a synchronous commit costs one `write()`, not a flush.
const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "200"),
];

/// Extra `-c name=value` settings for [`PostgresServer::start_with`]; later ones win, and
/// they override the defaults (e.g. `synchronous_commit=off` for a benchmark).
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    settings: Vec<(String, String)>,
}

impl PostgresOptions {
    /// Adds a server setting, as `postgres -c name=value`.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// The unprivileged account the cluster runs as when the test process is root.
#[derive(Debug, Clone)]
struct OsUser {
    uid: u32,
    gid: u32,
}

/// A PostgreSQL server in its own temp dir, listening on `127.0.0.1:port`.
///
/// Dropping it shuts the server down (immediate shutdown, then SIGKILL) and deletes the temp
/// dir; should the test process die without dropping it, its watchdog does the same.
#[derive(Debug)]
pub struct PostgresServer {
    bindir: PathBuf,
    run_as: Option<OsUser>,
    settings: Vec<(String, String)>,
    port: u16,
    process: Option<Supervised>,
    dir: TempDir,
}

impl PostgresServer {
    /// Initialises a cluster and starts it; returns once it accepts connections.
    pub async fn start() -> Result<Self> {
        Self::start_with(PostgresOptions::default()).await
    }

    /// [`PostgresServer::start`] with extra server settings.
    pub async fn start_with(options: PostgresOptions) -> Result<Self> {
        let bindir = find_postgres_bindir().await?;
        let run_as = if rustix::process::geteuid().is_root() {
            Some(postgres_os_user().await?)
        } else {
            None
        };
        if run_as.is_some() && process::find_on_path("setpriv").is_none() {
            return Err(TestkitError::BinaryNotFound {
                program: "setpriv (util-linux, needed to run postgres as a non-root user)",
                searched: "PATH".to_owned(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("cronfleet-pg-")
            .tempdir()
            .map_err(|source| TestkitError::Io {
                action: "create a temp dir in",
                path: std::env::temp_dir(),
                source,
            })?;
        if let Some(user) = &run_as {
            chown(dir.path(), Some(user.uid), Some(user.gid)).map_err(|source| {
                TestkitError::Io {
                    action: "chown to the postgres user",
                    path: dir.path().to_owned(),
                    source,
                }
            })?;
        }
        let mut server = PostgresServer {
            bindir,
            run_as,
            settings: options.settings,
            port: 0,
            process: None,
            dir,
        };

        let mut initdb = server.command("initdb");
        initdb
            .arg("-D")
            .arg(server.data_dir())
            .args(["-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8"])
            // The C locale exists everywhere; the machine's LANG may name one that does not.
            .arg("--locale=C");
        process::run(initdb, INITDB_TIMEOUT).await?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = free_port()?;
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(err) if err.is_port_conflict() && attempt < START_ATTEMPTS => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// The TCP port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`: the superuser on the maintenance
    /// database.
    pub fn admin_url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `name` on this server.
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server log (stdout and stderr of every start, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        let process = self.process.as_mut()?;
        process.is_running().then(|| process.pid())
    }

    /// Whether the postmaster is running (it may still be starting up or shutting down).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.is_running())
    }

    /// Creates a fresh, uniquely named database and returns its URL.
    pub async fn create_database(&self) -> Result<String> {
        Ok(create_database_on(&self.admin_url()).await?.url)
    }

    /// Fast shutdown (SIGINT: clients are disconnected, the cluster is checkpointed) and waits
    /// for the postmaster to exit. Does nothing if the server is not running.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.stop(SIGINT, STOP_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Crash: SIGKILL to the postmaster and to all its backends at once, like a host that
    /// lost power (but the OS page cache, and so every committed transaction, survives).
    /// Does nothing if the server is not running.
    pub async fn kill(&mut self) -> Result<()> {
        let Some(mut process) = self.process.take() else {
            return Ok(());
        };
        if !process.is_running() {
            return Ok(());
        }
        let backends = child_pids(process.pid());
        process.kill_now();
        for &pid in &backends {
            let _ = send_signal(pid, SIGKILL);
        }
        // A new postmaster refuses to start while old backends still hold shared memory.
        let deadline = Instant::now() + Duration::from_secs(10);
        while backends.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Starts the server again on the same data dir and port (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill); crash recovery runs as needed) and waits until it accepts
    /// connections.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Err(TestkitError::AlreadyRunning {
                server: self.label(),
            });
        }
        self.process = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.launch().await {
                Ok(()) => return Ok(()),
                // The port stays fixed, so a conflict is final; other start failures right
                // after a kill are usually a dying backend's shared memory: wait and retry.
                Err(err @ TestkitError::ServerExited { .. })
                    if attempt < 3 && !err.is_port_conflict() =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    fn label(&self) -> String {
        format!("postgres on 127.0.0.1:{}", self.port)
    }

    /// A command for one of the cluster's programs, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        let mut command = match &self.run_as {
            // setpriv execs the program itself, so the pid we hold is the postmaster's and
            // our signals reach it. runuser would stay in between as a parent that ignores
            // SIGINT and turns SIGTERM into SIGTERM-then-SIGKILL.
            Some(user) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                command
            }
            None => Command::new(program),
        };
        // The test's working directory may not be readable by the postgres user.
        command.current_dir(self.dir.path());
        command
    }

    /// Starts the postmaster on `self.port` and waits until it accepts connections.
    async fn launch(&mut self) -> Result<()> {
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ));
        let settings = DEFAULT_SETTINGS
            .iter()
            .map(|&(name, value)| (name, value))
            .chain(self.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        for (name, value) in settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        let mut process = Supervised::spawn(
            command,
            self.label(),
            &self.log_path(),
            // Immediate shutdown still removes shared memory, which SIGKILL would leak.
            Teardown {
                signal: SIGQUIT,
                grace: Duration::from_secs(5),
            },
            self.dir.path(),
        )?;
        wait_until_accepting(&mut process, &self.admin_url()).await?;
        self.process = Some(process);
        Ok(())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Stop the server before `dir` is deleted underneath it.
        self.process.take();
    }
}

/// Polls with a real connection and `SELECT 1` until the server answers, it exits, or
/// [`READY_TIMEOUT`] passes (then it is killed).
async fn wait_until_accepting(process: &mut Supervised, url: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), select_one(url));
        let last_error = match process.unless_exited(attempt).await? {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => err.to_string(),
            Err(_) => "connection attempt timed out after 5s".to_owned(),
        };
        if started.elapsed() >= READY_TIMEOUT {
            process.kill_now();
            return Err(process.not_ready_error(started.elapsed(), last_error));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn select_one(url: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("SELECT 1").execute(&mut conn).await?;
    conn.close().await
}

/// A database created for one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedDatabase {
    /// The database name, unique across processes and runs.
    pub name: String,
    /// Its URL: the admin URL with the database name swapped in.
    pub url: String,
}

/// Creates a fresh, uniquely named database on the server behind `admin_url` (any role that
/// may `CREATE DATABASE`) and returns its name and URL.
pub async fn create_database_on(admin_url: &str) -> Result<CreatedDatabase> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let postgres_error = |source| TestkitError::Postgres {
        url: admin_url.to_owned(),
        source,
    };
    // Validate before connecting so a malformed URL is reported as such.
    url_with_database(admin_url, "x")?;
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(postgres_error)?;
    // FILE_COPY copies the template's files after a checkpoint, about twice as fast as
    // PostgreSQL 15's default of copying through the WAL; checkpoints are cheap with
    // fsync=off. Older servers know only that strategy and not the option.
    let version: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&mut conn)
        .await
        .map_err(postgres_error)?;
    let strategy = if version.parse::<u32>().is_ok_and(|v| v >= 150_000) {
        " STRATEGY = FILE_COPY"
    } else {
        ""
    };
    let mut attempt = 0;
    let created = loop {
        attempt += 1;
        // pid + sequence is unique among live processes; the random part keeps a later run
        // that reuses a pid from colliding with databases left behind on a shared server.
        let name = format!(
            "cf_test_{}_{}_{:08x}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed),
            random_u64() as u32
        );
        let statement = format!("CREATE DATABASE \"{name}\"{strategy}");
        match sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
        {
            Ok(_) => break name,
            Err(sqlx::Error::Database(err))
                if err.code().as_deref() == Some("42P04") && attempt < 5 =>
            {
                continue;
            }
            Err(err) => return Err(postgres_error(err)),
        }
    };
    let _ = conn.close().await;
    Ok(CreatedDatabase {
        url: url_with_database(admin_url, &created)?,
        name: created,
    })
}

/// Drops database `name` on the server behind `admin_url`, terminating its connections.
pub async fn drop_database_on(admin_url: &str, name: &str) -> Result<()> {
    let postgres_error = |source| TestkitError::Postgres {
        url: admin_url.to_owned(),
        source,
    };
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(postgres_error)?;
    let quoted = name.replace('"', "\"\"");
    let statement = format!("DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&mut conn)
        .await
        .map_err(postgres_error)?;
    let _ = conn.close().await;
    Ok(())
}

/// `url` with its database (the path) replaced by `database`; user, host, port and query
/// parameters are kept.
pub fn url_with_database(url: &str, database: &str) -> Result<String> {
    let invalid = |reason| TestkitError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let authority_start = url.find("://").ok_or_else(|| invalid("no scheme"))? + 3;
    let scheme = &url[..authority_start - 3];
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(invalid("the scheme is not postgres:// or postgresql://"));
    }
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    let query = after.find('?').map_or("", |at| &after[at..]);
    Ok(format!("{scheme}://{authority}/{database}{query}"))
}

/// Where `initdb` and `postgres` live: `$CRONFLEET_PG_BINDIR`, else `pg_config --bindir`,
/// else the newest `/usr/lib/postgresql/*/bin` (Debian/Ubuntu keep them off PATH), else the
/// directory of `initdb` on PATH.
pub async fn find_postgres_bindir() -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::var_os(PG_BINDIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
        return Err(TestkitError::BinaryNotFound {
            program: "initdb and postgres",
            searched: format!("${PG_BINDIR_ENV}={}", dir.display()),
        });
    }
    searched.push(format!("${PG_BINDIR_ENV} (unset)"));

    let mut pg_config = Command::new("pg_config");
    pg_config.arg("--bindir");
    match process::run(pg_config, Duration::from_secs(10)).await {
        Ok(output) => {
            let dir = PathBuf::from(output.trim());
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
            searched.push(format!("pg_config --bindir ({})", dir.display()));
        }
        Err(_) => searched.push("pg_config --bindir (no pg_config)".to_owned()),
    }

    if let Some(dir) = newest_debian_bindir(Path::new("/usr/lib/postgresql")) {
        return Ok(dir);
    }
    searched.push("/usr/lib/postgresql/*/bin".to_owned());

    if let Some(dir) = process::find_on_path("initdb").and_then(|p| p.parent().map(Path::to_owned))
        && has_server_binaries(&dir)
    {
        return Ok(dir);
    }
    searched.push("PATH".to_owned());

    Err(TestkitError::BinaryNotFound {
        program: "PostgreSQL server binaries (initdb, postgres; Debian package `postgresql`)",
        searched: searched.join(", "),
    })
}

fn has_server_binaries(dir: &Path) -> bool {
    process::is_executable(&dir.join("initdb")) && process::is_executable(&dir.join("postgres"))
}

/// The `bin` directory of the highest version under `root` (`15`, `16`, `9.6` …).
fn newest_debian_bindir(root: &Path) -> Option<PathBuf> {
    let version = |name: &str| -> Option<Vec<u32>> {
        name.split('.').map(|part| part.parse().ok()).collect()
    };
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// The `postgres` OS user, created (as a system user) if it does not exist.
async fn postgres_os_user() -> Result<OsUser> {
    if let Ok(user) = lookup_os_user(SUPERUSER).await {
        return Ok(user);
    }
    let mut useradd = Command::new("useradd");
    useradd.args(["--system", "--user-group", "--no-create-home", SUPERUSER]);
    let created = process::run(useradd, Duration::from_secs(30)).await;
    // Another test process may have created it at the same moment: look again either way.
    lookup_os_user(SUPERUSER)
        .await
        .map_err(|lookup| TestkitError::OsUser {
            user: SUPERUSER.to_owned(),
            detail: match created {
                Err(err) => err.to_string(),
                Ok(_) => format!("useradd succeeded but the lookup failed: {lookup}"),
            },
        })
}

async fn lookup_os_user(name: &str) -> Result<OsUser> {
    Ok(OsUser {
        uid: numeric_id("-u", name).await?,
        gid: numeric_id("-g", name).await?,
    })
}

/// `id -u NAME` or `id -g NAME`, parsed.
async fn numeric_id(flag: &str, name: &str) -> Result<u32> {
    let mut command = Command::new("id");
    command.arg(flag).arg(name);
    let output = process::run(command, Duration::from_secs(10)).await?;
    output
        .trim()
        .parse()
        .map_err(|_| TestkitError::CommandFailed {
            command: format!("id {flag} {name}"),
            status: "output is not a number".to_owned(),
            output,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_database_swaps_only_the_path() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/db1",
            ),
            (
                "postgresql://u:p@h:1/admin?sslmode=disable",
                "postgresql://u:p@h:1/db1?sslmode=disable",
            ),
            ("postgres://u@h:1", "postgres://u@h:1/db1"),
            ("postgres://u@h:1?x=y", "postgres://u@h:1/db1?x=y"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                url_with_database(input, "db1").unwrap(),
                expected,
                "{input}"
            );
        }
        assert!(url_with_database("mysql://h/db", "db1").is_err());
        assert!(url_with_database("no-scheme", "db1").is_err());
    }

    #[test]
    fn newest_debian_bindir_prefers_the_highest_version() {
        let root = tempfile::tempdir().unwrap();
        for version in ["9.6", "15", "16", "17"] {
            let bin = root.path().join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            // 17 has no server binaries (a client-only install) and must be skipped.
            if version != "17" {
                for program in ["initdb", "postgres"] {
                    let path = bin.join(program);
                    std::fs::write(&path, "").unwrap();
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .unwrap();
                }
            }
        }
        assert_eq!(
            newest_debian_bindir(root.path()),
            Some(root.path().join("16").join("bin"))
        );
    }
}
