//! `passthrough`: copies every record (key, value, headers, timestamp) to the default output.

use kstage::topology::{Emitter, OutputRecord, Record, Topology, TopologyError, TopologyParams};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str = "copies key, value, headers and timestamp to the output unchanged";

/// Copies records unchanged; the outputs borrow the input's bytes, so nothing is copied before
/// the producer takes them.
#[derive(Debug, Default)]
pub struct Passthrough;

/// Builds the topology; it takes no parameters.
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    params.deny_unknown(&[])?;
    Ok(Box::new(Passthrough))
}

impl Topology for Passthrough {
    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        out.emit(OutputRecord::from_input(record));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstage::topology::{Context, Headers};

    #[test]
    fn copies_key_value_headers_and_timestamp() {
        let headers = [("trace", Some(&b"t-1"[..]))];
        let record = Record {
            key: Some(b"k"),
            value: None,
            headers: Headers::from_slice(&headers),
            context: Context {
                topic: "in",
                partition: 2,
                offset: 9,
                timestamp: Some(42),
            },
        };
        let mut out = Emitter::new();
        Passthrough
            .process(&record, &mut out)
            .expect("passthrough never fails");
        let records = out.into_records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(records[0].value, None, "a tombstone stays a tombstone");
        assert_eq!(records[0].headers[0].0, "trace");
        assert_eq!(records[0].timestamp, Some(42));
    }

    #[test]
    fn refuses_parameters() {
        let params = TopologyParams::new([("x".to_string(), "1".to_string())].into());
        assert!(build(&params).err().is_some());
    }
}
