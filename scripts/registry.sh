#!/usr/bin/env bash
# registry.sh: fetch and run Apicurio Registry 3.x (in-memory storage) on
# 127.0.0.1 as the Confluent-compatible schema registry for the kstage tests.
#
# Usage: scripts/registry.sh COMMAND
#
#   fetch     Download apicurio-registry-app-<version>-all.tar.gz from Maven
#             Central (checksum verified) and unpack it into the cache, outside
#             the repo. No-op and offline once complete.
#   start     Fetch if needed, start the registry in the background (a registry
#             still running from an earlier start is stopped first), wait until
#             the ccompat API answers and print its base URL, e.g.
#             http://127.0.0.1:38081/apis/ccompat/v7
#   stop      Stop it (SIGTERM, SIGKILL after a deadline); no-op if not running.
#   status    Print whether it runs and answers; exit 1 if not.
#   url       Print the Confluent-compatible base URL of the running registry.
#   logs      Print the tail of the registry log.
#   help      Print this text.
#
# Environment:
#   KSTAGE_REGISTRY_VERSION        Apicurio version (default 3.0.9: the newest 3.x on
#                                  Maven Central that runs on Java 17; 3.3.x needs
#                                  Java 21, see KSTAGE_REGISTRY_JAVA)
#   KSTAGE_CACHE                   cache root (default $HOME/.cache/kstage); the app
#                                  goes to $KSTAGE_CACHE/apicurio-<version>
#   KSTAGE_REGISTRY_PORT           HTTP port (default 38081)
#   KSTAGE_REGISTRY_MGMT_PORT      Quarkus management port (default PORT+1)
#   KSTAGE_REGISTRY_DATA           pid/log dir, wiped on start (default /tmp/kstage-registry)
#   KSTAGE_REGISTRY_START_TIMEOUT  seconds to wait for it to answer (default 120)
#   KSTAGE_REGISTRY_STOP_TIMEOUT   seconds after SIGTERM before SIGKILL (default 20)
#   KSTAGE_REGISTRY_HEAP_OPTS      heap (default -Xms64m -Xmx384m)
#   KSTAGE_REGISTRY_JVM_OPTS       extra JVM options / -D properties
#   KSTAGE_REGISTRY_JAVA           java binary (default $JAVA_HOME/bin/java or java)
#   KSTAGE_MAVEN_CENTRAL           Maven Central base URL
#
# stdout carries only results (URLs, paths); progress and errors go to stderr.

set -euo pipefail

readonly VERSION="${KSTAGE_REGISTRY_VERSION:-3.0.9}"
readonly CENTRAL="${KSTAGE_MAVEN_CENTRAL:-https://repo1.maven.org/maven2}"
readonly CACHE="${KSTAGE_CACHE:-${HOME}/.cache/kstage}"
readonly APP_HOME="${CACHE}/apicurio-${VERSION}"
readonly COMPLETE_MARKER="${APP_HOME}/.complete"
readonly PORT="${KSTAGE_REGISTRY_PORT:-38081}"
readonly MGMT_PORT="${KSTAGE_REGISTRY_MGMT_PORT:-$((PORT + 1))}"
readonly DATA="${KSTAGE_REGISTRY_DATA:-/tmp/kstage-registry}"
readonly DATA_MARKER="${DATA}/.kstage-registry"
readonly PIDFILE="${DATA}/pid"
readonly LOGFILE="${DATA}/registry.log"
readonly START_TIMEOUT="${KSTAGE_REGISTRY_START_TIMEOUT:-120}"
readonly STOP_TIMEOUT="${KSTAGE_REGISTRY_STOP_TIMEOUT:-20}"
readonly BASE_URL="http://127.0.0.1:${PORT}"
readonly CCOMPAT_URL="${BASE_URL}/apis/ccompat/v7"

if [[ -n "${KSTAGE_REGISTRY_JAVA:-}" ]]; then
  JAVA="${KSTAGE_REGISTRY_JAVA}"
elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA="${JAVA_HOME}/bin/java"
else
  JAVA="java"
fi
readonly JAVA

log() { printf 'registry.sh: %s\n' "$*" >&2; }
die() {
  printf 'registry.sh: error: %s\n' "$*" >&2
  exit 1
}
usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }
require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"
}

# Reads KEY from the completion marker.
marker_get() { sed -n "s/^$1=//p" "${COMPLETE_MARKER}"; }

# Java major version a class file needs (class file major version - 44).
class_java_major() {
  local jar="$1" entry="$2" major
  major="$(unzip -p "${jar}" "${entry}" 2>/dev/null | head -c 8 | od -An -v -tu1 | awk '{print $7 * 256 + $8}')"
  [[ "${major}" =~ ^[0-9]+$ ]] && ((major > 44)) || return 1
  echo $((major - 44))
}

cmd_fetch() {
  if [[ -f "${COMPLETE_MARKER}" ]]; then
    log "Apicurio Registry ${VERSION} already in ${APP_HOME}"
    echo "${APP_HOME}"
    return 0
  fi
  require_cmd curl "needed to download from Maven Central"
  require_cmd unzip "needed to inspect the jars"
  mkdir -p "${CACHE}"
  local lock="${CACHE}/.apicurio-${VERSION}.lock"
  exec {lock_fd}>"${lock}"
  flock -w 900 "${lock_fd}" || die "timed out waiting for ${lock}"
  if [[ -f "${COMPLETE_MARKER}" ]]; then
    exec {lock_fd}>&-
    echo "${APP_HOME}"
    return 0
  fi
  local tmp="${CACHE}/.apicurio-${VERSION}.tmp.$$"
  rm -rf "${tmp}"
  mkdir -p "${tmp}/app"
  # Plain HTTP GET from Maven Central: `mvn dependency:unpack` cannot resolve
  # some Apicurio releases (3.0.9's parent POM is not on Central).
  local url="${CENTRAL}/io/apicurio/apicurio-registry-app/${VERSION}/apicurio-registry-app-${VERSION}-all.tar.gz"
  log "fetching ${url}"
  if ! curl -fsSL --retry 3 -m 900 -o "${tmp}/app.tar.gz" "${url}" ||
    ! curl -fsSL --retry 3 -m 60 -o "${tmp}/app.tar.gz.sha1" "${url}.sha1"; then
    rm -rf "${tmp}"
    die "download of Apicurio Registry ${VERSION} failed (does that version exist on Maven Central?)"
  fi
  local want got
  want="$(tr -d ' \n\r' <"${tmp}/app.tar.gz.sha1" | cut -c1-40)"
  got="$(sha1sum "${tmp}/app.tar.gz" | cut -d' ' -f1)"
  if [[ "${want}" != "${got}" ]]; then
    rm -rf "${tmp}"
    die "checksum mismatch for ${url} (expected ${want}, got ${got})"
  fi
  tar -xzf "${tmp}/app.tar.gz" -C "${tmp}/app"
  rm -f "${tmp}/app.tar.gz" "${tmp}/app.tar.gz.sha1"

  # 3.0.x ships a legacy runner jar, 3.1+ the Quarkus fast-jar layout.
  local runner="" jar probe_jar="" java_major=""
  if [[ -f "${tmp}/app/quarkus-run.jar" ]]; then
    runner="app/quarkus-run.jar"
  else
    for jar in "${tmp}"/app/*-runner.jar; do
      [[ -f "${jar}" ]] && runner="app/${jar##*/}"
    done
  fi
  [[ -n "${runner}" ]] || {
    rm -rf "${tmp}"
    die "no quarkus-run.jar or *-runner.jar in the Apicurio ${VERSION} archive"
  }
  for jar in "${tmp}"/app/app/*.jar "${tmp}"/app/*-runner.jar; do
    [[ -f "${jar}" ]] || continue
    if unzip -l "${jar}" 'io/apicurio/registry/AppConfiguration.class' >/dev/null 2>&1; then
      probe_jar="${jar}"
      break
    fi
  done
  if [[ -n "${probe_jar}" ]]; then
    java_major="$(class_java_major "${probe_jar}" 'io/apicurio/registry/AppConfiguration.class' || true)"
  fi
  printf 'version=%s\nrunner=%s\njava=%s\nfetched=%s\n' "${VERSION}" "${runner}" \
    "${java_major:-17}" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"${tmp}/.complete"
  rm -rf "${APP_HOME}"
  mv "${tmp}" "${APP_HOME}"
  exec {lock_fd}>&-
  log "Apicurio Registry ${VERSION} in ${APP_HOME} (needs Java ${java_major:-17}+)"
  echo "${APP_HOME}"
}

java_major() {
  "${JAVA}" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n 1
}

registry_pid() {
  [[ -f "${PIDFILE}" ]] || return 1
  local pid
  pid="$(<"${PIDFILE}")"
  [[ "${pid}" =~ ^[0-9]+$ && -r "/proc/${pid}/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q 'kstage.registry=1' || return 1
  [[ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" != "Z" ]] || return 1
  echo "${pid}"
}

wait_gone() {
  local pid="$1" deadline=$((SECONDS + $2))
  while [[ -d "/proc/${pid}" ]] && [[ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" != "Z" ]]; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

answers() { curl -fsS -m 5 -o /dev/null "${CCOMPAT_URL}/subjects" 2>/dev/null; }

log_tail() {
  if [[ -s "${LOGFILE}" ]]; then
    echo "---- tail of ${LOGFILE} ----" >&2
    grep -v 'apicurio-registry.access' "${LOGFILE}" | tail -n "${1:-40}" >&2 || true
  fi
}

stop_registry() {
  local pid
  pid="$(registry_pid)" || return 0
  kill -CONT "${pid}" 2>/dev/null || true
  kill -TERM "${pid}" 2>/dev/null || true
  if ! wait_gone "${pid}" "${STOP_TIMEOUT}"; then
    log "registry (pid ${pid}) did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    wait_gone "${pid}" 10 || log "registry (pid ${pid}) survived SIGKILL"
  fi
  rm -f "${PIDFILE}"
  log "stopped the registry"
}

cmd_start() {
  require_cmd curl "needed to probe the registry"
  local t0=${SECONDS}
  [[ -f "${COMPLETE_MARKER}" ]] || cmd_fetch >/dev/null
  local need have
  need="$(marker_get java)"
  have="$(java_major)"
  [[ -n "${have}" ]] || die "cannot run '${JAVA}' (install Java ${need:-17}+ or set KSTAGE_REGISTRY_JAVA)"
  if ((have < ${need:-17})); then
    die "Apicurio Registry ${VERSION} needs Java ${need}+, but '${JAVA}' is Java ${have}; set KSTAGE_REGISTRY_JAVA to a Java ${need} binary or use KSTAGE_REGISTRY_VERSION=3.0.9"
  fi

  mkdir -p "$(dirname "${DATA}")"
  exec {LOCK_FD}>"${DATA}.lock"
  flock -w 300 "${LOCK_FD}" || die "another registry.sh holds ${DATA}.lock"
  if registry_pid >/dev/null; then
    log "stopping the registry still running from an earlier start"
    stop_registry
  fi
  local port
  for port in "${PORT}" "${MGMT_PORT}"; do
    if port_open "${port}"; then
      die "port ${port} is already in use: $(ss -Hltnp "sport = :${port}" 2>/dev/null | head -n 1 || true)"
    fi
  done
  case "${DATA}" in
    "" | / | "${HOME}" | "${HOME}/") die "refusing to use '${DATA}' as KSTAGE_REGISTRY_DATA" ;;
    *) ;;
  esac
  if [[ -e "${DATA}" && ! -f "${DATA_MARKER}" ]] && [[ -n "$(ls -A "${DATA}" 2>/dev/null || true)" ]]; then
    die "${DATA} exists and was not created by registry.sh; refusing to wipe it"
  fi
  rm -rf "${DATA}"
  mkdir -p "${DATA}/tmp"
  : >"${DATA_MARKER}"

  local heap extra
  read -r -a heap <<<"${KSTAGE_REGISTRY_HEAP_OPTS:--Xms64m -Xmx384m}"
  read -r -a extra <<<"${KSTAGE_REGISTRY_JVM_OPTS:-}"
  local cmd=("${JAVA}" "${heap[@]}" -XX:+UseSerialGC -XX:TieredStopAtLevel=1
    -Dkstage.registry=1 "-Djava.io.tmpdir=${DATA}/tmp"
    -Dquarkus.http.host=127.0.0.1 "-Dquarkus.http.port=${PORT}"
    -Dquarkus.management.host=127.0.0.1 "-Dquarkus.management.port=${MGMT_PORT}"
    -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2
    -Dapicurio.datasource.url=jdbc:h2:mem:kstage
    -Dapicurio.datasource.jdbc.initial-size=2 -Dapicurio.datasource.jdbc.min-size=2
    -Dapicurio.datasource.jdbc.max-size=20
    "-Dapicurio.storage.snapshot.location=${DATA}/tmp" "-Dapicurio.import.work-dir=${DATA}/tmp"
    -Dapicurio.rest.artifact.deletion.enabled=true
    -Dapicurio.rest.deletion.group.enabled=true -Dapicurio.rest.deletion.artifact.enabled=true
    -Dapicurio.rest.deletion.artifact-version.enabled=true
    "${extra[@]}" -jar "${APP_HOME}/$(marker_get runner)")
  log "starting Apicurio Registry ${VERSION} on ${BASE_URL} (log: ${LOGFILE})"
  # Do not leave a half-started registry behind when start-up fails.
  trap 'rc=$?; if ((rc != 0)); then stop_registry; fi' EXIT
  # shellcheck disable=SC2016 # $$ and $1 are expanded by the inner shell.
  setsid bash -c 'echo $$ >"$1"; cd "$2" || exit 1; shift 2; exec "$@"' kstage-registry \
    "${PIDFILE}" "${DATA}" "${cmd[@]}" </dev/null >"${LOGFILE}" 2>&1 {LOCK_FD}>&- &
  local deadline=$((SECONDS + START_TIMEOUT)) i
  for ((i = 0; i < 100; i++)); do
    [[ -s "${PIDFILE}" ]] && break
    sleep 0.05
  done
  while ! answers; do
    if ! registry_pid >/dev/null; then
      log_tail
      die "the registry exited during start-up (log: ${LOGFILE})"
    fi
    if ((SECONDS >= deadline)); then
      log_tail
      die "the registry did not answer on ${CCOMPAT_URL}/subjects within ${START_TIMEOUT}s (log: ${LOGFILE})"
    fi
    sleep 0.25
  done
  trap - EXIT
  log "registry up in $((SECONDS - t0))s"
  echo "${CCOMPAT_URL}"
}

cmd_stop() {
  mkdir -p "$(dirname "${DATA}")"
  exec {LOCK_FD}>"${DATA}.lock"
  flock -w 300 "${LOCK_FD}" || die "another registry.sh holds ${DATA}.lock"
  stop_registry
}

cmd_status() {
  local pid
  if ! pid="$(registry_pid)"; then
    echo "registry: stopped"
    return 1
  fi
  if answers; then
    echo "registry: running pid=${pid} url=${CCOMPAT_URL}"
  else
    echo "registry: running pid=${pid} but not answering on ${CCOMPAT_URL}"
    return 1
  fi
}

cmd_url() {
  registry_pid >/dev/null || die "the registry is not running"
  echo "${CCOMPAT_URL}"
}

main() {
  local sub="${1:-help}"
  case "${sub}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) cmd_url ;;
    logs) log_tail 100 2>&1 ;;
    help | -h | --help) usage ;;
    *)
      usage >&2
      die "unknown command '${sub}'"
      ;;
  esac
}

main "$@"
