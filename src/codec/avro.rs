//! Avro in the Confluent wire format through `schema_registry_converter` (blocking client).
//!
//! Decode: the writer schema is fetched by the id in the record (cached by the converter), the
//! value is decoded with it, then resolved into the reader type's schema (cached per type), and
//! deserialized. Encode: the schema (derived from the type, or read from a `.avsc` file) is
//! registered or looked up under the subject of the configured strategy (cached per subject),
//! and the value is written with its id.
//!
//! Retries: a registry that does not answer (connection refused, timeout, HTTP 5xx) is retried
//! with backoff up to `unavailable_timeout`, then reported as [`CodecError::Unavailable`]. Any
//! other failure is the record's fault ([`CodecError::Poison`]): a truncated prefix, a wrong magic
//! byte, an id the registry does not know, a body that does not match its schema.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use apache_avro::{AvroSchema, Schema};
use schema_registry_converter::blocking::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::blocking::schema_registry::{get_all_subjects, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy as Strategy, SuppliedSchema,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::registry::{RegistryConfig, SubjectNameStrategy};
use super::CodecError;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// (output topic, is key, schema source) -> the strategy carrying the supplied schema, and an
/// encoder of its own: the converter caches one schema per subject per encoder, so two types
/// written to one subject (a new schema version) need two encoders.
type StrategyCache = HashMap<(String, bool, String), Arc<(Strategy, AvroEncoder)>>;

pub(super) struct AvroCodec {
    settings: SrSettings,
    decoder: AvroDecoder,
    strategy: SubjectNameStrategy,
    unavailable_timeout: Duration,
    /// Reader schemas by Rust type name.
    reader_schemas: Mutex<HashMap<&'static str, Arc<Schema>>>,
    /// Subject strategies (with their supplied schema) by output.
    strategies: Mutex<StrategyCache>,
}

impl AvroCodec {
    pub(super) fn new(config: &RegistryConfig) -> Result<Self, String> {
        Ok(Self {
            settings: config.client()?,
            decoder: AvroDecoder::new(config.client()?),
            strategy: config.subject_name_strategy,
            unavailable_timeout: config.unavailable_timeout,
            reader_schemas: Mutex::new(HashMap::new()),
            strategies: Mutex::new(HashMap::new()),
        })
    }

    /// Lists the subjects, retrying an unreachable registry up to the unavailable timeout.
    pub(super) fn check_reachable(&self) -> Result<(), CodecError> {
        self.retrying("listing subjects", || get_all_subjects(&self.settings))
            .map(|_| ())
    }

    pub(super) fn decode<T: DeserializeOwned + AvroSchema>(
        &self,
        bytes: &[u8],
    ) -> Result<T, CodecError> {
        let decoded = self
            .retrying("decoding", || self.decoder.decode_with_schema(Some(bytes)))?
            .ok_or_else(|| CodecError::Poison("empty Avro payload".into()))?;
        let reader = self.reader_schema::<T>();
        let resolved = decoded.value.resolve(&reader).map_err(|e| {
            CodecError::Poison(format!(
                "the writer schema (id {}) does not resolve into {}: {e}",
                decoded.schema.id,
                std::any::type_name::<T>()
            ))
        })?;
        apache_avro::from_value::<T>(&resolved).map_err(|e| CodecError::Poison(e.to_string()))
    }

    /// Decodes with the writer schema alone (no reader type) into JSON: records and maps become
    /// objects, unions their branch, enums their symbol, logical dates and times their number,
    /// bytes, fixed and decimals arrays of bytes.
    pub(super) fn decode_json(&self, bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
        let decoded = self
            .retrying("decoding", || self.decoder.decode_with_schema(Some(bytes)))?
            .ok_or_else(|| CodecError::Poison("empty Avro payload".into()))?;
        serde_json::Value::try_from(decoded.value).map_err(|e| {
            CodecError::Poison(format!(
                "the Avro value (schema id {}) has no JSON form: {e}",
                decoded.schema.id
            ))
        })
    }

    pub(super) fn encode<T: Serialize + AvroSchema>(
        &self,
        topic: &str,
        is_key: bool,
        value: &T,
        schema_file: Option<&Path>,
    ) -> Result<Vec<u8>, CodecError> {
        let output = self.strategy_for::<T>(topic, is_key, schema_file)?;
        let (strategy, encoder) = &*output;
        self.retrying("encoding", || encoder.encode_struct(value, strategy))
    }

    fn reader_schema<T: AvroSchema>(&self) -> Arc<Schema> {
        let mut cache = self
            .reader_schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            cache
                .entry(std::any::type_name::<T>())
                .or_insert_with(|| Arc::new(T::get_schema())),
        )
    }

    fn strategy_for<T: AvroSchema>(
        &self,
        topic: &str,
        is_key: bool,
        schema_file: Option<&Path>,
    ) -> Result<Arc<(Strategy, AvroEncoder)>, CodecError> {
        let source = match schema_file {
            Some(path) => path.display().to_string(),
            None => std::any::type_name::<T>().to_string(),
        };
        let key = (topic.to_string(), is_key, source);
        let mut cache = self
            .strategies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(strategy) = cache.get(&key) {
            return Ok(Arc::clone(strategy));
        }
        let schema = match schema_file {
            Some(path) => read_schema_file(path)?,
            None => T::get_schema(),
        };
        let name = match &schema {
            Schema::Record(record) => Some(record.name.fullname(None)),
            _ => None,
        };
        let supplied = SuppliedSchema::new(name.clone(), SchemaType::Avro, schema.canonical_form());
        let strategy = match (self.strategy, name) {
            (SubjectNameStrategy::TopicName, _) => {
                Strategy::TopicNameStrategyWithSchema(topic.to_string(), is_key, supplied)
            }
            (SubjectNameStrategy::RecordName, Some(_)) => {
                Strategy::RecordNameStrategyWithSchema(supplied)
            }
            (SubjectNameStrategy::TopicRecordName, Some(_)) => {
                Strategy::TopicRecordNameStrategyWithSchema(topic.to_string(), supplied)
            }
            (_, None) => {
                return Err(CodecError::Poison(format!(
                    "the record name strategies need a record schema, and {} is not one",
                    key.2
                )))
            }
        };
        let output = Arc::new((strategy, AvroEncoder::new(self.settings.clone())));
        cache.insert(key, Arc::clone(&output));
        Ok(output)
    }

    /// Calls the registry, retrying while it is unreachable, up to the unavailable timeout.
    fn retrying<T>(
        &self,
        what: &str,
        mut call: impl FnMut() -> Result<T, SRCError>,
    ) -> Result<T, CodecError> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            match call() {
                Ok(value) => return Ok(value),
                Err(error) if is_unavailable(&error) => {
                    if started.elapsed() + backoff > self.unavailable_timeout {
                        return Err(CodecError::Unavailable(format!(
                            "the schema registry did not answer for {} s while {what}: {}",
                            started.elapsed().as_secs(),
                            describe(&error)
                        )));
                    }
                    tracing::warn!(error = %describe(&error), what,
                        "The schema registry does not answer; retrying.");
                    // A 5xx answer is cached as final by the converter; it is not.
                    self.decoder.remove_errors_from_cache();
                    self.forget_encoder_errors();
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => return Err(CodecError::Poison(describe(&error))),
            }
        }
    }
}

impl AvroCodec {
    fn forget_encoder_errors(&self) {
        let cache = self
            .strategies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for output in cache.values() {
            output.1.remove_errors_from_cache();
        }
    }
}

/// Network failures, timeouts and 5xx answers: the registry's trouble, not the record's.
fn is_unavailable(error: &SRCError) -> bool {
    error.retriable || error.error.contains("status 5")
}

fn describe(error: &SRCError) -> String {
    match &error.cause {
        Some(cause) => format!("{} ({cause})", error.error),
        None => error.error.clone(),
    }
}

fn read_schema_file(path: &Path) -> Result<Schema, CodecError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CodecError::Poison(format!(
            "cannot read schema file {}: {e}",
            PathBuf::from(path).display()
        ))
    })?;
    Schema::parse_str(&text).map_err(|e| {
        CodecError::Poison(format!(
            "schema file {} is not valid Avro: {e}",
            path.display()
        ))
    })
}
