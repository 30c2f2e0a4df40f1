//! What the worker keeps aside: outputs held back until their transaction can take them
//! (pipelined commits, at_most_once), and the input record whose output the broker rejected.

use std::borrow::Cow;

use crate::topology::OutputRecord;

/// An input record whose output the broker rejected for what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The output topic and the broker's error.
    pub(crate) reason: String,
}

/// An output held back while the previous transaction commits, sent once the next one begins.
#[derive(Debug)]
pub(crate) struct HeldOutput {
    pub(crate) topic: String,
    pub(crate) record: OutputRecord<'static>,
    /// The input record's topic, partition, offset and timestamp, for the provenance headers.
    pub(crate) provenance: Option<(String, i32, i64, Option<i64>)>,
}

/// A copy of an output record that owns its bytes, to hold while a commit is in flight.
pub(crate) fn owned(record: &OutputRecord<'_>) -> OutputRecord<'static> {
    let bytes = |b: &Cow<'_, [u8]>| Cow::Owned(b.to_vec());
    OutputRecord {
        output: record.output,
        key: record.key.as_ref().map(bytes),
        value: record.value.as_ref().map(bytes),
        headers: record
            .headers
            .iter()
            .map(|(name, value)| (Cow::Owned(name.to_string()), value.as_ref().map(bytes)))
            .collect(),
        timestamp: record.timestamp,
        partition: record.partition,
    }
}
