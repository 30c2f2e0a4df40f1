//! One batch into the database: one transaction holding the rows and (transactional mode) the
//! partitions' next offsets, fenced by the owner epoch.
//!
//! ```text
//!  BEGIN ─► UPDATE offsets SET next_offset WHERE owner_epoch = ours (per partition; 0 rows:
//!  │        fenced, ROLLBACK, stop) ─► the rows: COPY per table (`write = "copy"`, the
//!  │        default; upserts through a staging table, see [`super::copy`]) or multi-row INSERTs
//!  │        (`write = "insert"`; ON CONFLICT for upserts)
//!  │        └─ a row rejected (class 22/23): ROLLBACK, then again row by row, each inside a
//!  │           SAVEPOINT, collecting the rejected rows with the database's error text
//!  ├─► on_rejected(rejected): the poison policy (fail: ROLLBACK and stop; skip; dead_letter:
//!  │   the dead letters are flushed to Kafka *before* COMMIT)
//!  └─► COMMIT
//!  connection lost anywhere ─► reconnect (backoff, retry_timeout) ─► settle: the offsets table
//!  says whether the batch committed (next_offset = the batch's end for every partition, with
//!  our epoch), never a guess ─► committed: done; not: write the batch again; epoch changed: fenced
//! ```
//!
//! Offsets are updated first so a fenced zombie writes no row, and so the row locks they take
//! order concurrent claimers behind the commit (a claimer then reads the committed offset).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Statement;

use super::broken::Broken;
use super::config::{SinkConfig, SinkMode, WriteMethod};
use super::db::{quoted, ColumnType, Db};
use super::error::{classify, db_message, DbErrorClass, SinkError};
use super::mapping::Row;
use super::statements::{self, plain_insert, TableStatements, TableTarget};

/// A partition in a batch: the offset after its last record, and the epoch it was claimed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PartitionEnd {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub epoch: i64,
    /// Records the batch read from it.
    pub records: u64,
}

/// A row the database rejected: its index in the batch and the database's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejected {
    pub index: usize,
    pub error: String,
}

/// Why one attempt did not commit.
enum Failed {
    /// The connection failed (`in_commit`: during COMMIT, so the outcome is unknown).
    Connection(tokio_postgres::Error),
    /// A row was rejected on the fast path: write the batch again row by row.
    Rows,
    /// Stop: fenced, the poison policy said fail, or an error no retry fixes.
    Stop(SinkError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(error: tokio_postgres::Error) -> Self {
        match classify(&error) {
            DbErrorClass::Connection => Self::Connection(error),
            DbErrorClass::Row => Self::Rows,
            DbErrorClass::Fatal => Self::Stop(SinkError::database("writing a batch", &error)),
        }
    }
}

/// Builds and runs a batch's statements.
pub(super) struct Writer {
    mode: SinkMode,
    /// The INSERT of each table, by the table index of a [`Row`].
    tables: Vec<TableStatements>,
    rows_per_statement: usize,
    /// The fast path: COPY (else multi-row INSERTs).
    copy: bool,
    /// The offsets table, quoted for SQL, and as configured.
    offsets_table: String,
    offsets_name: String,
    group_id: String,
    /// Negative control: a plain INSERT (no ON CONFLICT, no de-duplication).
    plain_insert: bool,
    /// Negative control: no offsets in the database.
    skip_db_offsets: bool,
    /// Negative control: offsets updated whatever the owner epoch (no fencing).
    no_fencing: bool,
}

impl Writer {
    /// A writer of `targets` (with each one's column types, in column order).
    pub(super) fn new(
        sink: &SinkConfig,
        targets: &[TableTarget],
        types: &[Vec<ColumnType>],
        group_id: &str,
    ) -> Self {
        Self {
            mode: sink.mode,
            tables: targets
                .iter()
                .zip(types)
                .enumerate()
                .map(|(index, (target, types))| TableStatements::new(sink, index, target, types))
                .collect(),
            rows_per_statement: sink.rows_per_statement,
            copy: sink.write == WriteMethod::Copy,
            offsets_table: quoted(&sink.offsets_table),
            offsets_name: sink.offsets_table.clone(),
            group_id: group_id.to_string(),
            plain_insert: plain_insert(sink),
            skip_db_offsets: sink.mode == SinkMode::Idempotent || Broken::KafkaOffsets.active(),
            no_fencing: Broken::NoFencing.active(),
        }
    }

    /// Writes a batch and commits it, reconnecting and settling as needed. `on_rejected` runs
    /// before COMMIT with the rows the database rejected (empty when none); its error rolls the
    /// batch back and stops. Returns the rejected rows.
    pub(super) fn write(
        &self,
        db: &mut Db,
        rows: &[Row],
        ends: &[PartitionEnd],
        on_rejected: &mut dyn FnMut(&[Rejected]) -> Result<(), SinkError>,
    ) -> Result<Vec<Rejected>, SinkError> {
        let started = Instant::now();
        let dedup = self.mode == SinkMode::Idempotent && !self.plain_insert;
        let order = statements::order(&self.tables, rows, dedup);
        let mut row_by_row = false;
        loop {
            db.ensure_connected()?;
            let error = match self.attempt(db, rows, &order, ends, row_by_row, on_rejected) {
                Ok(rejected) => return Ok(rejected),
                Err(Failed::Stop(error)) => return Err(error),
                Err(Failed::Rows) => {
                    tracing::warn!("The database rejected a row; writing the batch row by row.");
                    row_by_row = true;
                    continue;
                }
                Err(Failed::Connection(error)) => error,
            };
            if started.elapsed() > db.retry_timeout {
                return Err(SinkError::DatabaseLost {
                    target: db.target.clone(),
                    waited_secs: started.elapsed().as_secs(),
                    last: db_message(&error),
                });
            }
            tracing::warn!(error = %db_message(&error),
                "The database connection failed during a batch; reconnecting to settle it.");
            db.drop_session();
            std::thread::sleep(Duration::from_millis(200));
            if !self.skip_db_offsets && self.settled(db, ends)? {
                tracing::info!("The batch had committed before the connection failed.");
                return Ok(Vec::new());
            }
        }
    }

    /// After a connection failure: whether the batch committed, read from the offsets table.
    fn settled(&self, db: &mut Db, ends: &[PartitionEnd]) -> Result<bool, SinkError> {
        let parts: Vec<(String, i32)> = ends
            .iter()
            .map(|e| (e.topic.clone(), e.partition))
            .collect();
        let stored = db.read_offsets(&self.offsets_name, &self.group_id, &parts)?;
        let mut committed = true;
        for (end, found) in ends.iter().zip(stored) {
            match found {
                Some((next, epoch)) if epoch == end.epoch || self.no_fencing => {
                    committed &= next == Some(end.next_offset);
                }
                other => {
                    return Err(SinkError::Fenced {
                        topic: end.topic.clone(),
                        partition: end.partition,
                        ours: end.epoch,
                        found: other.map(|(_, epoch)| epoch),
                    })
                }
            }
        }
        Ok(committed)
    }

    fn attempt(
        &self,
        db: &mut Db,
        rows: &[Row],
        order: &[usize],
        ends: &[PartitionEnd],
        row_by_row: bool,
        on_rejected: &mut dyn FnMut(&[Rejected]) -> Result<(), SinkError>,
    ) -> Result<Vec<Rejected>, Failed> {
        let update = format!(
            "UPDATE {} SET next_offset = $1 WHERE group_id = $2 AND topic = $3 AND partition = $4 \
             AND {}",
            self.offsets_table,
            if self.no_fencing {
                // Negative control: the epoch is not checked (the parameter stays bound).
                "$5::bigint IS NOT NULL"
            } else {
                "owner_epoch = $5"
            }
        );
        let update = db.statement(
            &update,
            &[Type::INT8, Type::TEXT, Type::TEXT, Type::INT4, Type::INT8],
        )?;
        // The statements, each with the rows it writes (with their batch index), built before
        // the transaction so that no lookup can fail inside it.
        let ordered: Vec<(usize, &Row)> = order
            .iter()
            .filter_map(|&index| rows.get(index).map(|row| (index, row)))
            .collect();
        let per_statement = if row_by_row {
            1
        } else {
            self.rows_per_statement.max(1)
        };
        let mut statements: HashMap<(usize, usize), Statement> = HashMap::new();
        let mut chunks = Vec::new();
        let copy = self.copy && !row_by_row;
        // `ordered` is grouped by table: chunk each table's run of rows (COPY: one run each).
        for run in ordered.chunk_by(|a, b| a.1.table == b.1.table) {
            if copy {
                break;
            }
            let Some(table) = run.first().and_then(|(_, row)| self.tables.get(row.table)) else {
                continue;
            };
            let index = run.first().map_or(0, |(_, row)| row.table);
            for chunk in run.chunks(per_statement) {
                let statement = match statements.get(&(index, chunk.len())) {
                    Some(statement) => statement.clone(),
                    None => {
                        let sql = table.insert_sql(chunk.len());
                        let types = vec![Type::TEXT; chunk.len() * table.width()];
                        let statement = db.statement(&sql, &types)?;
                        statements.insert((index, chunk.len()), statement.clone());
                        statement
                    }
                };
                chunks.push((statement, chunk));
            }
        }
        let client = db.client().map_err(Failed::Stop)?;
        let fenced = db.block_on(async {
            client.batch_execute("BEGIN").await?;
            if !self.skip_db_offsets {
                for end in ends {
                    let updated = client
                        .execute(
                            &update,
                            &[
                                &end.next_offset,
                                &self.group_id,
                                &end.topic,
                                &end.partition,
                                &end.epoch,
                            ],
                        )
                        .await?;
                    if updated == 0 {
                        let _ = client.batch_execute("ROLLBACK").await;
                        return Ok::<_, tokio_postgres::Error>(Some(end.clone()));
                    }
                }
            }
            Ok(None)
        })?;
        if let Some(end) = fenced {
            let found = db
                .read_offsets(
                    &self.offsets_name,
                    &self.group_id,
                    &[(end.topic.clone(), end.partition)],
                )
                .map_err(Failed::Stop)?;
            return Err(Failed::Stop(SinkError::Fenced {
                topic: end.topic,
                partition: end.partition,
                ours: end.epoch,
                found: found.first().copied().flatten().map(|(_, epoch)| epoch),
            }));
        }
        let client = db.client().map_err(Failed::Stop)?;
        let written = db.block_on(async {
            let mut rejected = Vec::new();
            if row_by_row {
                for (statement, &(index, row)) in chunks
                    .iter()
                    .flat_map(|(statement, chunk)| chunk.iter().map(move |r| (statement, r)))
                {
                    let params: Vec<&(dyn ToSql + Sync)> = row
                        .values
                        .iter()
                        .map(|v| v as &(dyn ToSql + Sync))
                        .collect();
                    client.batch_execute("SAVEPOINT kstage_row").await?;
                    match client.execute(statement, &params).await {
                        Ok(_) => client.batch_execute("RELEASE SAVEPOINT kstage_row").await?,
                        Err(error) if classify(&error) == DbErrorClass::Row => {
                            client
                                .batch_execute("ROLLBACK TO SAVEPOINT kstage_row")
                                .await?;
                            rejected.push(Rejected {
                                index,
                                error: db_message(&error),
                            });
                        }
                        Err(error) => return Err(error),
                    }
                }
            } else if copy {
                for run in ordered.chunk_by(|a, b| a.1.table == b.1.table) {
                    let Some(table) = run.first().and_then(|(_, row)| self.tables.get(row.table))
                    else {
                        continue;
                    };
                    let values = run.iter().map(|(_, row)| &row.values[..]);
                    if let Err(error) = table.copy.write(client, values).await {
                        let _ = client.batch_execute("ROLLBACK").await;
                        return Err(error);
                    }
                }
            } else {
                for (statement, chunk) in &chunks {
                    let params: Vec<&(dyn ToSql + Sync)> = chunk
                        .iter()
                        .flat_map(|(_, row)| row.values.iter().map(|v| v as &(dyn ToSql + Sync)))
                        .collect();
                    if let Err(error) = client.execute(statement, &params).await {
                        let _ = client.batch_execute("ROLLBACK").await;
                        return Err(error);
                    }
                }
            }
            Ok(rejected)
        });
        let rejected = match written {
            Ok(rejected) => rejected,
            Err(error) => {
                let failed = Failed::from(error);
                if !matches!(failed, Failed::Rows) {
                    let _ = db.block_on(client.batch_execute("ROLLBACK"));
                }
                return Err(failed);
            }
        };
        if let Err(error) = on_rejected(&rejected) {
            let _ = db.block_on(client.batch_execute("ROLLBACK"));
            return Err(Failed::Stop(error));
        }
        crash_point("kstage::sink_before_commit");
        db.block_on(client.batch_execute("COMMIT"))?;
        Ok(rejected)
    }
}

/// A crash point: with the `fault-injection` feature and `FAILPOINTS=<name>=return`, the
/// process aborts here as if killed.
pub(crate) fn crash_point(name: &str) {
    let _ = name;
    fail::fail_point!(name, |_| {
        eprintln!("fail point {name}: aborting the process");
        std::process::abort()
    });
}
