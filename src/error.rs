//! Engine errors and the one rule that decides what the engine does with a Kafka error.
//!
//! librdkafka sorts transactional errors into three classes, and the engine is designed around
//! them (the rule is stated once, here):
//!
//! * **retriable**: the call may succeed if made again (a coordinator moved, a request timed
//!   out). The engine repeats the *same* call with backoff, up to a deadline. A commit whose
//!   outcome is unknown is always resumed this way, never followed by an abort: librdkafka does
//!   not speak the KIP-890 transaction protocol, so an abort sent after a commit that did land
//!   could end a later transaction instead.
//! * **abortable** (`txn_requires_abort`): the transaction cannot commit, but the producer is
//!   fine. The engine aborts, rewinds the consumer to the committed offsets and goes on.
//! * **fatal** (`is_fatal`, e.g. fenced by a newer instance with the same transactional id): the
//!   producer is unusable. The worker stops and the process exits non-zero.
//!
//! Anything in none of these classes is fatal: guessing "retry" on an unknown error is how
//! exactly-once pipelines lose or duplicate data.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::ConfigErrors;
use crate::topology::TopologyError;

/// What the engine does next about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Make the same call again after a backoff.
    Retriable,
    /// Abort the transaction, rewind to the committed offsets, go on.
    Abortable,
    /// Stop the worker.
    Fatal,
}

/// Errors no retry or abort can fix: the principal lacks an ACL, or cannot log in. librdkafka
/// marks some of them abortable (a produce to a topic we may not write fails the transaction),
/// which would otherwise loop abort → rewind → retry forever.
pub fn is_authorization(error: &KafkaError) -> bool {
    matches!(
        code_of(error),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::DelegationTokenAuthorizationFailed
        )
    )
}

fn code_of(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    match error {
        KafkaError::Transaction(e) => Some(e.code()),
        other => other.rdkafka_error_code(),
    }
}

/// What the operator should do about an authorization or authentication error.
pub fn authorization_hint(error: &KafkaError, transactional_id: &str) -> String {
    match code_of(error) {
        Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed) => format!(
            "the principal needs Write and Describe on TransactionalId {transactional_id:?}"
        ),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => "the principal needs Read (and \
            Describe) on every input topic and Write (and Describe) on every output and \
            dead-letter topic"
            .to_string(),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
            "the principal needs Read on the consumer group (the app_id)".to_string()
        }
        Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => {
            "the principal lacks a cluster-level permission (IdempotentWrite on older brokers)"
                .to_string()
        }
        _ => "authentication failed: check security.protocol, sasl_mechanism, username and \
              password"
            .to_string(),
    }
}

/// Classifies an error returned by a producer or transaction call.
pub fn classify(error: &KafkaError) -> ErrorClass {
    if is_authorization(error) {
        return ErrorClass::Fatal;
    }
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => ErrorClass::Fatal,
        KafkaError::Transaction(e) if e.txn_requires_abort() => ErrorClass::Abortable,
        KafkaError::Transaction(e) if e.is_retriable() => ErrorClass::Retriable,
        // The local queue is full: serve delivery reports, then send again.
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => ErrorClass::Retriable,
        // A flush that timed out can be made again; its messages are still queued.
        KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => ErrorClass::Retriable,
        _ => ErrorClass::Fatal,
    }
}

/// Classifies an error the consumer reports from `poll`. librdkafka retries broker and network
/// trouble internally and reports it only for information, so most of these are transient; the
/// ones listed as fatal will not heal by waiting.
pub fn classify_consumer(error: &KafkaError) -> ErrorClass {
    let code = match error {
        KafkaError::MessageConsumption(code) | KafkaError::MessageConsumptionFatal(code) => *code,
        KafkaError::PartitionEOF(_) => return ErrorClass::Retriable,
        _ => return ErrorClass::Fatal,
    };
    if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
        return ErrorClass::Fatal;
    }
    if is_authorization(error) {
        return ErrorClass::Fatal;
    }
    // Only what librdkafka retries by itself, or what heals when the cluster does; anything
    // else (fenced instance id, unsupported version, a bad config, ...) is fatal.
    match code {
        RDKafkaErrorCode::BrokerTransportFailure
        | RDKafkaErrorCode::AllBrokersDown
        | RDKafkaErrorCode::Resolve
        | RDKafkaErrorCode::OperationTimedOut
        | RDKafkaErrorCode::TimedOutQueue
        | RDKafkaErrorCode::PollExceeded
        | RDKafkaErrorCode::PartitionEOF
        | RDKafkaErrorCode::UnknownTopicOrPartition
        | RDKafkaErrorCode::UnknownPartition
        | RDKafkaErrorCode::LeaderNotAvailable
        | RDKafkaErrorCode::NotLeaderForPartition
        | RDKafkaErrorCode::RequestTimedOut
        | RDKafkaErrorCode::BrokerNotAvailable
        | RDKafkaErrorCode::ReplicaNotAvailable
        | RDKafkaErrorCode::NetworkException
        | RDKafkaErrorCode::CoordinatorLoadInProgress
        | RDKafkaErrorCode::CoordinatorNotAvailable
        | RDKafkaErrorCode::NotCoordinator
        | RDKafkaErrorCode::NotEnoughReplicas
        | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
        | RDKafkaErrorCode::KafkaStorageError
        | RDKafkaErrorCode::FencedLeaderEpoch
        | RDKafkaErrorCode::UnknownLeaderEpoch
        | RDKafkaErrorCode::OffsetNotAvailable
        | RDKafkaErrorCode::PreferredLeaderNotAvailable
        | RDKafkaErrorCode::RebalanceInProgress
        | RDKafkaErrorCode::IllegalGeneration
        | RDKafkaErrorCode::UnknownMemberId => ErrorClass::Retriable,
        _ => ErrorClass::Fatal,
    }
}

/// Whether an error means another producer with our transactional id took over.
pub fn is_fenced(error: &KafkaError) -> bool {
    matches!(
        code_of(error),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fenced
        )
    )
}

/// Why a stage stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is invalid (exit code 2).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The stage could not start: a broker unreachable, a topic missing.
    #[error("cannot start the stage: {0}")]
    Startup(String),
    /// A commit did not end in time: librdkafka can block a transactional call past every
    /// timeout (librdkafka#5456, a coordinator that went away). Its outcome is unknown.
    #[error(
        "the commit of transactional id {transactional_id:?} did not end within {waited_secs} s \
         (twice transaction_timeout); its outcome is unknown, so the stage stops without \
         aborting it; a restart with the same instance_id settles it"
    )]
    CommitHung {
        /// Our transactional id.
        transactional_id: String,
        /// How long the engine waited.
        waited_secs: u64,
    },
    /// An abort did not end in time (the same librdkafka hang as [`Self::CommitHung`]).
    #[error(
        "aborting the transaction of transactional id {transactional_id:?} did not end within \
         {waited_secs} s (twice transaction_timeout); the stage stops, and a restart with the \
         same instance_id fences it and aborts it"
    )]
    AbortHung {
        /// Our transactional id.
        transactional_id: String,
        /// How long the engine waited.
        waited_secs: u64,
    },
    /// `init_transactions` of a new producer did not end in time (the same librdkafka hang as
    /// [`Self::CommitHung`]).
    #[error(
        "init_transactions of transactional id {transactional_id:?} did not end within \
         {waited_secs} s (twice transaction_timeout); the stage stops, and a restart with the \
         same instance_id settles the transaction it left open"
    )]
    InitHung {
        /// Our transactional id.
        transactional_id: String,
        /// How long the engine waited.
        waited_secs: u64,
    },
    /// exactly_once: a send was refused because the open transaction had already failed in the
    /// background (a delivery failure, an epoch bump for UNKNOWN_PRODUCER_ID or
    /// OUT_OF_ORDER_SEQUENCE). The worker aborts the transaction and rewinds; it stops only if
    /// the abort fails too.
    #[error("a send was refused because the transaction had failed ({reason}); aborting it")]
    SendRefused {
        /// librdkafka's reason (its last transaction error line), if it gave one.
        reason: String,
    },
    /// A stateful topology's local store failed (disk full, permissions, a corrupt file); the
    /// next start restores it from the changelog.
    #[error("{0}; the next start restores the state from its changelog")]
    State(#[from] crate::state::StateError),
    /// The engine itself failed: a thread could not start or ended abnormally.
    #[error("internal error: {0}")]
    Internal(String),
    /// Another instance with the same transactional id took over: this one is a zombie and
    /// must write nothing more.
    #[error(
        "fenced: transactional id {transactional_id:?} has a newer epoch ({source}): either \
         another producer with this id took over (a restart of this instance, or two instances \
         sharing an instance_id: give each a distinct one), or the transaction coordinator \
         aborted this instance's transaction after transaction_timeout (it was paused or cut off \
         for that long). This instance stops; a restart resumes from the committed offsets"
    )]
    Fenced {
        /// Our transactional id.
        transactional_id: String,
        /// The error that told us.
        source: KafkaError,
    },
    /// The group refused this consumer's `group.instance.id` (static membership): another live
    /// instance joined with the same one, or (seen once in a 3-broker test that killed the
    /// coordinator during a restore) the group coordinator moved while this instance rejoined.
    /// librdkafka makes it fatal either way.
    #[error(
        "{operation} failed: the consumer group fenced this instance ({source}): another live \
         instance joined with the same group.instance.id (the same app_id and instance_id), or \
         the group coordinator failed over during this instance's join. Give every instance a \
         distinct instance_id; after a coordinator failover, restarting the instance rejoins. \
         This instance stops"
    )]
    InstanceFenced {
        /// What the engine was doing.
        operation: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// The cluster refused the stage's principal.
    #[error("{operation} was refused: {source}; {hint}")]
    NotAuthorized {
        /// What the engine was doing.
        operation: &'static str,
        /// The client's error.
        source: KafkaError,
        /// What to grant or fix.
        hint: String,
    },
    /// Transactions keep aborting without one committing in between.
    #[error(
        "{aborts} transactions in a row aborted without one committing (last error: {last}); \
         stopping instead of looping"
    )]
    AbortLoop {
        /// Consecutive aborts.
        aborts: u32,
        /// The last error seen.
        last: String,
    },
    /// A Kafka call failed with an error that waiting or aborting cannot fix.
    #[error("{operation} failed: {source}")]
    Kafka {
        /// What the engine was doing.
        operation: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// A retriable error did not clear before its deadline.
    #[error("{operation} kept failing for {waited_secs} s, giving up: {source}")]
    RetriesExhausted {
        /// What the engine was doing.
        operation: &'static str,
        /// How long it tried.
        waited_secs: u64,
        /// The last error.
        source: KafkaError,
    },
    /// A service a record's processing needs (the schema registry) did not answer in time.
    #[error(
        "record {topic}/{partition}@{offset} could not be processed because a service did not \
         answer ({message}); the stage stops without committing it (nothing is dead-lettered \
         for this), restart it once the service is back"
    )]
    Unavailable {
        /// The input topic.
        topic: String,
        /// The input partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// What did not answer.
        message: String,
    },
    /// A record could not be processed and the poison policy is `fail`.
    #[error(
        "record {topic}/{partition}@{offset} could not be processed ({error}); poison_policy is \
         fail, so the stage stops without committing it"
    )]
    Poison {
        /// The input topic.
        topic: String,
        /// The input partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// What went wrong.
        error: TopologyError,
    },
}

impl EngineError {
    /// The process exit code for this error: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            _ => 1,
        }
    }

    /// Wraps a fatal Kafka error, recognising fencing.
    pub(crate) fn kafka(
        operation: &'static str,
        source: KafkaError,
        transactional_id: &str,
    ) -> Self {
        if code_of(&source) == Some(RDKafkaErrorCode::FencedInstanceId) {
            Self::InstanceFenced { operation, source }
        } else if is_fenced(&source) {
            Self::Fenced {
                transactional_id: transactional_id.to_string(),
                source,
            }
        } else if is_authorization(&source) {
            let hint = authorization_hint(&source, transactional_id);
            Self::NotAuthorized {
                operation,
                source,
                hint,
            }
        } else {
            Self::Kafka { operation, source }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_is_retried_and_unknown_errors_are_fatal() {
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(classify(&full), ErrorClass::Retriable);
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(classify(&too_large), ErrorClass::Fatal);
        assert_eq!(classify(&KafkaError::Canceled), ErrorClass::Fatal);
    }

    #[test]
    fn consumer_errors_that_cannot_heal_are_fatal() {
        let transport = KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(classify_consumer(&transport), ErrorClass::Retriable);
        let denied = KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(classify_consumer(&denied), ErrorClass::Fatal);
        let fatal = KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::Fatal);
        assert_eq!(classify_consumer(&fatal), ErrorClass::Fatal);
        let fenced = KafkaError::MessageConsumption(RDKafkaErrorCode::FencedInstanceId);
        assert_eq!(classify_consumer(&fenced), ErrorClass::Fatal);
        // Not in the retriable list: fatal, not "retry forever".
        let unlisted = KafkaError::MessageConsumption(RDKafkaErrorCode::InvalidRecord);
        assert_eq!(classify_consumer(&unlisted), ErrorClass::Fatal);
        let moving = KafkaError::MessageConsumption(RDKafkaErrorCode::RebalanceInProgress);
        assert_eq!(classify_consumer(&moving), ErrorClass::Retriable);
    }

    #[test]
    fn authorization_errors_are_fatal_and_explained() {
        let denied =
            KafkaError::MessageProduction(RDKafkaErrorCode::TransactionalIdAuthorizationFailed);
        assert_eq!(classify(&denied), ErrorClass::Fatal);
        let error = EngineError::kafka("init_transactions", denied, "app-0");
        assert!(
            error
                .to_string()
                .contains(r#"Write and Describe on TransactionalId "app-0""#),
            "{error}"
        );
        let topic = KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(classify_consumer(&topic), ErrorClass::Fatal);
    }

    #[test]
    fn fenced_errors_are_recognised() {
        let fenced = KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced);
        assert!(is_fenced(&fenced));
        assert!(matches!(
            EngineError::kafka("commit", fenced, "app-0"),
            EngineError::Fenced { .. }
        ));
        assert_eq!(EngineError::Startup("x".into()).exit_code(), 1);
    }
}
