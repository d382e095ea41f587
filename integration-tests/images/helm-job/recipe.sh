# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# The Helm job image of helm-controller v0.17.9 (the control plane's): its default job image is
# `rancher/klipper-helm:latest` (pkg/controllers/chart/chart.go DefaultJobImage; k3s passes its own
# --default-job-image, the test control plane does not). The pod runs as non-root with a
# read-only root filesystem and runAsNonRoot, so the image's USER is numeric (1000).
# The entrypoint is this project's helm-job script (see its header for the contract).
# Charts: when $PANGEO_TEST_CHARTS_DIR holds *.tgz, they are baked in at /static/charts/ (what
# k3s serves at https://%{KUBERNETES_API}%/static/charts/, the URLs pangeod renders).
IMG_REFS=(docker.io/rancher/klipper-helm:latest)
IMG_UPSTREAM="rancher/klipper-helm (k3s-io/klipper-helm: alpine + helm + its entry script)"
IMG_FROM="Debian trixie minbase + bash, curl, jq + helm from the node build + the project's helm-job entrypoint"
IMG_DEBS="bash,curl,jq,ca-certificates"
IMG_ENTRYPOINT='["/usr/local/bin/helm-job"]'
IMG_USER=1000
IMG_WORKDIR=/home/klipper-helm
IMG_ENV=("HOME=/home/klipper-helm")

helm_bin() {
  local d
  d="$(img_node_bin_dir)" || true
  [ -n "$d" ] && [ -x "$d/helm" ] || return 1
  echo "$d/helm"
}

available() {
  helm_bin >/dev/null || { echo "helm not found: build the node (integration-tests/node/build.sh) or set PANGEO_NODE_BIN_DIR to a dir with helm"; return 1; }
}

extra_key() {
  sha256sum "$(helm_bin)" | cut -c1-64
  if [ -n "${PANGEO_TEST_CHARTS_DIR:-}" ]; then
    (cd "$PANGEO_TEST_CHARTS_DIR" && sha256sum -- *.tgz 2>/dev/null) || true
  fi
}

customize() {
  install -m 0755 "$(helm_bin)" "$ROOTFS/usr/local/bin/helm"
  install -m 0755 "$IMG_DIR/helm-job/helm-job" "$ROOTFS/usr/local/bin/helm-job"
  add_user klipper-helm 1000 1000 /home/klipper-helm
  mkdir -p "$ROOTFS/home/klipper-helm/.helm" "$ROOTFS/home/klipper-helm/.cache" "$ROOTFS/home/klipper-helm/.config"
  chown -R 1000:1000 "$ROOTFS/home/klipper-helm"
  mkdir -p "$ROOTFS/static/charts"
  if [ -n "${PANGEO_TEST_CHARTS_DIR:-}" ]; then
    local f
    for f in "$PANGEO_TEST_CHARTS_DIR"/*.tgz; do
      [ -f "$f" ] && install -m 0644 "$f" "$ROOTFS/static/charts/" && img_log "helm-job: baked in $(basename "$f")"
    done
  fi
  : > "$ROOTFS/dev/termination-log" 2>/dev/null || true
  in_root helm version --short >&2
}
