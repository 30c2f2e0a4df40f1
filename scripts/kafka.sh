#!/usr/bin/env bash
# kafka.sh: fetch and run a real Apache Kafka cluster (KRaft mode, no
# ZooKeeper, no Docker) on 127.0.0.1 for the kstage tests.
#
# Usage: scripts/kafka.sh COMMAND [ARGS...]
#
#   fetch                 Download Kafka ${KSTAGE_KAFKA_VERSION} (broker, tools
#                         and a log4j2 setup) from Maven Central into the cache
#                         (outside the repo). No-op and offline once complete.
#   latest                Print the newest Kafka 4.x release on Maven Central.
#   start [--brokers N] [--prop KEY=VALUE]...
#                         Fetch if needed, format fresh KRaft storage and start
#                         N combined broker+controller nodes (default 1) in the
#                         background, wait until every broker answers and print
#                         the bootstrap string. A cluster that is still running
#                         from an earlier start (same data dir) is stopped first.
#                         --prop adds/overrides a server.properties entry.
#   stop                  Stop all nodes (SIGTERM, then SIGKILL after a deadline).
#                         Does nothing if nothing is running.
#   status                Print the state of each node; exit 1 unless all run.
#   bootstrap             Print the bootstrap string of the running cluster.
#   logs [NODE]           Print the tail of a node's server log (default 1).
#   tool CLASS [ARGS...]  Run a Kafka tool class with the cached classpath, e.g.
#                         scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand \
#                           --bootstrap-server "$(scripts/kafka.sh bootstrap)" --list
#
#   Fault injection (node ids are 1..N):
#   kill NODE             SIGKILL the node (kill -9) and wait until it is gone.
#   term NODE             SIGTERM the node and wait until it has exited.
#   pause NODE            SIGSTOP the node (it stops answering, sockets stay open).
#   resume NODE           SIGCONT a paused node.
#   restart NODE          Start a stopped/killed node again on its existing data
#                         and wait until it is back in the cluster metadata.
#   coordinator txn ID    Print the node id of the transaction coordinator of
#                         transactional id ID (the leader of its
#                         __transaction_state partition; the topic is created
#                         if needed, and a missing leader is waited for).
#   coordinator group ID  Print the node id of the group coordinator of group ID
#                         (the leader of its __consumer_offsets partition).
#   help                  Print this text.
#
# Environment:
#   KSTAGE_KAFKA_VERSION        Kafka version (default 4.4.0, newest 4.x on Central)
#   KSTAGE_CACHE                cache root (default $HOME/.cache/kstage); the jars
#                               go to $KSTAGE_CACHE/kafka-<version>/libs
#   KSTAGE_KAFKA_DATA           data/log/pid dir, wiped on start (default /tmp/kstage-kafka)
#   KSTAGE_KAFKA_PORT           first client port (default 39092). Node i (1-based)
#                               listens on PORT+2(i-1) (clients) and PORT+2(i-1)+1
#                               (controller): 39092/39093, 39094/39095, 39096/39097.
#   KSTAGE_KAFKA_START_TIMEOUT  seconds to wait for the cluster/a node (default 120)
#   KSTAGE_KAFKA_STOP_TIMEOUT   seconds to wait after SIGTERM before SIGKILL (default 30)
#   KSTAGE_COORDINATOR_TIMEOUT  seconds `coordinator` waits for a leader (default 30)
#   KSTAGE_KAFKA_HEAP_OPTS      broker heap (default -Xms256m -Xmx512m for one
#                               node, -Xms192m -Xmx384m per node otherwise)
#   KSTAGE_KAFKA_JVM_OPTS       extra broker JVM options
#   KSTAGE_KAFKA_PROPS          extra server properties, whitespace-separated KEY=VALUE
#   KSTAGE_KAFKA_LOG_LEVEL      broker root log level (default INFO; file only)
#   KSTAGE_TOOL_JVM_OPTS        JVM options for `tool` (default -Xmx512m)
#   KSTAGE_M2_REPO              Maven local repository (default: Maven's, ~/.m2/repository)
#   KSTAGE_MAVEN_CENTRAL        Maven Central base URL used by `latest`
#   JAVA_HOME / MVN             java and mvn to use (defaults: java, mvn on PATH)
#
# stdout carries only results (bootstrap string, node ids, paths); progress
# and errors go to stderr.

set -euo pipefail

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

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

client_port() { echo $((BASE_PORT + 2 * ($1 - 1))); }
controller_port() { echo $((BASE_PORT + 2 * ($1 - 1) + 1)); }
node_dir() { echo "${DATA}/node-$1"; }

require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"
}

# ---------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------

write_fetch_pom() {
  local pom="$1"
  cat >"${pom}" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Throwaway pom generated by kstage scripts/kafka.sh to collect Kafka's jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kstage</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>${KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_${SCALA_BINARY}</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <!-- slf4j 1.7 -> log4j2 binding (Kafka 4 logs through slf4j-api 1.7). -->
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
EOF
}

write_tools_log4j() {
  local file="$1"
  cat >"${file}" <<'EOF'
# log4j2 configuration for Kafka command line tools run by scripts/kafka.sh:
# warnings and errors only, to stderr.
status = warn
name = kstage-tools
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
EOF
}

is_fetched() { [[ -f "${COMPLETE_MARKER}" ]]; }

cmd_fetch() {
  if is_fetched; then
    log "Kafka ${KAFKA_VERSION} already in ${LIBS}"
    echo "${LIBS}"
    return 0
  fi
  require_cmd "${MVN}" "Maven is needed once to download Kafka"
  mkdir -p "${CACHE}"
  # Serialise concurrent fetches of the same version.
  local lock="${CACHE}/.kafka-${KAFKA_VERSION}.lock"
  exec {lock_fd}>"${lock}"
  flock -w 900 "${lock_fd}" || die "timed out waiting for ${lock}"
  if is_fetched; then
    exec {lock_fd}>&-
    echo "${LIBS}"
    return 0
  fi

  local tmp="${CACHE}/.kafka-${KAFKA_VERSION}.tmp.$$"
  rm -rf "${tmp}"
  mkdir -p "${tmp}/libs" "${tmp}/config"
  write_fetch_pom "${tmp}/pom.xml"
  log "fetching Kafka ${KAFKA_VERSION} and its runtime dependencies from Maven Central..."
  local mvn_args=(-B -q -f "${tmp}/pom.xml")
  if [[ -n "${KSTAGE_M2_REPO:-}" ]]; then
    mvn_args+=("-Dmaven.repo.local=${KSTAGE_M2_REPO}")
  fi
  if ! "${MVN}" "${mvn_args[@]}" "${DEP_PLUGIN}:copy-dependencies" \
    -DincludeScope=runtime -DoutputDirectory="${tmp}/libs" >"${tmp}/mvn.log" 2>&1; then
    tail -n 40 "${tmp}/mvn.log" >&2 || true
    rm -rf "${tmp}"
    die "Maven could not fetch Kafka ${KAFKA_VERSION} (is the version right? see above)"
  fi
  local jar
  for jar in "kafka_${SCALA_BINARY}-${KAFKA_VERSION}.jar" "kafka-tools-${KAFKA_VERSION}.jar" \
    "kafka-clients-${KAFKA_VERSION}.jar" "log4j-core-${LOG4J_VERSION}.jar" \
    "log4j-slf4j-impl-${LOG4J_VERSION}.jar"; do
    [[ -f "${tmp}/libs/${jar}" ]] || {
      rm -rf "${tmp}"
      die "fetch incomplete: ${jar} missing"
    }
  done
  write_tools_log4j "${tmp}/config/tools-log4j2.properties"
  rm -f "${tmp}/mvn.log"
  printf 'kafka=%s\nlog4j=%s\nfetched=%s\n' "${KAFKA_VERSION}" "${LOG4J_VERSION}" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"${tmp}/.complete"
  # A half-finished directory without a marker may exist from an older,
  # interrupted layout: replace it. The rename makes completion atomic.
  rm -rf "${KAFKA_HOME}"
  mv "${tmp}" "${KAFKA_HOME}"
  exec {lock_fd}>&-
  log "Kafka ${KAFKA_VERSION}: $(find "${LIBS}" -name '*.jar' | wc -l) jars in ${LIBS}"
  echo "${LIBS}"
}

cmd_latest() {
  require_cmd curl "needed to read maven-metadata.xml"
  local base="${KSTAGE_MAVEN_CENTRAL:-https://repo1.maven.org/maven2}"
  curl -fsS -m 60 "${base}/org/apache/kafka/kafka_${SCALA_BINARY}/maven-metadata.xml" |
    grep -o '<version>4\.[0-9]*\.[0-9]*</version>' | sed 's/<[^>]*>//g' |
    sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1
}

ensure_fetched() {
  is_fetched || cmd_fetch >/dev/null
}

# Runs a Kafka class with the cached classpath (quiet logging).
run_class() {
  local cls="$1"
  shift
  "${JAVA}" "${PROBE_JVM_OPTS[@]}" -Dlog4j2.configurationFile="${TOOLS_LOG4J}" \
    -cp "${LIBS}/*" "${cls}" "$@"
}

cmd_tool() {
  [[ $# -ge 1 ]] || die "usage: kafka.sh tool CLASS [ARGS...]"
  ensure_fetched
  local cls="$1"
  shift
  local opts
  read -r -a opts <<<"${KSTAGE_TOOL_JVM_OPTS:--Xmx512m}"
  exec "${JAVA}" "${opts[@]}" -Dlog4j2.configurationFile="${TOOLS_LOG4J}" \
    -cp "${LIBS}/*" "${cls}" "$@"
}

# ---------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------

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
  local deadline=$((SECONDS + $1)) n="$2"
  while port_open "$(client_port "${n}")" || port_open "$(controller_port "${n}")"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

port_holder() {
  ss -Hltnp "sport = :$1" 2>/dev/null | head -n 1 || true
}

# ---------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------

write_broker_log4j() {
  local level="${KSTAGE_KAFKA_LOG_LEVEL:-INFO}"
  cat >"${DATA}/log4j2.properties" <<EOF
# log4j2 configuration for brokers started by scripts/kafka.sh: everything goes
# to \${kafka.logs.dir}/server.log, nothing to the terminal.
status = warn
name = kstage-broker
appender.server.type = File
appender.server.name = SERVER
appender.server.fileName = \${sys:kafka.logs.dir}/server.log
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${level}
rootLogger.appenderRef.server.ref = SERVER
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.requestchannel.name = kafka.network.RequestChannel\$
logger.requestchannel.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
EOF
}

write_server_properties() {
  local n="$1" nodes="$2" file dir voters="" i
  dir="$(node_dir "${n}")"
  file="${dir}/server.properties"
  local rf=$((nodes >= 3 ? 3 : nodes))
  local isr=$((nodes >= 3 ? 2 : 1))
  {
    echo "# Generated by kstage scripts/kafka.sh for node ${n} of ${nodes}."
    echo "process.roles=broker,controller"
    echo "node.id=${n}"
    echo "listeners=PLAINTEXT://127.0.0.1:$(client_port "${n}"),CONTROLLER://127.0.0.1:$(controller_port "${n}")"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$(client_port "${n}"),CONTROLLER://127.0.0.1:$(controller_port "${n}")"
    echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "controller.listener.names=CONTROLLER"
    if ((nodes == 1)); then
      # Dynamic quorum with a single voter (formatted with --standalone).
      echo "controller.quorum.bootstrap.servers=127.0.0.1:$(controller_port 1)"
    else
      # Static quorum: every node is a voter.
      for ((i = 1; i <= nodes; i++)); do
        voters+="${voters:+,}${i}@127.0.0.1:$(controller_port "${i}")"
      done
      echo "controller.quorum.voters=${voters}"
    fi
    echo "log.dirs=${dir}/data"
    echo "num.partitions=1"
    echo "default.replication.factor=${rf}"
    echo "min.insync.replicas=${isr}"
    echo "auto.create.topics.enable=false"
    echo "offsets.topic.replication.factor=${rf}"
    echo "transaction.state.log.replication.factor=${rf}"
    echo "transaction.state.log.min.isr=${isr}"
    echo "share.coordinator.state.topic.replication.factor=${rf}"
    echo "share.coordinator.state.topic.min.isr=${isr}"
    echo "group.initial.rebalance.delay.ms=0"
    echo "group.min.session.timeout.ms=1000"
    echo "transaction.abort.timed.out.transaction.cleanup.interval.ms=10000"
    echo "num.network.threads=2"
    echo "num.io.threads=4"
    echo "num.recovery.threads.per.data.dir=1"
    echo "log.retention.check.interval.ms=300000"
    local kv
    for kv in ${KSTAGE_KAFKA_PROPS:-} "${EXTRA_PROPS[@]}"; do
      [[ "${kv}" == *=* ]] || die "bad property '${kv}' (expected KEY=VALUE)"
      echo "${kv}"
    done
  } >"${file}"
}

format_node() {
  local n="$1" cluster_id="$2" nodes="$3" dir
  dir="$(node_dir "${n}")"
  local args=(format -t "${cluster_id}" -c "${dir}/server.properties")
  if ((nodes == 1)); then
    args+=(--standalone)
  fi
  if ! run_class kafka.tools.StorageTool "${args[@]}" >"${dir}/format.log" 2>&1; then
    cat "${dir}/format.log" >&2
    return 1
  fi
}

launch_node() {
  local n="$1" nodes="$2" dir heap
  dir="$(node_dir "${n}")"
  mkdir -p "${dir}/logs"
  if ((nodes == 1)); then
    heap="${KSTAGE_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
  else
    heap="${KSTAGE_KAFKA_HEAP_OPTS:--Xms192m -Xmx384m}"
  fi
  local opts extra
  read -r -a opts <<<"${heap}"
  read -r -a extra <<<"${KSTAGE_KAFKA_JVM_OPTS:-}"
  local cmd=("${JAVA}" "${opts[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
    "-Dkafka.logs.dir=${dir}/logs" "-Dlog4j2.configurationFile=${DATA}/log4j2.properties"
    "${extra[@]}" -cp "${LIBS}/*" kafka.Kafka "${dir}/server.properties")
  rm -f "${dir}/pid"
  # New session: the broker survives this script and is not hit by the
  # terminal's Ctrl-C. The wrapper records its own pid, then execs java.
  # shellcheck disable=SC2016 # $$ and $1 are expanded by the inner shell.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' kstage-kafka "${dir}/pid" "${cmd[@]}" \
    </dev/null >"${dir}/stdout.log" 2>&1 {LOCK_FD}>&- &
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s "${dir}/pid" ]] && return 0
    sleep 0.05
  done
  die "node ${n} did not start (no pid file)"
}

# Ids of the unfenced brokers listed in the metadata served at $1.
live_broker_ids() {
  run_class org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$1" 2>/dev/null |
    sed -n 's/^[^ ]* (id: \([0-9]*\) rack.*/\1/p' | sort -n | tr '\n' ' '
}

# Waits until nodes $2.. are all alive, listening and registered (unfenced)
# in the metadata served by bootstrap $1.
wait_ready() {
  local bootstrap="$1"
  shift
  local want=("$@") deadline=$((SECONDS + START_TIMEOUT)) n ids missing
  while true; do
    for n in "${want[@]}"; do
      if ! node_pid "${n}" >/dev/null; then
        log_tail "${n}"
        die "node ${n} exited during start-up (logs: $(node_dir "${n}")/logs)"
      fi
    done
    missing=""
    for n in "${want[@]}"; do
      port_open "$(client_port "${n}")" || missing+=" ${n}"
    done
    if [[ -z "${missing}" ]]; then
      ids=" $(live_broker_ids "${bootstrap}")"
      for n in "${want[@]}"; do
        [[ "${ids}" == *" ${n} "* ]] || missing+=" ${n}"
      done
      [[ -n "${missing}" ]] || return 0
    fi
    if ((SECONDS >= deadline)); then
      for n in ${missing}; do log_tail "${n}"; done
      die "node(s)${missing} did not come up within ${START_TIMEOUT}s (data: ${DATA})"
    fi
    sleep 0.5
  done
}

prepare_data_dir() {
  case "${DATA}" in
    "" | / | "${HOME}" | "${HOME}/") die "refusing to use '${DATA}' as KSTAGE_KAFKA_DATA" ;;
  esac
  if [[ -e "${DATA}" && ! -f "${DATA_MARKER}" ]] && [[ -n "$(ls -A "${DATA}" 2>/dev/null)" ]]; then
    die "${DATA} exists and was not created by kafka.sh; refusing to wipe it"
  fi
  rm -rf "${DATA}"
  mkdir -p "${DATA}"
  : >"${DATA_MARKER}"
}

take_lock() {
  mkdir -p "$(dirname "${DATA}")"
  exec {LOCK_FD}>"${DATA}.lock"
  flock -w 300 "${LOCK_FD}" || die "another kafka.sh holds ${DATA}.lock"
}

cmd_start() {
  local nodes=1
  EXTRA_PROPS=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --brokers)
        [[ $# -ge 2 ]] || die "--brokers needs a value"
        nodes="$2"
        shift 2
        ;;
      --brokers=*)
        nodes="${1#*=}"
        shift
        ;;
      --prop)
        [[ $# -ge 2 ]] || die "--prop needs KEY=VALUE"
        EXTRA_PROPS+=("$2")
        shift 2
        ;;
      *) die "unknown start option '$1' (see: kafka.sh help)" ;;
    esac
  done
  [[ "${nodes}" =~ ^[1-9]$ ]] || die "--brokers must be between 1 and 9"
  require_cmd "${JAVA}" "install a Java 17+ runtime"
  local t0=${SECONDS}
  ensure_fetched
  take_lock

  # A cluster left over from an earlier start is stopped, not reused.
  if load_cluster 2>/dev/null; then
    local n running=""
    for ((n = 1; n <= NODES; n++)); do
      node_pid "${n}" >/dev/null && running+=" ${n}"
    done
    if [[ -n "${running}" ]]; then
      log "stopping the cluster still running from an earlier start (node(s)${running})"
      stop_all
    fi
  fi
  local i port holder busy=""
  for ((i = 1; i <= nodes; i++)); do
    for port in "$(client_port "${i}")" "$(controller_port "${i}")"; do
      if port_open "${port}"; then
        holder="$(port_holder "${port}")"
        busy+=$'\n'"  port ${port}: ${holder:-in use}"
      fi
    done
  done
  [[ -z "${busy}" ]] || die "ports needed by the cluster are already in use (a broker not started by this data dir?):${busy}"

  prepare_data_dir
  write_broker_log4j
  local cluster_id bootstrap=""
  cluster_id="$(run_class kafka.tools.StorageTool random-uuid)" || die "StorageTool random-uuid failed"
  for ((i = 1; i <= nodes; i++)); do
    mkdir -p "$(node_dir "${i}")/logs"
    write_server_properties "${i}" "${nodes}"
    bootstrap+="${bootstrap:+,}127.0.0.1:$(client_port "${i}")"
  done
  # Format in parallel (each is a JVM start-up).
  local pids=() failed=0
  for ((i = 1; i <= nodes; i++)); do
    format_node "${i}" "${cluster_id}" "${nodes}" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "${i}" || failed=1; done
  ((failed == 0)) || die "formatting KRaft storage failed"
  printf 'NODES=%s\nBOOTSTRAP=%s\nCLUSTER_ID=%s\nVERSION=%s\n' \
    "${nodes}" "${bootstrap}" "${cluster_id}" "${KAFKA_VERSION}" >"${CLUSTER_ENV}"

  log "starting ${nodes} node(s) of Kafka ${KAFKA_VERSION} (data: ${DATA})"
  # Do not leave half a cluster behind when start-up fails.
  trap 'rc=$?; if ((rc != 0)); then log "start failed; stopping the nodes"; stop_all; fi' EXIT
  for ((i = 1; i <= nodes; i++)); do
    launch_node "${i}" "${nodes}"
  done
  local all=()
  for ((i = 1; i <= nodes; i++)); do all+=("${i}"); done
  wait_ready "${bootstrap}" "${all[@]}"
  trap - EXIT
  log "cluster up in $((SECONDS - t0))s: ${bootstrap}"
  echo "${bootstrap}"
}

# ---------------------------------------------------------------------------
# stop / status / faults
# ---------------------------------------------------------------------------

stop_all() {
  load_cluster || return 0
  local n pid pids=()
  for ((n = 1; n <= NODES; n++)); do
    if pid="$(node_pid "${n}")"; then
      kill -CONT "${pid}" 2>/dev/null || true
      kill -TERM "${pid}" 2>/dev/null || true
      pids+=("${n}:${pid}")
    fi
  done
  local entry deadline=$((SECONDS + STOP_TIMEOUT))
  for entry in "${pids[@]}"; do
    n="${entry%%:*}"
    pid="${entry#*:}"
    if ! wait_gone "${pid}" $((deadline > SECONDS ? deadline - SECONDS : 0)); then
      log "node ${n} (pid ${pid}) did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "${pid}" 2>/dev/null || true
      wait_gone "${pid}" 10 || log "node ${n} (pid ${pid}) survived SIGKILL"
    fi
    rm -f "$(node_dir "${n}")/pid"
  done
  ((${#pids[@]} == 0)) || log "stopped ${#pids[@]} node(s)"
}

cmd_stop() {
  take_lock
  stop_all
}

cmd_status() {
  if ! load_cluster; then
    echo "not running (no cluster in ${DATA})"
    return 1
  fi
  local n state all_up=0 pid
  for ((n = 1; n <= NODES; n++)); do
    state="$(node_state "${n}")"
    pid="$(node_pid "${n}" || true)"
    printf 'node %s: %-7s pid=%-8s client=127.0.0.1:%s controller=127.0.0.1:%s\n' \
      "${n}" "${state}" "${pid:--}" "$(client_port "${n}")" "$(controller_port "${n}")"
    [[ "${state}" == running ]] || all_up=1
  done
  echo "bootstrap: ${BOOTSTRAP}"
  return "${all_up}"
}

cmd_bootstrap() {
  load_cluster || die "no cluster in ${DATA} (run: kafka.sh start)"
  local n
  for ((n = 1; n <= NODES; n++)); do
    if node_pid "${n}" >/dev/null; then
      echo "${BOOTSTRAP}"
      return 0
    fi
  done
  die "the cluster in ${DATA} is not running"
}

cmd_logs() {
  local n="${1:-1}"
  check_node_arg "${n}"
  log_tail "${n}" "${2:-100}" 2>&1
}

cmd_signal() {
  local sig="$1" n="$2" pid
  check_node_arg "${n}"
  pid="$(node_pid "${n}")" || die "node ${n} is not running"
  case "${sig}" in
    KILL)
      kill -KILL "${pid}"
      wait_gone "${pid}" 10 || die "node ${n} (pid ${pid}) survived SIGKILL"
      rm -f "$(node_dir "${n}")/pid"
      wait_ports_closed 10 "${n}" || log "warning: node ${n}'s ports still accept connections"
      log "node ${n} killed (SIGKILL)"
      ;;
    TERM)
      kill -CONT "${pid}" 2>/dev/null || true
      kill -TERM "${pid}"
      if ! wait_gone "${pid}" "${STOP_TIMEOUT}"; then
        log "node ${n} did not exit within ${STOP_TIMEOUT}s of SIGTERM; sending SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
        wait_gone "${pid}" 10 || die "node ${n} (pid ${pid}) survived SIGKILL"
      fi
      rm -f "$(node_dir "${n}")/pid"
      wait_ports_closed 10 "${n}" || log "warning: node ${n}'s ports still accept connections"
      log "node ${n} stopped (SIGTERM)"
      ;;
    STOP)
      kill -STOP "${pid}"
      log "node ${n} paused (SIGSTOP)"
      ;;
    CONT)
      kill -CONT "${pid}"
      log "node ${n} resumed (SIGCONT)"
      ;;
  esac
}

cmd_restart() {
  local n="$1"
  check_node_arg "${n}"
  take_lock
  node_pid "${n}" >/dev/null && die "node ${n} is still running (use kill/term first)"
  local t0=${SECONDS} port
  port="$(client_port "${n}")"
  # The old process is gone; its sockets may linger for a moment, but nothing
  # else may hold the ports.
  if ! wait_ports_closed 15 "${n}"; then
    die "a port of node ${n} is in use: $(port_holder "${port}") $(port_holder "$(controller_port "${n}")")"
  fi
  log "restarting node ${n}"
  launch_node "${n}" "${NODES}"
  # Ask the node itself: it is back once it lists itself as unfenced.
  wait_ready "127.0.0.1:${port}" "${n}"
  log "node ${n} back in $((SECONDS - t0))s"
}

# Java's String.hashCode over UTF-16 code units, then Kafka's Utils.abs(h) % parts.
kafka_partition_for() {
  local id="$1" parts="$2" h=0 hi lo bytes
  bytes="$(printf '%s' "${id}" | iconv -f UTF-8 -t UTF-16BE | od -An -v -tu1)"
  read -r -a bytes <<<"$(echo "${bytes}" | tr -s ' \n' '  ')"
  local i
  for ((i = 0; i + 1 < ${#bytes[@]}; i += 2)); do
    hi="${bytes[i]}"
    lo="${bytes[i + 1]}"
    h=$(((h * 31 + hi * 256 + lo) & 0xFFFFFFFF))
  done
  ((h < 2147483648)) || h=$((h - 4294967296))
  if ((h == -2147483648)); then
    h=0
  elif ((h < 0)); then
    h=$((-h))
  fi
  echo $((h % parts))
}

cmd_coordinator() {
  [[ $# -eq 2 ]] || die "usage: kafka.sh coordinator txn|group ID"
  local kind="$1" id="$2" topic trigger
  case "${kind}" in
    txn | transaction)
      kind=txn
      topic="__transaction_state"
      trigger=(org.apache.kafka.tools.TransactionsCommand describe --transactional-id "${id}")
      ;;
    group)
      topic="__consumer_offsets"
      trigger=(org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --describe --group "${id}")
      ;;
    *) die "usage: kafka.sh coordinator txn|group ID" ;;
  esac
  require_cmd iconv "needed to hash the id like Java does"
  local bootstrap
  bootstrap="$(cmd_bootstrap)"
  ensure_fetched
  # Retries for a while: the internal topic may not exist yet (a FindCoordinator
  # request creates it) or its partition may be between leaders after a fault.
  local deadline=$((SECONDS + ${KSTAGE_COORDINATOR_TIMEOUT:-30})) triggered=0
  local desc parts partition="" leader="" last=""
  while true; do
    if desc="$(run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "${bootstrap}" \
      --describe --topic "${topic}" 2>&1)"; then
      parts="$(sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' <<<"${desc}" | head -n 1)"
      if [[ -n "${parts}" ]]; then
        partition="$(kafka_partition_for "${id}" "${parts}")"
        leader="$(grep -P "\tPartition: ${partition}\t" <<<"${desc}" |
          sed -n 's/.*Leader: *\([-0-9a-z]*\).*/\1/p' | head -n 1)"
        if [[ "${leader}" =~ ^[0-9]+$ ]]; then
          log "${kind} '${id}' -> ${topic} partition ${partition} -> leader ${leader}"
          echo "${leader}"
          return 0
        fi
        last="${topic} partition ${partition} has no leader (${leader:-unknown})"
      else
        last="could not read the partition count of ${topic}"
      fi
    else
      last="$(grep -m 1 -E 'Error|Exception' <<<"${desc}" || true)"
      if ((triggered == 0)); then
        log "${topic} does not exist yet; sending FindCoordinator so that the cluster creates it"
        run_class "${trigger[0]}" --bootstrap-server "${bootstrap}" "${trigger[@]:1}" >/dev/null 2>&1 || true
        triggered=1
        continue
      fi
    fi
    ((SECONDS < deadline)) || die "no ${kind} coordinator for '${id}': ${last}"
    sleep 1
  done
}

main() {
  local sub="${1:-help}"
  [[ $# -eq 0 ]] || shift
  case "${sub}" in
    fetch) cmd_fetch "$@" ;;
    latest) cmd_latest ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    bootstrap) cmd_bootstrap ;;
    logs) cmd_logs "$@" ;;
    tool) cmd_tool "$@" ;;
    kill) cmd_signal KILL "$@" ;;
    term) cmd_signal TERM "$@" ;;
    pause) cmd_signal STOP "$@" ;;
    resume) cmd_signal CONT "$@" ;;
    restart) cmd_restart "$@" ;;
    coordinator) cmd_coordinator "$@" ;;
    help | -h | --help) usage ;;
    *)
      usage >&2
      die "unknown command '${sub}'"
      ;;
  esac
}

main "$@"
