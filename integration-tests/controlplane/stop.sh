#!/usr/bin/env bash
# Stops a control plane started by start.sh <workdir>: for each PID in <workdir>/pids, newest first,
# SIGTERM, wait up to CONTROLPLANE_STOP_TIMEOUT seconds (default 15), then SIGKILL.
# Only PIDs whose command line mentions <workdir> are signalled (guards against PID reuse).
# Idempotent: a missing pids file or dead processes are fine. Exit 0 unless usage error (2).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 <workdir>" >&2; exit 2; }
[ -d "$1" ] || { cp_log "no workdir $1: nothing to stop"; exit 0; }
WD="$(cd "$1" && pwd)"
TIMEOUT="${CONTROLPLANE_STOP_TIMEOUT:-15}"
# The address start.sh added to `lo` for a real node (CONTROLPLANE_FAKE_NODE=0), removed once the
# processes are gone (also when there is nothing else to stop).
remove_node_ip() {
  local ip
  [ -s "$WD/node-ip.added" ] || return 0
  ip="$(cat "$WD/node-ip.added")"
  if ip addr del "$ip/32" dev lo 2>/dev/null; then cp_log "removed $ip/32 from lo"; fi
  rm -f "$WD/node-ip.added"
}
[ -s "$WD/pids" ] || { remove_node_ip; cp_log "no pids in $WD: nothing to stop"; exit 0; }

ours() { # pid -> alive and started for this workdir
  local pid="$1"
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WD"
}

# One at a time, newest first (helm-controller, controller-manager, apiserver, then kine), so the
# apiserver can still reach its storage while it shuts down.
mapfile -t lines < <(tac "$WD/pids")
n=0
for l in "${lines[@]}"; do
  name="${l%% *}"; pid="${l##* }"
  [[ "$pid" =~ ^[0-9]+$ ]] || continue
  ours "$pid" || continue
  n=$((n + 1))
  t0=$(date +%s.%N)
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(date +%s) + TIMEOUT ))
  while ours "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  if ours "$pid"; then
    cp_log "SIGKILL $name ($pid): still running ${TIMEOUT}s after SIGTERM"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do ours "$pid" || break; sleep 0.1; done
  else
    cp_log "stopped $name ($pid) after SIGTERM in $(elapsed "$t0")s"
  fi
done
mv -f "$WD/pids" "$WD/pids.stopped" 2>/dev/null || true
remove_node_ip
cp_log "stopped ($n processes)"
exit 0
