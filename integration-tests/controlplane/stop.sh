#!/usr/bin/env bash
# Stops a control plane started by start.sh <workdir>: for each PID in <workdir>/pids, newest first,
# SIGTERM, wait up to CONTROLPLANE_STOP_TIMEOUT seconds (default 15), then SIGKILL.
# Only PIDs that are still the recorded process (same start time, or a command line naming <workdir>)
# are signalled (guards against PID reuse).
# Idempotent: a missing pids file or dead processes are fine. Exit 0 unless usage error (2).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 <workdir>" >&2; exit 2; }
[ -d "$1" ] || { log "no workdir $1: nothing to stop"; exit 0; }
WD="$(cd "$1" && pwd)"
TIMEOUT="${CONTROLPLANE_STOP_TIMEOUT:-15}"
# The address start.sh added to `lo` for a real node (CONTROLPLANE_FAKE_NODE=0), removed once the
# processes are gone (also when there is nothing else to stop).
remove_node_ip() {
  local ip
  [ -s "$WD/node-ip.added" ] || return 0
  ip="$(cat "$WD/node-ip.added")"
  if ip addr del "$ip/32" dev lo 2>/dev/null; then log "removed $ip/32 from lo"; fi
  rm -f "$WD/node-ip.added"
}
[ -s "$WD/pids" ] || { remove_node_ip; log "no pids in $WD: nothing to stop"; exit 0; }

# One at a time, newest first (helm-controller, controller-manager, apiserver, then kine), so the
# apiserver can still reach its storage while it shuts down.
stop_recorded "$WD/pids" "$WD" "$TIMEOUT"
mv -f "$WD/pids" "$WD/pids.stopped" 2>/dev/null || true
remove_node_ip
log "stopped ($TERMINATED processes)"
exit 0
