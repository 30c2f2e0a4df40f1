//! The PostgreSQL under test: `KSTAGE_TEST_PG_URL` (set by `scripts/test.sh`), a blocking
//! client that rides out a restart of the server, and a private server ([`OwnPostgres`]) for a
//! test that kills it.

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

    /// The sum of the next offsets the sink stored for `group` in `kstage_offsets`: 0 until the
    /// first sink on this database has created that table (a query of a table that does not
    /// exist yet would fail the test on a fresh database).
    pub fn stored_offsets(&mut self, group: &str) -> i64 {
        if self.count("SELECT (to_regclass('kstage_offsets') IS NOT NULL)::int::bigint") == 0 {
            return 0;
        }
        self.count(&format!(
            "SELECT sum(next_offset)::bigint FROM kstage_offsets WHERE group_id = '{group}'"
        ))
    }

    /// A single bigint (`SELECT count(*) ...`).
    pub fn count(&mut self, sql: &str) -> i64 {
        let rows = self.query(sql);
        rows.first()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .unwrap_or(0)
    }
}

/// A private PostgreSQL, for a test that kills or restarts the server: the shared one would
/// take every other sink test's sessions down with it. `scripts/postgres.sh` on a free port and
/// a fresh data directory (the machine that runs the shared one has the package); stopped and
/// removed on drop.
pub struct OwnPostgres {
    /// Its URL (`postgres://kstage:kstage@127.0.0.1:PORT/kstage`).
    pub url: String,
    port: u16,
    root: std::path::PathBuf,
}

impl OwnPostgres {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port for a private PostgreSQL")
            .port();
        // Under /tmp, not in a private temporary directory: the server runs as `postgres`.
        let root =
            std::path::PathBuf::from(format!("/tmp/kstage-pg-own-{:016x}", rand::random::<u64>()));
        let mut own = Self {
            url: String::new(),
            port,
            root,
        };
        own.url = own.script("start").trim().to_string();
        eprintln!("started a private PostgreSQL at {}", own.url);
        own
    }

    /// Crashes the server (`pg_ctl stop -m immediate`).
    pub fn kill(&self) {
        self.script("kill");
    }

    /// Starts it again on the same data directory and waits until it answers.
    pub fn restart(&self) {
        self.script("restart");
    }

    /// Runs `scripts/postgres.sh COMMAND` for this server; returns its stdout.
    fn script(&self, command: &str) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh");
        let output = std::process::Command::new(script)
            .arg(command)
            .env("KSTAGE_PG_PORT", self.port.to_string())
            .env("KSTAGE_PG_DATA", &self.root)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/postgres.sh");
        assert!(
            output.status.success(),
            "scripts/postgres.sh {command} failed: {}",
            output.status
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh");
        let _ = std::process::Command::new(script)
            .arg("stop")
            .env("KSTAGE_PG_PORT", self.port.to_string())
            .env("KSTAGE_PG_DATA", &self.root)
            .stdout(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
