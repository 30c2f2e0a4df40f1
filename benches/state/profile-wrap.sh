#!/bin/bash
# profile-wrap.sh: the stage binary for benches/state/profile.py, under callgrind when asked.
# Environment: WRAP_BIN, WRAP_ENV (extra env), WRAP_EXTRA (appended to stage.toml before run),
# WRAP_VG=1 callgrind, WRAP_VG=massif massif (heap profile: who holds the peak's bytes).
if [ "$1" = "run" ]; then
  cfg="$3"
  if [ -n "$WRAP_EXTRA" ]; then printf '%b\n' "$WRAP_EXTRA" >> "$cfg"; fi
  if [ "$WRAP_VG" = massif ]; then exec env $WRAP_ENV valgrind --tool=massif --massif-out-file="${KSTAGE_PROFILE_DIR:-/tmp/kstage-profile}"/massif.%p.out "$WRAP_BIN" "$@"; fi
  if [ "$WRAP_VG" = 1 ]; then exec env $WRAP_ENV valgrind --tool=callgrind --callgrind-out-file="${KSTAGE_PROFILE_DIR:-/tmp/kstage-profile}"/cg.%p.out "$WRAP_BIN" "$@"; fi
  exec env $WRAP_ENV "$WRAP_BIN" "$@"
fi
exec "$WRAP_BIN" "$@"
