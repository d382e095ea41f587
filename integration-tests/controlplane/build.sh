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

if ! GO="$(find_go)"; then
  echo "SKIPPED: go not found (install Go >= 1.26.7 to build the test control plane)"
  exit 3
fi
go_build_start "the control plane" "$(cp_cache_root)" "$(cp_cache_key "$GO")" "${CP_BINARIES[@]}"
log "versions: kubernetes $KUBERNETES_VERSION, kine $KINE_VERSION, helm-controller $HELM_CONTROLLER_VERSION"

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

K8S_PACKAGES=()
for b in "${CP_K8S_BINARIES[@]}"; do K8S_PACKAGES+=("k8s.io/kubernetes/cmd/$b"); done
# Every binary of one module in one `go build`, so shared packages compile once: the control
# plane's and the test node's (kubelet, kube-proxy, kube-scheduler).
go_build kubernetes "$CP_DIR/go/kubernetes" -ldflags "$K8S_LDFLAGS" -- "${K8S_PACKAGES[@]}"
CGO_ENABLED=1 CGO_CFLAGS="$KINE_CFLAGS" go_build kine "$CP_DIR/go/kine" -tags "$KINE_TAGS" \
  -ldflags "-s -w -X github.com/k3s-io/kine/pkg/version.Version=$KINE_VERSION" -- github.com/k3s-io/kine
go_build helm-controller "$CP_DIR/go/helm-controller" \
  -ldflags "-s -w -X github.com/k3s-io/helm-controller/pkg/version.Version=$HELM_CONTROLLER_VERSION" -- \
  github.com/k3s-io/helm-controller
go_build_finish
# The Go build cache (about 4 GiB) is shared with the node's build (integration-tests/node/build.sh),
# which drops it once every Go binary is cached; see go_drop_cache in integration-tests/lib/common.sh.
[ "${CP_KEEP_GOCACHE:-0}" = 1 ] || go_drop_cache "$GO"
log "done: $BIN"
[ "$PRINT_ONLY" = 1 ] && echo "$BIN"
exit 0
}
