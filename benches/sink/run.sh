#!/usr/bin/env bash
# benches/sink/run.sh: the sink benchmark, `scripts/bench.sh sink [ARGS...]` (docs/BENCHMARKS.md,
# "Kafka into PostgreSQL"). ARGS go to benches/sink/bench.py (--records, --rounds,
# --contenders, --latency-secs, ...; --help lists them).
#
# Steps:
#   1. cargo build --release --bin kstage --example bench-sink-load (the latency runs' load
#      generator, benches/sink/load.rs; skip with KSTAGE_BENCH_SKIP_BUILD=1)
#   2. the Debezium JDBC sink connector and Kafka Connect's runtime with their runtime
#      dependencies from Maven Central into ${KSTAGE_CACHE}/debezium-jdbc-sink (once; skipped
#      when --contenders names no debezium)
#   3. the Python client (scripts/python-env.sh)
#   4. a single-node Kafka (scripts/kafka.sh) and a private PostgreSQL (scripts/postgres.sh)
#      with track_commit_timestamp = on, on the ports and data directories of KSTAGE_KAFKA_PORT,
#      KSTAGE_KAFKA_DATA, KSTAGE_PG_PORT, KSTAGE_PG_DATA; both stopped when this script exits
#   5. bench.py: preloads the records, runs every contender, writes target/bench/sink/results.json
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly ROOT
readonly MVN="${MVN:-mvn}"
readonly CACHE="${KSTAGE_CACHE:-${HOME}/.cache/kstage}"
readonly LIBS="${CACHE}/debezium-jdbc-sink/libs"

log() { printf 'bench sink: %s\n' "$*" >&2; }

if [[ "${KSTAGE_BENCH_SKIP_BUILD:-0}" != "1" ]]; then
  log "building kstage and the load generator (release)"
  (cd "${ROOT}" && cargo build --release --bin kstage --example bench-sink-load)
fi
# Debezium is fetched only when a contender needs it (the default set does).
NEED_DEBEZIUM=1
if [[ " $* " == *" --contenders"* && "$*" != *debezium* ]]; then
  NEED_DEBEZIUM=0
fi
if [[ "${NEED_DEBEZIUM}" == "1" && ! -f "${LIBS}/.complete" ]]; then
  log "fetching the Debezium JDBC sink and Kafka Connect from Maven Central"
  rm -rf "${LIBS}"
  mkdir -p "${LIBS}"
  "${MVN}" -B -q -f "${ROOT}/benches/sink/pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="${LIBS}" >&2
  touch "${LIBS}/.complete"
fi
PYTHON="$("${ROOT}/scripts/python-env.sh")"
readonly PYTHON

"${ROOT}/scripts/kafka.sh" start --brokers 1 >/dev/null
PG_URL="$("${ROOT}/scripts/postgres.sh" start | tail -n 1)"
cleanup() {
  "${ROOT}/scripts/postgres.sh" stop >/dev/null 2>&1 || true
  "${ROOT}/scripts/kafka.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql "${PG_URL}" -X -q -c "ALTER SYSTEM SET track_commit_timestamp = on"
"${ROOT}/scripts/postgres.sh" restart >/dev/null
BOOTSTRAP="127.0.0.1:${KSTAGE_KAFKA_PORT:-39092}"

log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
"${PYTHON}" "${ROOT}/benches/sink/bench.py" --bootstrap "${BOOTSTRAP}" --pg-url "${PG_URL}" \
  --pg-data "${KSTAGE_PG_DATA:-/tmp/kstage-pg}/data" --kstage "${ROOT}/target/release/kstage" \
  --load-bin "${ROOT}/target/release/examples/bench-sink-load" \
  --connect-libs "${LIBS}" --out "${ROOT}/target/bench/sink" "$@"
