#!/usr/bin/env bash
# restore.sh: what a stateful stage's restore costs (docs/STATE.md, "Restore cost").
#
# Usage: KSTAGE_TEST_BOOTSTRAP=127.0.0.1:9092 benches/state/restore.sh [RECORDS] [KEYS]
#   (defaults 1000000 and 100000; needs a running broker, scripts/kafka.sh start, and
#   target/release/kstage: cargo build --release --bin kstage)
#   KSTAGE_BIN=PATH runs another binary; KSTAGE_WORK=DIR (empty, existing) keeps the stage logs
#   there (run1.log ... run4.log; with RUST_LOG=kstage=debug, each restore's timings).
#
# 1. `count` over RECORDS keyed records (KEYS keys, 6 partitions): processing time and rate.
# 2. Restore from nothing: the state directory deleted, the restart restores every key.
# 3. Restore after an unclean kill (SIGKILL mid-stream): the local store is kept, the restart
#    restores only the changelog tail after its local offset (no wipe).
# The restore figures are the stage's own log lines ("The partition's state is restored",
# records and seconds per partition), summed over partitions.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BOOT="${KSTAGE_TEST_BOOTSTRAP:?set KSTAGE_TEST_BOOTSTRAP to a broker}"
RECORDS="${1:-1000000}"
KEYS="${2:-100000}"
PY="$("${ROOT}/scripts/python-env.sh")"
BIN="${KSTAGE_BIN:-${ROOT}/target/release/kstage}"
WORK="${KSTAGE_WORK:-$(mktemp -d)}"
APP="bench-state-$RANDOM$RANDOM"
IN="${APP}-in"
OUT="${APP}-out"
if [[ -n "${KSTAGE_WORK:-}" ]]; then
  trap 'kill "${PID:-0}" 2>/dev/null || true' EXIT   # keeps the logs in KSTAGE_WORK
else
  trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "${WORK}"' EXIT
fi

cat > "${WORK}/stage.toml" <<TOML
topology = "count"
bootstrap_servers = "${BOOT}"
inputs = ["${IN}"]
app_id = "${APP}"
instance_id = "0"
state_dir = "${WORK}/state"
[outputs]
default = "${OUT}"
TOML

"${PY}" - "${BOOT}" "${IN}" <<'PYEOF'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
for f in admin.create_topics([NewTopic(sys.argv[2], 6, 1)]).values():
    f.result()
PYEOF
"${BIN}" topics create --config "${WORK}/stage.toml"
"${PY}" "${ROOT}/benches/state/produce.py" "${BOOT}" "${IN}" "${RECORDS}" "${KEYS}" 6

run_until() { # $1: log file; $2: committed total to wait for (or "kill-at:N")
  "${BIN}" run --config "${WORK}/stage.toml" --metrics-address off 2> "$1" &
  PID=$!
  local target="$2" kill_at=""
  if [[ "${target}" == kill-at:* ]]; then kill_at="${target#kill-at:}"; target="${kill_at}"; fi
  while true; do
    read -r committed end < <("${PY}" "${ROOT}/benches/state/lag.py" "${BOOT}" "${APP}" "${IN}" 6)
    if (( committed >= target )); then break; fi
    sleep 0.5
  done
  if [[ -n "${kill_at}" ]]; then kill -9 "${PID}"; else kill -TERM "${PID}"; fi
  wait "${PID}" 2>/dev/null || true
}

restored() { # sums the restore lines of a log
  sed 's/\x1b\[[0-9;]*m//g' "$1" | grep "The partition's state is restored" |
    sed -E 's/.*records=([0-9]+) seconds=([0-9.]+).*/\1 \2/' |
    awk '{r+=$1; s+=$2} END {printf "%d records restored in %.2f s (%.0f records/s)\n", r, s, (s>0 ? r/s : 0)}'
}

start=$(date +%s.%N)
run_until "${WORK}/run1.log" "$((RECORDS / 2))"
kill_at=$(( RECORDS * 3 / 4 ))
echo "SIGKILL once $((kill_at)) records are committed"
run_until "${WORK}/run2.log" "kill-at:${kill_at}"
echo "restart after the unclean kill (local store kept):"
run_until "${WORK}/run3.log" "${RECORDS}"
end=$(date +%s.%N)
restored "${WORK}/run3.log"
echo "count: ${RECORDS} records processed over three incarnations in $(echo "${end} - ${start}" | bc) s (with restarts; not a throughput figure)"
rm -rf "${WORK}/state"
# A partition restores on its first record: one more record per partition (keys k0..k5).
"${PY}" - "${BOOT}" "${IN}" <<'PYEOF'
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1]})
for k in range(6):
    p.produce(sys.argv[2], key=b"k%d" % k, value=b"v", partition=k)
p.flush()
PYEOF
echo "restart after deleting the state directory (restore from nothing):"
"${BIN}" run --config "${WORK}/stage.toml" --metrics-address off 2> "${WORK}/run4.log" &
PID=$!
for _ in $(seq 1 600); do
  (( $(grep -c "The partition's state is restored" "${WORK}/run4.log" || true) >= 6 )) && break
  sleep 0.5
done
kill -TERM "${PID}"; wait "${PID}" 2>/dev/null || true
restored "${WORK}/run4.log"
