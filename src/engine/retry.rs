//! Retrying a retriable Kafka call with capped exponential backoff, up to a deadline.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, KafkaResult};

use crate::error::{classify, ErrorClass};

/// First backoff between attempts.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Largest backoff between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a retried call gave up.
#[derive(Debug)]
pub(crate) enum Retried {
    /// The call failed with an error that is not retriable; classify it to decide what next.
    Failed(KafkaError),
    /// The call kept failing with retriable errors until the deadline.
    Exhausted {
        /// The last error.
        source: KafkaError,
        /// How long it was retried.
        waited: Duration,
    },
}

impl Retried {
    pub(crate) fn exhausted(source: KafkaError, waited: Duration) -> Self {
        Self::Exhausted { source, waited }
    }
}

/// Calls `call` until it succeeds, fails with a non-retriable error, or `deadline` passes.
/// Each retry is logged: they are rare, and an operator wants to see a struggling broker.
pub(crate) fn retrying<T>(
    operation: &str,
    deadline: Instant,
    call: impl FnMut() -> KafkaResult<T>,
) -> Result<T, Retried> {
    retrying_counted(operation, deadline, &mut 0, call)
}

/// [`retrying`], adding to `retries` each repeated call (the transaction path re-creates its
/// producer after a transactional call that needed one).
pub(crate) fn retrying_counted<T>(
    operation: &str,
    deadline: Instant,
    retries: &mut u32,
    mut call: impl FnMut() -> KafkaResult<T>,
) -> Result<T, Retried> {
    let started = Instant::now();
    let mut backoff = INITIAL_BACKOFF;
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(error) if classify(&error) == ErrorClass::Retriable => {
                if Instant::now() + backoff >= deadline {
                    return Err(Retried::exhausted(error, started.elapsed()));
                }
                tracing::warn!(%error, operation, backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "A retriable error; making the same call again.");
                std::thread::sleep(backoff);
                *retries += 1;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(error) => return Err(Retried::Failed(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn retries_retriable_errors_until_success() {
        let mut calls = 0;
        let result = retrying("test", Instant::now() + Duration::from_secs(30), || {
            calls += 1;
            if calls < 3 {
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result.ok(), Some(3));
    }

    #[test]
    fn stops_at_the_first_non_retriable_error() {
        let mut calls = 0;
        let result: Result<(), _> =
            retrying("test", Instant::now() + Duration::from_secs(30), || {
                calls += 1;
                Err(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageSizeTooLarge,
                ))
            });
        assert!(matches!(result, Err(Retried::Failed(_))));
        assert_eq!(calls, 1);
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let result: Result<(), _> = retrying("test", Instant::now(), || {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
        });
        assert!(matches!(result, Err(Retried::Exhausted { .. })));
    }
}
