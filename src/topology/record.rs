//! Input records, output records and the emitter that collects them.

use std::borrow::Cow;

use rdkafka::message::{BorrowedHeaders, Headers as _};

use super::{TopologyError, DEFAULT_OUTPUT};

/// Where an input record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context<'a> {
    /// The input topic.
    pub topic: &'a str,
    /// The input partition.
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record's timestamp in milliseconds since the epoch, when it has one.
    pub timestamp: Option<i64>,
}

/// The headers of an input record, borrowed from the consumer's buffer.
#[derive(Clone, Copy)]
pub struct Headers<'a>(HeadersRepr<'a>);

#[derive(Clone, Copy)]
enum HeadersRepr<'a> {
    None,
    Kafka(&'a BorrowedHeaders),
    Slice(&'a [(&'a str, Option<&'a [u8]>)]),
}

impl<'a> Headers<'a> {
    /// No headers.
    pub const fn none() -> Self {
        Self(HeadersRepr::None)
    }

    /// Headers given as a slice of name/value pairs, for tests and for records built by hand.
    pub const fn from_slice(headers: &'a [(&'a str, Option<&'a [u8]>)]) -> Self {
        Self(HeadersRepr::Slice(headers))
    }

    pub(crate) fn from_kafka(headers: Option<&'a BorrowedHeaders>) -> Self {
        match headers {
            Some(h) => Self(HeadersRepr::Kafka(h)),
            None => Self::none(),
        }
    }

    /// The number of headers.
    pub fn len(&self) -> usize {
        match self.0 {
            HeadersRepr::None => 0,
            HeadersRepr::Kafka(h) => h.count(),
            HeadersRepr::Slice(s) => s.len(),
        }
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The headers in their order on the wire. A header may repeat.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let this = *self;
        (0..this.len()).filter_map(move |i| match this.0 {
            HeadersRepr::None => None,
            HeadersRepr::Kafka(h) => h.try_get(i).map(|header| (header.key, header.value)),
            HeadersRepr::Slice(s) => s.get(i).copied(),
        })
    }

    /// The value of the last header with this name (Kafka's convention for repeated headers).
    pub fn last(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .filter(|(key, _)| *key == name)
            .last()
            .map(|(_, value)| value)
    }
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One input record as the topology sees it: borrowed, never copied by the engine.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The record's key; `None` for a record without one.
    pub key: Option<&'a [u8]>,
    /// The record's value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The record's headers.
    pub headers: Headers<'a>,
    /// Where the record came from.
    pub context: Context<'a>,
}

impl<'a> Record<'a> {
    /// The value as UTF-8 text; a decode error for a tombstone or for invalid UTF-8.
    pub fn value_str(&self) -> Result<&'a str, TopologyError> {
        let value = self
            .value
            .ok_or_else(|| TopologyError::decode("the record has no value (tombstone)"))?;
        std::str::from_utf8(value)
            .map_err(|e| TopologyError::decode(format!("the value is not valid UTF-8: {e}")))
    }

    /// The key as UTF-8 text, if there is a key; a decode error for invalid UTF-8.
    pub fn key_str(&self) -> Result<Option<&'a str>, TopologyError> {
        self.key
            .map(|key| {
                std::str::from_utf8(key)
                    .map_err(|e| TopologyError::decode(format!("the key is not valid UTF-8: {e}")))
            })
            .transpose()
    }
}

/// A header of an output record: name and (possibly absent) value.
pub type OutputHeader<'a> = (Cow<'a, str>, Option<Cow<'a, [u8]>>);

/// One record a topology emits. It may borrow from the input record (`'a`), so forwarding an
/// input's key, value or headers costs no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord<'a> {
    /// The output name (see [`super::DEFAULT_OUTPUT`]) the record goes to.
    pub output: &'static str,
    /// The key; `None` writes a record without a key.
    pub key: Option<Cow<'a, [u8]>>,
    /// The value; `None` writes a tombstone.
    pub value: Option<Cow<'a, [u8]>>,
    /// Headers, in order.
    pub headers: Vec<OutputHeader<'a>>,
    /// The timestamp in milliseconds; `None` lets the producer stamp the record.
    pub timestamp: Option<i64>,
    /// The partition to write to; `None` (the default) lets the partitioner choose by key. The
    /// engine sets it for changelog records (changelog partition = input partition).
    pub partition: Option<i32>,
}

impl<'a> OutputRecord<'a> {
    /// An empty record (no key, no value, no headers) for the default output.
    pub fn new() -> Self {
        Self {
            output: DEFAULT_OUTPUT,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
            partition: None,
        }
    }

    /// A record for the default output that carries the input's key, value, headers and
    /// timestamp, borrowed: the start of most transforms, and all of a passthrough.
    pub fn from_input(record: &Record<'a>) -> Self {
        Self {
            output: DEFAULT_OUTPUT,
            key: record.key.map(Cow::Borrowed),
            value: record.value.map(Cow::Borrowed),
            headers: record
                .headers
                .iter()
                .map(|(name, value)| (Cow::Borrowed(name), value.map(Cow::Borrowed)))
                .collect(),
            timestamp: record.context.timestamp,
            partition: None,
        }
    }

    /// Sends the record to the named output instead of the default one.
    pub fn to(mut self, output: &'static str) -> Self {
        self.output = output;
        self
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Cow<'a, [u8]>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: impl Into<Cow<'a, [u8]>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Makes the record a tombstone (no value).
    pub fn tombstone(mut self) -> Self {
        self.value = None;
        self
    }

    /// Appends a header.
    pub fn header(
        mut self,
        name: impl Into<Cow<'a, str>>,
        value: impl Into<Cow<'a, [u8]>>,
    ) -> Self {
        self.headers.push((name.into(), Some(value.into())));
        self
    }
}

impl Default for OutputRecord<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// Collects what a topology emits for one input record.
#[derive(Debug, Default)]
pub struct Emitter<'a> {
    records: Vec<OutputRecord<'a>>,
}

impl<'a> Emitter<'a> {
    /// An empty emitter.
    pub fn new() -> Self {
        Self {
            records: Vec::new(),
        }
    }

    /// Emits a record. Nothing is written until `process` returns `Ok`.
    pub fn emit(&mut self, record: OutputRecord<'a>) {
        self.records.push(record);
    }

    /// The records emitted so far, in order.
    pub fn records(&self) -> &[OutputRecord<'a>] {
        &self.records
    }

    /// Takes the emitted records out.
    pub fn into_records(self) -> Vec<OutputRecord<'a>> {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(value: Option<&'a [u8]>, headers: Headers<'a>) -> Record<'a> {
        Record {
            key: Some(b"k"),
            value,
            headers,
            context: Context {
                topic: "in",
                partition: 0,
                offset: 7,
                timestamp: Some(1),
            },
        }
    }

    #[test]
    fn from_input_borrows_key_value_headers_and_timestamp() {
        let headers = [("a", Some(&b"1"[..])), ("b", None)];
        let input = record(Some(b"v"), Headers::from_slice(&headers));
        let out = OutputRecord::from_input(&input);
        assert!(matches!(out.key, Some(Cow::Borrowed(b"k"))));
        assert!(matches!(out.value, Some(Cow::Borrowed(b"v"))));
        assert_eq!(out.headers.len(), 2);
        assert_eq!(out.headers[1], (Cow::Borrowed("b"), None));
        assert_eq!(out.timestamp, Some(1));
        assert_eq!(out.output, DEFAULT_OUTPUT);
    }

    #[test]
    fn value_str_rejects_tombstones_and_bad_utf8() {
        let none = Headers::none();
        assert_eq!(record(Some(b"ok"), none).value_str(), Ok("ok"));
        let tombstone = record(None, none).value_str().expect_err("tombstone");
        assert!(tombstone.message.contains("tombstone"));
        let bad = record(Some(&[0xff, 0xfe]), none)
            .value_str()
            .expect_err("bad utf-8");
        assert!(bad.message.contains("UTF-8"));
    }

    #[test]
    fn last_header_wins() {
        let headers = [("a", Some(&b"1"[..])), ("a", Some(&b"2"[..]))];
        assert_eq!(
            Headers::from_slice(&headers).last("a"),
            Some(Some(&b"2"[..]))
        );
        assert_eq!(Headers::from_slice(&headers).last("b"), None);
    }
}
