//! The dead-letter check: every record of a dead-letter topic is a faithful copy of the input
//! record its provenance headers name, plus the headers that say why it was dead-lettered.
//!
//! A dead letter must let an operator replay or inspect the original, so it holds:
//!
//! * the original key, and the original value byte for byte (a tombstone stays a tombstone);
//! * the original headers first, in order, then kstage's own;
//! * `kstage.error.class` (non-empty) and `kstage.error.message` (non-empty);
//! * `kstage.source.timestamp`, the input record's timestamp in milliseconds;
//! * the provenance headers (`kstage.source.topic`, `.partition`, `.offset`) naming the input
//!   record, which must be one of the given input records.
//!
//! That each input record is dead-lettered at most once, and accounted for exactly once across
//! the outputs and the dead-letter topic, is [`check_records`](super::check_records)'s job
//! (dead-letter topics are outputs there); which error class a record deserves is the caller's.

use std::collections::HashMap;

use super::records::{Record, TopicRecords};
use super::report::Finding;
use crate::topology::headers::{
    ERROR_CLASS, ERROR_MESSAGE, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TIMESTAMP, SOURCE_TOPIC,
};

/// The value of the last header called `name`, as text.
pub fn header_text<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.as_deref())
        .and_then(|value| std::str::from_utf8(value).ok())
}

/// The input coordinates `(topic, partition, offset)` a record's provenance headers name.
pub fn provenance(record: &Record) -> Option<(&str, i32, i64)> {
    Some((
        header_text(record, SOURCE_TOPIC)?,
        header_text(record, SOURCE_PARTITION)?.parse().ok()?,
        header_text(record, SOURCE_OFFSET)?.parse().ok()?,
    ))
}

/// Checks each of `dead_letters` against the record of `input` its provenance names (see the
/// module docs). Returns the violations, at most `examples` described.
pub fn check_dead_letters(
    input: TopicRecords<'_>,
    dead_letters: &[Record],
    examples: usize,
) -> Finding {
    let by_coordinates: HashMap<(i32, i64), &Record> = input
        .records
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let mut finding = Finding::default();
    for letter in dead_letters {
        if let Err(problem) = check_one(input.topic, &by_coordinates, letter) {
            finding.add(examples.max(1), || {
                format!(
                    "dead letter [{}]@{}: {problem}",
                    letter.partition, letter.offset
                )
            });
        }
    }
    finding
}

fn check_one(
    topic: &str,
    inputs: &HashMap<(i32, i64), &Record>,
    letter: &Record,
) -> Result<(), String> {
    let Some((source_topic, partition, offset)) = provenance(letter) else {
        return Err("no provenance headers".into());
    };
    let original = inputs
        .get(&(partition, offset))
        .filter(|_| source_topic == topic)
        .ok_or_else(|| {
            format!("names {source_topic}[{partition}]@{offset}, not a given input record")
        })?;
    for name in [ERROR_CLASS, ERROR_MESSAGE] {
        if header_text(letter, name).is_none_or(|v| v.trim().is_empty()) {
            return Err(format!("{name} missing or empty"));
        }
    }
    if header_text(letter, SOURCE_TIMESTAMP)
        .and_then(|t| t.parse::<i64>().ok())
        .is_none()
    {
        return Err(format!(
            "{SOURCE_TIMESTAMP} {:?} is not a timestamp",
            header_text(letter, SOURCE_TIMESTAMP)
        ));
    }
    if letter.key != original.key {
        return Err(format!(
            "key {:?} differs from the original {:?}",
            letter.key.as_deref().map(String::from_utf8_lossy),
            original.key.as_deref().map(String::from_utf8_lossy)
        ));
    }
    if letter.value != original.value {
        return Err(format!(
            "value ({}) differs from the original ({})",
            describe(letter.value.as_deref()),
            describe(original.value.as_deref())
        ));
    }
    let n = original.headers.len();
    if letter.headers.get(..n) != Some(&original.headers[..]) {
        return Err(format!(
            "headers {:?} do not start with the original {:?}",
            letter.headers, original.headers
        ));
    }
    Ok(())
}

fn describe(value: Option<&[u8]>) -> String {
    value.map_or_else(|| "tombstone".into(), |v| format!("{} bytes", v.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(offset: i64, value: Option<&str>) -> Record {
        Record {
            partition: 1,
            offset,
            key: Some(b"k".to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: vec![("trace".into(), Some(b"t-1".to_vec()))],
        }
    }

    fn letter_of(original: &Record) -> Record {
        let mut letter = original.clone();
        letter.offset = 0;
        for (name, value) in [
            (ERROR_CLASS, "deserialization".to_string()),
            (ERROR_MESSAGE, "not JSON".to_string()),
            (SOURCE_TIMESTAMP, "1700000000000".to_string()),
            (SOURCE_TOPIC, "in".to_string()),
            (SOURCE_PARTITION, original.partition.to_string()),
            (SOURCE_OFFSET, original.offset.to_string()),
        ] {
            letter
                .headers
                .push((name.to_string(), Some(value.into_bytes())));
        }
        letter
    }

    fn check(inputs: &[Record], letters: &[Record]) -> Finding {
        let input = TopicRecords {
            topic: "in",
            records: inputs,
        };
        check_dead_letters(input, letters, 10)
    }

    #[test]
    fn a_faithful_dead_letter_passes_tombstones_included() {
        let inputs = [input(3, Some("{bad")), input(4, None)];
        let letters = [letter_of(&inputs[0]), letter_of(&inputs[1])];
        assert!(check(&inputs, &letters).ok());
    }

    #[test]
    fn each_unfaithful_dead_letter_is_reported() {
        let inputs = [input(3, Some("{bad"))];
        let good = letter_of(&inputs[0]);
        let mut changed_value = good.clone();
        changed_value.value = Some(b"{bad}".to_vec());
        let mut lost_header = good.clone();
        lost_header.headers.remove(0);
        let mut no_class = good.clone();
        no_class.headers.retain(|(k, _)| k != ERROR_CLASS);
        let mut other_key = good.clone();
        other_key.key = None;
        let mut foreign = good.clone();
        foreign
            .headers
            .push((SOURCE_OFFSET.into(), Some(b"99".to_vec())));
        let mut no_timestamp = good.clone();
        no_timestamp.headers.retain(|(k, _)| k != SOURCE_TIMESTAMP);
        for (what, letter, needle) in [
            ("value", changed_value, "value"),
            ("headers", lost_header, "headers"),
            ("class", no_class, ERROR_CLASS),
            ("key", other_key, "key"),
            ("provenance", foreign, "not a given input record"),
            ("timestamp", no_timestamp, SOURCE_TIMESTAMP),
        ] {
            let finding = check(&inputs, &[letter]);
            assert_eq!(finding.count, 1, "{what}");
            assert!(finding.examples[0].contains(needle), "{what}: {finding:?}");
        }
    }
}
