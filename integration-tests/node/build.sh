#!/usr/bin/env bash
# Builds the test node's binaries from Go modules (one wrapper module per upstream module under
# go/<name>/, one `go build` per module) plus the pause binary (gcc -static of pause.c from the
# k8s.io/kubernetes module), and caches them outside the checkout:
#   ${PANGEO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pangeo-appliance}/node/<key>/bin/
# kubelet, kube-proxy and kube-scheduler are the control plane's (integration-tests/controlplane/build.sh).
# Uses the control plane's GOMODCACHE and GOCACHE; drops the Go build cache after a successful
# build (run the control-plane build with CP_KEEP_GOCACHE=1 first, then this).
#
# Usage: build.sh [--print-bin-dir]
#   --print-bin-dir  print only the bin dir on stdout (building first if needed)
# Exit codes: 0 ok, 1 build failed / tool missing, 3 go not found (prints "SKIPPED: go not found").
set -euo pipefail
# One compound command, parsed whole before it runs (editing this file mid-build is harmless).
{
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PRINT_ONLY=0
[ "${1:-}" = "--print-bin-dir" ] && PRINT_ONLY=1

if ! GO="$(find_go)"; then
  echo "SKIPPED: go not found (install Go >= 1.26.7 to build the test node)"
  exit 3
fi

# runc links libseccomp (CGO); pause is a static C binary.
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libseccomp 2>/dev/null || missing+=(libseccomp-dev)
if [ ${#missing[@]} -gt 0 ] && ! node_bin_complete "$(node_cache_root)/$(node_cache_key "$GO")/bin"; then
  die "missing: ${missing[*]} (run integration-tests/install-deps, or apt-get install ${missing[*]})" 1
fi
go_build_start "the test node" "$(node_cache_root)" "$(node_cache_key "$GO")" "${NODE_BINARIES[@]}"
CP_ROOT="$(go_cache_root)"
T_ALL=$(date +%s)

build_module() { # module dir under go/, then go_build's arguments
  local dir="$1"; shift
  go_build "$dir" "$NODE_DIR/go/$dir" "$@"
}

# runc: CGO for libseccomp (Debian's libseccomp-dev); without the default libpathrs tag (its C
# library is not in Debian 12). Dynamically linked against libseccomp.so.2 (the host's).
CGO_ENABLED=1 build_module runc -tags "seccomp urfave_cli_no_docs" \
  -ldflags "-s -w -X main.extraVersion=-pangeo" -- github.com/opencontainers/runc
CGO_ENABLED=0 build_module cni-plugins \
  -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" -- \
  github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/ipam/host-local \
  github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/meta/portmap
CGO_ENABLED=0 build_module cri-tools \
  -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION" -- sigs.k8s.io/cri-tools/cmd/crictl
# helm's Makefile derives the default Kubernetes version (chartutil, lint) from its client-go (v0.36.x).
HELM_LD="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata= \
 -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=36 \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=36"
CGO_ENABLED=0 build_module helm -ldflags "$HELM_LD" -- helm.sh/helm/v3/cmd/helm
CGO_ENABLED=0 build_module local-path-provisioner -ldflags "-s -w -X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION" -- \
  github.com/rancher/local-path-provisioner
CGO_ENABLED=0 build_module coredns -ldflags "-s -w" -- github.com/coredns/coredns
# containerd's Makefile tags; it adds no_grpc for the shim only (drops unused gRPC stubs: a smaller
# shim), which would take a second go build; the shim works the same with them.
CGO_ENABLED=0 build_module containerd -tags "no_btrfs no_devmapper no_zfs urfave_cli_no_docs" \
  -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" -- \
  github.com/containerd/containerd/v2/cmd/containerd \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
  github.com/containerd/containerd/v2/cmd/ctr
CGO_ENABLED=0 build_module traefik -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" -- \
  github.com/traefik/traefik/v3/cmd/traefik

# pause: the sandbox's PID 1, from the k8s.io/kubernetes module source (downloaded by the control
# plane's build; fetched here if not).
PAUSE_C="$GOMODCACHE/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
if [ ! -f "$PAUSE_C" ]; then
  (cd "$CP_DIR/go/kubernetes" && "$GO" mod download k8s.io/kubernetes) >&2 \
    || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION for pause.c" 1
fi
t0=$(date +%s)
gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-k8s-$KUBERNETES_VERSION" -o "$TMP/pause" "$PAUSE_C" \
  || die "gcc -static pause.c failed (needs libc6-dev's static libc)" 1
strip "$TMP/pause" 2>/dev/null || true
log "built pause in $(( $(date +%s) - t0 ))s"

go_build_finish
# Every Go binary of the control plane and the node is cached now: drop the shared build cache,
# but not under a control-plane build that is running (it holds its lock while it compiles).
exec 8>"$CP_ROOT/.build.lock"
command -v flock >/dev/null 2>&1 && flock 8
go_drop_cache "$GO"
exec 8>&-
log "done in $(( $(date +%s) - T_ALL ))s: $BIN"
[ "$PRINT_ONLY" = 1 ] && echo "$BIN"
exit 0
}
