//! The names of the headers kstage writes on output and dead-letter records.
//!
//! One place for them: the engine writes them, the verifier reads them, and tests and downstream
//! tools can import them instead of spelling the strings again.

/// The input topic a record came from (provenance, on every output unless
/// `provenance_headers = false`, and on dead-letter records).
pub const SOURCE_TOPIC: &str = "kstage.source.topic";
/// The input partition, decimal text.
pub const SOURCE_PARTITION: &str = "kstage.source.partition";
/// The input offset, decimal text.
pub const SOURCE_OFFSET: &str = "kstage.source.offset";
/// The input timestamp (ms since the epoch, decimal text), on dead-letter records.
pub const SOURCE_TIMESTAMP: &str = "kstage.source.timestamp";
/// The error class (`decode`, `invalid`, `transform`, `panic`, `output_rejected`), on
/// dead-letter records.
pub const ERROR_CLASS: &str = "kstage.error.class";
/// The error message, on dead-letter records.
pub const ERROR_MESSAGE: &str = "kstage.error.message";
/// On a dead letter whose value was cut so that it fits `message.max.bytes`: the original
/// value's size in bytes, decimal text.
pub const ERROR_TRUNCATED: &str = "kstage.error.truncated";
