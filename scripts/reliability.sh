#!/usr/bin/env bash
# reliability.sh: the full reliability matrix and the soak, in one command
# (docs/RELIABILITY.md). The short version runs in CI as part of scripts/test.sh.
#
# Usage: scripts/reliability.sh [TEST_NAME_FILTER]
#   e.g. scripts/reliability.sh                       # everything (about 40 minutes on 2 cores)
#        scripts/reliability.sh reliability_floor::   # only the Kafka-floor scenarios
#   The filter selects among all tests of the integration test binary `it`, whose
#   names are <module>::<test>; without one, the modules verify::, reliability::,
#   reliability_floor::, reliability_network:: and reliability_soak:: run.
#
# Steps:
#   1. builds the tests (cargo test --features fault-injection --no-run) and the
#      Kafka Streams peer of the fail-over comparison (mvn package of
#      benches/kafka-streams; its jars come from Maven Central, cached in ~/.m2)
#   2. starts a single-node broker (with a 6 s consumer-protocol session timeout,
#      group.consumer.session.timeout.ms, for the KIP-848 fail-over measurement)
#      and a three-node cluster (KRaft, replication 3,
#      min.insync.replicas=2, proxied mode: a Toxiproxy port per node for the
#      network-fault scenarios, built once by scripts/toxiproxy.sh) through
#      scripts/kafka.sh, on private ports and data directories; both are stopped
#      when this script exits, whatever happens
#   3. runs tests/it/verify.rs, tests/it/reliability.rs, tests/it/reliability_floor.rs,
#      tests/it/reliability_network.rs and tests/it/reliability_soak.rs one test at a time with KSTAGE_RELIABILITY=full
#   4. prints the results table (Markdown) and leaves everything in
#      target/reliability/<UTC time>/: results.jsonl (one line per scenario),
#      results.md, test.log
#
# Environment:
#   KSTAGE_RELIABILITY_SINGLE_PORT   single broker's client port (default 39292)
#   KSTAGE_RELIABILITY_CLUSTER_PORT  three-node cluster's first client port (default 29092:
#                                    nodes on 29092/29094/29096, controllers +1)
#   KSTAGE_CHAOS_SEED                replay the fault choices of a run (printed per scenario)
#   KSTAGE_SOAK_RECORDS, KSTAGE_SOAK_RATE  resize the soak (default 1000000 at 2500/s)
#   KSTAGE_CHAOS_TRANSACTION_TIMEOUT transaction.timeout.ms of the stages, seconds (default 10)
#   MVN                              Maven (default mvn)
#   plus everything scripts/kafka.sh reads (KSTAGE_CACHE, KSTAGE_KAFKA_VERSION, JAVA_HOME).

set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPTS
ROOT="$(cd "${SCRIPTS}/.." && pwd)"
readonly ROOT

case "${1:-}" in
  -h | --help | help)
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
  *) ;;
esac
readonly FILTER="${1:-}"

readonly SINGLE_PORT="${KSTAGE_RELIABILITY_SINGLE_PORT:-39292}"
readonly CLUSTER_PORT="${KSTAGE_RELIABILITY_CLUSTER_PORT:-29092}"
readonly SINGLE_DATA="${TMPDIR:-/tmp}/kstage-reliability-single"
readonly CLUSTER_DATA="${TMPDIR:-/tmp}/kstage-reliability-cluster"
OUT="${ROOT}/target/reliability/$(date -u +%Y%m%dT%H%M%SZ)"
readonly OUT
T0=${SECONDS}

say() { printf '\n==== %s ====\n' "$*" >&2; }

kafka() {
  local data="$1" port="$2"
  shift 2
  KSTAGE_KAFKA_DATA="${data}" KSTAGE_KAFKA_PORT="${port}" "${SCRIPTS}/kafka.sh" "$@"
}

STARTED=0
# shellcheck disable=SC2317 # invoked through the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((STARTED)); then
    say "Stopping the brokers"
    kafka "${CLUSTER_DATA}" "${CLUSTER_PORT}" stop || true
    kafka "${SINGLE_DATA}" "${SINGLE_PORT}" stop || true
  fi
  if [[ -s "${OUT}/results.jsonl" ]]; then
    render >"${OUT}/results.md" || true
    cat "${OUT}/results.md"
  fi
  printf '\nreliability.sh: %s (exit %s) after %ss; logs and results in %s\n' \
    "$( ((rc == 0)) && echo OK || echo FAILED)" "${rc}" "$((SECONDS - T0))" "${OUT}" >&2
  exit "${rc}"
}

# The results table: one row per scenario, then the fail-over times.
# shellcheck disable=SC2317 # invoked from cleanup
render() {
  command -v jq >/dev/null 2>&1 || {
    echo "(jq not found: raw results in ${OUT}/results.jsonl)"
    return 0
  }
  echo "| scenario | brokers | records | faults | lost | duplicated | aborted visible | live unsettled | hanging | torn (lanes checked) | unplanned exits | run | result |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  jq -r 'select(.scenario) | "| \(.scenario) | \(.brokers) | \(.records) | \(.fault_total) | \(.lost) | \(.duplicated) | \(.aborted_visible) | \(.live_unsettled) | \(.hanging) | \(.torn) (\(.runs_checked)) | \(.unplanned_exits | length) | \(.run_s | floor) s | \(if .as_expected then "PASS" else "FAIL" end) (\(.expect)\(if (.failed_checks | length) > 0 then ": " + (.failed_checks | join(", ")) + " failed" else "" end)) |"' \
    "${OUT}/results.jsonl"
  echo
  jq -r 'select(.scenario) | "- \(.scenario): \(.faults | to_entries | map("\(.value)x \(.key)") | join(", "))"' \
    "${OUT}/results.jsonl"
  if jq -s -e 'map(select(.failover)) | length > 0' "${OUT}/results.jsonl" >/dev/null 2>&1; then
    echo
    echo "Fail-over, seconds until every input partition committed again / every output partition's LSO moved again (3 rounds each):"
    echo
    echo "| instances | membership | SIGKILL, same instance id restarted at once | SIGKILL, instance gone (survivor takes over) | SIGSTOP past the transaction timeout (survivor takes over) | rolling restart step: longest stall | verified |"
    echo "|---|---|---|---|---|---|---|"
    jq -r 'def s(a; b): [a, b] | transpose | map("\(.[0] * 10 | round / 10) / \(.[1] * 10 | round / 10)") | join(", ") | if . == "" then "not run" else . end;
      select(.failover) | "| \(.contender // "kstage") | \(if .static_membership then "static" else "dynamic" end) | \(s(.restart_s; .restart_visible_s)) | \(s(.takeover_s; .takeover_visible_s)) | \(s(.zombie_s; .zombie_visible_s)) | \(s(.rolling_s; .rolling_visible_s)) | \(if .passed and .live_unsettled == 0 then "exactly once" else "FAILED" end) |"' \
      "${OUT}/results.jsonl"
  fi
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "${ROOT}"
mkdir -p "${OUT}"
if [[ -n "${FILTER}" ]]; then
  readonly FILTERS=("${FILTER}")
else
  readonly FILTERS=(verify:: reliability:: reliability_floor:: reliability_network:: reliability_soak::)
fi

say "Building"
cargo test --features fault-injection --test it --no-run
"${MVN:-mvn}" -q -f benches/kafka-streams/pom.xml package

say "Starting a single broker (:${SINGLE_PORT}) and a three-node cluster (:${CLUSTER_PORT})"
STARTED=1
SINGLE="$(kafka "${SINGLE_DATA}" "${SINGLE_PORT}" start --brokers 1 \
  --prop group.consumer.session.timeout.ms=6000 --prop group.consumer.min.session.timeout.ms=6000 \
  --prop group.consumer.heartbeat.interval.ms=1000 --prop group.consumer.min.heartbeat.interval.ms=1000)"
kafka "${CLUSTER_DATA}" "${CLUSTER_PORT}" start --brokers 3 --proxied >/dev/null
"${SCRIPTS}/toxiproxy.sh" fetch

say "Running the matrix (KSTAGE_RELIABILITY=full); log: ${OUT}/test.log"
rc=0
KSTAGE_RELIABILITY=full \
  KSTAGE_TEST_BOOTSTRAP="${SINGLE}" \
  KSTAGE_TEST_REQUIRE_BROKER=1 \
  KSTAGE_RELIABILITY_CLUSTER_DATA="${CLUSTER_DATA}" \
  KSTAGE_RELIABILITY_CLUSTER_PORT="${CLUSTER_PORT}" \
  KSTAGE_RELIABILITY_RESULTS="${OUT}/results.jsonl" \
  cargo test --features fault-injection --test it -- --test-threads=1 --nocapture "${FILTERS[@]}" \
  >"${OUT}/test.log" 2>&1 || rc=$?
grep -E '^(test |== |fault |unplanned exit|zombie:)' "${OUT}/test.log" >&2 || true
exit "${rc}"
