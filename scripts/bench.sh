#!/usr/bin/env bash
# bench.sh: the one benchmark command of kstage (see docs/BENCHMARKS.md).
#
# Usage: scripts/bench.sh [HARNESS_ARGS...]
#   e.g. scripts/bench.sh                                   # the full default run
#        scripts/bench.sh --records 200000 --runs 1         # a quick trial
#        scripts/bench.sh --contenders kstage-eos,raw-copy --latency-runs 0
#        scripts/bench.sh --publish-chart docs/benchmarks.svg
#        scripts/bench.sh --help                            # every harness option
#        scripts/bench.sh sink [--records N ...]            # Kafka into PostgreSQL:
#            kstage sink (both modes), COPY, the Debezium JDBC sink (benches/sink/run.sh)
#        scripts/bench.sh state [--records N ...]           # count and windowed-count
#            against Kafka Streams (benches/state/compare.sh; needs KSTAGE_TEST_BOOTSTRAP)
#
# Steps:
#   1. cargo build --release: the kstage binary, the harness and the raw copy
#      (examples bench-harness and bench-raw-copy)
#   2. mvn package of the Kafka Streams peer (benches/kafka-streams; its jars
#      come from Maven Central and are cached in ~/.m2, nothing is committed)
#   3. scripts/kafka.sh fetch (Kafka and its tools, cached in ~/.cache/kstage)
#   4. the harness: starts a private single-node broker on 127.0.0.1:19092
#      with data in /tmp/kstage-bench-kafka (--port, --data-dir; other brokers
#      on the machine are not touched), preloads the input, runs every
#      contender in interleaved rounds, writes target/bench/<time>/
#      {results.json,report.md,chart.svg} and stops the broker.
#
# Environment: KSTAGE_BENCH_SKIP_BUILD=1 skips steps 1-3; MVN, JAVA_HOME and
# everything scripts/kafka.sh reads (KSTAGE_KAFKA_VERSION, KSTAGE_CACHE, ...).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly MVN="${MVN:-mvn}"

if [[ "${1:-}" == "sink" ]]; then
  shift
  exec "${ROOT}/benches/sink/run.sh" "$@"
fi
if [[ "${1:-}" == "state" ]]; then
  shift
  exec "${ROOT}/benches/state/compare.sh" "$@"
fi

for arg in "$@"; do
  if [[ "${arg}" == "--help" || "${arg}" == "-h" ]]; then
    exec "${ROOT}/target/release/examples/bench-harness" --help
  fi
done

if [[ "${KSTAGE_BENCH_SKIP_BUILD:-0}" != "1" ]]; then
  echo "bench.sh: building kstage, the harness and the raw copy (release)" >&2
  (cd "${ROOT}" && cargo build --release --bin kstage --example bench-harness --example bench-raw-copy)
  echo "bench.sh: building the Kafka Streams peer" >&2
  "${MVN}" -B -q -f "${ROOT}/benches/kafka-streams/pom.xml" package
  "${ROOT}/scripts/kafka.sh" fetch >/dev/null
fi

exec "${ROOT}/target/release/examples/bench-harness" "$@"
