# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# Shared helpers for build.sh / start.sh / stop.sh / smoke.sh. Source, don't execute.

CP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

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

cp_log() { printf '[controlplane] %s\n' "$*" >&2; }
cp_die() { printf '[controlplane] ERROR: %s\n' "$1" >&2; exit "${2:-1}"; }

# Locate go: PATH first, then the usual install location.
cp_find_go() {
  if command -v go >/dev/null 2>&1; then command -v go; return 0; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return 0; fi
  return 1
}

# The Go build cache is only a speed-up for the next version bump, which is rare; once every Go
# binary is cached, drop it so the disk stays free for the Rust builds and the image.
cp_drop_gocache() {
  GOCACHE="$(cp_cache_root)/gocache" "$1" clean -cache >/dev/null 2>&1 || true
}

cp_cache_root() {
  echo "${PANGEO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pangeo-appliance}/controlplane"
}

# Cache key: versions + go version + hash of all go.mod/go.sum + build revision.
cp_cache_key() {
  local gobin="$1" gover hash
  gover="$("$gobin" env GOVERSION)"
  hash="$(cd "$CP_DIR/go" && cat kubernetes/go.mod kubernetes/go.sum kine/go.mod kine/go.sum \
            helm-controller/go.mod helm-controller/go.sum | sha256sum | cut -c1-12)"
  echo "k8s-${KUBERNETES_VERSION}_kine-${KINE_VERSION}_hc-${HELM_CONTROLLER_VERSION}_${gover}_r${CP_BUILD_REV}_${hash}"
}

# Prints the bin dir for the current sources (whether built or not). Needs go for the key.
cp_bin_dir() {
  if [ -n "${CONTROLPLANE_BIN_DIR:-}" ]; then echo "$CONTROLPLANE_BIN_DIR"; return 0; fi
  local gobin
  gobin="$(cp_find_go)" || return 3
  echo "$(cp_cache_root)/$(cp_cache_key "$gobin")/bin"
}

cp_bin_complete() {
  local d="$1" b
  for b in "${CP_BINARIES[@]}"; do [ -x "$d/$b" ] || return 1; done
  return 0
}

# cp_free_port VAR: sets VAR to a free TCP port on 127.0.0.1, not in $CP_USED_PORTS. Racy by nature (as every "pick a free port"),
# but ports are drawn at random from a high range and checked against listening sockets.
CP_USED_PORTS=""
cp_free_port() {
  local var="$1" p i
  for i in $(seq 1 200); do
    # Below the NodePort range (30000-32767, which kube-proxy answers on 127.0.0.1 too) and
    # Linux's ephemeral range (32768-60999, where an outgoing connection can hold a port
    # between this check and the server's bind: dask-gateway's proxy once got
    # "address already in use" for a port the check had found free).
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 10000 ))
    case " $CP_USED_PORTS " in *" $p "*) continue ;; esac
    if command -v ss >/dev/null 2>&1; then
      [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] && continue
    fi
    # nothing answers on it?
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    CP_USED_PORTS="$CP_USED_PORTS $p"
    printf -v "$var" '%s' "$p"
    return 0
  done
  return 1
}

# The shared/ reference folder lies beside the checkout (CI: beside the clone).
cp_reference_dir() {
  if [ -n "${PANGEO_REFERENCE_DIR:-}" ]; then echo "$PANGEO_REFERENCE_DIR"; return 0; fi
  local top
  top="$(git -C "$CP_DIR" rev-parse --show-toplevel 2>/dev/null)" || top="$(cd "$CP_DIR/../.." && pwd)"
  echo "$top/../shared/reference"
}

# Seconds (one decimal) since a `date +%s.%N` timestamp.
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
