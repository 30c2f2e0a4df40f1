//! Test-only topologies, compiled with the `fault-injection` feature.

use kstage::topology::{Emitter, OutputRecord, Record, Topology, TopologyError, TopologyParams};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str = "(tests only) passthrough that fails on a record whose value \
    contains params.marker: a transform error, or (params.action = panic) a panic after emitting";

/// A passthrough that fails on any record whose value contains `marker`.
#[derive(Debug)]
pub struct FailOn {
    marker: Vec<u8>,
    /// Panic (after emitting the record's output) instead of returning an error.
    panic: bool,
}

/// Builds the topology from `params.marker` and `params.action` (`error` or `panic`).
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    params.deny_unknown(&["marker", "action"])?;
    let marker = params
        .get("marker")
        .unwrap_or("KSTAGE-FAIL")
        .as_bytes()
        .to_vec();
    let panic = match params.get("action").unwrap_or("error") {
        "error" => false,
        "panic" => true,
        other => return Err(format!("action {other:?} is not error or panic")),
    };
    Ok(Box::new(FailOn { marker, panic }))
}

impl Topology for FailOn {
    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let value = record.value.unwrap_or_default();
        let marked =
            !self.marker.is_empty() && value.windows(self.marker.len()).any(|w| w == self.marker);
        if marked && !self.panic {
            return Err(TopologyError::transform(
                "the record carries the failure marker",
            ));
        }
        out.emit(OutputRecord::from_input(record));
        if marked {
            // Deliberately, to test that a panic commits nothing of its batch.
            #[allow(clippy::panic)]
            {
                panic!("the record carries the failure marker");
            }
        }
        Ok(())
    }
}
