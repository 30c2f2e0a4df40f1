//! Codecs: record bytes <-> the serde types of a typed topology.
//!
//! A stage chooses a [`Format`] per topic, separately for keys and values (`[formats]` in the
//! config, `--format TOPIC=KEY:VALUE`); topics without an entry use `default_format`:
//!
//! | format   | bytes on the wire                                   | serde type               |
//! |----------|-----------------------------------------------------|--------------------------|
//! | `bytes`  | as they are                                         | `serde_bytes::ByteBuf`   |
//! | `string` | UTF-8 text                                          | `String`, or any type that deserializes from a string |
//! | `json`   | JSON text                                           | any serde type           |
//! | `avro`   | Confluent wire format: 0, 4-byte schema id, Avro    | any serde type with `AvroSchema` |
//!
//! `string` and `bytes` encode without an intermediate tree ([`text`]): text as its UTF-8, numbers
//! and bools as serde_json writes them, a `Vec<u8>` or a byte string as its bytes.
//!
//! Avro decoding resolves the writer schema by the id in the record (cached) and then resolves the
//! value into the reader type's schema, so schema evolution works both ways (a field the writer
//! added is dropped; a field the reader added takes its default). Avro encoding registers (or looks
//! up) the output schema under the configured subject name strategy and prefixes the record with
//! its id.
//!
//! Errors are either the record's fault ([`CodecError::Poison`]: malformed bytes, an unknown
//! schema id, a body that does not match its schema) or nobody's ([`CodecError::Unavailable`]:
//! the registry does not answer). Registry calls are retried with backoff up to
//! `schema_registry.unavailable_timeout`; only then is `Unavailable` returned, and the engine
//! stops rather than dead-letter good data.

mod avro;
mod registry;
mod text;

use std::collections::BTreeMap;
use std::fmt;

use apache_avro::AvroSchema;
use serde::de::value::{BytesDeserializer, StrDeserializer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use registry::{RegistryConfig, SubjectNameStrategy};

/// How a key or a value is laid out in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Raw bytes.
    Bytes,
    /// UTF-8 text.
    String,
    /// JSON text.
    Json,
    /// Avro in the Confluent wire format, with a schema registry.
    Avro,
}

impl Format {
    /// The format as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::String => "string",
            Self::Json => "json",
            Self::Avro => "avro",
        }
    }

    /// Parses `bytes`, `string`, `json` or `avro`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "bytes" => Ok(Self::Bytes),
            "string" => Ok(Self::String),
            "json" => Ok(Self::Json),
            "avro" => Ok(Self::Avro),
            other => Err(format!(
                "{other:?} is not a format; one of: bytes, string, json, avro"
            )),
        }
    }
}

/// The key and value formats of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicFormat {
    /// The key's format.
    pub key: Format,
    /// The value's format.
    pub value: Format,
    /// For an Avro output value: a `.avsc` file whose schema is registered instead of the one
    /// derived from the Rust type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_schema: Option<std::path::PathBuf>,
}

impl Default for TopicFormat {
    /// `string` keys and `json` values: what most topics carry when no registry is involved.
    fn default() -> Self {
        Self {
            key: Format::String,
            value: Format::Json,
            value_schema: None,
        }
    }
}

/// Which half of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The key.
    Key,
    /// The value.
    Value,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Value => "value",
        }
    }
}

/// Why bytes could not become a value, or a value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The record is at fault: the poison policy decides.
    Poison(String),
    /// The schema registry did not answer within `unavailable_timeout`: not the record's fault.
    Unavailable(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Poison(message) | Self::Unavailable(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CodecError {}

/// The codecs of one stage: formats per topic and, if any topic uses Avro, the registry client.
pub struct Codecs {
    default: TopicFormat,
    topics: BTreeMap<String, TopicFormat>,
    avro: Option<avro::AvroCodec>,
}

impl fmt::Debug for Codecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codecs")
            .field("default", &self.default)
            .field("topics", &self.topics)
            .field("avro", &self.avro.is_some())
            .finish()
    }
}

impl Codecs {
    /// Builds the codecs. A registry is required when any format is `avro`.
    pub fn new(
        default: TopicFormat,
        topics: BTreeMap<String, TopicFormat>,
        registry: Option<&RegistryConfig>,
    ) -> Result<Self, String> {
        let uses_avro = std::iter::once(&default)
            .chain(topics.values())
            .any(|f| f.key == Format::Avro || f.value == Format::Avro);
        let avro = match (uses_avro, registry) {
            (false, _) => None,
            (true, Some(config)) => Some(avro::AvroCodec::new(config)?),
            (true, None) => {
                return Err("schema_registry: an avro format needs a schema registry url".into())
            }
        };
        Ok(Self {
            default,
            topics,
            avro,
        })
    }

    /// Codecs with `string` keys and `json` values everywhere, and no registry.
    pub fn plain() -> Self {
        Self {
            default: TopicFormat::default(),
            topics: BTreeMap::new(),
            avro: None,
        }
    }

    /// The formats of a topic.
    pub fn format_of(&self, topic: &str) -> &TopicFormat {
        self.topics.get(topic).unwrap_or(&self.default)
    }

    /// Checks the registry answers (when one is used), retrying up to its unavailable timeout.
    pub fn check_registry(&self) -> Result<(), CodecError> {
        match &self.avro {
            Some(avro) => avro.check_reachable(),
            None => Ok(()),
        }
    }

    /// Decodes one half of a record of `topic`. `None` bytes (a tombstone, a missing key) decode
    /// to what `T` makes of null: `None` for an `Option`, an error for anything else.
    pub fn decode<T>(&self, topic: &str, part: Part, bytes: Option<&[u8]>) -> Result<T, CodecError>
    where
        T: DeserializeOwned + AvroSchema,
    {
        let poison = |e: &dyn fmt::Display| CodecError::Poison(format!("{}: {e}", part.as_str()));
        let Some(bytes) = bytes else {
            return T::deserialize(serde_json::Value::Null).map_err(|_| {
                CodecError::Poison(format!(
                    "the record has no {}, which the topology requires",
                    part.as_str()
                ))
            });
        };
        let format = self.format_of(topic);
        match if part == Part::Key {
            format.key
        } else {
            format.value
        } {
            Format::Bytes => {
                T::deserialize(Present(BytesDeserializer::<serde_json::Error>::new(bytes)))
                    .map_err(|e| poison(&e))
            }
            Format::String => {
                let text = std::str::from_utf8(bytes).map_err(|e| poison(&e))?;
                T::deserialize(Present(StrDeserializer::<serde_json::Error>::new(text)))
                    .map_err(|e| poison(&e))
            }
            Format::Json => serde_json::from_slice(bytes).map_err(|e| poison(&e)),
            Format::Avro => self.avro()?.decode::<T>(bytes).map_err(|e| match e {
                CodecError::Poison(m) => CodecError::Poison(format!("{}: {m}", part.as_str())),
                other => other,
            }),
        }
    }

    /// Decodes one half of a record of `topic` into JSON, whatever its type (the sink's
    /// config-only mapping reads fields by path): `json` parsed, `avro` decoded with its writer
    /// schema (see `AvroCodec::decode_json`), `string` as a JSON string. `bytes` has no fields and
    /// is refused. `None` bytes are `null`.
    pub fn decode_json(
        &self,
        topic: &str,
        part: Part,
        bytes: Option<&[u8]>,
    ) -> Result<serde_json::Value, CodecError> {
        let Some(bytes) = bytes else {
            return Ok(serde_json::Value::Null);
        };
        let poison = |e: &dyn fmt::Display| CodecError::Poison(format!("{}: {e}", part.as_str()));
        let format = self.format_of(topic);
        match if part == Part::Key {
            format.key
        } else {
            format.value
        } {
            Format::Json => serde_json::from_slice(bytes)
                .map_err(|e| poison(&format!("the value is not JSON: {e}"))),
            Format::String => std::str::from_utf8(bytes)
                .map(|text| serde_json::Value::String(text.to_string()))
                .map_err(|e| poison(&e)),
            Format::Bytes => Err(poison(&"format bytes has no fields to map")),
            Format::Avro => self.avro()?.decode_json(bytes).map_err(|e| match e {
                CodecError::Poison(m) => CodecError::Poison(format!("{}: {m}", part.as_str())),
                other => other,
            }),
        }
    }

    /// Encodes one half of a record for output `topic`.
    pub fn encode<T>(&self, topic: &str, part: Part, value: &T) -> Result<Vec<u8>, CodecError>
    where
        T: Serialize + AvroSchema,
    {
        let format = self.format_of(topic);
        let poison = |e: &dyn fmt::Display| {
            CodecError::Poison(format!(
                "cannot encode the {} for {topic}: {e}",
                part.as_str()
            ))
        };
        match if part == Part::Key {
            format.key
        } else {
            format.value
        } {
            Format::Json => serde_json::to_vec(value).map_err(|e| poison(&e)),
            text_format @ (Format::String | Format::Bytes) => {
                text::encode(value, text_format == Format::Bytes).map_err(|e| poison(&e))
            }
            Format::Avro => {
                let schema_file = if part == Part::Value {
                    format.value_schema.as_deref()
                } else {
                    None
                };
                self.avro()?
                    .encode(topic, part == Part::Key, value, schema_file)
            }
        }
    }

    fn avro(&self) -> Result<&avro::AvroCodec, CodecError> {
        self.avro
            .as_ref()
            .ok_or_else(|| CodecError::Poison("avro format without a schema registry".into()))
    }
}

/// A value that is there: `Option<T>` deserializes it as `Some`, everything else as the inner
/// deserializer would.
struct Present<D>(D);

impl<'de, D: serde::Deserializer<'de>> serde::Deserializer<'de> for Present<D> {
    type Error = D::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_some(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests;
