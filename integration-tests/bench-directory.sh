#!/usr/bin/env bash
# The directory-sync benchmark of issue 6 (docs/BENCHMARKS.md), from scratch, in one command:
#
#   integration-tests/bench-directory.sh [USERS]        # default 100000; 10000 for the small run
#
# 1. a fresh FreeIPA-shaped 389-ds instance (integration-tests/fixtures/389ds/setup.sh) in a new
#    work dir (BENCH_WORKDIR, which must not exist yet; default a new
#    /tmp/pangeo-bench-389ds.XXXXXX),
# 2. gen-ldif.py --cluster demo --users USERS --shard-size SHARD_SIZE (default 100): FreeIPA's
#    tree with user private groups; the members sit in nested groups of 100 (see the fixture
#    README, "The memberOf cost is quadratic in group size"),
# 3. load.sh (offline ldif2db, then the server's memberOf fixup task: memberOf is computed by
#    the server, never written into the LDIF) and grant-limits.sh on,
# 4. checks that the server's memberOf gives exactly the generator's expected member count,
# 5. builds the bench (release) and runs it under /usr/bin/time -v (the bench prints the
#    Markdown table and, on stderr, each run; time prints the process's maximum RSS).
#    BENCH_RUNS (default 3) runs; the docs' 100k numbers used BENCH_RUNS=5 and BENCH_RUNS=1.
# The server is stopped at the end, and the work dir removed unless KEEP=1.
# Heavy steps run under nice/ionice (NICE, default 15). 100k users: about 20 min on 2 cores.
# Not part of integration-tests/run (too slow for CI).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
F=$ROOT/integration-tests/fixtures/389ds
USERS=${1:-100000}
SHARD_SIZE=${SHARD_SIZE:-100}
NICE=${NICE:-15}
low() { nice -n "$NICE" ionice -c3 "$@"; }
say() { printf '[bench-directory %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A given BENCH_WORKDIR must not exist yet (it is removed at the end unless KEEP=1).
if [ -n "${BENCH_WORKDIR:-}" ]; then
    [ ! -e "$BENCH_WORKDIR" ] || { say "ERROR: $BENCH_WORKDIR exists; give a new path"; exit 1; }
    mkdir -p "$BENCH_WORKDIR"
    W=$BENCH_WORKDIR
else
    W=$(mktemp -d /tmp/pangeo-bench-389ds.XXXXXX)
fi
cleanup() {
    "$F/stop.sh" "$W" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then say "kept $W (stop with $F/stop.sh $W)"; else rm -rf "$W"; fi
}
trap cleanup EXIT

say "work dir $W, $USERS users, shard size $SHARD_SIZE"
low "$F/setup.sh" "$W"
low python3 "$F/gen-ldif.py" --cluster demo --users "$USERS" --shard-size "$SHARD_SIZE" \
    -o "$W/data/bench.ldif" --expect "$W/data/bench.json"
start=$SECONDS
low "$F/load.sh" "$W" "$W/data/bench.ldif"
say "loaded in $((SECONDS - start)) s"
rm -f "$W/data/bench.ldif"
"$F/grant-limits.sh" "$W" on
# shellcheck disable=SC1091
. "$W/env"

# The server's memberOf against the generator's expectation (as Directory Manager, paged).
want=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["members"]))' "$W/data/bench.json")
got=$(ldapsearch -LLL -o ldif-wrap=no -x -H "$LDAP_URI" -D "$LDAP_DM_DN" -y "$LDAP_DM_PASSWORD_FILE" \
        -E pr=1000/noprompt -b "$LDAP_USERS_DN" \
        "(&(memberOf=cn=demo_notebook_users,$LDAP_GROUPS_DN)(!(nsAccountLock=TRUE)))" 1.1 \
    | grep -c '^dn: ')
say "active members by memberOf: $got (expected $want)"
[ "$got" = "$want" ] || { say "ERROR: memberOf member count $got != expected $want"; exit 1; }

# Build once, then run the bench binary itself under /usr/bin/time (cargo's own RSS is not wanted).
cd "$ROOT/daemon"
exe=$(low cargo bench --bench directory_sync --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "directory_sync" and m.get("executable"):
        print(m["executable"])')
[ -x "$exe" ] || { say "ERROR: bench build failed (run: cargo bench --bench directory_sync --no-run)"; exit 1; }
say "running $exe"
# The server runs at nice NICE (started by load.sh above); the bench client runs at the same.
LDAP_WORKDIR=$W /usr/bin/time -v nice -n "$NICE" "$exe" --bench 2> "$W/time.txt"
grep '^run ' "$W/time.txt" >&2 || true
grep -E 'Maximum resident set size|Elapsed \(wall clock\)' "$W/time.txt"
