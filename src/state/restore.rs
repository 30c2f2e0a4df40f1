//! Restore: brings a partition's local store up to its changelog's end before the partition's
//! first record is processed.
//!
//! ```text
//!   from = local offset (0 for a new or deleted store)
//!   hw   = high watermark now, read_uncommitted (every record written so far, open or not)
//!   wait until the last stable offset (read_committed watermark) >= hw: no transaction that
//!        began before now is still open (the previous owner's commit markers are written)
//!   read read_committed from `from` until partition EOF (the fetcher is at the LSO, >= hw)
//!   apply in chunks, each with the offset after its last record
//! ```
//!
//! Why this end and not "high watermark - 1": commit and abort markers take offsets, and
//! records of open or aborted transactions sit below the high watermark, so no arithmetic on
//! the high watermark says when everything committed has been read. Waiting for the LSO to
//! pass the high watermark seen at the start closes the window in which the previous owner's
//! transaction has committed (its input offsets are visible) but its marker on the changelog is
//! not written yet.
//!
//! A watermark read that fails on what heals when the cluster does (a changelog leader killed or
//! moving, a broker unreachable for a while) is retried with backoff for `patience`, then
//! reported; any other error ends the restore at once.
//!
//! What a restore costs besides its records (measured, docs/BENCHMARKS.md, "Stateful"): the
//! fetch at the changelog's end waits `fetch.wait.max.ms` before it reports the EOF, so the
//! restore consumers set it to 10 ms (librdkafka's 500 ms cost every restore half a second,
//! even one with only a killed transaction's aborted records to skip); and a consumer's destroy
//! waits for its threads, so it is dropped on a thread of its own. `RUST_LOG=kstage=debug`
//! logs each restore's timings.
//!
//! Compaction is harmless: offsets may be missing, and a `from` below the log start resets to
//! the earliest offset (`auto.offset.reset=earliest`). The stored offset after a restore is the
//! last record read + 1: a lower bound, so the markers after it are read again next time, which
//! costs nothing.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::store::{LocalStore, Writes};
use super::{StateError, StoreDef};

/// Records applied per local write during a restore.
const CHUNK: usize = 20_000;

/// The restore consumers' context: reaching the end of a changelog partition is how a restore
/// ends, not an error worth a log line.
#[derive(Debug, Default)]
pub(crate) struct RestoreContext;

impl rdkafka::ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !end {
            tracing::error!(%error, reason, "librdkafka reported an error to a restore consumer.");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for RestoreContext {}

/// The clients a restore uses: a read_committed consumer to read (its watermarks are the last
/// stable offset), made anew for every restore so that no event of an earlier restore (an EOF,
/// which names only a partition number) can end a later one; and a read_uncommitted one for the
/// high watermark.
pub(crate) struct Restorer {
    pub(crate) committed: ClientConfig,
    pub(crate) uncommitted: BaseConsumer<RestoreContext>,
    /// The longest a restore waits for an open transaction on the changelog to end.
    pub(crate) patience: Duration,
}

impl std::fmt::Debug for Restorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restorer")
            .field("patience", &self.patience)
            .finish_non_exhaustive()
    }
}

/// What one store's restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Changelog records applied.
    pub(crate) records: u64,
    /// The local offset before, and the high watermark the restore had to reach.
    pub(crate) from: u64,
    pub(crate) to: u64,
}

fn kafka(what: &str, def: &StoreDef, partition: i32, error: KafkaError) -> StateError {
    StateError::Restore(format!(
        "{what} of changelog {} partition {partition}: {error}",
        def.changelog
    ))
}

impl Restorer {
    /// Restores one store of one partition into `local`; `progress(records applied, records
    /// left to the high watermark)` is called per chunk.
    pub(crate) fn restore(
        &self,
        local: &LocalStore,
        def: &StoreDef,
        partition: i32,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Restored, StateError> {
        let topic = &*def.changelog;
        let timeout = Duration::from_secs(10);
        let from = local.offset(&def.name)?;
        let (low, high) = self.watermarks(
            &self.uncommitted,
            def,
            partition,
            timeout,
            "reading the high watermark",
        )?;
        let high = u64::try_from(high).unwrap_or(0);
        let mut restored = Restored {
            records: 0,
            from,
            to: high,
        };
        if from >= high {
            return Ok(restored);
        }
        let began = Instant::now();
        let reader: BaseConsumer<RestoreContext> = self
            .committed
            .create_with_context(RestoreContext)
            .map_err(|e| kafka("creating the restore consumer", def, partition, e))?;
        self.await_stable(&reader, def, partition, high)?;
        let stable = began.elapsed();
        let start = from.max(u64::try_from(low).unwrap_or(0));
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(start as i64))
            .map_err(|e| kafka("assigning", def, partition, e))?;
        reader
            .assign(&assignment)
            .map_err(|e| kafka("assigning", def, partition, e))?;
        self.read_to_eof(
            &reader,
            local,
            def,
            partition,
            from,
            &mut restored,
            &mut progress,
        )?;
        tracing::debug!(
            store = %def.name,
            partition,
            records = restored.records,
            stable_ms = u64::try_from(stable.as_millis()).unwrap_or(u64::MAX),
            read_ms = u64::try_from((began.elapsed() - stable).as_millis()).unwrap_or(u64::MAX),
            "Restore timings: until the last stable offset reached the high watermark (a new \
             consumer's first request included), then reading to the end."
        );
        close_in_background(reader);
        Ok(restored)
    }

    /// `consumer`'s watermarks of the changelog partition, retried with backoff (100 ms doubling
    /// to 2 s) for `patience` while the error is one that heals with the cluster.
    fn watermarks(
        &self,
        consumer: &BaseConsumer<RestoreContext>,
        def: &StoreDef,
        partition: i32,
        timeout: Duration,
        what: &str,
    ) -> Result<(i64, i64), StateError> {
        let deadline = Instant::now() + self.patience;
        let mut backoff = Duration::from_millis(100);
        loop {
            match consumer.fetch_watermarks(&def.changelog, partition, timeout) {
                Ok(marks) => return Ok(marks),
                Err(error) if heals(&error) && Instant::now() + backoff < deadline => {
                    tracing::warn!(%error, changelog = %def.changelog, partition,
                        "Reading a changelog watermark failed; the restore retries.");
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownPartition) {
                        // librdkafka answers from its metadata cache, which a client that reads
                        // no topic does not refresh by itself: ask for the changelog's metadata.
                        if let Err(e) = consumer.fetch_metadata(Some(&def.changelog), timeout) {
                            tracing::debug!(error = %e, "Refreshing the changelog's metadata failed.");
                        }
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(kafka(what, def, partition, error)),
            }
        }
    }

    /// Waits until the last stable offset reaches `high`.
    fn await_stable(
        &self,
        reader: &BaseConsumer<RestoreContext>,
        def: &StoreDef,
        partition: i32,
        high: u64,
    ) -> Result<(), StateError> {
        let deadline = Instant::now() + self.patience;
        loop {
            let (_, stable) = self.watermarks(
                reader,
                def,
                partition,
                Duration::from_secs(10),
                "reading the last stable offset",
            )?;
            if u64::try_from(stable).unwrap_or(0) >= high {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StateError::Restore(format!(
                    "changelog {} partition {partition}: a transaction stayed open for {:?} \
                     (last stable offset {stable}, high watermark {high}); an instance that \
                     crashed holds it until transaction.timeout.ms passes",
                    def.changelog, self.patience
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_to_eof(
        &self,
        reader: &BaseConsumer<RestoreContext>,
        local: &LocalStore,
        def: &StoreDef,
        partition: i32,
        from: u64,
        restored: &mut Restored,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<(), StateError> {
        // Progress resets the deadline: only a restore that stops moving gives up.
        let mut deadline = Instant::now() + self.patience;
        let mut chunk = Writes::new();
        let mut next = from;
        loop {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(message)) if message.topic() != &*def.changelog => {}
                Some(Ok(message)) => {
                    deadline = Instant::now() + self.patience;
                    if let Some(key) = message.key() {
                        chunk.insert(key.to_vec(), message.payload().map(<[u8]>::to_vec));
                    }
                    restored.records += 1;
                    next = next.max(u64::try_from(message.offset()).unwrap_or(0) + 1);
                    if chunk.len() >= CHUNK {
                        local.apply([(def.name.as_str(), &chunk, Some(next))])?;
                        chunk.clear();
                        progress(restored.records, restored.to.saturating_sub(next));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break,
                Some(Err(error)) => {
                    if crate::error::classify_consumer(&error) == crate::error::ErrorClass::Fatal {
                        return Err(kafka("reading", def, partition, error));
                    }
                    tracing::warn!(%error, changelog = %def.changelog, partition,
                        "The restore consumer reported an error; it keeps retrying.");
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(StateError::Restore(format!(
                    "changelog {} partition {partition}: not read to its end within {:?} \
                     ({} records so far)",
                    def.changelog, self.patience, restored.records
                )));
            }
        }
        local.apply([(def.name.as_str(), &chunk, Some(next))])?;
        progress(restored.records, 0);
        Ok(())
    }
}

/// Drops a restore consumer on a thread of its own: librdkafka's destroy waits for the client's
/// threads to end, about 100 ms per restore (measured, docs/BENCHMARKS.md, "Stateful"), which
/// the partition's processing need not wait for. The consumer is assign-only (no group, nothing
/// to commit), so nothing depends on when it is gone. If no thread can be made, the closure,
/// and with it the consumer, is dropped here.
fn close_in_background(reader: BaseConsumer<RestoreContext>) {
    let _closing = std::thread::Builder::new()
        .name("kstage-restore-close".into())
        .spawn(move || drop(reader));
}

/// Whether a watermark read's error heals when the cluster does: a leader moving or not yet
/// elected, a broker down or slow, or librdkafka's own "unknown partition" while its metadata
/// of a killed leader's partition is being refreshed (seen in the 3-broker leader-kill test; the
/// changelog's partitions were checked at start-up, so a partition that stays unknown is
/// reported once `patience` ends). Anything else (authorization, an unknown topic on the
/// broker) is final.
fn heals(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::NotLeaderForPartition
                | Code::LeaderNotAvailable
                | Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::BrokerNotAvailable
                | Code::ReplicaNotAvailable
                | Code::NetworkException
                | Code::RequestTimedOut
                | Code::OperationTimedOut
                | Code::TimedOutQueue
                | Code::FencedLeaderEpoch
                | Code::UnknownLeaderEpoch
                | Code::UnknownPartition
        )
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as Code;

    use super::heals;

    #[test]
    fn a_moving_leader_heals_and_an_authorization_error_does_not() {
        assert!(heals(&KafkaError::MetadataFetch(
            Code::NotLeaderForPartition
        )));
        assert!(heals(&KafkaError::MetadataFetch(Code::LeaderNotAvailable)));
        assert!(heals(&KafkaError::MetadataFetch(Code::OperationTimedOut)));
        assert!(heals(&KafkaError::MetadataFetch(Code::UnknownPartition)));
        assert!(!heals(&KafkaError::MetadataFetch(
            Code::TopicAuthorizationFailed
        )));
        assert!(!heals(&KafkaError::MetadataFetch(
            Code::UnknownTopicOrPartition
        )));
    }
}
