//! The database session of a sink worker: connect and reconnect with backoff, the start-up
//! check of the table, the offsets table, and claiming partitions (the fencing epoch).
//!
//! ```text
//!   connect ──► SET idle_in_transaction_session_timeout ──► check table + columns (+ unique key)
//!          └──► transactional: CREATE TABLE IF NOT EXISTS kstage_offsets
//!   on assignment: claim ──► upsert owner_epoch = owner_epoch + 1 RETURNING next_offset, epoch
//! ```
//!
//! tokio-postgres is async; a sink worker is one blocking thread (the consumer's callbacks run
//! inside `poll`), so the session owns a current-thread runtime and every call blocks on it. The
//! connection task runs only while a call is in flight, which is all it needs to.
//!
//! Why `idle_in_transaction_session_timeout`: an instance paused (SIGSTOP) in the middle of a
//! batch holds row locks on its partitions' offsets rows; the server ends its session after
//! [`IDLE_IN_TRANSACTION`], so the instance taking over can claim them, and the paused one,
//! resumed, finds its session gone and its epoch outdated.

use std::time::{Duration, Instant};

use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

use super::config::SinkConfig;
use super::error::{classify, db_message, DbErrorClass, SinkError};
use crate::config::{ConfigError, ConfigErrors};

/// How long the server lets a session sit idle inside a transaction before ending it.
pub(super) const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A mapped column as the database has it.
#[derive(Debug, Clone)]
pub(super) struct ColumnType {
    /// The column's type without modifiers (`character varying`, `numeric`), which values are
    /// cast to, so the assignment to the column checks length and precision (and fails).
    pub base_type: String,
}

/// A partition claimed by this instance: its next offset (None: nothing stored yet) and our epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Claim {
    pub next_offset: Option<i64>,
    pub epoch: i64,
}

/// A partition's row in the offsets table: its next offset (None: nothing stored yet) and its
/// owner epoch.
pub(super) type Stored = (Option<i64>, i64);

/// A database session, re-opened on demand.
pub(super) struct Db {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    config: tokio_postgres::Config,
    /// `host:port/db`, for messages (never the password).
    pub target: String,
    pub retry_timeout: Duration,
    /// Statements prepared on the current session (cleared when it is re-opened).
    pub(crate) prepared: std::collections::HashMap<String, Statement>,
}

/// `"a"."b"` for `a.b`: the names were checked to be plain identifiers.
pub(super) fn quoted(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join(".")
}

impl Db {
    /// Opens the session (retrying an unreachable database for `retry_timeout`).
    pub(super) fn open(sink: &SinkConfig, application_name: &str) -> Result<Self, SinkError> {
        let mut config: tokio_postgres::Config =
            sink.connection_string().parse().map_err(|_| {
                ConfigErrors::from(ConfigError::new(
                    "sink.url",
                    "not a valid PostgreSQL connection string (postgres://user:password@host:port/db)",
                ))
            })?;
        config
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(5))
            .keepalives_idle(Duration::from_secs(10));
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let target = format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::Database {
                operation: "starting the database runtime",
                message: e.to_string(),
            })?;
        let mut db = Self {
            runtime,
            client: None,
            config,
            target,
            retry_timeout: sink.retry_timeout,
            prepared: Default::default(),
        };
        db.ensure_connected()?;
        Ok(db)
    }

    /// The open session, re-opened with backoff when there is none; [`SinkError::DatabaseLost`]
    /// after `retry_timeout`.
    pub(super) fn ensure_connected(&mut self) -> Result<&Client, SinkError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return self.client.as_ref().ok_or_else(unreachable_client);
        }
        self.client = None;
        self.prepared.clear();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let config = self.config.clone();
            let attempt = self.runtime.block_on(async move {
                let (client, connection) = config.connect(NoTls).await?;
                let task = tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(error = %db_message(&error), "The database connection ended.");
                    }
                });
                let setup = format!(
                    "SET idle_in_transaction_session_timeout = {}",
                    IDLE_IN_TRANSACTION.as_millis()
                );
                if let Err(error) = client.batch_execute(&setup).await {
                    task.abort();
                    return Err(error);
                }
                Ok(client)
            });
            match attempt {
                Ok(client) => {
                    if !started.elapsed().is_zero() && self.prepared.is_empty() {
                        tracing::info!(target_db = %self.target, "Connected to the database.");
                    }
                    self.client = Some(client);
                    return self.client.as_ref().ok_or_else(unreachable_client);
                }
                Err(error) if classify(&error) == DbErrorClass::Connection => {
                    if started.elapsed() + backoff > self.retry_timeout {
                        return Err(SinkError::DatabaseLost {
                            target: self.target.clone(),
                            waited_secs: started.elapsed().as_secs(),
                            last: db_message(&error),
                        });
                    }
                    tracing::warn!(target_db = %self.target, error = %db_message(&error),
                        "The database does not answer; retrying.");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    return Err(SinkError::database("connecting to the database", &error))
                }
            }
        }
    }

    /// Drops the session after a connection error; the next call re-opens it.
    pub(super) fn drop_session(&mut self) {
        self.client = None;
        self.prepared.clear();
    }

    /// Runs `f` on the session's runtime.
    pub(super) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// A statement prepared on the current session, with every parameter typed as `types`.
    pub(super) fn statement(
        &mut self,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let Some(client) = self.client.as_ref() else {
            return Err(closed_error_hint(self));
        };
        let statement = self.runtime.block_on(client.prepare_typed(sql, types))?;
        self.prepared.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// The current client (call [`Db::ensure_connected`] first).
    pub(super) fn client(&self) -> Result<&Client, SinkError> {
        self.client.as_ref().ok_or_else(unreachable_client)
    }

    /// Checks that the table and the mapped columns exist (and, for upserts, a unique index on
    /// exactly the key columns). Returns each mapped column's type, in `columns` order.
    pub(super) fn check_table(
        &mut self,
        target: &super::statements::TableTarget,
        (table_key, column_key, key_key): (&str, &str, &str),
        check_unique_key: bool,
    ) -> Result<Vec<ColumnType>, SinkError> {
        let (columns, key_columns) = (&target.columns, &target.key_columns);
        let table = quoted(&target.table);
        self.ensure_connected()?;
        let client = self.client.as_ref().ok_or_else(unreachable_client)?;
        let rows = self
            .runtime
            .block_on(client.query(
                "SELECT a.attname::text, format_type(a.atttypid, NULL) FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&table],
            ))
            .map_err(|e| SinkError::database("reading the table's columns", &e))?;
        let database = self.config.get_dbname().unwrap_or("").to_string();
        if rows.is_empty() {
            return Err(ConfigErrors::from(ConfigError::new(
                table_key,
                format!(
                    "table {} does not exist in database {database:?} (create it first)",
                    target.table
                ),
            ))
            .into());
        }
        let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut types = Vec::new();
        let mut errors = Vec::new();
        for column in columns {
            match found.iter().find(|(name, _)| name == column) {
                Some((_, ty)) => types.push(ColumnType {
                    base_type: ty.clone(),
                }),
                None => errors.push(ConfigError::new(
                    format!("{column_key}.{column}"),
                    format!(
                        "table {} has no column {column:?}; its columns: {}",
                        target.table,
                        found
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        }
        if errors.is_empty() && check_unique_key {
            let mut keys = key_columns.clone();
            keys.sort();
            let unique: bool = self
                .runtime
                .block_on(client.query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) \
                     AND i.indisunique AND i.indpred IS NULL AND (SELECT array_agg(a.attname::text \
                     ORDER BY a.attname::text) FROM pg_attribute a WHERE a.attrelid = i.indrelid \
                     AND a.attnum = ANY(i.indkey)) = $2::text[])",
                    &[&table, &keys],
                ))
                .map_err(|e| SinkError::database("reading the table's unique indexes", &e))?
                .get(0);
            if !unique {
                errors.push(ConfigError::new(
                    key_key,
                    format!(
                        "table {} has no primary key or unique index on exactly ({}); mode \
                         idempotent upserts with ON CONFLICT, which needs one",
                        target.table,
                        key_columns.join(", ")
                    ),
                ));
            }
        }
        if errors.is_empty() {
            Ok(types)
        } else {
            Err(ConfigErrors(errors).into())
        }
    }

    /// Creates the offsets table if it is missing (instances starting together may race: the
    /// loser's duplicate error is ignored).
    pub(super) fn create_offsets_table(&mut self, offsets_table: &str) -> Result<(), SinkError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (group_id text NOT NULL, topic text NOT NULL, \
             partition integer NOT NULL, next_offset bigint, owner_epoch bigint NOT NULL, \
             PRIMARY KEY (group_id, topic, partition))",
            quoted(offsets_table)
        );
        self.ensure_connected()?;
        let client = self.client.as_ref().ok_or_else(unreachable_client)?;
        match self.runtime.block_on(client.batch_execute(&sql)) {
            Ok(()) => Ok(()),
            Err(error)
                if error.code().is_some_and(|c| {
                    *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                        || *c == tokio_postgres::error::SqlState::DUPLICATE_TABLE
                }) =>
            {
                Ok(())
            }
            Err(error) => Err(SinkError::database("creating the offsets table", &error)),
        }
    }

    /// Claims partitions for this instance: bumps each one's owner epoch (creating its row) and
    /// returns its next offset and our new epoch. Retried across reconnections.
    pub(super) fn claim(
        &mut self,
        offsets_table: &str,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Claim>, SinkError> {
        let sql = format!(
            "INSERT INTO {t} AS o (group_id, topic, partition, next_offset, owner_epoch) \
             VALUES ($1, $2, $3, NULL, 1) ON CONFLICT (group_id, topic, partition) \
             DO UPDATE SET owner_epoch = o.owner_epoch + 1 RETURNING next_offset, owner_epoch",
            t = quoted(offsets_table)
        );
        self.with_retry("claiming partitions", |db| {
            let statement = db.statement(&sql, &[Type::TEXT, Type::TEXT, Type::INT4])?;
            let client = db.client.as_ref().ok_or_else(|| closed_error_hint(db))?;
            db.runtime.block_on(async {
                let mut claims = Vec::with_capacity(partitions.len());
                client.batch_execute("BEGIN").await?;
                for (topic, partition) in partitions {
                    let row = client
                        .query_one(&statement, &[&group_id, topic, partition])
                        .await?;
                    claims.push(Claim {
                        next_offset: row.get(0),
                        epoch: row.get(1),
                    });
                }
                client.batch_execute("COMMIT").await?;
                Ok(claims)
            })
        })
    }

    /// The stored next offset and owner epoch of each partition (None: no row).
    pub(super) fn read_offsets(
        &mut self,
        offsets_table: &str,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<Stored>>, SinkError> {
        let sql = format!(
            "SELECT next_offset, owner_epoch FROM {} WHERE group_id = $1 AND topic = $2 AND \
             partition = $3",
            quoted(offsets_table)
        );
        self.with_retry("reading the offsets table", |db| {
            let statement = db.statement(&sql, &[Type::TEXT, Type::TEXT, Type::INT4])?;
            let client = db.client.as_ref().ok_or_else(|| closed_error_hint(db))?;
            db.runtime.block_on(async {
                let mut found = Vec::with_capacity(partitions.len());
                for (topic, partition) in partitions {
                    let row = client
                        .query_opt(&statement, &[&group_id, topic, partition])
                        .await?;
                    found.push(row.map(|r| (r.get(0), r.get(1))));
                }
                Ok(found)
            })
        })
    }

    /// Runs `attempt` until it succeeds, re-opening the session after connection errors, for at
    /// most `retry_timeout`.
    pub(super) fn with_retry<T>(
        &mut self,
        operation: &'static str,
        mut attempt: impl FnMut(&mut Self) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, SinkError> {
        let started = Instant::now();
        loop {
            self.ensure_connected()?;
            match attempt(self) {
                Ok(value) => return Ok(value),
                Err(error) if classify(&error) == DbErrorClass::Connection => {
                    if started.elapsed() > self.retry_timeout {
                        return Err(SinkError::DatabaseLost {
                            target: self.target.clone(),
                            waited_secs: started.elapsed().as_secs(),
                            last: db_message(&error),
                        });
                    }
                    tracing::warn!(operation, error = %db_message(&error),
                        "The database connection failed; reconnecting.");
                    self.drop_session();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => return Err(SinkError::database(operation, &error)),
            }
        }
    }
}

fn unreachable_client() -> SinkError {
    SinkError::Database {
        operation: "using the database session",
        message: "no open session".to_string(),
    }
}

/// An error standing for "the session is closed", so callers retry through a reconnection.
fn closed_error_hint(db: &Db) -> tokio_postgres::Error {
    // tokio-postgres has no public constructor for its errors; a closed client's call yields one.
    let _ = db;
    tokio_postgres::Error::__private_api_timeout()
}
