#!/usr/bin/env bash
# Builds the test control plane binaries (kube-apiserver, kube-controller-manager, kubectl,
# kine, helm-controller) from Go modules and caches them outside the checkout:
#   ${PANGEO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pangeo-appliance}/controlplane/<key>/bin/
# GOMODCACHE is also kept under .../controlplane/ so a fresh clone on the same machine (CI)
# reuses the downloads; the Go build cache is dropped after a successful build (4 GiB).
#
# Usage: build.sh [--print-bin-dir]
#   --print-bin-dir  print only the bin dir on stdout (building first if needed)
# Exit codes: 0 ok (binaries in the bin dir), 1 build failed, 3 go not found (prints "SKIPPED: go not found").
set -euo pipefail
# The body is one compound command, parsed whole before it runs, so editing or checking out this
# file during a (long) build cannot change what the running build executes.
{
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PRINT_ONLY=0
[ "${1:-}" = "--print-bin-dir" ] && PRINT_ONLY=1

if ! GO="$(cp_find_go)"; then
  echo "SKIPPED: go not found (install Go >= 1.26.7 to build the test control plane)"
  exit 3
fi

ROOT="$(cp_cache_root)"
KEY="$(cp_cache_key "$GO")"
KEYDIR="$ROOT/$KEY"
BIN="$KEYDIR/bin"

if cp_bin_complete "$BIN"; then
  cp_log "cache hit: $BIN"
  [ "$PRINT_ONLY" = 1 ] && echo "$BIN"
  exit 0
fi

mkdir -p "$ROOT"
# One builder at a time per cache dir (parallel test runs share it).
exec 9>"$ROOT/.build.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  cp_log "another build holds $ROOT/.build.lock; waiting"
  flock 9
fi
if cp_bin_complete "$BIN"; then    # built by someone else while we waited
  cp_log "cache hit: $BIN"
  [ "$PRINT_ONLY" = 1 ] && echo "$BIN"
  exit 0
fi

export GOMODCACHE="$ROOT/gomod"
export GOCACHE="$ROOT/gocache"
export GOFLAGS=-mod=readonly     # go.mod/go.sum are committed; never rewrite them
export GOTOOLCHAIN=local
export GOWORK=off
cp_log "cache miss: building into $BIN"
cp_log "go: $GO ($("$GO" env GOVERSION)), GOMODCACHE=$GOMODCACHE, GOCACHE=$GOCACHE"
cp_log "versions: kubernetes $KUBERNETES_VERSION, kine $KINE_VERSION, helm-controller $HELM_CONTROLLER_VERSION"

TMP="$KEYDIR/bin.tmp.$$"
rm -rf "$TMP"; mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT

K8S_MINOR="${KUBERNETES_VERSION#v1.}"; K8S_MINOR="${K8S_MINOR%%.*}"
K8S_LDFLAGS="-s -w \
 -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$K8S_MINOR \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$K8S_MINOR"

# As kine's scripts/build, minus the nats driver (only SQLite is used here).
KINE_TAGS="sqlite_unlock_notify,sqlite_vtable,sqlite_stat4,sqlite_preupdate_hook,sqlite_math_functions,sqlite_dbstat,sqlite_column_metadata"
KINE_CFLAGS="-DSQLITE_DEFAULT_MEMSTATUS=0 -DSQLITE_DISABLE_INTRINSIC -DSQLITE_ENABLE_COLUMN_METADATA \
 -DSQLITE_ENABLE_DBPAGE_VTAB -DSQLITE_ENABLE_DBSTAT_VTAB -DSQLITE_ENABLE_MATH_FUNCTIONS \
 -DSQLITE_ENABLE_MEMORY_MANAGEMENT -DSQLITE_ENABLE_OFFSET_SQL_FUNC -DSQLITE_ENABLE_PREUPDATE_HOOK \
 -DSQLITE_ENABLE_RBU -DSQLITE_ENABLE_RTREE -DSQLITE_ENABLE_SESSION -DSQLITE_ENABLE_SNAPSHOT \
 -DSQLITE_ENABLE_STAT4 -DSQLITE_ENABLE_UNLOCK_NOTIFY -DSQLITE_LIKE_DOESNT_MATCH_BLOBS \
 -DSQLITE_THREADSAFE=1 -DSQLITE_WITHOUT_ZONEMALLOC"

build_one() { # name module-dir package [extra go build args...]
  local name="$1" dir="$2" pkg="$3"; shift 3
  local t0 t1
  t0=$(date +%s)
  cp_log "building $name ($pkg) ..."
  if ! (cd "$CP_DIR/go/$dir" && "$GO" build -trimpath "$@" -o "$TMP/$name" "$pkg") >"$TMP/$name.log" 2>&1; then
    tail -n 40 "$TMP/$name.log" >&2
    cp_die "building $name failed (see output above; go downloads missing modules from \$GOPROXY=$("$GO" env GOPROXY))" 1
  fi
  t1=$(date +%s)
  cp_log "built $name in $((t1 - t0))s"
}

# Every binary of one module in one `go build` (-o DIR/), so shared packages compile once:
# the control plane's and the test node's (kubelet, kube-proxy, kube-scheduler).
build_module() { # label module-dir [go build args...] -- packages...
  local label="$1" dir="$2"; shift 2
  local args=() t0 t1
  while [ "$1" != "--" ]; do args+=("$1"); shift; done; shift
  t0=$(date +%s)
  cp_log "building $label ($*) ..."
  if ! (cd "$CP_DIR/go/$dir" && "$GO" build -trimpath "${args[@]}" -o "$TMP/" "$@") >"$TMP/$label.log" 2>&1; then
    tail -n 40 "$TMP/$label.log" >&2
    cp_die "building $label failed (see output above; go downloads missing modules from \$GOPROXY=$("$GO" env GOPROXY))" 1
  fi
  t1=$(date +%s)
  cp_log "built $label in $((t1 - t0))s"
}
K8S_PACKAGES=()
for b in "${CP_K8S_BINARIES[@]}"; do K8S_PACKAGES+=("k8s.io/kubernetes/cmd/$b"); done
build_module kubernetes kubernetes -ldflags "$K8S_LDFLAGS" -- "${K8S_PACKAGES[@]}"
CGO_ENABLED=1 CGO_CFLAGS="$KINE_CFLAGS" build_one kine kine github.com/k3s-io/kine -tags "$KINE_TAGS" \
  -ldflags "-s -w -X github.com/k3s-io/kine/pkg/version.Version=$KINE_VERSION"
build_one helm-controller helm-controller github.com/k3s-io/helm-controller \
  -ldflags "-s -w -X github.com/k3s-io/helm-controller/pkg/version.Version=$HELM_CONTROLLER_VERSION"

rm -f "$TMP"/*.log
rm -rf "$BIN"
mv "$TMP" "$BIN"
trap - EXIT
# The Go build cache (about 4 GiB) is shared with the node's build (integration-tests/node/build.sh),
# which drops it once every Go binary is cached; see cp_drop_gocache in lib.sh.
[ "${CP_KEEP_GOCACHE:-0}" = 1 ] || cp_drop_gocache "$GO"
cp_log "done: $BIN"
[ "$PRINT_ONLY" = 1 ] && echo "$BIN"
exit 0
}
