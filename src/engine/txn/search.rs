//! The search for the record whose output the broker rejected for what it is.
//!
//! A broker that refuses one record (INVALID_RECORD for a keyless record to a compacted topic,
//! a record above the topic's `max.message.bytes`) fails the whole produce request, and with it
//! the transaction, without saying which record it was. The worker then re-runs the aborted
//! batch under a cap on records per transaction: each capped batch that fails again halves the
//! cap, each that commits takes its records off what is left to search. A batch of one record
//! that fails names the record, which is then poison (`output_rejected`). So a rejected record
//! among `n` is found in about 2·log2(n) transactions rather than `n`.
//!
//! Invariants: the cap only ever shrinks while a search runs (never below one record); the
//! search ends once its record is found and re-run alone, or once as many records as the
//! largest failed batch held have committed under the cap.

/// A running search: batches hold at most `limit` records until `remaining` records of the
/// failed batch have committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Search {
    limit: usize,
    remaining: u64,
}

impl Search {
    /// After a batch of `records` (more than one) aborted because one of its outputs was
    /// rejected: re-run them in halves. A search already running keeps its smaller cap and its
    /// larger count: after a rewind the records of several partitions may come back in another
    /// order, so a capped batch that commits need not be the half without the rejected record.
    pub(crate) fn after_rejection(records: usize, running: Option<Self>) -> Self {
        let limit = records.div_ceil(2).max(1);
        let remaining = records as u64;
        match running {
            Some(search) => Self {
                limit: limit.min(search.limit),
                remaining: remaining.max(search.remaining),
            },
            None => Self { limit, remaining },
        }
    }

    /// The record is found (a batch of one was rejected): it is re-run alone, as poison, and
    /// the search ends once that has committed.
    pub(crate) fn found() -> Self {
        Self {
            limit: 1,
            remaining: 1,
        }
    }

    /// The search once a batch of `records` records committed; `None` once it is over.
    pub(crate) fn committed(self, records: usize) -> Option<Self> {
        let remaining = self.remaining.saturating_sub(records as u64);
        (remaining > 0).then_some(Self { remaining, ..self })
    }

    /// The most records a batch may hold meanwhile.
    pub(crate) fn limit(self) -> usize {
        self.limit
    }
}

impl super::TxnCore {
    /// An abort that made progress (it narrowed the search for a rejected output) does not
    /// count towards [`super::MAX_CONSECUTIVE_ABORTS`].
    pub(crate) fn abort_made_progress(&mut self) {
        self.consecutive_aborts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::Search;

    /// Finds the rejected record among `n` placed at `bad`, counting transactions.
    fn transactions_to_find(n: usize, bad: usize) -> usize {
        let mut search: Option<Search> = None;
        let mut start = 0;
        let mut transactions = 0;
        loop {
            let limit = search.map_or(n, Search::limit);
            let end = (start + limit).min(n);
            transactions += 1;
            if (start..end).contains(&bad) {
                if end - start == 1 {
                    return transactions;
                }
                search = Some(Search::after_rejection(end - start, search));
            } else {
                search = search.and_then(|s| s.committed(end - start));
                start = end;
            }
        }
    }

    #[test]
    fn a_rejected_record_is_found_in_logarithmically_many_transactions() {
        for n in [1, 2, 3, 7, 100, 5_210, 100_000] {
            for bad in [0, n / 3, n / 2, n - 1] {
                let found = transactions_to_find(n, bad);
                let bound = 2 * (usize::BITS - n.leading_zeros()) as usize + 1;
                assert!(found <= bound, "n={n} bad={bad}: {found} > {bound}");
            }
        }
    }

    #[test]
    fn the_cap_only_shrinks_and_the_search_ends_once_found_or_passed() {
        let search = Search::after_rejection(10, None);
        assert_eq!(search.limit(), 5);
        let narrower = Search::after_rejection(5, Some(search));
        assert_eq!(narrower.limit(), 3);
        let reordered = Search::after_rejection(9, Some(narrower));
        assert_eq!(reordered.limit(), 3, "the cap never grows during a search");
        let search = Search::after_rejection(4, None);
        let search = search.committed(2).expect("two records left");
        assert_eq!(
            search.committed(2),
            None,
            "over once the batch's records committed"
        );
        let found = Search::found();
        assert_eq!(found.limit(), 1);
        assert_eq!(
            found.committed(1),
            None,
            "over once the poison record committed"
        );
    }
}
