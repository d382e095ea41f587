# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# The control plane's settings for build.sh / start.sh / stop.sh / smoke.sh, on top of the one
# shell library (integration-tests/lib/common.sh). Source, don't execute.

CP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/common.sh
. "$CP_DIR/../lib/common.sh"
PANGEO_LOG_TAG=controlplane

# Pinned versions. Keep KUBERNETES_VERSION in sync with go/kubernetes/go.mod (k3s in the image and
# the Rust k8s-openapi feature use the same minor, v1_36).
KUBERNETES_VERSION=v1.36.5
KINE_VERSION=v0.17.5
HELM_CONTROLLER_VERSION=v0.17.9
# Bump when the build flags below change, so the cache key changes.
CP_BUILD_REV=2

# Built from the k8s.io/kubernetes module in one `go build`: the control plane's and the node's.
CP_K8S_BINARIES=(kube-apiserver kube-controller-manager kubectl kubelet kube-proxy kube-scheduler)
CP_BINARIES=("${CP_K8S_BINARIES[@]}" kine helm-controller)
CP_MODULES=(kubernetes kine helm-controller)

cp_cache_root() { go_cache_root; }

# Cache key: versions + go version + hash of all go.mod/go.sum + build revision.
cp_cache_key() {
  echo "k8s-${KUBERNETES_VERSION}_kine-${KINE_VERSION}_hc-${HELM_CONTROLLER_VERSION}_$("$1" env GOVERSION)_r${CP_BUILD_REV}_$(go_modules_hash "$CP_DIR/go" "${CP_MODULES[@]}")"
}

# Prints the bin dir for the current sources (whether built or not). Needs go for the key.
cp_bin_dir() {
  if [ -n "${CONTROLPLANE_BIN_DIR:-}" ]; then echo "$CONTROLPLANE_BIN_DIR"; return 0; fi
  local gobin
  gobin="$(find_go)" || return 3
  echo "$(cp_cache_root)/$(cp_cache_key "$gobin")/bin"
}

cp_bin_complete() { bins_complete "$1" "${CP_BINARIES[@]}"; }
