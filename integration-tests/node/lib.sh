# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# Shared helpers for the test node's build.sh / start.sh / stop.sh / smoke.sh. Source, don't execute.
# Builds on the control plane's lib.sh (its versions and binaries; it sources integration-tests/lib/common.sh).

NODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../controlplane/lib.sh
. "$NODE_DIR/../controlplane/lib.sh"

# Pinned versions. Each one is also the `tool` module version in go/<name>/go.mod; change both.
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
CNI_PLUGINS_VERSION=v1.10.0
CRI_TOOLS_VERSION=v1.37.0
COREDNS_VERSION=v1.15.0
LOCAL_PATH_PROVISIONER_VERSION=v0.0.30
HELM_VERSION=v3.21.4
TRAEFIK_VERSION=v3.6.12
# pause.c comes from the k8s.io/kubernetes module (the control plane's KUBERNETES_VERSION); this is
# the image tag its Makefile gives it, and containerd 2.4.2's default sandbox image.
PAUSE_VERSION=3.10.2
# Bump when the build flags below change, so the cache key changes.
NODE_BUILD_REV=1

# Go modules under go/, in build order (cheap ones first, so a failure shows early).
NODE_MODULES=(runc cni-plugins cri-tools helm local-path-provisioner coredns containerd traefik)
NODE_BINARIES=(containerd containerd-shim-runc-v2 ctr runc bridge host-local loopback portmap crictl
  coredns local-path-provisioner helm traefik pause)

# Machine-wide lock: one test node at a time (cni0, the KUBE-*/CNI-* chains, the sysctls are global).
# start.sh takes it on fd 7 and every node process inherits that fd, so it is held while any of them
# lives; stop.sh sweeps the global state only when it can take the lock (no other node runs).
NODE_LOCK=/run/lock/pangeo-test-node.lock

PANGEO_LOG_TAG=node

node_cache_root() { echo "$(pangeo_cache_dir)/node"; }

# Cache key: the versions, go version, build revision and a hash of every go.mod/go.sum.
node_cache_key() {
  echo "containerd-${CONTAINERD_VERSION}_runc-${RUNC_VERSION}_k8s-${KUBERNETES_VERSION}_$("$1" env GOVERSION)_r${NODE_BUILD_REV}_$(go_modules_hash "$NODE_DIR/go" "${NODE_MODULES[@]}")"
}

node_bin_dir() {
  if [ -n "${NODE_BIN_DIR:-}" ]; then echo "$NODE_BIN_DIR"; return 0; fi
  local gobin
  gobin="$(find_go)" || return 3
  echo "$(node_cache_root)/$(node_cache_key "$gobin")/bin"
}

node_bin_complete() { bins_complete "$1" "${NODE_BINARIES[@]}"; }
