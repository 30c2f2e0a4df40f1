#!/usr/bin/env bash
# toxiproxy.sh: build and run Toxiproxy (github.com/Shopify/toxiproxy/v2), the
# TCP proxy whose "toxics" delay, cut, stall and throttle connections, for the
# kstage chaos harness's network faults (no Docker, no prebuilt binaries).
#
# Usage: scripts/toxiproxy.sh COMMAND
#
#   fetch     Build toxiproxy-server and toxiproxy-cli ${KSTAGE_TOXIPROXY_VERSION}
#             with `go install` from the Go module proxy into the cache (outside
#             the repo). No-op once built.
#   start     Fetch if needed and start the server in the background on
#             127.0.0.1:${KSTAGE_TOXIPROXY_PORT}; wait until its API answers and
#             print its URL. A server still running from an earlier start (same
#             data dir) is stopped first.
#   stop      Stop the server (SIGTERM, then SIGKILL). Does nothing if none runs.
#   status    Exit 0 if the server runs and answers, 1 otherwise.
#   url       Print the API URL.
#   cli ARGS  Run toxiproxy-cli against the server, e.g.
#               scripts/toxiproxy.sh cli create -l 127.0.0.1:42202 -u 127.0.0.1:42212 broker-1
#               scripts/toxiproxy.sh cli toxic add -t latency -a latency=500 -a jitter=200 broker-1
#   bin       Print the directory holding toxiproxy-server and toxiproxy-cli.
#   help      Print this text.
#
# Environment:
#   KSTAGE_TOXIPROXY_VERSION  module version (default 2.5.0)
#   KSTAGE_CACHE              cache root (default $HOME/.cache/kstage); binaries go
#                             to $KSTAGE_CACHE/toxiproxy-<version>/bin
#   KSTAGE_TOXIPROXY_PORT     API port (default 8474, Toxiproxy's own default)
#   KSTAGE_TOXIPROXY_DATA     pid and log dir (default /tmp/kstage-toxiproxy)
#   GO                        the go command (default: go on PATH)
#
# stdout carries only results (URL, paths); progress and errors go to stderr.
# Lint: shellcheck scripts/toxiproxy.sh

set -euo pipefail

readonly VERSION="${KSTAGE_TOXIPROXY_VERSION:-2.5.0}"
readonly CACHE="${KSTAGE_CACHE:-${HOME}/.cache/kstage}"
readonly HOME_DIR="${CACHE}/toxiproxy-${VERSION}"
readonly BIN="${HOME_DIR}/bin"
readonly PORT="${KSTAGE_TOXIPROXY_PORT:-8474}"
readonly DATA="${KSTAGE_TOXIPROXY_DATA:-/tmp/kstage-toxiproxy}"
readonly PIDFILE="${DATA}/pid"
readonly GO="${GO:-go}"
readonly MODULE="github.com/Shopify/toxiproxy/v2"

log() { printf 'toxiproxy.sh: %s\n' "$*" >&2; }
die() {
  printf 'toxiproxy.sh: error: %s\n' "$*" >&2
  exit 1
}

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

url() { echo "http://127.0.0.1:${PORT}"; }

cmd_fetch() {
  if [[ -x "${BIN}/toxiproxy-server" && -x "${BIN}/toxiproxy-cli" ]]; then
    return 0
  fi
  command -v "${GO}" >/dev/null 2>&1 || die "'${GO}' not found on PATH (install Go 1.22+)"
  mkdir -p "${HOME_DIR}"
  exec 9>"${HOME_DIR}/.lock"
  flock 9
  if [[ -x "${BIN}/toxiproxy-server" && -x "${BIN}/toxiproxy-cli" ]]; then
    return 0
  fi
  local t0=${SECONDS} tmp
  tmp="$(mktemp -d "${HOME_DIR}/build.XXXXXX")"
  log "building ${MODULE} v${VERSION} (server, cli) from the Go module proxy"
  # go install writes the binaries as `server` and `cli`: build into a scratch
  # dir, then move them in under their own names (an interrupted build leaves
  # nothing half-written in BIN).
  GOBIN="${tmp}" GOFLAGS=-mod=mod "${GO}" install \
    "${MODULE}/cmd/server@v${VERSION}" "${MODULE}/cmd/cli@v${VERSION}" >&2 \
    || die "go install of ${MODULE} v${VERSION} failed"
  mkdir -p "${BIN}"
  mv "${tmp}/server" "${BIN}/toxiproxy-server"
  mv "${tmp}/cli" "${BIN}/toxiproxy-cli"
  rmdir "${tmp}"
  log "built in $((SECONDS - t0))s: ${BIN}"
}

# Prints the server's pid if it runs (and is ours).
server_pid() {
  [[ -f "${PIDFILE}" ]] || return 1
  local pid
  pid="$(<"${PIDFILE}")"
  [[ "${pid}" =~ ^[0-9]+$ && -r "/proc/${pid}/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q 'toxiproxy-server' || return 1
  [[ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" != "Z" ]] || return 1
  echo "${pid}"
}

answers() { "${BIN}/toxiproxy-cli" -h "$(url)" list >/dev/null 2>&1; }

cmd_stop() {
  local pid
  pid="$(server_pid)" || return 0
  kill -TERM "${pid}" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "${pid}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -KILL "${pid}" 2>/dev/null || true
  rm -f "${PIDFILE}"
  log "stopped (pid ${pid})"
}

cmd_start() {
  cmd_fetch
  mkdir -p "${DATA}"
  cmd_stop
  if (echo >"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then
    die "port ${PORT} is already in use (KSTAGE_TOXIPROXY_PORT)"
  fi
  setsid "${BIN}/toxiproxy-server" -host 127.0.0.1 -port "${PORT}" \
    >"${DATA}/server.log" 2>&1 </dev/null &
  echo $! >"${PIDFILE}"
  local deadline=$((SECONDS + 30))
  until answers; do
    server_pid >/dev/null || {
      tail -n 20 "${DATA}/server.log" >&2 || true
      die "toxiproxy-server exited during start-up (log: ${DATA}/server.log)"
    }
    ((SECONDS < deadline)) || die "toxiproxy-server did not answer within 30s"
    sleep 0.2
  done
  log "up: $(url) (log: ${DATA}/server.log)"
  url
}

cmd_status() {
  server_pid >/dev/null && answers
}

main() {
  local sub="${1:-help}"
  [[ $# -eq 0 ]] || shift
  case "${sub}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) url ;;
    bin)
      cmd_fetch
      echo "${BIN}"
      ;;
    cli)
      cmd_fetch
      exec "${BIN}/toxiproxy-cli" -h "$(url)" "$@"
      ;;
    help | -h | --help) usage ;;
    *)
      usage >&2
      die "unknown command '${sub}'"
      ;;
  esac
}

main "$@"
