//! The kill loop of the crash tests: incarnations of one stage, each SIGKILLed mid-stream at a
//! moment the test chooses, then a last incarnation that drains the input and stops cleanly.
//!
//! Every incarnation uses the same spec, so the same instance id and transactional id: each
//! restart fences the killed producer and aborts its open transaction, which is what the
//! exactly-once tests put to the proof (and what leaves duplicates in the read_uncommitted
//! view, showing the checks could fail).

use super::orders_stage::stop_cleanly;
use super::read::GroupOffsets;
use super::stage::{Stage, StageSpec};
use super::Pipeline;

/// Starts `spec` `kills` times; each incarnation runs until `until_kill(kill, &mut stage)`
/// returns (it waits for progress, feeds input, ...), and is then SIGKILLed. Returns the group's
/// committed progress (`offsets`, summed over partitions) just before each kill.
pub fn kill_repeatedly(
    spec: &StageSpec,
    offsets: &GroupOffsets,
    kills: usize,
    mut until_kill: impl FnMut(usize, &mut Stage),
) -> Vec<i64> {
    let mut at_kill = Vec::with_capacity(kills);
    for kill in 0..kills {
        let mut stage = spec.spawn();
        until_kill(kill, &mut stage);
        let before = offsets.progress();
        stage.sigkill();
        eprintln!("kill {kill}: committed progress {before} when killed");
        at_kill.push(before);
    }
    at_kill
}

/// Starts a last incarnation of `spec`, waits until the group has committed `ends` (the input's
/// end offsets), and stops it with SIGTERM: it must exit 0 and say it stopped cleanly.
pub fn drain_then_stop(pipeline: &Pipeline, spec: &StageSpec, ends: &[i64]) {
    let mut stage = spec.spawn();
    pipeline.wait_drained(&mut stage, ends);
    stop_cleanly(&mut stage);
}
