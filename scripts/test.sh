#!/usr/bin/env bash
# test.sh: the one test command of kstage (local runs and CI's .ci/run).
#
# Usage: scripts/test.sh [CARGO_TEST_ARGS...] [-- TEST_BINARY_ARGS...]
#   e.g. scripts/test.sh
#        scripts/test.sh --test it                   # only the integration tests
#        scripts/test.sh --test it -- crash::        # tests whose name contains crash::
#        scripts/test.sh --test it -- poison avro    # names matching either
#   The integration tests are one binary, `it` (tests/it/main.rs), named
#   <module>::<test>; a test whose environment is missing is reported as ignored
#   (see tests/it/harness.rs), and with KSTAGE_TEST_REQUIRE_BROKER=1 it fails instead.
#
# Steps:
#   1. cargo fmt --check, then cargo clippy --all-targets -- -D warnings with the
#      default features and with --features fault-injection
#      (fails fast; skip with KSTAGE_SKIP_LINT=1)
#   2. fetch (first run only) and start a single-node Apache Kafka (KRaft) and
#      an Apicurio schema registry on 127.0.0.1 via scripts/kafka.sh and
#      scripts/registry.sh, and a private PostgreSQL via scripts/postgres.sh
#      (installed with apt-get when missing); all are always stopped when this
#      script exits (success, failure, Ctrl-C)
#   3. build Toxiproxy once (scripts/toxiproxy.sh fetch) for the network-fault
#      scenarios, then
#      cargo test --features fault-injection ARGS -- --test-threads=2 ...
#      with KSTAGE_TEST_BOOTSTRAP, KSTAGE_TEST_REGISTRY_URL, KSTAGE_TEST_PG_URL and
#      KSTAGE_TEST_REQUIRE_BROKER=1 exported; the exit code is propagated
#   4. only with KSTAGE_CHECK_TESTCONTAINERS=1:
#      cargo check --features testcontainers --tests
#
# Environment: KSTAGE_SKIP_LINT=1, KSTAGE_CHECK_TESTCONTAINERS=1,
# KSTAGE_TEST_THREADS (default 2; ignored if --test-threads is given after --),
# plus everything scripts/kafka.sh, scripts/registry.sh and scripts/postgres.sh
# read (ports, cache, data dirs, versions).

set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPTS
ROOT="$(cd "${SCRIPTS}/.." && pwd)"
readonly ROOT
readonly FEATURES="fault-injection"

if [[ -t 2 ]]; then
  BOLD=$'\033[1m'
  PLAIN=$'\033[0m'
else
  BOLD=""
  PLAIN=""
fi
readonly BOLD PLAIN
T_START=${SECONDS}
SECTION_START=${SECONDS}
section() {
  printf '\n%s==== %s ====%s\n' "${BOLD}" "$*" "${PLAIN}" >&2
  SECTION_START=${SECONDS}
}
done_section() { printf '(%ss)\n' "$((SECONDS - SECTION_START))" >&2; }
die() {
  printf 'test.sh: error: %s\n' "$*" >&2
  exit 1
}

case "${1:-}" in
  -h | --help | help)
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
  *) ;;
esac

# Split our arguments into cargo test's own and the test binaries' (after --).
CARGO_ARGS=()
TEST_ARGS=()
seen_separator=0
for arg in "$@"; do
  if ((seen_separator)); then
    TEST_ARGS+=("${arg}")
  elif [[ "${arg}" == "--" ]]; then
    seen_separator=1
  else
    CARGO_ARGS+=("${arg}")
  fi
done
has_threads=0
for arg in "${TEST_ARGS[@]}"; do
  if [[ "${arg}" == --test-threads* ]]; then has_threads=1; fi
done
((has_threads)) || TEST_ARGS+=("--test-threads=${KSTAGE_TEST_THREADS:-2}")

cd "${ROOT}"
command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
command -v java >/dev/null 2>&1 || [[ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]] ||
  die "java (17+) not found: it runs the Kafka broker and the schema registry"

# ---------------------------------------------------------------------------
STARTED=0
PG_STARTED=0
REG_PID=""
TMP_URL=""
# shellcheck disable=SC2317 # invoked through the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -z "${TMP_URL}" ]] || rm -f "${TMP_URL}"
  if ((STARTED)); then
    section "Stopping Kafka and the schema registry"
    # A registry start still in progress is finished first (it holds the lock).
    [[ -z "${REG_PID}" ]] || wait "${REG_PID}" 2>/dev/null || true
    "${SCRIPTS}/registry.sh" stop || true
    "${SCRIPTS}/kafka.sh" stop || true
    if ((PG_STARTED)); then "${SCRIPTS}/postgres.sh" stop || true; fi
    if ((rc != 0)); then
      echo "broker logs:   ${KSTAGE_KAFKA_DATA:-/tmp/kstage-kafka}/node-1/logs/server.log" >&2
      echo "registry log:  ${KSTAGE_REGISTRY_DATA:-/tmp/kstage-registry}/registry.log" >&2
      echo "postgres log:  ${KSTAGE_PG_DATA:-/tmp/kstage-pg}/postgres.log" >&2
    fi
    done_section
  fi
  if ((rc == 0)); then
    printf '\n%stest.sh: OK%s (%ss)\n' "${BOLD}" "${PLAIN}" "$((SECONDS - T_START))" >&2
  else
    printf '\n%stest.sh: FAILED%s (exit code %s, %ss)\n' "${BOLD}" "${PLAIN}" "${rc}" "$((SECONDS - T_START))" >&2
  fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
if [[ "${KSTAGE_SKIP_LINT:-0}" != 1 ]]; then
  section "cargo fmt --check"
  cargo fmt --all --check
  done_section
  section "cargo clippy --all-targets -- -D warnings (default features)"
  cargo clippy --all-targets -- -D warnings
  done_section
  section "cargo clippy --all-targets --features ${FEATURES} -- -D warnings"
  cargo clippy --all-targets --features "${FEATURES}" -- -D warnings
  done_section
fi

# ---------------------------------------------------------------------------
section "Starting Kafka (1 broker, KRaft), Apicurio Registry and PostgreSQL"
STARTED=1
TMP_URL="$(mktemp)"
# The registry starts in the background while the broker starts.
"${SCRIPTS}/registry.sh" start >"${TMP_URL}" &
REG_PID=$!
BOOTSTRAP="$("${SCRIPTS}/kafka.sh" start --brokers 1)"
reg_rc=0
wait "${REG_PID}" || reg_rc=$?
REG_PID=""
REGISTRY_URL="$(<"${TMP_URL}")"
rm -f "${TMP_URL}"
if ((reg_rc != 0)) || [[ -z "${REGISTRY_URL}" ]]; then
  die "the schema registry did not start"
fi
PG_STARTED=1
PG_URL="$("${SCRIPTS}/postgres.sh" start)" || die "PostgreSQL did not start"
export KSTAGE_TEST_PG_URL="${PG_URL}"
echo "KSTAGE_TEST_PG_URL=${KSTAGE_TEST_PG_URL}" >&2
export KSTAGE_TEST_BOOTSTRAP="${BOOTSTRAP}"
export KSTAGE_TEST_REGISTRY_URL="${REGISTRY_URL}"
export KSTAGE_TEST_REQUIRE_BROKER=1
echo "KSTAGE_TEST_BOOTSTRAP=${KSTAGE_TEST_BOOTSTRAP}" >&2
echo "KSTAGE_TEST_REGISTRY_URL=${KSTAGE_TEST_REGISTRY_URL}" >&2
echo "KSTAGE_TEST_REQUIRE_BROKER=${KSTAGE_TEST_REQUIRE_BROKER}" >&2
done_section

# ---------------------------------------------------------------------------
section "Python test client (scripts/python-env.sh)"
KSTAGE_TEST_PYTHON="$("${SCRIPTS}/python-env.sh")" || die "could not set up the Python test client"
export KSTAGE_TEST_PYTHON
echo "KSTAGE_TEST_PYTHON=${KSTAGE_TEST_PYTHON}" >&2
done_section

# ---------------------------------------------------------------------------
# The network-fault scenarios (tests/it/reliability_network.rs) run Toxiproxy,
# built once from the Go module proxy into the cache (about 2 minutes on a
# fresh machine, nothing after that); each scenario starts its own server.
section "Toxiproxy (scripts/toxiproxy.sh fetch)"
"${SCRIPTS}/toxiproxy.sh" fetch || die "could not build Toxiproxy"
echo "toxiproxy: $("${SCRIPTS}/toxiproxy.sh" bin)" >&2
done_section

# ---------------------------------------------------------------------------
section "cargo test --features ${FEATURES}${CARGO_ARGS[*]:+ ${CARGO_ARGS[*]}} -- ${TEST_ARGS[*]}"
test_rc=0
cargo test --features "${FEATURES}" "${CARGO_ARGS[@]}" -- "${TEST_ARGS[@]}" || test_rc=$?
done_section

if [[ "${KSTAGE_CHECK_TESTCONTAINERS:-0}" == 1 ]]; then
  section "cargo check --features testcontainers --tests"
  check_rc=0
  cargo check --features testcontainers --tests || check_rc=$?
  ((test_rc != 0)) || test_rc=${check_rc}
  done_section
fi

exit "${test_rc}"
