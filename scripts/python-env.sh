#!/usr/bin/env bash
# python-env.sh: create or update the Python virtual environment of the kstage
# interoperability tests (Confluent's confluent-kafka client with its Avro
# serializers and schema registry client, pinned in tests/interop/requirements.txt)
# and print the path of its python.
#
# Usage: scripts/python-env.sh
#   e.g. export KSTAGE_TEST_PYTHON="$(scripts/python-env.sh)"
#
# Idempotent: when the venv already holds exactly the pinned set (a marker
# records the requirements' checksum and the interpreter), it only prints the
# path, offline, in milliseconds. Otherwise it creates the venv (or repairs
# it) and installs the pinned set from PyPI with pip (binary wheels for
# confluent-kafka: no C toolchain or librdkafka needed). Concurrent runs wait
# for each other (flock).
#
# Environment:
#   KSTAGE_CACHE          cache root (default $HOME/.cache/kstage); the venv is
#                         $KSTAGE_CACHE/venv
#   KSTAGE_PYTHON_VENV    the venv directory (overrides the above)
#   KSTAGE_PYTHON         interpreter that creates the venv (default python3;
#                         3.10 or newer)
#   PIP_INDEX_URL etc.    honoured by pip as usual
#
# stdout carries only the python path; progress and errors go to stderr.

set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPTS
readonly REQUIREMENTS="${SCRIPTS}/../tests/interop/requirements.txt"
readonly CACHE="${KSTAGE_CACHE:-${HOME}/.cache/kstage}"
readonly VENV="${KSTAGE_PYTHON_VENV:-${CACHE}/venv}"
readonly BASE_PYTHON="${KSTAGE_PYTHON:-python3}"
readonly MARKER="${VENV}/.kstage-requirements"
readonly VENV_PYTHON="${VENV}/bin/python"

log() { printf 'python-env.sh: %s\n' "$*" >&2; }
die() {
  printf 'python-env.sh: error: %s\n' "$*" >&2
  exit 1
}

[[ -f "${REQUIREMENTS}" ]] || die "missing ${REQUIREMENTS}"

# What the venv must match: the pinned set and the interpreter it runs on.
wanted_marker() {
  local sum version
  sum="$(sha256sum "${REQUIREMENTS}" | cut -d' ' -f1)"
  version="$("$1" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')"
  printf 'requirements=%s python=%s\n' "${sum}" "${version}"
}

up_to_date() {
  [[ -x "${VENV_PYTHON}" && -f "${MARKER}" ]] || return 1
  [[ "$(<"${MARKER}")" == "$(wanted_marker "${VENV_PYTHON}" 2>/dev/null)" ]]
}

# Fast path: nothing to do.
if up_to_date; then
  echo "${VENV_PYTHON}"
  exit 0
fi

command -v "${BASE_PYTHON}" >/dev/null 2>&1 || die "'${BASE_PYTHON}' not found (set KSTAGE_PYTHON)"
"${BASE_PYTHON}" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
  die "'${BASE_PYTHON}' is $("${BASE_PYTHON}" --version 2>&1); the pinned set needs Python 3.10+ (set KSTAGE_PYTHON)"

mkdir -p "$(dirname "${VENV}")"
exec {lock_fd}>"${VENV}.lock"
flock -w 900 "${lock_fd}" || die "timed out waiting for ${VENV}.lock"
# Another run may have finished the work while we waited.
if up_to_date; then
  echo "${VENV_PYTHON}"
  exit 0
fi

t0=${SECONDS}
if [[ ! -x "${VENV_PYTHON}" ]] || ! "${VENV_PYTHON}" -c 'import pip' >/dev/null 2>&1; then
  log "creating the venv ${VENV} with $("${BASE_PYTHON}" --version 2>&1)"
  rm -rf "${VENV}"
  "${BASE_PYTHON}" -m venv "${VENV}" >&2 || die "python -m venv failed (is the venv module installed? e.g. apt-get install python3-venv)"
fi
rm -f "${MARKER}"
log "installing the pinned packages of ${REQUIREMENTS}"
"${VENV_PYTHON}" -m pip install --quiet --disable-pip-version-check --no-input \
  --only-binary confluent-kafka -r "${REQUIREMENTS}" >&2 ||
  die "pip install failed (is PyPI reachable? see PIP_INDEX_URL)"
"${VENV_PYTHON}" -c 'import confluent_kafka, fastavro, httpx2, authlib, cachetools, attrs
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer, AvroDeserializer
print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0])' >&2 ||
  die "the installed packages do not import"
wanted_marker "${VENV_PYTHON}" >"${MARKER}"
log "venv ready in $((SECONDS - t0))s"
echo "${VENV_PYTHON}"
