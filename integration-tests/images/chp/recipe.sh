# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# quay.io/jupyterhub/configurable-http-proxy:5.2.0 (JupyterHub chart 4.4.0 proxy.chp.image.tag).
# The chart's proxy deployment sets `command: [configurable-http-proxy, --ip=, --api-ip=, ...]`
# and runs it as uid 65534. configurable-http-proxy 5.2.0 and its dependencies are installed by
# `npm ci` on the host from package-lock.json (pure JavaScript), then copied in.
IMG_REFS=(quay.io/jupyterhub/configurable-http-proxy:5.2.0)
IMG_UPSTREAM="quay.io/jupyterhub/configurable-http-proxy:5.2.0 (node:alpine + npm configurable-http-proxy)"
IMG_FROM="Debian trixie minbase + nodejs + npm configurable-http-proxy@5.2.0"
IMG_DEBS="nodejs,ca-certificates"
IMG_ENTRYPOINT='["/usr/local/bin/configurable-http-proxy"]'
IMG_USER=65534
IMG_WORKDIR=/srv/configurable-http-proxy

customize() {
  command -v npm >/dev/null || img_die "npm not found on the host (apt-get install npm)"
  local stage="$WORK/npm"
  mkdir -p "$stage"
  cp "$IMG_DIR/chp/package.json" "$IMG_DIR/chp/package-lock.json" "$stage/"
  (cd "$stage" && npm ci --omit=dev --no-audit --no-fund --ignore-scripts --cache "$NPM_CACHE" >&2)
  mkdir -p "$ROOTFS/srv/configurable-http-proxy"
  cp -a "$stage/node_modules" "$ROOTFS/srv/configurable-http-proxy/"
  chown -R 0:0 "$ROOTFS/srv/configurable-http-proxy"
  ln -sfn ../../../srv/configurable-http-proxy/node_modules/configurable-http-proxy/bin/configurable-http-proxy \
    "$ROOTFS/usr/local/bin/configurable-http-proxy"
  in_root /usr/local/bin/configurable-http-proxy --version >&2
}
