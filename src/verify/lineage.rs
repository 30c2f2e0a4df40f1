//! Lineage: which input record an output record stands for.
//!
//! An output record names its source in one of three ways ([`Identity`]):
//!
//! * **provenance** (default): kstage's `kstage.source.topic`, `.partition` and `.offset`
//!   headers. A passthrough copies its input's headers and then appends its own, so a record
//!   that went through two stages carries two sets; the *last* occurrence of each header is the
//!   nearest hop. When that hop is a `--through` topic (the middle of a chain), the record at
//!   those coordinates in the through topic is looked up and its own provenance followed, until
//!   an input topic is reached.
//! * **key**: the record key is the id, unique in the input.
//! * **field**: a top-level field of the JSON value is the id, unique in the input.
//!
//! Resolution looks coordinates up in the read_committed view of the input (or through) topic.
//! A miss is looked up again in the topic's read_uncommitted view, read only when needed: a
//! source found there but not read_committed is a record of an aborted (or open) upstream
//! transaction, so the output record is *derived from an aborted record*, which exactly-once
//! forbids. A source in neither view is unknown.

use std::collections::{HashMap, HashSet};
use std::fmt;

use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;
use serde::{Deserialize, Serialize};

use crate::topology::headers::{SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};

/// How output records are traced back to input records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// kstage's provenance headers (source topic, partition, offset).
    Provenance,
    /// The record key.
    Key,
    /// A top-level field of the JSON value (string or number).
    Field(String),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Provenance => f.write_str("provenance headers"),
            Identity::Key => f.write_str("record key"),
            Identity::Field(name) => write!(f, "JSON field {name:?}"),
        }
    }
}

/// Topic names interned as small numbers, so that a million coordinates stay small.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    names: Vec<String>,
    index: HashMap<String, u16>,
}

impl Topics {
    pub(crate) fn intern(&mut self, name: &str) -> u16 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = u16::try_from(self.names.len()).unwrap_or(u16::MAX);
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), id);
        id
    }

    pub(crate) fn name(&self, id: u16) -> &str {
        self.names.get(usize::from(id)).map_or("?", String::as_str)
    }

    /// `topic[partition]@offset`.
    pub(crate) fn show(&self, at: Coord) -> String {
        format!(
            "{}[{}]@{}",
            self.name(at.tp.topic),
            at.tp.partition,
            at.offset
        )
    }
}

/// A topic partition, topic interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Tp {
    pub(crate) topic: u16,
    pub(crate) partition: i32,
}

/// A record's coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Coord {
    pub(crate) tp: Tp,
    pub(crate) offset: i64,
}

/// What an output record says about its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Provenance headers: the source record's coordinates.
    At(Coord),
    /// An id (key bytes or a field's text).
    Id(Box<[u8]>),
    /// The record does not name its source (why).
    Missing(&'static str),
}

/// The nearest-hop provenance of `message`: the last occurrence of each provenance header.
pub(crate) fn provenance(message: &BorrowedMessage<'_>, topics: &mut Topics) -> Option<Coord> {
    let headers = message.headers()?;
    provenance_of(headers.iter().map(|h| (h.key, h.value)), topics)
}

/// The nearest-hop provenance named by `headers` (name, value), in record order: the last
/// occurrence of each provenance header.
pub(crate) fn provenance_of<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    topics: &mut Topics,
) -> Option<Coord> {
    let (mut topic, mut partition, mut offset) = (None, None, None);
    for (key, value) in headers {
        let slot = match key {
            SOURCE_TOPIC => &mut topic,
            SOURCE_PARTITION => &mut partition,
            SOURCE_OFFSET => &mut offset,
            _ => continue,
        };
        *slot = value.and_then(|v| std::str::from_utf8(v).ok());
    }
    let tp = Tp {
        topic: topics.intern(topic?),
        partition: partition?.parse().ok()?,
    };
    Some(Coord {
        tp,
        offset: offset?.parse().ok()?,
    })
}

/// What `message` says about its source under `identity`.
pub(crate) fn source(
    message: &BorrowedMessage<'_>,
    identity: &Identity,
    topics: &mut Topics,
) -> Source {
    match identity {
        Identity::Provenance => {
            provenance(message, topics).map_or(Source::Missing("no provenance headers"), Source::At)
        }
        _ => source_of(message.key(), message.payload(), None, identity, topics),
    }
}

/// What a record (`key`, `value`, and for provenance its `headers`) says about its source
/// under `identity`.
pub(crate) fn source_of<'a>(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: Option<&mut dyn Iterator<Item = (&'a str, Option<&'a [u8]>)>>,
    identity: &Identity,
    topics: &mut Topics,
) -> Source {
    match identity {
        Identity::Provenance => headers
            .and_then(|headers| provenance_of(headers, topics))
            .map_or(Source::Missing("no provenance headers"), Source::At),
        Identity::Key => key.map_or(Source::Missing("no key"), |k| Source::Id(k.into())),
        Identity::Field(name) => match value {
            None => Source::Missing("no value"),
            Some(bytes) => id_field(bytes, name)
                .map_or(Source::Missing("no id field in the JSON value"), |id| {
                    Source::Id(id.into_bytes().into_boxed_slice())
                }),
        },
    }
}

/// The text of top-level field `name` of a JSON object (strings as is, numbers as written).
pub(crate) fn id_field(value: &[u8], name: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(value).ok()?;
    match value.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The read_committed view of one partition of an input or through topic.
#[derive(Debug, Default)]
pub(crate) struct PartitionView {
    /// Offsets of the records, ascending.
    pub(crate) offsets: Vec<i64>,
    /// Through topics only: each record's own source, parallel to `offsets`.
    pub(crate) sources: Vec<Source>,
}

impl PartitionView {
    pub(crate) fn position(&self, offset: i64) -> Option<usize> {
        self.offsets.binary_search(&offset).ok()
    }
}

/// A topic as the verifier read it: read_committed partitions, and (once a lookup missed)
/// the coordinates and ids seen read_uncommitted.
#[derive(Debug, Default)]
pub(crate) struct TopicView {
    pub(crate) partitions: HashMap<i32, PartitionView>,
    /// Input topics under key or field identity: id -> position.
    pub(crate) ids: HashMap<Box<[u8]>, Coord>,
    pub(crate) uncommitted: Option<Uncommitted>,
}

/// What a read_uncommitted read of a topic saw.
#[derive(Debug, Default)]
pub(crate) struct Uncommitted {
    pub(crate) coords: HashSet<(i32, i64)>,
    pub(crate) ids: HashSet<Box<[u8]>>,
}

/// Where an output record leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// An input record, and the through partition it went via (the first, if several).
    Input { at: Coord, via: Option<Tp> },
    /// A record of an aborted or open upstream transaction (its coordinates, or none for ids).
    Aborted(Option<Coord>),
    /// The source is in no view of the topic it names (a description).
    Unknown(String),
    /// Not decidable until `topic`'s read_uncommitted view is loaded.
    NeedsUncommitted(u16),
}

/// Resolves sources against the views of the input and through topics.
pub(crate) struct Resolver<'a> {
    pub(crate) topics: &'a Topics,
    pub(crate) views: &'a HashMap<u16, TopicView>,
    pub(crate) inputs: &'a HashSet<u16>,
    pub(crate) identity: &'a Identity,
}

impl Resolver<'_> {
    pub(crate) fn resolve(&self, source: &Source) -> Resolved {
        self.resolve_depth(source, None, 0)
    }

    fn resolve_depth(&self, source: &Source, via: Option<Tp>, depth: usize) -> Resolved {
        if depth > self.views.len() {
            return Resolved::Unknown("provenance loops through the through topics".into());
        }
        match source {
            Source::Missing(why) => Resolved::Unknown((*why).to_string()),
            Source::Id(id) => self.resolve_id(id),
            Source::At(at) => {
                let Some(view) = self.views.get(&at.tp.topic) else {
                    return Resolved::Unknown(format!(
                        "{} names topic {}, neither an input nor a through topic",
                        self.topics.show(*at),
                        self.topics.name(at.tp.topic)
                    ));
                };
                let found = view
                    .partitions
                    .get(&at.tp.partition)
                    .and_then(|p| p.position(at.offset).map(|i| (p, i)));
                match found {
                    Some(_) if self.inputs.contains(&at.tp.topic) => {
                        Resolved::Input { at: *at, via }
                    }
                    Some((partition, i)) => match partition.sources.get(i) {
                        Some(next) => self.resolve_depth(next, via.or(Some(at.tp)), depth + 1),
                        None => {
                            Resolved::Unknown(format!("{} has no source", self.topics.show(*at)))
                        }
                    },
                    None => match &view.uncommitted {
                        None => Resolved::NeedsUncommitted(at.tp.topic),
                        Some(u) if u.coords.contains(&(at.tp.partition, at.offset)) => {
                            Resolved::Aborted(Some(*at))
                        }
                        Some(_) => Resolved::Unknown(format!(
                            "{} is not in the topic",
                            self.topics.show(*at)
                        )),
                    },
                }
            }
        }
    }

    fn resolve_id(&self, id: &[u8]) -> Resolved {
        if let Identity::Provenance = self.identity {
            return Resolved::Unknown("an id where provenance was expected".into());
        }
        for &topic in self.inputs {
            let Some(view) = self.views.get(&topic) else {
                continue;
            };
            if let Some(at) = view.ids.get(id) {
                return Resolved::Input { at: *at, via: None };
            }
        }
        for &topic in self.inputs {
            match self.views.get(&topic).map(|v| &v.uncommitted) {
                Some(None) => return Resolved::NeedsUncommitted(topic),
                Some(Some(u)) if u.ids.contains(id) => return Resolved::Aborted(None),
                _ => {}
            }
        }
        Resolved::Unknown(format!(
            "id {:?} is not in the input",
            String::from_utf8_lossy(id)
        ))
    }
}
