#!/usr/bin/env bash
# postgres.sh: a private PostgreSQL server on 127.0.0.1 for the kstage sink tests
# and the demo, from Debian's `postgresql` package (installed if missing).
#
# Usage: scripts/postgres.sh COMMAND
#
#   start     Install the package if initdb is missing (apt-get update, then
#             apt-get install -y postgresql), initdb a fresh data directory
#             (wiped first) owned by the `postgres` user, start the server on
#             127.0.0.1:PORT, create the test database and print its URL, e.g.
#             postgres://kstage:kstage@127.0.0.1:35432/kstage
#   stop      Fast shutdown (pg_ctl stop -m fast); no-op if not running.
#   kill      Crash it: pg_ctl stop -m immediate (no checkpoint; recovery on the
#             next start).
#   restart   Start the server again on the same data directory (after kill or
#             stop), wait until it answers and print the URL.
#   status    Exit 0 if it answers, 1 if not.
#   url       Print the URL.
#   help      Print this text.
#
# Environment:
#   KSTAGE_PG_PORT      port (default 35432)
#   KSTAGE_PG_DATA      data directory root, wiped on start (default /tmp/kstage-pg)
#   KSTAGE_PG_BIN       directory of initdb/pg_ctl (default: the newest
#                       /usr/lib/postgresql/<major>/bin)
#   KSTAGE_PG_TIMEOUT   seconds to wait for start/stop (default 60)
#
# The server refuses to run as root, so when run as root every server command
# runs as the `postgres` user (runuser); otherwise as the current user.
# stdout carries only results (the URL); progress and errors go to stderr.

set -euo pipefail

readonly PORT="${KSTAGE_PG_PORT:-35432}"
readonly ROOT_DIR="${KSTAGE_PG_DATA:-/tmp/kstage-pg}"
readonly DATA="${ROOT_DIR}/data"
readonly SOCKETS="${ROOT_DIR}/run"
readonly LOGFILE="${ROOT_DIR}/postgres.log"
readonly TIMEOUT="${KSTAGE_PG_TIMEOUT:-60}"
readonly DB_USER="kstage"
readonly DB_PASSWORD="kstage"
readonly DB_NAME="kstage"
readonly URL="postgres://${DB_USER}:${DB_PASSWORD}@127.0.0.1:${PORT}/${DB_NAME}"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
  printf 'postgres.sh: error: %s\n' "$*" >&2
  exit 1
}
usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

# The directory holding initdb and pg_ctl, or nothing.
find_bin() {
  if [[ -n "${KSTAGE_PG_BIN:-}" ]]; then
    echo "${KSTAGE_PG_BIN}"
    return
  fi
  local dir
  dir="$(find /usr/lib/postgresql -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -z "${dir}" ]] || echo "${dir}"
}

ensure_installed() {
  local bin
  bin="$(find_bin)"
  if [[ -n "${bin}" && -x "${bin}/initdb" ]]; then
    echo "${bin}"
    return
  fi
  command -v apt-get >/dev/null 2>&1 || die "initdb not found and apt-get is missing: install PostgreSQL"
  log "initdb not found: installing Debian's postgresql package"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  "${sudo[@]}" apt-get update >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y postgresql >&2
  bin="$(find_bin)"
  [[ -n "${bin}" && -x "${bin}/initdb" ]] || die "installed postgresql, but no initdb under /usr/lib/postgresql"
  echo "${bin}"
}

# Runs a command as the server's owner.
as_owner() {
  if ((EUID == 0)); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_ctl_cmd() {
  local bin
  bin="$(ensure_installed)"
  as_owner "${bin}/pg_ctl" -D "${DATA}" -l "${LOGFILE}" "$@"
}

psql_cmd() {
  local bin
  bin="$(ensure_installed)"
  as_owner "${bin}/psql" -h "${SOCKETS}" -p "${PORT}" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

answers() {
  local bin
  bin="$(find_bin)"
  [[ -n "${bin}" ]] && [[ -d "${DATA}" ]] &&
    as_owner "${bin}/pg_isready" -h 127.0.0.1 -p "${PORT}" -q 2>/dev/null
}

wait_answers() {
  local waited=0
  until answers; do
    ((waited < TIMEOUT * 10)) || die "the server did not answer within ${TIMEOUT} s (log: ${LOGFILE})"
    sleep 0.1
    waited=$((waited + 1))
  done
}

start_server() {
  pg_ctl_cmd -w -t "${TIMEOUT}" \
    -o "-c listen_addresses=127.0.0.1 -p ${PORT} -k ${SOCKETS} -c fsync=off -c max_connections=200" \
    start >&2 || die "pg_ctl start failed (log: ${LOGFILE})"
  wait_answers
}

cmd_start() {
  local bin
  bin="$(ensure_installed)"
  if [[ -d "${DATA}" ]]; then
    pg_ctl_cmd -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "${ROOT_DIR}"
  mkdir -p "${DATA}" "${SOCKETS}"
  if ((EUID == 0)); then chown -R postgres:postgres "${ROOT_DIR}"; fi
  chmod 700 "${DATA}"
  log "initdb ${DATA}"
  as_owner "${bin}/initdb" -D "${DATA}" -U postgres --auth=trust -E UTF8 --no-locale >"${ROOT_DIR}/initdb.log" 2>&1 ||
    die "initdb failed (see ${ROOT_DIR}/initdb.log)"
  # Password logins over TCP, trust on the private socket (for this script's psql).
  {
    echo "local all all trust"
    echo "host all all 127.0.0.1/32 scram-sha-256"
  } >"${DATA}/pg_hba.conf"
  if ((EUID == 0)); then chown postgres:postgres "${DATA}/pg_hba.conf"; fi
  start_server
  psql_cmd -c "CREATE ROLE ${DB_USER} LOGIN SUPERUSER PASSWORD '${DB_PASSWORD}'"
  psql_cmd -c "CREATE DATABASE ${DB_NAME} OWNER ${DB_USER}"
  log "PostgreSQL answers on 127.0.0.1:${PORT}"
  echo "${URL}"
}

cmd_stop() {
  [[ -d "${DATA}" ]] || return 0
  pg_ctl_cmd -w -t "${TIMEOUT}" -m fast stop >&2 2>/dev/null || true
}

cmd_kill() {
  [[ -d "${DATA}" ]] || die "no data directory at ${DATA}: start first"
  pg_ctl_cmd -m immediate stop >&2 || true
}

cmd_restart() {
  [[ -d "${DATA}" ]] || die "no data directory at ${DATA}: start first"
  answers && pg_ctl_cmd -w -m fast stop >&2
  start_server
  echo "${URL}"
}

case "${1:-help}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  kill) cmd_kill ;;
  restart) cmd_restart ;;
  status) answers ;;
  url) echo "${URL}" ;;
  help | -h | --help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
