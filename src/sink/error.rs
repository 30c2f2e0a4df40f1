//! Sink errors, and the one rule that decides what the sink does with a PostgreSQL error.
//!
//! * **row** (SQLSTATE class 22 data exception, class 23 integrity constraint violation): the
//!   row is poison; the batch is written again row by row inside savepoints to find it, and it
//!   follows the poison policy.
//! * **connection** (no SQLSTATE, a closed connection, class 08, 57P01-57P03 shutdown or
//!   terminated backend, 53 insufficient resources, 40001/40P01 serialization or deadlock): the
//!   session is dropped, re-opened with backoff for `retry_timeout`, the outcome of a commit in
//!   flight is settled from the offsets table, and the batch is written again.
//! * **fatal** (everything else: a table or column dropped, a permission revoked): stop.

use tokio_postgres::error::SqlState;

use crate::config::ConfigErrors;
use crate::error::EngineError;

/// What the sink does next about a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorClass {
    /// A row the database rejects: poison.
    Row,
    /// Reconnect, settle, write the batch again.
    Connection,
    /// Stop.
    Fatal,
}

/// Classifies a PostgreSQL error.
pub fn classify(error: &tokio_postgres::Error) -> DbErrorClass {
    let Some(code) = error.code() else {
        // No SQLSTATE: an I/O error or a closed connection.
        return DbErrorClass::Connection;
    };
    let class = code.code().get(..2).unwrap_or_default();
    if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || class == "08"
        || class == "53"
    {
        return DbErrorClass::Connection;
    }
    match class {
        "22" | "23" => DbErrorClass::Row,
        _ => DbErrorClass::Fatal,
    }
}

/// The database's own text of an error (message and detail), without the connection string.
pub fn db_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => error.to_string(),
    }
}

/// Why a sink stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configuration, or the table it names, is invalid (exit code 2).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A Kafka-side failure (start-up, consuming, the dead-letter producer).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The database stayed unreachable for `retry_timeout`; nothing of the failed batch committed.
    #[error(
        "the database at {target} stayed unreachable for {waited_secs} s ({last}); nothing of \
         the failed batch was committed, and a restart resumes from the committed offsets"
    )]
    DatabaseLost {
        /// host:port/db (no credentials).
        target: String,
        /// How long it was retried.
        waited_secs: u64,
        /// The last error.
        last: String,
    },
    /// A database error that retrying cannot fix.
    #[error("{operation} failed: {message}")]
    Database {
        /// What the sink was doing.
        operation: &'static str,
        /// The database's text.
        message: String,
    },
    /// Another instance took the partition over (its owner epoch is newer): this one is a zombie.
    #[error(
        "fenced: {topic}/{partition} now has owner epoch {found:?} in the offsets table, not \
         ours ({ours}); another instance owns it, so this one rolled back its batch and stops"
    )]
    Fenced {
        /// The input topic.
        topic: String,
        /// The input partition.
        partition: i32,
        /// Our epoch.
        ours: i64,
        /// The epoch found (`None`: the row is gone).
        found: Option<i64>,
    },
    /// The sink topology panicked on a record: nothing of the open batch is committed.
    #[error(
        "the sink topology panicked on record {topic}/{partition}@{offset} ({message}); the \
         sink stops without committing the open batch"
    )]
    Panicked {
        /// The input topic.
        topic: String,
        /// The input partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// The panic's message.
        message: String,
    },
    /// A record or row is poison and the policy is `fail`.
    #[error(
        "record {topic}/{partition}@{offset} could not be written ({error}); poison_policy is \
         fail, so the sink stops without committing it"
    )]
    Poison {
        /// The input topic.
        topic: String,
        /// The input partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// What went wrong (the database's text for a rejected row).
        error: String,
    },
}

impl SinkError {
    /// The process exit code: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::Engine(error) => error.exit_code(),
            _ => 1,
        }
    }

    pub(crate) fn database(operation: &'static str, error: &tokio_postgres::Error) -> Self {
        Self::Database {
            operation,
            message: db_message(error),
        }
    }
}
