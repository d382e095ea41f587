# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# traefik:v3.6.12 (JupyterHub chart 4.4.0 proxy.traefik.image.tag; autohttps, off with pangeod's
# values) and docker.io/traefik:3.3.5 (dask-gateway chart 2026.3.0 traefik.image, which pangeod's
# values keep): one image, both refs. The dask-gateway chart runs it as uid 1000 with args only
# (`--providers.kubernetescrd ...`), so the entrypoint is the traefik binary.
# The binary is the node build's Traefik v3.6.12 (v3.7 does not build from the module proxy:
# /work/shared/NODE.md), so 3.3.5 is served by 3.6.12.
IMG_REFS=(traefik:v3.6.12 docker.io/traefik:3.3.5)
IMG_UPSTREAM="traefik:v3.6.12 and docker.io/traefik:3.3.5 (Docker official image: alpine + traefik)"
IMG_FROM="a scratch rootfs: the node build's traefik v3.6.12 binary + CA certificates"
IMG_DEBS=""
IMG_ENTRYPOINT='["/usr/local/bin/traefik"]'

traefik_bin() {
  local d
  d="$(img_node_bin_dir)" || true
  [ -n "$d" ] && [ -x "$d/traefik" ] || return 1
  echo "$d/traefik"
}

available() {
  traefik_bin >/dev/null || { echo "traefik not found: build the node (integration-tests/node/build.sh) or set PANGEO_NODE_BIN_DIR to a dir with traefik"; return 1; }
}

extra_key() { sha256sum "$(traefik_bin)" | cut -c1-64; }

customize() {
  install -m 0755 "$(traefik_bin)" "$ROOTFS/usr/local/bin/traefik"
  "$ROOTFS/usr/local/bin/traefik" version >&2
}
