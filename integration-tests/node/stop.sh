#!/usr/bin/env bash
# Stops the test node started by start.sh <workdir> and removes what it left on the host:
#   kube-scheduler, kubelet -> every pod sandbox (crictl rmp: CNI DEL removes veths, netns, IPs) ->
#   containerd and its shims -> kube-proxy, then `kube-proxy --cleanup` -> leftover KUBE-*/CNI-*
#   iptables/ip6tables chains, the cni0 bridge, mounts under <workdir>, the kubepods cgroups,
#   the sysctls it changed (written back from <workdir>/node/sysctl.before), host paths it created.
# Run it BEFORE the control plane's stop.sh. Idempotent. Exit 0 (1 only if something could not be
# removed, which it names), 2 usage.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 <workdir>" >&2; exit 2; }
[ -d "$1/node" ] || { log "no node in $1: nothing to stop"; exit 0; }
WD="$(cd "$1" && pwd)"
ND="$WD/node"
SOCK="$ND/run/containerd.sock"
TIMEOUT="${NODE_STOP_TIMEOUT:-20}"
PROBLEMS=()

# stop NAME: its recorded process, SIGTERM, then SIGKILL after NODE_STOP_TIMEOUT (integration-tests/lib/common.sh).
stop() { stop_recorded "$ND/pids" "$WD" "$TIMEOUT" "$1"; }
ours() { local c; c="$(proc_cmdline "$1")" && [[ "$c" == *"$WD"* ]]; }
BIN="$(cat "$ND/bin-dir" 2>/dev/null)" || BIN=""
CP_BIN="$(cat "$ND/controlplane-bin-dir" 2>/dev/null)" || CP_BIN=""

stop kube-scheduler
stop kubelet

# Our shims' sockets in /run/containerd/s (a path that cannot be moved; other containerds use it
# too): found through the shims' open sockets, removed if a killed shim leaves them behind.
SHIM_PIDS=()
for p in /proc/[0-9]*; do
  pid="${p#/proc/}"
  c="$(proc_cmdline "$pid")" || continue
  [[ "$c" =~ ^[^\ ]*containerd-shim[^\ ]*\ .*-address\ $SOCK\  ]] && SHIM_PIDS+=("$pid")
done
if [ ${#SHIM_PIDS[@]} -gt 0 ]; then
  inodes="$(for pid in "${SHIM_PIDS[@]}"; do ls -l "/proc/$pid/fd" 2>/dev/null; done | sed -n 's/.*socket:\[\([0-9]*\)\]$/\1/p' | sort -u | tr '\n' ' ')"
  awk -v ids=" $inodes " 'index(ids, " " $7 " ") && $8 ~ /^\/run\/containerd\/s\// {print $8}' /proc/net/unix \
    | sort -u >>"$ND/shim-sockets"
fi

# Every pod sandbox, while containerd still runs: stops containers, CNI DEL (veth, IP), netns.
CTRD_PID="$(launched_pid containerd "$ND/pids")"
if [ -n "$CTRD_PID" ] && ours "$CTRD_PID" && [ -x "$BIN/crictl" ]; then
  if ! timeout 90 "$BIN/crictl" -r "unix://$SOCK" -i "unix://$SOCK" rmp -fa >"$ND/logs/stop-crictl.log" 2>&1; then
    log "crictl rmp -fa failed (see $ND/logs/stop-crictl.log); killing the pods' processes instead"
  fi
fi
stop containerd

# Shims (their command line names our socket) and, if a sandbox survived, the pods' processes.
for p in /proc/[0-9]*; do
  pid="${p#/proc/}"
  c="$(proc_cmdline "$pid")" || continue
  [[ "$c" =~ ^[^\ ]*containerd-shim[^\ ]*\ .*-address\ $SOCK\  ]] && kill -KILL "$pid" 2>/dev/null
done
if [ -s "$ND/shim-sockets" ]; then
  while read -r f; do rm -f "$f"; done <"$ND/shim-sockets"
  rm -f "$ND/shim-sockets"
fi

stop kube-proxy

# Mounts under the workdir are ours alone; the rest below is machine-wide state, swept only when no
# other test node runs (we can take the lock that every node process holds).
sweep_mounts() {
  local mnts m
  for _ in 1 2 3; do
    mapfile -t mnts < <(awk -v p="$WD/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
    [ ${#mnts[@]} -eq 0 ] && break
    for m in "${mnts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  done
  left="$(awk -v p="$WD/" 'index($5, p) == 1' /proc/self/mountinfo | wc -l)"
  [ "$left" -eq 0 ] || PROBLEMS+=("$left mounts still under $WD")
}
exec 7>>"$NODE_LOCK"
if ! flock -w 30 7; then
  sweep_mounts
  PROBLEMS+=("another test node runs on this machine (it holds $NODE_LOCK): the shared iptables chains, cni0, cgroups and sysctls were left to it")
  [ -f "$ND/pids" ] && mv -f "$ND/pids" "$ND/pids.stopped"
  printf '[node] left behind: %s\n' "${PROBLEMS[@]}" >&2
  exit 1
fi
# If a sandbox survived (crictl failed), its processes are in the kubelet's kubepods cgroups: ours,
# since no other node runs.
CGROUP_DIRS=()
for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do [ -d "$d" ] && CGROUP_DIRS+=("$d"); done
for d in "${CGROUP_DIRS[@]}"; do
  find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do kill -KILL "$pid" 2>/dev/null; done
done
if [ -x "$CP_BIN/kube-proxy" ]; then
  "$CP_BIN/kube-proxy" --cleanup >"$ND/logs/kube-proxy-cleanup.log" 2>&1 \
    || log "kube-proxy --cleanup failed (see $ND/logs/kube-proxy-cleanup.log); removing the chains directly"
fi

# Whatever KUBE-*/CNI-* chains are left (portmap's CNI-HOSTPORT-*, a failed cleanup): unhook, flush, delete.
for ipt in iptables ip6tables; do
  command -v "$ipt" >/dev/null 2>&1 || continue
  for t in nat filter mangle raw; do
    rules="$("$ipt" -w -t "$t" -S 2>/dev/null)" || continue
    echo "$rules" | grep -E '^-A [A-Z]+ .*-j (KUBE|CNI)-' | grep -vE '^-A (KUBE|CNI)-' | while read -r line; do
      # shellcheck disable=SC2086
      eval "$ipt -w -t $t ${line/-A /-D }" 2>/dev/null
    done
    chains="$(echo "$rules" | awk '$1=="-N" && $2 ~ /^(KUBE|CNI)-/ {print $2}')"
    for c in $chains; do "$ipt" -w -t "$t" -F "$c" 2>/dev/null; done
    for c in $chains; do "$ipt" -w -t "$t" -X "$c" 2>/dev/null; done
  done
done

# Bridge and any veth still on it.
if ip link show cni0 >/dev/null 2>&1; then
  for v in $(ip -o link show master cni0 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$v" 2>/dev/null
  done
  ip link del cni0 2>/dev/null || PROBLEMS+=("could not delete cni0")
fi

# Mounts under the workdir (netns bind mounts, overlay rootfs, kubelet volumes), deepest first.
sweep_mounts

# kubepods cgroups (the kubelet's QoS and pod cgroups), deepest first.
for d in "${CGROUP_DIRS[@]}"; do
  find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ -d "$d" ] && PROBLEMS+=("cgroup $d could not be removed")
done

# Sysctls as they were before the first start.
if [ -s "$ND/sysctl.before" ]; then
  while IFS= read -r kv; do
    k="${kv%%=*}"; v="${kv#*=}"
    [ "$(sysctl -n "$k" 2>/dev/null)" = "$v" ] || sysctl -qw "$k=$v" >/dev/null 2>&1 || PROBLEMS+=("could not restore $k=$v")
  done <"$ND/sysctl.before"
  mv -f "$ND/sysctl.before" "$ND/sysctl.restored"
fi

# Host paths: our CNI results, our pods' log links; directories we created, if empty.
rm -f /var/lib/cni/results/pangeo-test-* 2>/dev/null
for l in /var/log/containers/*; do
  [ -L "$l" ] && case "$(readlink "$l")" in "$ND"/*) rm -f "$l" ;; esac
done
rm -f /var/lib/kubelet/device-plugins/kubelet.sock 2>/dev/null
if [ -s "$ND/host-paths.created" ]; then
  tac "$ND/host-paths.created" | while read -r p; do rmdir "$p" 2>/dev/null; done
  rm -f "$ND/host-paths.created"
fi

[ -f "$ND/pids" ] && mv -f "$ND/pids" "$ND/pids.stopped"
if [ ${#PROBLEMS[@]} -gt 0 ]; then
  printf '[node] left behind: %s\n' "${PROBLEMS[@]}" >&2
  exit 1
fi
log "stopped"
exit 0
