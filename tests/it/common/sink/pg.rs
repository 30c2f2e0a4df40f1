//! The PostgreSQL under test: `KSTAGE_TEST_PG_URL` (set by `scripts/test.sh`), a blocking
//! client that rides out a restart of the server, and `scripts/postgres.sh` for faults.

use std::time::{Duration, Instant};

use tokio_postgres::{NoTls, Row};

/// The URL of the test database, `KSTAGE_TEST_PG_URL`; panics when there is none (the harness
/// ignores the tests that need it, [`crate::harness::Need::Postgres`], unless
/// `KSTAGE_TEST_REQUIRE_BROKER=1`).
pub fn pg_url() -> String {
    match std::env::var("KSTAGE_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => panic!(
            "no PostgreSQL: set KSTAGE_TEST_PG_URL (scripts/test.sh does; e.g. \
             postgres://kstage:kstage@127.0.0.1:35432/kstage)"
        ),
    }
}

/// A blocking client; every call reconnects and retries for a minute when the server is away
/// (a test may restart it).
pub struct Pg {
    url: String,
    runtime: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
}

impl Pg {
    pub fn connect(url: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the test's database client");
        Self {
            url: url.to_string(),
            runtime,
            client: None,
        }
    }

    /// Runs `sql` (any statements) and returns the rows of a single query.
    pub fn query(&mut self, sql: &str) -> Vec<Row> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if self.client.as_ref().is_none_or(|c| c.is_closed()) {
                let url = self.url.clone();
                match self.runtime.block_on(async move {
                    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
                    tokio::spawn(connection);
                    Ok::<_, tokio_postgres::Error>(client)
                }) {
                    Ok(client) => self.client = Some(client),
                    Err(error) if Instant::now() < deadline => {
                        eprintln!("test database not answering ({error}); retrying");
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    }
                    Err(error) => panic!("cannot connect to the test database: {error}"),
                }
            }
            let client = self.client.as_ref().expect("connected");
            match self.runtime.block_on(client.query(sql, &[])) {
                Ok(rows) => return rows,
                Err(error) if error.code().is_none() && Instant::now() < deadline => {
                    self.client = None;
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(error) => panic!("test query {sql:?} failed: {error}"),
            }
        }
    }

    pub fn execute(&mut self, sql: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            self.query("SELECT 1");
            let client = self.client.as_ref().expect("connected");
            match self.runtime.block_on(client.batch_execute(sql)) {
                Ok(()) => return,
                Err(error) if error.code().is_none() && Instant::now() < deadline => {
                    self.client = None
                }
                Err(error) => panic!("test statement {sql:?} failed: {error}"),
            }
        }
    }

    /// A single bigint (`SELECT count(*) ...`).
    pub fn count(&mut self, sql: &str) -> i64 {
        let rows = self.query(sql);
        rows.first()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .unwrap_or(0)
    }
}

/// Runs `scripts/postgres.sh COMMAND` (kill, restart) with the test's environment.
pub fn postgres_script(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh");
    let status = std::process::Command::new(script)
        .arg(command)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run scripts/postgres.sh");
    assert!(
        status.success(),
        "scripts/postgres.sh {command} failed: {status}"
    );
}
