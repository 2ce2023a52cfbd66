//! One PostgreSQL server per test run, a fresh database per test.
//!
//! Starting a cluster costs a second or so; creating a database on a running one about a
//! tenth of that. [`test_database`] therefore uses the server named by
//! `CRONFLEET_TEST_PG_URL` (the project's test script starts one with the
//! `cronfleet-test-postgres` binary and exports it, so every test binary shares it) and
//! otherwise one server per test process, started on first use. That server lives in a
//! `static` and is never dropped; its watchdog stops it and deletes its files once the
//! process has exited.
//!
//! Tests that stop or kill Postgres must start their own [`PostgresServer`] instead.

use tokio::sync::OnceCell;

use crate::error::Result;
use crate::postgres::{PostgresServer, create_database_on, drop_database_on};

/// Environment variable with the admin URL of a shared test server, e.g.
/// `postgres://postgres@127.0.0.1:5433/postgres`.
pub const TEST_PG_URL_ENV: &str = "CRONFLEET_TEST_PG_URL";

static PROCESS_SERVER: OnceCell<PostgresServer> = OnceCell::const_new();

/// A database created for one test.
///
/// Dropping the value leaves the database behind: it goes away with the server, and
/// dropping it implicitly would pull it from under a test that kept only its URL. Each costs
/// about 7 MB of disk on the server until then; a long test run on one shared server can
/// call [`TestDatabase::drop_database`] at the end of a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// The URL to connect to this database as the superuser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's admin URL (maintenance database `postgres`).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Drops the database, closing any connections still open to it.
    pub async fn drop_database(self) -> Result<()> {
        drop_database_on(&self.admin_url, &self.name).await
    }
}

/// A fresh database on the shared test server (see the module docs).
pub async fn test_database() -> Result<TestDatabase> {
    let admin_url = shared_admin_url().await?;
    let created = create_database_on(&admin_url).await?;
    Ok(TestDatabase {
        name: created.name,
        url: created.url,
        admin_url,
    })
}

/// The admin URL of the shared test server: `$CRONFLEET_TEST_PG_URL` if set, else the
/// process-wide server, started on first use.
pub async fn shared_admin_url() -> Result<String> {
    if let Some(url) = std::env::var(TEST_PG_URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Ok(url);
    }
    let server = PROCESS_SERVER
        .get_or_try_init(PostgresServer::start)
        .await?;
    Ok(server.admin_url())
}
