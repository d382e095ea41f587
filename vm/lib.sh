# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# Shared helpers for the vm/ scripts. Source it; do not run it.

VM_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_REPO=$(dirname "$VM_HERE")
# shellcheck source=../integration-tests/lib/common.sh
. "$VM_REPO/integration-tests/lib/common.sh"
PANGEO_LOG_TAG=vm
PANGEO_CACHE_ROOT=$(pangeo_cache_dir)
# the one VM that may run at a time on this machine
VM_RUNNING_FILE=$PANGEO_CACHE_ROOT/vm-running

# log, die, now, elapsed: integration-tests/lib/common.sh

# vm_load_env VMDIR: read VMDIR/vm.env into the shell (KEY=value lines).
vm_load_env() {
    local dir=$1
    [ -f "$dir/vm.env" ] || die "$dir/vm.env not found (was the VM booted with vm/boot?)"
    # shellcheck disable=SC1091
    . "$dir/vm.env"
}

vm_pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# vm_guest VMDIR -- cmd...: run a command in the guest (see vm/guest-exec)
vm_guest() { python3 "$VM_HERE/guest-exec" "$@"; }

# vm_wait_health VMDIR TIMEOUT: wait until pangeod's admin API answers
# GET /v1/health with 200 on the unix socket inside the guest. 0 ok, 1 timeout.
vm_wait_health() {
    local dir=$1 timeout=$2 start crash
    start=$(date +%s)
    while :; do
        if python3 "$VM_HERE/guest-exec" --wait-agent 5 --timeout 20 "$dir" -- \
            curl -fsS -o /dev/null --max-time 10 --unix-socket /run/pangeod/admin.sock \
            http://localhost/v1/health >/dev/null 2>&1; then
            return 0
        fi
        vm_load_env "$dir"
        vm_pid_alive "$QEMU_PID" || { log "qemu (pid $QEMU_PID) exited"; return 1; }
        if crash=$(vm_guest_crash "$dir"); then
            log "the guest kernel crashed (serial console: $crash)"; return 1
        fi
        [ $(( $(date +%s) - start )) -lt "$timeout" ] || return 1
        sleep 2
    done
}

# vm_guest_crash VMDIR: prints the serial console's first line that reports a crash of the
# guest kernel (an oops, a BUG or a panic) and succeeds; fails when there is none. Under TCG
# the guest kernel has been seen to oops in early boot (an int3 in kmem_cache_free in PID 1,
# once in many boots): no guest agent or unit answers after that, so waiting on is pointless.
vm_guest_crash() {
    local log=$1/serial.log line
    [ -f "$log" ] || return 1
    line=$(tr -d '\r' < "$log" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g' |
        grep -a -m1 -E 'Kernel panic - not syncing|Oops: |BUG: (unable|kernel)|general protection fault' ) || return 1
    printf '%s\n' "$line"
}

# vm_show_serial VMDIR [LINES]: print the tail of the serial console log
vm_show_serial() {
    local dir=$1 n=${2:-120}
    [ -f "$dir/serial.log" ] || return 0
    echo "----- serial console (last $n lines of $dir/serial.log) -----" >&2
    tail -n "$n" "$dir/serial.log" | tr -d '\r' | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' >&2
    echo "----- end of serial console -----" >&2
}

# vm_json EXPR: evaluate a Python expression over the JSON on stdin (as d) and print it;
# prints nothing and fails on input that is not JSON (or an expression that raises).
vm_json() {
    python3 -c "import json,sys
try: d=json.load(sys.stdin)
except Exception: sys.exit(1)
print($1)" 2>/dev/null
}

# vm_median N...: the median of the numbers given ("-" entries skipped); "n/a" for none.
vm_median() {
    printf '%s\n' "$@" | grep -v '^-$' | sort -n |
        awk '{a[NR]=$1} END{if(NR==0){print "n/a"} else if(NR%2){print a[(NR+1)/2]} else {printf "%.2f\n",(a[NR/2]+a[NR/2+1])/2}}'
}

# vm_ldap_fixture WD USERS LOG DROPIN: the host's FreeIPA-shaped 389-ds fixture for a guest.
# Sets it up in WD (a dir dirsrv can traverse: not under /root), starts it, loads USERS users
# of cluster demo-cluster (config/portal-example.toml's), sources WD/env, and writes DROPIN,
# the pangeod drop-in that reaches it from the guest at 10.0.2.100 (vm/boot --guest-port
# $LDAPS_PORT; the fixture's certificate names that IP). The generator's account of the data
# is WD/data/vm.json. Output goes to LOG. Exit 0 ready, 1 failed (LOG says why).
vm_ldap_fixture() {
    local wd=$1 users=$2 log=$3 dropin=$4
    local fixture=$VM_REPO/integration-tests/fixtures/389ds
    "$fixture/setup.sh" "$wd" > "$log" 2>&1 &&
        "$fixture/start.sh" "$wd" >> "$log" 2>&1 &&
        mkdir -p "$wd/data" &&
        python3 "$fixture/gen-ldif.py" --cluster demo-cluster --users "$users" \
            -o "$wd/data/vm.ldif" --expect "$wd/data/vm.json" >> "$log" 2>&1 &&
        "$fixture/load.sh" "$wd" "$wd/data/vm.ldif" >> "$log" 2>&1 || return 1
    # shellcheck disable=SC1091
    . "$wd/env"
    cat > "$dropin" <<TOML
# The host's 389-ds fixture, reached through guestfwd (its certificate names IP 10.0.2.100).
[freeipa]
server = "10.0.2.100:$LDAPS_PORT"
tls = "ldaps"
base_dn = "$LDAP_BASE_DN"
bind_dn = "$LDAP_BIND_DN"
TOML
}
