#!/usr/bin/env bash
# Stops a control plane started by start.sh <workdir>: SIGTERM to each PID in <workdir>/pids
# (newest first), waits up to CONTROLPLANE_STOP_TIMEOUT seconds (default 15), then SIGKILL.
# Only PIDs whose command line mentions <workdir> are signalled (guards against PID reuse).
# Idempotent: a missing pids file or dead processes are fine. Exit 0 unless usage error (2).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 <workdir>" >&2; exit 2; }
[ -d "$1" ] || { cp_log "no workdir $1: nothing to stop"; exit 0; }
WD="$(cd "$1" && pwd)"
TIMEOUT="${CONTROLPLANE_STOP_TIMEOUT:-15}"
[ -s "$WD/pids" ] || { cp_log "no pids in $WD: nothing to stop"; exit 0; }

ours() { # pid -> alive and started for this workdir
  local pid="$1"
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WD"
}

mapfile -t lines < <(tac "$WD/pids")
pids=()
for l in "${lines[@]}"; do
  name="${l%% *}"; pid="${l##* }"
  [[ "$pid" =~ ^[0-9]+$ ]] || continue
  if ours "$pid"; then
    cp_log "SIGTERM $name ($pid)"
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid:$name")
  fi
done

deadline=$(( $(date +%s) + TIMEOUT ))
for e in "${pids[@]}"; do
  pid="${e%%:*}"; name="${e#*:}"
  while ours "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  if ours "$pid"; then
    cp_log "SIGKILL $name ($pid): still running after ${TIMEOUT}s"
    kill -KILL "$pid" 2>/dev/null || true
  fi
done
# Reap zombies' view: wait briefly for killed ones to disappear.
for e in "${pids[@]}"; do
  pid="${e%%:*}"
  for _ in $(seq 1 50); do ours "$pid" || break; sleep 0.1; done
done
mv -f "$WD/pids" "$WD/pids.stopped" 2>/dev/null || true
cp_log "stopped (${#pids[@]} processes)"
exit 0
