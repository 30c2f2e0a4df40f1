//! Poison decisions without a broker: panics, oversized outputs, dead-letter truncation.

use super::*;
use crate::topology::DEFAULT_OUTPUT;

/// Copies the input; panics on a value starting with `panic`.
struct Copy;

impl Topology for Copy {
    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        out.emit(OutputRecord::from_input(record));
        if record.value.unwrap_or_default().starts_with(b"panic") {
            panic!("asked to panic");
        }
        Ok(())
    }
}

fn handling(policy: PoisonPolicy, max_message_bytes: usize) -> RecordHandling {
    RecordHandling {
        routes: vec![(DEFAULT_OUTPUT.to_string(), "out".to_string())],
        poison_policy: policy,
        dead_letter_topic: Some("dlq".to_string()),
        provenance_headers: true,
        max_value_bytes: usize::MAX,
        max_message_bytes,
    }
}

fn record(value: &[u8]) -> Record<'_> {
    Record {
        key: Some(b"k"),
        value: Some(value),
        headers: Headers::none(),
        context: Context {
            topic: "in",
            partition: 2,
            offset: 41,
            timestamp: Some(7),
        },
    }
}

#[test]
fn a_record_that_fits_is_sent_to_its_routed_topic() {
    let handling = handling(PoisonPolicy::Fail, 1_000);
    let processed = process(&mut Copy, &handling, &record(b"hello"), None).expect("fits");
    let Processed::Outputs(outputs) = processed else {
        panic!("expected outputs, got {processed:?}");
    };
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].0, "out");
}

#[test]
fn a_panic_in_the_topology_is_a_poison_record_of_class_panic() {
    let handling = handling(PoisonPolicy::Fail, 1_000_000);
    let error = process(&mut Copy, &handling, &record(b"panic now"), None).expect_err("poison");
    let EngineError::Poison {
        partition,
        offset,
        error,
        ..
    } = error
    else {
        panic!("expected a poison error, got {error}");
    };
    assert_eq!((partition, offset), (2, 41));
    assert_eq!(error.kind.as_str(), "panic");
    assert!(
        error.message.contains("asked to panic"),
        "{}",
        error.message
    );
}

#[test]
fn a_panicking_record_is_dead_lettered_without_its_partial_output() {
    let handling = handling(PoisonPolicy::DeadLetter, 1_000_000);
    let processed =
        process(&mut Copy, &handling, &record(b"panic now"), None).expect("dead letter");
    let Processed::DeadLetter { topic, letter, .. } = processed else {
        panic!("expected a dead letter, got {processed:?}");
    };
    assert_eq!(topic, "dlq");
    let class = letter
        .headers
        .iter()
        .find(|(name, _)| name == headers::ERROR_CLASS)
        .and_then(|(_, value)| value.clone());
    assert_eq!(class.as_deref(), Some(&b"panic"[..]));
}

#[test]
fn an_output_above_message_max_bytes_is_poison_naming_its_topic() {
    let handling = handling(PoisonPolicy::Fail, 1_000);
    // The value alone fits; with the key, the record overhead and the provenance headers the
    // output does not.
    let value = vec![b'x'; 950];
    let error = process(&mut Copy, &handling, &record(&value), None).expect_err("poison");
    let EngineError::Poison { error, .. } = error else {
        panic!("expected a poison error, got {error}");
    };
    assert_eq!(error.kind.as_str(), "output_rejected");
    assert!(error.message.contains("topic out"), "{}", error.message);
}

#[test]
fn a_dead_letter_too_large_to_send_is_truncated_and_says_so() {
    let handling = handling(PoisonPolicy::DeadLetter, 1_000);
    let value = vec![b'x'; 990];
    let processed = process(&mut Copy, &handling, &record(&value), None).expect("dead letter");
    let Processed::DeadLetter { letter, error, .. } = processed else {
        panic!("expected a dead letter, got {processed:?}");
    };
    assert_eq!(error.kind.as_str(), "output_rejected");
    let context = Context {
        topic: &"t".repeat(249),
        partition: i32::MAX,
        offset: i64::MAX,
        timestamp: None,
    };
    assert!(
        wire_size(&letter, Some(&context)) <= 1_000,
        "the dead letter must fit"
    );
    let kept = letter.value.as_ref().map_or(0, |v| v.len());
    assert!(kept < 990 && kept > 0, "kept {kept} bytes");
    let truncated = letter
        .headers
        .iter()
        .find(|(name, _)| name == headers::ERROR_TRUNCATED)
        .and_then(|(_, value)| value.clone());
    assert_eq!(truncated.as_deref(), Some(&b"990"[..]));
}
