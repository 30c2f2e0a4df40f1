//! The worker's side of the search for a rejected output ([`Search`]): a batch aborted because
//! the broker rejected one of its outputs for what it is caps the next batches, and the record
//! found is remembered so that, read again, it is poison (`output_rejected`). Kept apart from
//! `worker.rs` so the transaction code stays readable.

use super::super::held::Rejected;
use super::super::search::Search;
use super::WorkerTxn;
use crate::engine::offsets::Span;
use crate::topology::Context;

impl WorkerTxn {
    /// The most records the open batch may hold: `max_records_per_txn`, or less while a
    /// rejected output is searched for.
    pub(crate) fn batch_limit(&self, max_records_per_txn: usize) -> usize {
        self.search.map_or(max_records_per_txn, |search| {
            search.limit().min(max_records_per_txn)
        })
    }

    /// A batch aborted because the broker rejected one of its outputs for what it is: a batch
    /// of one record names it; a larger one is re-run in halves ([`Search`]).
    pub(super) fn find_rejected(&mut self, span: &Span, reason: String) {
        let records = self
            .committing
            .iter()
            .chain(&self.open)
            .map(|b| b.records)
            .sum::<usize>();
        match (records, span.read.first()) {
            (1, Some(read)) => {
                tracing::warn!(
                    topic = read.topic,
                    partition = read.partition,
                    offset = read.first_offset,
                    reason,
                    "An output of this record was rejected for what it is; the record is poison."
                );
                self.rejected = Some(Rejected {
                    topic: read.topic.clone(),
                    partition: read.partition,
                    offset: read.first_offset,
                    reason,
                });
                self.search = Some(Search::found());
            }
            _ => {
                let search = Search::after_rejection(records, self.search);
                tracing::warn!(
                    records,
                    records_per_transaction = search.limit(),
                    reason,
                    "An output was rejected for what it is; re-running the batch in smaller \
                     transactions to find its record."
                );
                self.search = Some(search);
            }
        }
    }

    /// If `context` is the record whose output the broker rejected, why (once).
    pub(crate) fn rejected(&mut self, context: &Context<'_>) -> Option<String> {
        let rejected = self.rejected.as_ref()?;
        let same = rejected.offset == context.offset
            && rejected.partition == context.partition
            && rejected.topic == context.topic;
        same.then(|| self.rejected.take().map(|r| r.reason))
            .flatten()
    }
}
