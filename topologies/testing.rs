//! Test-only topologies, compiled with the `fault-injection` feature.

use kstage::topology::{Emitter, OutputRecord, Record, Topology, TopologyError, TopologyParams};

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str =
    "(tests only) passthrough that fails on a record whose value contains params.marker";

/// A passthrough that returns a transform error for any record whose value contains `marker`.
#[derive(Debug)]
pub struct FailOn {
    marker: Vec<u8>,
}

/// Builds the topology from `params.marker`.
pub fn build(params: &TopologyParams) -> Result<Box<dyn Topology>, String> {
    params.deny_unknown(&["marker"])?;
    let marker = params
        .get("marker")
        .unwrap_or("KSTAGE-FAIL")
        .as_bytes()
        .to_vec();
    Ok(Box::new(FailOn { marker }))
}

impl Topology for FailOn {
    fn process<'a>(
        &mut self,
        record: &Record<'a>,
        out: &mut Emitter<'a>,
    ) -> Result<(), TopologyError> {
        let value = record.value.unwrap_or_default();
        if !self.marker.is_empty() && value.windows(self.marker.len()).any(|w| w == self.marker) {
            return Err(TopologyError::transform(
                "the record carries the failure marker",
            ));
        }
        out.emit(OutputRecord::from_input(record));
        Ok(())
    }
}
