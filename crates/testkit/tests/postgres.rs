//! PostgreSQL fixtures against real servers: databases, faults (stop, kill, start again) and
//! the per-process shared server behind `test_database()`.

use std::io::ErrorKind;

use cronfleet_testkit::{PostgresServer, TestkitError, test_database};
use sqlx::{Connection, PgConnection};

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|err| panic!("connecting to {url}: {err}"))
}

async fn current_database(url: &str) -> String {
    let mut conn = connect(url).await;
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Whether the port refuses TCP connections (nothing listens there any more).
async fn refuses_connections(port: u16) -> bool {
    matches!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await,
        Err(err) if err.kind() == ErrorKind::ConnectionRefused
    )
}

async fn values(url: &str) -> Vec<String> {
    let mut conn = connect(url).await;
    sqlx::query_scalar("SELECT v FROM notes ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn databases_are_fresh_distinct_and_disappear_with_the_server() {
    let server = PostgresServer::start().await.unwrap();
    let first = server.create_database().await.unwrap();
    let second = server.create_database().await.unwrap();
    assert_ne!(first, second);

    let mut conn = connect(&first).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    sqlx::query("CREATE TABLE marker (id int)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let first_name = current_database(&first).await;
    let second_name = current_database(&second).await;
    assert_ne!(first_name, second_name);
    assert!(first.ends_with(&format!("/{first_name}")), "{first}");
    let mut conn = connect(&second).await;
    let marker: Option<String> = sqlx::query_scalar("SELECT to_regclass('marker')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        marker, None,
        "a table of the first database is visible in the second"
    );
    conn.close().await.unwrap();

    let port = server.port();
    let dir = server.data_dir();
    assert!(dir.exists());
    drop(server);
    assert!(
        refuses_connections(port).await,
        "server still listens after drop"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn committed_data_survives_stop_kill_and_restart() {
    let mut server = PostgresServer::start().await.unwrap();
    let url = server.create_database().await.unwrap();
    let port = server.port();
    let mut conn = connect(&url).await;
    sqlx::query("CREATE TABLE notes (id serial PRIMARY KEY, v text NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes (v) VALUES ('before stop')")
        .execute(&mut conn)
        .await
        .unwrap();

    assert!(matches!(
        server.start_again().await,
        Err(TestkitError::AlreadyRunning { .. })
    ));

    server.stop().await.unwrap();
    assert!(!server.is_running());
    assert!(refuses_connections(port).await);
    assert!(PgConnection::connect(&url).await.is_err());
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "a connection survived a fast shutdown"
    );

    // The port is kept across restarts, so someone else holding it is a clear error.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let err = server.start_again().await.unwrap_err();
    assert!(err.is_port_conflict(), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    drop(squatter);

    server.start_again().await.unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(values(&url).await, ["before stop"]);

    let mut conn = connect(&url).await;
    sqlx::query("INSERT INTO notes (v) VALUES ('before kill')")
        .execute(&mut conn)
        .await
        .unwrap();
    server.kill().await.unwrap();
    assert!(!server.is_running());
    assert!(refuses_connections(port).await);
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "a backend survived the kill"
    );

    // Crash recovery replays the WAL: the acknowledged commit is there.
    server.start_again().await.unwrap();
    assert_eq!(values(&url).await, ["before stop", "before kill"]);

    server.restart().await.unwrap();
    assert!(server.is_running());
    assert_eq!(values(&url).await, ["before stop", "before kill"]);
}

#[tokio::test]
async fn test_database_gives_fresh_databases_on_one_shared_server() {
    let first = test_database().await.unwrap();
    let second = test_database().await.unwrap();
    assert_ne!(first.name(), second.name());
    assert_ne!(first.url(), second.url());
    assert_eq!(
        first.admin_url(),
        second.admin_url(),
        "a second server was started"
    );
    assert_eq!(current_database(first.url()).await, first.name());
    assert_eq!(current_database(second.url()).await, second.name());

    // Dropping one database, even with a connection open, leaves the other alone.
    let mut open = connect(first.url()).await;
    let first_url = first.url().to_owned();
    first.drop_database().await.unwrap();
    assert!(sqlx::query("SELECT 1").execute(&mut open).await.is_err());
    match PgConnection::connect(&first_url).await {
        Err(sqlx::Error::Database(err)) => assert_eq!(err.code().as_deref(), Some("3D000")),
        other => panic!("connecting to a dropped database: {other:?}"),
    }
    assert_eq!(current_database(second.url()).await, second.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tests_get_their_own_databases() {
    let tasks: Vec<_> = (0..12).map(|_| tokio::spawn(test_database())).collect();
    let mut names = std::collections::BTreeSet::new();
    for task in tasks {
        let database = task.await.unwrap().unwrap();
        assert_eq!(current_database(database.url()).await, database.name());
        names.insert(database.name().to_owned());
    }
    assert_eq!(names.len(), 12);
}
