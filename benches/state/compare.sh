#!/usr/bin/env bash
# compare.sh: kstage against Kafka Streams on `count` and `windowed-count` (issue 13;
# docs/BENCHMARKS.md, "Stateful: kstage vs Kafka Streams (issue 13)").
#
# Usage: KSTAGE_TEST_BOOTSTRAP=127.0.0.1:9092 benches/state/compare.sh [compare.py options]
#   e.g. benches/state/compare.sh --records 1000000 --keys 100000 --rounds 2
#        benches/state/compare.sh --records 100000 --keys 10000 --rounds 1   # a quick trial
#   (or scripts/bench.sh state ...). Needs a running broker (scripts/kafka.sh start).
#
# Steps: builds target/release/kstage and the Kafka Streams peer (benches/kafka-streams,
# StateApp; jars from Maven Central, cached in ~/.m2), then benches/state/compare.py runs each
# round, topology and app on a fresh input topic: drain (throughput, CPU per record, peak RSS),
# restart after deleting the local state, restart after SIGKILL mid-stream; each app's output
# is checked against the true counts after the drain and after the kill. One JSON line per run
# goes to target/bench/state-<time>/results.jsonl and to stdout; summary.py makes the table.
#
# Environment: KSTAGE_BENCH_SKIP_BUILD=1 skips the builds; MVN (default mvn).

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BOOT="${KSTAGE_TEST_BOOTSTRAP:?set KSTAGE_TEST_BOOTSTRAP to a broker}"
MVN="${MVN:-mvn}"
if [[ "${KSTAGE_BENCH_SKIP_BUILD:-0}" != "1" ]]; then
  (cd "${ROOT}" && nice -n 10 cargo build --release --bin kstage)
  nice -n 10 "${MVN}" -B -q -f "${ROOT}/benches/kafka-streams/pom.xml" package
fi
PY="$("${ROOT}/scripts/python-env.sh")"
OUT="${ROOT}/target/bench/state-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "${OUT}"
echo "compare.sh: results in ${OUT}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
PYTHONPATH="${ROOT}/benches/state" "${PY}" "${ROOT}/benches/state/compare.py" \
  --bootstrap "${BOOT}" --kstage "${ROOT}/target/release/kstage" \
  --streams-jar "${ROOT}/benches/kafka-streams/target/kstage-bench-streams.jar" \
  --out "${OUT}/results.jsonl" "$@"
"${PY}" "${ROOT}/benches/state/summary.py" "${OUT}/results.jsonl" | tee "${OUT}/summary.md"
echo "compare.sh: load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
