# shellcheck shell=bash
# shellcheck disable=SC2034 # the settings are read by the other files
# scripts/kafka/common.sh: what every part of scripts/kafka.sh shares.
#
# Sourced by scripts/kafka.sh (first, before the other files); not run on its
# own. Defines:
#   - the settings read from the environment (KSTAGE_KAFKA_VERSION, KSTAGE_CACHE,
#     KSTAGE_KAFKA_DATA, KSTAGE_KAFKA_PORT, timeouts, JAVA_HOME, MVN; see
#     `kafka.sh help`) and the cache and data paths derived from them (the
#     variables only one command uses are read in that command's file);
#   - log/die (stderr, prefixed "kafka.sh:"), require_cmd;
#   - the port layout (set_secure, client_port, controller_port, mtls_port,
#     node_ports) and node_dir;
#   - node process helpers: node_pid, node_state, load_cluster (reads
#     DATA/cluster.env into NODES, BOOTSTRAP, SECURE), check_node_arg,
#     log_tail, wait_gone, port_open, wait_ports_closed, port_holder, and
#     take_lock (the per-data-dir lock held by start, stop and restart).
# Relies on: bash 4.3+, set -euo pipefail (set by kafka.sh), Linux /proc,
# flock, ss (only to name a port's holder in error messages).

readonly KAFKA_VERSION="${KSTAGE_KAFKA_VERSION:-4.4.0}"
# log4j2 binding for Kafka's slf4j 1.7 API; same version Kafka 4.4.0 uses.
readonly LOG4J_VERSION="${KSTAGE_LOG4J_VERSION:-2.25.5}"
readonly SCALA_BINARY="2.13"
readonly DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

readonly CACHE="${KSTAGE_CACHE:-${HOME}/.cache/kstage}"
readonly KAFKA_HOME="${CACHE}/kafka-${KAFKA_VERSION}"
readonly LIBS="${KAFKA_HOME}/libs"
readonly COMPLETE_MARKER="${KAFKA_HOME}/.complete"
readonly TOOLS_LOG4J="${KAFKA_HOME}/config/tools-log4j2.properties"

readonly DATA="${KSTAGE_KAFKA_DATA:-/tmp/kstage-kafka}"
readonly DATA_MARKER="${DATA}/.kstage-kafka"
readonly CLUSTER_ENV="${DATA}/cluster.env"
readonly BASE_PORT="${KSTAGE_KAFKA_PORT:-39092}"
readonly START_TIMEOUT="${KSTAGE_KAFKA_START_TIMEOUT:-120}"
readonly STOP_TIMEOUT="${KSTAGE_KAFKA_STOP_TIMEOUT:-30}"

# Secure mode's files (see secure.sh).
readonly SECURE_DIR="${DATA}/secure"
readonly SECURE_ENV="${SECURE_DIR}/client.env"
readonly ADMIN_CONFIG="${SECURE_DIR}/admin.properties"
# CN (and so principal name) of the client certificate start issues for the
# mTLS listener.
readonly MTLS_CN="kstage-mtls"

if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA="${JAVA_HOME}/bin/java"
else
  JAVA="java"
fi
readonly JAVA
readonly MVN="${MVN:-mvn}"

# Small, quick-starting JVM for the short-lived helper tools the script runs.
readonly PROBE_JVM_OPTS=(-Xms32m -Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto)

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
  printf 'kafka.sh: error: %s\n' "$*" >&2
  exit 1
}

# Secure mode (SECURE=1) uses three ports per node instead of two; set by
# `start --secure` and by load_cluster from the cluster's env file.
SECURE=0
STRIDE=2
# Arguments that authenticate a Kafka tool as admin (empty unless secure).
ADMIN_ARGS=()
set_secure() {
  SECURE="$1"
  STRIDE=$((SECURE == 1 ? 3 : 2))
  ADMIN_ARGS=()
  if ((SECURE == 1)); then ADMIN_ARGS=(--command-config "${ADMIN_CONFIG}"); fi
}

# Proxied mode (PROXIED=1, `start --proxied`): each node also listens on
# proxied_port and advertises proxy_port there, where a proxy (Toxiproxy,
# scripts/toxiproxy.sh) forwards to proxied_port: a client that bootstraps
# from the proxy ports gets metadata naming only proxy ports.
PROXIED=0
proxy_port() { echo $((BASE_PORT + 10 + STRIDE * ($1 - 1))); }
proxied_port() { echo $((BASE_PORT + 20 + STRIDE * ($1 - 1))); }
client_port() { echo $((BASE_PORT + STRIDE * ($1 - 1))); }
controller_port() { echo $((BASE_PORT + STRIDE * ($1 - 1) + 1)); }
mtls_port() { echo $((BASE_PORT + STRIDE * ($1 - 1) + 2)); }
# Every port node $1 listens on.
node_ports() {
  client_port "$1"
  controller_port "$1"
  if ((SECURE == 1)); then mtls_port "$1"; fi
  if ((PROXIED == 1)); then proxied_port "$1"; fi
}
node_dir() { echo "${DATA}/node-$1"; }

require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"
}


# Prints the pid of node $1 if that process is alive and is a Kafka broker.
node_pid() {
  local pidfile
  pidfile="$(node_dir "$1")/pid"
  [[ -f "${pidfile}" ]] || return 1
  local pid
  pid="$(<"${pidfile}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/${pid}/cmdline" ]] || return 1
  # Guard against a recycled pid: it must be our broker.
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  # A zombie is not alive.
  [[ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" != "Z" ]] || return 1
  echo "${pid}"
}

node_state() {
  local pid
  pid="$(node_pid "$1")" || {
    echo stopped
    return 0
  }
  case "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" in
    T | t) echo paused ;;
    *) echo running ;;
  esac
}

load_cluster() {
  [[ -f "${CLUSTER_ENV}" ]] || return 1
  NODES="$(sed -n 's/^NODES=//p' "${CLUSTER_ENV}")"
  BOOTSTRAP="$(sed -n 's/^BOOTSTRAP=//p' "${CLUSTER_ENV}")"
  local secure
  secure="$(sed -n 's/^SECURE=//p' "${CLUSTER_ENV}")"
  set_secure "${secure:-0}"
  PROXIED="$(sed -n 's/^PROXIED=//p' "${CLUSTER_ENV}")"
  PROXIED="${PROXIED:-0}"
  [[ "${NODES}" =~ ^[0-9]+$ ]] || return 1
}

check_node_arg() {
  [[ $# -eq 1 && "$1" =~ ^[0-9]+$ ]] || die "expected a node id"
  load_cluster || die "no cluster in ${DATA} (run: kafka.sh start)"
  ((1 <= $1 && $1 <= NODES)) || die "node $1 does not exist (nodes are 1..${NODES})"
}

log_tail() {
  local n="$1" lines="${2:-40}" dir
  dir="$(node_dir "${n}")"
  if [[ -s "${dir}/logs/server.log" ]]; then
    echo "---- tail of ${dir}/logs/server.log ----" >&2
    tail -n "${lines}" "${dir}/logs/server.log" >&2 || true
  fi
  if [[ -s "${dir}/stdout.log" ]]; then
    echo "---- tail of ${dir}/stdout.log ----" >&2
    tail -n 20 "${dir}/stdout.log" >&2 || true
  fi
}

wait_gone() {
  local pid="$1" deadline=$((SECONDS + $2))
  while [[ -d "/proc/${pid}" ]] && [[ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" != "Z" ]]; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits up to $1 seconds until node $2's ports no longer accept connections
# (a killed process's listening sockets can linger for a moment).
wait_ports_closed() {
  local deadline=$((SECONDS + $1)) n="$2" port open
  while true; do
    open=0
    for port in $(node_ports "${n}"); do
      if port_open "${port}"; then
        open=1
        break
      fi
    done
    ((open == 1)) || return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

port_holder() {
  ss -Hltnp "sport = :$1" 2>/dev/null | head -n 1 || true
}

# Takes the lock of the data dir (held until the script exits) so that start,
# stop and restart of the same cluster do not interleave.
take_lock() {
  mkdir -p "$(dirname "${DATA}")"
  exec {LOCK_FD}>"${DATA}.lock"
  flock -w 300 "${LOCK_FD}" || die "another kafka.sh holds ${DATA}.lock"
}
