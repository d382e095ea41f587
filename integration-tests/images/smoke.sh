#!/usr/bin/env bash
# Imports every stand-in image (import.sh) into a throwaway containerd (own root, state and socket
# in a temp dir, CRI off) and runs each image's entrypoint/command once with runc (`ctr run`), as
# the image's own user, checking the contracts the charts rely on.
#
# Usage: smoke.sh            Needs root, built images (build.sh) and the node's containerd, ctr,
#                            containerd-shim-runc-v2 and runc (integration-tests/node/build.sh).
# Prints `N passed, M failed` last; exit 0 all passed, 1 a failure, 3 skipped.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || skip_suite "needs root (containerd, runc)"
BIN="$(img_node_bin_dir)" || true
for b in containerd ctr containerd-shim-runc-v2 runc; do
  [ -n "$BIN" ] && [ -x "$BIN/$b" ] || skip_suite "$b not found: build the node (integration-tests/node/build.sh) or set PANGEO_NODE_BIN_DIR"
done
rc=0
SET="$("$IMG_DIR/build.sh" --print-dir 2>/dev/null | tail -n 1)" || rc=$?
[ "$rc" = 0 ] || skip_suite "build.sh --print-dir failed (exit $rc): build the images first"

T="$(mktemp -d /tmp/images-smoke.XXXXXX)"
SOCK="$T/containerd.sock"
cat > "$T/config.toml" <<EOF
version = 3
root = "$T/root"
state = "$T/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
EOF
PATH="$BIN:$PATH" "$BIN/containerd" --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
CPID=$!
cleanup() {
  kill "$CPID" 2>/dev/null || true
  wait "$CPID" 2>/dev/null || true
  { grep " $T/" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$T/containerd.log"; die "containerd did not start"; }

ok() { pass "$1"; }
no() { fail "$1"; sed 's/^/     | /' "$T/out" | tail -n 15; }

t0=$(now)
if PANGEO_TEST_IMAGES_DIR="$SET" "$IMG_DIR/import.sh" "$BIN/ctr" "$SOCK" >"$T/out" 2>&1; then
  ok "import.sh: every archive imported in $(elapsed "$t0") s"
else
  no "import.sh"
fi
t0=$(now)
PANGEO_TEST_IMAGES_DIR="$SET" "$IMG_DIR/import.sh" "$BIN/ctr" "$SOCK" >"$T/out" 2>&1 \
  && grep -q "0 archive(s) imported" "$T/out" && ok "import.sh again: nothing re-imported ($(elapsed "$t0") s)" \
  || no "import.sh is idempotent"

n=0
# crun REF [ctr run args...] -- ARGS (no `--`: run the image's own entrypoint + cmd)
crun() {
  local ref="$1" flags=(); shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do flags+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  n=$((n + 1))
  PATH="$BIN:$PATH" timeout 120 "$BIN/ctr" -a "$SOCK" -n k8s.io run --rm --net-host ${flags[@]+"${flags[@]}"} \
    "$ref" "smoke-$n" "$@" >"$T/out" 2>&1
}
expect() { # description grep-pattern REF args...
  local what="$1" pat="$2"; shift 2
  if crun "$@" && grep -qE "$pat" "$T/out"; then ok "$what"; else no "$what"; fi
}

# the name containerd (and the kubelet, via the CRI) gives a ref: docker.io/library/ for short names
norm() {
  local r="$1" first="${1%%/*}"
  if [[ "$r" == */* && ( "$first" == *.* || "$first" == *:* || "$first" == localhost ) ]]; then
    [ "$first" = docker.io ] || { echo "$r"; return; }
    r="${r#docker.io/}"
  fi
  [[ "$r" == */* ]] || r="library/$r"
  echo "docker.io/$r"
}
NAMES="$("$BIN/ctr" -a "$SOCK" -n k8s.io images ls -q 2>/dev/null)"
for ref in $(grep -o '^STAND-IN [^ ]*' "$SET/STAND-IN.txt" | cut -d' ' -f2); do
  full="$(norm "$ref")"
  grep -qxF "$full" <<<"$NAMES" && ok "present: $full" || { echo "$full" > "$T/out"; no "present: $full"; }
done

HUB=quay.io/jupyterhub/k8s-hub:4.4.0
expect "hub: runs as uid 1000 in /srv/jupyterhub" '^1000 /srv/jupyterhub$' "$HUB" -- sh -c 'echo "$(id -u) $(pwd)"'
expect "hub: jupyterhub 5.5.0 on PATH (the chart's args start with jupyterhub)" '^5\.5\.0' "$HUB" -- jupyterhub --version
expect "hub: the chart config's imports (kubespawner, ldapauthenticator, curl client, z2jh's yaml)" 'imports ok' "$HUB" -- \
  python -c 'import kubespawner, ldapauthenticator, pycurl, yaml, jupyterhub_idle_culler, tornado.curl_httpclient; print("imports ok")'
expect "proxy: configurable-http-proxy 5.2.0 as uid 65534" '^65534 5\.2\.0' quay.io/jupyterhub/configurable-http-proxy:5.2.0 -- \
  sh -c 'echo "$(id -u) $(configurable-http-proxy --version)"'
expect "network-tools: iptables runs (the init container's command)" 'iptables v1\.' quay.io/jupyterhub/k8s-network-tools:4.4.0 -- iptables --version
NB="$(norm "$(grep -o '^STAND-IN [^ ]*' "$SET/STAND-IN.txt" | cut -d' ' -f2 | grep -m1 pangeo-notebook)")"
expect "notebook: jovyan 1000 with HOME /home/jovyan" '^1000 /home/jovyan /home/jovyan$' "$NB" -- sh -c 'echo "$(id -u) $HOME $(pwd)"'
expect "notebook: jupyterhub-singleuser (its CMD) is JupyterHub 5.5.0" '^5\.5\.0' "$NB" -- jupyterhub-singleuser --version
expect "notebook: the science stack imports" 'imports ok' "$NB" -- \
  python -c 'import dask_gateway.scheduler_preload, distributed, xarray, zarr, h5netcdf, netCDF4, numpy, iris, jupyterlab; print("imports ok")'
expect "dask-gateway backend: dask-scheduler and dask-worker (the gateway's default commands)" 'dask-scheduler.*version|version' \
  ghcr.io/dask/dask-gateway:2026.3.0 -- sh -c 'dask-scheduler --version && dask-worker --version'
expect "dask-gateway-server 2026.3.0 (entrypoint tini, args from the chart)" '2026\.3\.0' ghcr.io/dask/dask-gateway-server:2026.3.0 -- \
  tini -g -- dask-gateway-server --version
expect "dask-gateway-server kube-controller subcommand" 'kube-controller|usage|Usage' ghcr.io/dask/dask-gateway-server:2026.3.0 -- \
  dask-gateway-server kube-controller --help
expect "traefik: entrypoint is traefik (the dask-gateway chart passes only args)" 'v3\.6\.12' docker.io/library/traefik:3.3.5 --user 1000:1000 -- \
  /usr/local/bin/traefik version
# the helm job image's entrypoint, with no NAME: must fail loudly, not succeed
if crun docker.io/rancher/klipper-helm:latest --user 1000 --env HOME=/home/klipper-helm -- /usr/local/bin/helm-job install; then
  no "helm job: exits non-zero without NAME"
else
  grep -q "NAME" "$T/out" && ok "helm job: entrypoint runs as 1000 and exits non-zero without NAME" || no "helm job: error names NAME"
fi
expect "helm job: helm v3.21.4 on PATH" 'v3\.21\.4' docker.io/rancher/klipper-helm:latest -- helm version --short

finish
