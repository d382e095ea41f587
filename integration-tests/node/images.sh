#!/usr/bin/env bash
# Builds the test node's images as single-layer OCI archives (integration-tests/images/oci-image) and
# prints their paths, one per line, for `ctr -n k8s.io images import` (no registry involved):
#   pause    registry.k8s.io/pause:3.10.2 (containerd 2.4.2's sandbox image) and :3.10.1 (the
#            JupyterHub chart's), from the node build's static pause
#   coredns  registry.k8s.io/coredns/coredns:v1.15.0, the node build's coredns
#   local-path-provisioner  docker.io/rancher/local-path-provisioner:v0.0.30
#   busybox  docker.io/library/busybox:latest: the host's busybox-static (sh, sleep, nslookup, nc,
#            httpd, ...) for test pods and local-path's helper pods. Its wget segfaults: use nc.
# Archives are cached by content hash (inputs' sha256 + oci-image's own) in
#   $PANGEO_CACHE_DIR/node/images/<name>-<hash>.tar
# Usage: images.sh <node-bin-dir>      Exit: 0 ok, 1 failure.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 <node-bin-dir>" >&2; exit 2; }
BIN="$1"
OCI_IMAGE="$NODE_DIR/../images/oci-image"
[ -x "$OCI_IMAGE" ] || die "$OCI_IMAGE not found (it writes the OCI archives)" 1
command -v python3 >/dev/null 2>&1 || die "python3 not found (oci-image needs it)" 1
BUSYBOX="${NODE_BUSYBOX:-/bin/busybox}"
if [ ! -x "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then  # ldd fails on a static binary
  die "$BUSYBOX is not a static busybox (apt-get install busybox-static, or set NODE_BUSYBOX)" 1
fi

IMG_DIR="$(node_cache_root)/images"
mkdir -p "$IMG_DIR"
# Bump when a rootfs recipe below changes.
IMAGES_REV=1

# image <name> <input files (hashed)...> -- <oci-image args...>; the rootfs is made by mk_<name> "$ROOTFS".
image() {
  local name="$1"; shift
  local inputs=() hash out tmp
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done; shift
  hash="$( { echo "rev $IMAGES_REV $name $*"; sha256sum "${inputs[@]}" "$OCI_IMAGE" | cut -d' ' -f1; } | sha256sum | cut -c1-16)"
  out="$IMG_DIR/$name-$hash.tar"
  if [ ! -s "$out" ]; then
    tmp="$(mktemp -d "$IMG_DIR/.build.$name.XXXXXX")"
    mkdir "$tmp/rootfs"
    "mk_$name" "$tmp/rootfs"
    python3 "$OCI_IMAGE" --rootfs "$tmp/rootfs" "$@" -o "$tmp/image.tar" >&2 \
      || { rm -rf "$tmp"; die "oci-image failed for $name" 1; }
    mv -f "$tmp/image.tar" "$out"
    rm -rf "$tmp"
    log "image $name built: $out ($(du -h "$out" | cut -f1))"
  fi
  echo "$out"
}

base_files() { # rootfs: /etc/passwd, /etc/group, /tmp
  mkdir -p "$1/etc" "$1/tmp"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$1/etc/group"
}
mk_pause() { install -m 0755 "$BIN/pause" "$1/pause"; }
mk_coredns() { base_files "$1"; install -m 0755 "$BIN/coredns" "$1/coredns"; }
mk_local-path-provisioner() {
  base_files "$1"; mkdir -p "$1/usr/bin"
  install -m 0755 "$BIN/local-path-provisioner" "$1/usr/bin/local-path-provisioner"
}
mk_busybox() {
  local a
  base_files "$1"; mkdir -p "$1/bin" "$1/root" "$1/www"
  install -m 0755 "$BUSYBOX" "$1/bin/busybox"
  for a in $("$BUSYBOX" --list); do
    [ -e "$1/bin/$a" ] || ln -s busybox "$1/bin/$a"
  done
}

image pause "$BIN/pause" -- --name "registry.k8s.io/pause:$PAUSE_VERSION" --name registry.k8s.io/pause:3.10.1 \
  --entrypoint '["/pause"]' --user 65535:65535
image coredns "$BIN/coredns" -- --name "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" \
  --entrypoint '["/coredns"]'
image local-path-provisioner "$BIN/local-path-provisioner" -- \
  --name "docker.io/rancher/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION" \
  --entrypoint '["local-path-provisioner"]'
image busybox "$BUSYBOX" -- --name docker.io/library/busybox:latest --cmd '["sh"]'
