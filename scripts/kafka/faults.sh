# shellcheck shell=bash
# scripts/kafka/faults.sh: fault injection on a running cluster.
#
# Sourced by scripts/kafka.sh; not run on its own. Commands (node ids 1..N):
#   kill, term, pause, resume   cmd_signal: SIGKILL / SIGTERM (SIGKILL after
#                               STOP_TIMEOUT) and wait until the node and its
#                               ports are gone; SIGSTOP / SIGCONT.
#   restart                     cmd_restart: launch a stopped node again on its
#                               data and wait until it is registered.
#   coordinator txn|group ID    cmd_coordinator: the leader of the
#                               __transaction_state / __consumer_offsets
#                               partition of ID (hashed like Java's
#                               String.hashCode), creating the topic if needed.
# Relies on common.sh (check_node_arg, node_pid, wait_gone, wait_ports_closed,
# take_lock, ports, log, die), fetch.sh (ensure_fetched, run_class) and
# cluster.sh (launch_node, wait_ready, cmd_bootstrap); iconv, od.
# Environment read here: KSTAGE_COORDINATOR_TIMEOUT.

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
    local holders="" p
    for p in $(node_ports "${n}"); do holders+=" $(port_holder "${p}")"; done
    die "a port of node ${n} is in use:${holders}"
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
  load_cluster # in this shell too: ADMIN_ARGS
  ensure_fetched
  # Retries for a while: the internal topic may not exist yet (a FindCoordinator
  # request creates it) or its partition may be between leaders after a fault.
  local deadline=$((SECONDS + ${KSTAGE_COORDINATOR_TIMEOUT:-30})) triggered=0
  local desc parts partition="" leader="" last=""
  while true; do
    if desc="$(run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "${bootstrap}" \
      "${ADMIN_ARGS[@]}" --describe --topic "${topic}" 2>&1)"; then
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
        run_class "${trigger[0]}" --bootstrap-server "${bootstrap}" "${ADMIN_ARGS[@]}" \
          "${trigger[@]:1}" >/dev/null 2>&1 || true
        triggered=1
        continue
      fi
    fi
    ((SECONDS < deadline)) || die "no ${kind} coordinator for '${id}': ${last}"
    sleep 1
  done
}
