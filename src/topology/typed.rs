//! Typed topologies: the engine decodes keys and values into serde types and encodes what the
//! topology emits, in the formats the stage configures per topic (see [`crate::codec`]).
//!
//! ```
//! use apache_avro::AvroSchema;
//! use kstage::topology::{typed, Topology, TopologyError, TypedEmitter, TypedRecord, TypedTopology};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, Serialize, AvroSchema)]
//! struct Reading { sensor: String, celsius: f64 }
//!
//! #[derive(Serialize, AvroSchema)]
//! struct Fahrenheit { sensor: String, fahrenheit: f64 }
//!
//! struct ToFahrenheit;
//!
//! impl TypedTopology for ToFahrenheit {
//!     type Key = Option<String>;
//!     type Value = Reading;
//!
//!     fn process(&mut self, record: TypedRecord<'_, Option<String>, Reading>, out: &mut TypedEmitter<'_>)
//!         -> Result<(), TopologyError> {
//!         let Some(reading) = record.value else {
//!             // A tombstone: forward it as one.
//!             return out.emit_tombstone(kstage::topology::DEFAULT_OUTPUT, record.key.as_ref());
//!         };
//!         let converted = Fahrenheit { fahrenheit: reading.celsius * 9.0 / 5.0 + 32.0, sensor: reading.sensor };
//!         out.emit(kstage::topology::DEFAULT_OUTPUT, record.key.as_ref(), &converted)
//!     }
//! }
//!
//! let topology: Box<dyn Topology> = typed(ToFahrenheit);
//! ```
//!
//! Decode failures (malformed bytes, a missing required key, a value of the wrong shape) are
//! [`TopologyErrorKind::Decode`] errors and follow the poison policy; an unreachable schema
//! registry is [`TopologyErrorKind::Unavailable`], which stops the stage instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::AvroSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    Context, Emitter, Headers, OutputRecord, Record, StageInfo, Topology, TopologyError,
    TopologyErrorKind,
};
use crate::codec::{CodecError, Codecs, Part};

/// A transform over decoded keys and values. Wrap it with [`typed`] to register it.
pub trait TypedTopology: Send + 'static {
    /// The input key type. Use `Option<_>` to accept records without a key; with a plain type a
    /// record without a key is a decode error.
    type Key: DeserializeOwned + AvroSchema;
    /// The input value type. Tombstones arrive as `value: None`.
    type Value: DeserializeOwned + AvroSchema;

    /// Transforms one decoded record.
    fn process(
        &mut self,
        record: TypedRecord<'_, Self::Key, Self::Value>,
        out: &mut TypedEmitter<'_>,
    ) -> Result<(), TopologyError>;

    /// Named outputs besides the default one (see [`Topology::outputs`]).
    fn outputs(&self) -> &[&'static str] {
        &[]
    }
}

/// A decoded input record.
#[derive(Debug)]
pub struct TypedRecord<'a, K, V> {
    /// The decoded key.
    pub key: K,
    /// The decoded value; `None` for a tombstone.
    pub value: Option<V>,
    /// The input headers.
    pub headers: Headers<'a>,
    /// Where the record came from.
    pub context: Context<'a>,
}

/// Encodes what a typed topology emits, in the format of each output's topic.
pub struct TypedEmitter<'c> {
    codecs: &'c Codecs,
    routes: &'c BTreeMap<String, String>,
    records: Vec<OutputRecord<'static>>,
}

impl std::fmt::Debug for TypedEmitter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedEmitter")
            .field("routes", self.routes)
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl TypedEmitter<'_> {
    /// Encodes and emits a record to `output`.
    pub fn emit<K, V>(
        &mut self,
        output: &'static str,
        key: Option<&K>,
        value: &V,
    ) -> Result<(), TopologyError>
    where
        K: Serialize + AvroSchema,
        V: Serialize + AvroSchema,
    {
        self.emit_with_headers(output, key, Some(value), Vec::new())
    }

    /// Emits a tombstone (no value) for `key` to `output`.
    pub fn emit_tombstone<K>(
        &mut self,
        output: &'static str,
        key: Option<&K>,
    ) -> Result<(), TopologyError>
    where
        K: Serialize + AvroSchema,
    {
        self.emit_with_headers::<K, K>(output, key, None, Vec::new())
    }

    /// Encodes and emits a record with headers (name, value) to `output`.
    pub fn emit_with_headers<K, V>(
        &mut self,
        output: &'static str,
        key: Option<&K>,
        value: Option<&V>,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<(), TopologyError>
    where
        K: Serialize + AvroSchema,
        V: Serialize + AvroSchema,
    {
        let topic = self.routes.get(output).ok_or_else(|| {
            TopologyError::transform(format!("output {output:?} is not routed to a topic"))
        })?;
        let encode_error = |error: CodecError| match error {
            CodecError::Unavailable(message) => TopologyError::unavailable(message),
            CodecError::Poison(message) => TopologyError::transform(message),
        };
        let key = key
            .map(|k| self.codecs.encode(topic, Part::Key, k))
            .transpose()
            .map_err(encode_error)?;
        let value = value
            .map(|v| self.codecs.encode(topic, Part::Value, v))
            .transpose()
            .map_err(encode_error)?;
        let mut record = OutputRecord::new().to(output);
        record.key = key.map(Into::into);
        record.value = value.map(Into::into);
        record.headers = headers
            .into_iter()
            .map(|(n, v)| (n.into(), Some(v.into())))
            .collect();
        self.records.push(record);
        Ok(())
    }
}

/// Adapts a [`TypedTopology`] into a [`Topology`] the engine runs.
pub fn typed<T: TypedTopology>(inner: T) -> Box<dyn Topology> {
    Box::new(Typed {
        inner,
        codecs: Arc::new(Codecs::plain()),
        routes: Arc::new(BTreeMap::new()),
    })
}

struct Typed<T> {
    inner: T,
    codecs: Arc<Codecs>,
    routes: Arc<BTreeMap<String, String>>,
}

fn decode_error(error: CodecError) -> TopologyError {
    match error {
        CodecError::Unavailable(message) => TopologyError::unavailable(message),
        CodecError::Poison(message) => TopologyError::decode(message),
    }
}

impl<T: TypedTopology> Topology for Typed<T> {
    fn on_start(&mut self, stage: &StageInfo) -> Result<(), String> {
        self.codecs = Arc::clone(&stage.codecs);
        self.routes = Arc::clone(&stage.outputs);
        Ok(())
    }

    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let topic = record.context.topic;
        let key = self
            .codecs
            .decode::<T::Key>(topic, Part::Key, record.key)
            .map_err(decode_error)?;
        let value = match record.value {
            None => None,
            Some(bytes) => Some(
                self.codecs
                    .decode::<T::Value>(topic, Part::Value, Some(bytes))
                    .map_err(decode_error)?,
            ),
        };
        let mut emitter = TypedEmitter {
            codecs: &self.codecs,
            routes: &self.routes,
            records: Vec::new(),
        };
        let typed_record = TypedRecord {
            key,
            value,
            headers: record.headers,
            context: record.context,
        };
        self.inner.process(typed_record, &mut emitter)?;
        for output in emitter.records {
            out.emit(output);
        }
        Ok(())
    }

    fn outputs(&self) -> &[&'static str] {
        self.inner.outputs()
    }
}

impl TopologyErrorKind {
    /// Whether the record is at fault (the poison policy applies) rather than the environment.
    pub fn is_poison(self) -> bool {
        self != Self::Unavailable
    }
}
