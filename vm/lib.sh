# shellcheck shell=bash
# Shared helpers for the vm/ scripts. Source it; do not run it.

VM_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_REPO=$(dirname "$VM_HERE")
PANGEO_CACHE_ROOT=${PANGEO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pangeo-appliance}
# the one VM that may run at a time on this machine
VM_RUNNING_FILE=$PANGEO_CACHE_ROOT/vm-running

vm_log() { printf '[vm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
vm_die() { printf 'vm: error: %s\n' "$*" >&2; exit 1; }
vm_now() { date +%s.%N; }
vm_elapsed() { awk -v a="$1" -v b="$(vm_now)" 'BEGIN{printf "%.1f", b-a}'; }

# vm_load_env VMDIR: read VMDIR/vm.env into the shell (KEY=value lines).
vm_load_env() {
    local dir=$1
    [ -f "$dir/vm.env" ] || vm_die "$dir/vm.env not found (was the VM booted with vm/boot?)"
    # shellcheck disable=SC1091
    . "$dir/vm.env"
}

vm_pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# vm_guest VMDIR -- cmd...: run a command in the guest (see vm/guest-exec)
vm_guest() { python3 "$VM_HERE/guest-exec" "$@"; }

# vm_wait_health VMDIR TIMEOUT: wait until pangeod's admin API answers
# GET /v1/health with 200 on the unix socket inside the guest. 0 ok, 1 timeout.
vm_wait_health() {
    local dir=$1 timeout=$2 start
    start=$(date +%s)
    while :; do
        if python3 "$VM_HERE/guest-exec" --wait-agent 5 --timeout 20 "$dir" -- \
            curl -fsS -o /dev/null --max-time 10 --unix-socket /run/pangeod/admin.sock \
            http://localhost/v1/health >/dev/null 2>&1; then
            return 0
        fi
        vm_load_env "$dir"
        vm_pid_alive "$QEMU_PID" || { vm_log "qemu (pid $QEMU_PID) exited"; return 1; }
        [ $(( $(date +%s) - start )) -lt "$timeout" ] || return 1
        sleep 2
    done
}

# vm_show_serial VMDIR [LINES]: print the tail of the serial console log
vm_show_serial() {
    local dir=$1 n=${2:-120}
    [ -f "$dir/serial.log" ] || return 0
    echo "----- serial console (last $n lines of $dir/serial.log) -----" >&2
    tail -n "$n" "$dir/serial.log" | tr -d '\r' | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' >&2
    echo "----- end of serial console -----" >&2
}
