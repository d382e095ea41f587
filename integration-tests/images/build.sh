#!/usr/bin/env bash
# Builds the container images of the in-cluster integration test from Debian, PyPI and npm
# packages (and the node's traefik and helm binaries), as single-layer OCI archives that
# `ctr -n k8s.io images import` takes with no registry, tagged with exactly the references the
# JupyterHub chart 4.4.0 and dask-gateway chart 2026.3.0 use with pangeod's values.
#
#   ${PANGEO_CACHE_DIR:-~/.cache/pangeo-appliance}/images/test-<image>-<key>/<image>.tar
#   ${PANGEO_CACHE_DIR:-~/.cache/pangeo-appliance}/images/test-set-<key>/   symlinks to the set + STAND-IN.txt
# <key> = hash of the image's recipe (<image>/*), the refs, the Debian suite/mirror, oci-image,
# and the binaries taken from the node build. A present archive is a cache hit.
#
# Usage: build.sh [--print-dir] [--only IMAGE]... [--relock IMAGE]
#   --print-dir    print only the set dir (holding *.tar) on stdout, last line
#   --only IMAGE   build only these images (no set dir)
#   --relock IMAGE resolve IMAGE/requirements.in inside the image's Debian rootfs (wheels preferred; sdists of pure-Python packages build without a compiler)
#                  and rewrite IMAGE/requirements.txt, then exit
# Prints `STAND-IN <ref> (built from <what>) for the upstream image` per ref.
# Env: PANGEO_CACHE_DIR, PANGEO_MIRROR (Debian mirror), PANGEO_NODE_BIN_DIR (traefik, helm;
#      default: integration-tests/node/build.sh --print-bin-dir), PANGEO_TEST_CHARTS_DIR (chart
#      archives baked into the helm job image, see helm-job/recipe.sh).
# Exit: 0 built, 1 failure, 3 a prerequisite missing (prints SKIPPED: why).
set -euo pipefail
{
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PRINT_DIR=0
ONLY=()
RELOCK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --print-dir) PRINT_DIR=1 ;;
    --only) ONLY+=("${2:?--only needs an image name}"); shift ;;
    --relock) RELOCK="${2:?--relock needs an image name}"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" 2 ;;
  esac
  shift
done

[ "$(id -u)" = 0 ] || { echo "SKIPPED: build.sh needs root (mmdebstrap root mode, chroot, file ownership in the rootfs)"; exit 3; }
for t in python3 sha256sum flock unshare chroot; do
  command -v "$t" >/dev/null 2>&1 || { echo "SKIPPED: $t not found (Debian: apt-get install util-linux coreutils python3)"; exit 3; }
done
if ! command -v mmdebstrap >/dev/null 2>&1; then
  log "installing mmdebstrap (apt-get install --no-install-recommends mmdebstrap)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >&2 \
    || { echo "SKIPPED: mmdebstrap is missing and could not be installed (apt-get install mmdebstrap)"; exit 3; }
fi

ROOT_CACHE="$(img_cache_root)"
CACHE="$ROOT_CACHE/images"
PIP_CACHE="${PIP_CACHE_DIR:-$ROOT_CACHE/pip}"
NPM_CACHE="$ROOT_CACHE/npm"
DEB_CACHE="$CACHE/test-debs-$IMG_SUITE"
mkdir -p "$CACHE" "$PIP_CACHE" "$NPM_CACHE" "$DEB_CACHE"

exec 9>"$CACHE/.test-images.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.test-images.lock; waiting"
  flock 9
fi

WORK=""
cleanup() { [ -n "$WORK" ] && rm -rf "$WORK"; true; }
trap cleanup EXIT

# ------------------------------------------------------------------ helpers for recipes
# Runs a command chrooted in $ROOTFS, in a private mount namespace (so nothing stays mounted),
# with /proc, /dev, the host's pip cache at /var/cache/pip-host and the host's resolv.conf.
in_root() {
  cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  # The host's CA bundle (it may hold a TLS-intercepting proxy's CA that the image's does not):
  # bind-mounted for pip only, never left in the image.
  local ca="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
  : > "$ROOTFS/tmp/.host-ca.crt"
  local passenv=() v
  for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!v:-}" ] && passenv+=("$v=${!v}")
  done
  unshare --mount --propagation private -- /bin/sh -ec '
    r=$1; pc=$2; ep=$3; ca=$4; shift 4
    mount -t proc proc "$r/proc"
    mkdir -p "$r/dev" && mount --rbind /dev "$r/dev"
    mkdir -p "$r/var/cache/pip-host" && mount --bind "$pc" "$r/var/cache/pip-host"
    [ -f "$ca" ] && mount --bind "$ca" "$r/tmp/.host-ca.crt"
    exec chroot "$r" /usr/bin/env -i PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 PIP_CACHE_DIR=/var/cache/pip-host PIP_DISABLE_PIP_VERSION_CHECK=1 \
      PIP_CERT=/tmp/.host-ca.crt PIP_DEFAULT_TIMEOUT=180 \
      PIP_ROOT_USER_ACTION=ignore SOURCE_DATE_EPOCH="$ep" DEBIAN_FRONTEND=noninteractive "$@"
  ' sh "$ROOTFS" "$PIP_CACHE" "$IMG_EPOCH" "$ca" ${passenv[@]+"${passenv[@]}"} "$@"
}

# add_user NAME UID GID HOME [SHELL]: passwd/group/shadow entries and the home directory.
add_user() {
  local name="$1" uid="$2" gid="$3" home="$4" shell="${5:-/bin/bash}"
  grep -q "^[^:]*:[^:]*:$gid:" "$ROOTFS/etc/group" 2>/dev/null || echo "$name:x:$gid:" >> "$ROOTFS/etc/group"
  echo "$name:x:$uid:$gid::$home:$shell" >> "$ROOTFS/etc/passwd"
  [ -f "$ROOTFS/etc/shadow" ] && echo "$name:!:20454::::::" >> "$ROOTFS/etc/shadow"
  mkdir -p "$ROOTFS$home"
  chown "$uid:$gid" "$ROOTFS$home"
}

# venv_install REQUIREMENTS_FILE: /opt/venv with exactly the pinned wheels (no compilers in the
# image; --no-deps because the file pins every package), then `pip check`.
venv_install() {
  local req="$1"
  [ -x "$ROOTFS/opt/venv/bin/python" ] || in_root python3 -m venv /opt/venv
  cp "$req" "$ROOTFS/tmp/requirements.txt"
  in_root /opt/venv/bin/pip install -q --no-compile --prefer-binary --no-deps -r /tmp/requirements.txt
  in_root /opt/venv/bin/pip check
  in_root /opt/venv/bin/pip uninstall -q -y pip
}

# ------------------------------------------------------------------ one image
make_rootfs() { # $IMG_DEBS -> $ROOTFS
  if [ -z "$IMG_DEBS" ]; then
    mkdir -p "$ROOTFS"/{etc,tmp,proc,sys,dev,root,bin,usr/bin,usr/local/bin}
    chmod 1777 "$ROOTFS/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$ROOTFS/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOTFS/etc/group"
    cp -L /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ca-certificates.crt" 2>/dev/null || true
    if [ -f "$ROOTFS/etc/ca-certificates.crt" ]; then
      mkdir -p "$ROOTFS/etc/ssl/certs"
      mv "$ROOTFS/etc/ca-certificates.crt" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    fi
    return 0
  fi
  mmdebstrap --variant="${IMG_VARIANT:-minbase}" --format=directory --quiet \
    --include="$IMG_DEBS" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --skip=download/empty --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in '$DEB_CACHE' /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives '$DEB_CACHE'" \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$IMG_SUITE" "$ROOTFS" "$IMG_MIRROR" >&2
}

finalize_rootfs() {
  local r="$ROOTFS"
  # .pyc that never go stale by mtime (every mtime in the layer is the same fixed value):
  # Debian's byte-compiled stdlib and the venv, once, hash-based and unchecked.
  if [ -x "$r/usr/bin/python3" ]; then
    local dirs=()
    for d in "$r"/usr/lib/python3 "$r"/usr/lib/python3.[0-9]* "$r"/opt/venv/lib; do
      [ -d "$d" ] && dirs+=("${d#"$r"}")
    done
    in_root python3 -m compileall -q -f -j 2 --invalidation-mode unchecked-hash "${dirs[@]}" >/dev/null 2>&1 \
      || log "compileall: some files did not compile (test data with syntax errors; harmless)"
  fi
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old \
         "$r"/var/cache/pip-host "$r"/root/.cache "$r"/var/log/*.log "$r"/var/log/apt \
         "$r"/tmp/* "$r"/tmp/.[!.]* "$r"/var/tmp/* "$r"/usr/share/man "$r"/usr/share/info \
         "$r"/usr/share/locale "$r"/usr/share/lintian
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  # the kubelet mounts its own over these
  : > "$r/etc/resolv.conf"
  : > "$r/etc/hostname"
  [ -f "$r/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n' > "$r/etc/hosts"
}

NOT_BUILT=()
build_one() { # name -> sets BUILT_TAR (empty: a prerequisite is missing, see NOT_BUILT)
  local name="$1" key dir t0 why
  img_load_recipe "$name"
  if declare -F available >/dev/null && ! why="$(available)"; then
    log "$name: NOT BUILT: $why"
    NOT_BUILT+=("$name: $why")
    BUILT_TAR=""
    return 0
  fi
  key="$(img_key "$name")" || die "$name: cannot compute the cache key (a binary it needs is missing?)"
  dir="$CACHE/test-$name-$key"
  BUILT_TAR="$dir/$name.tar"
  if [ -f "$BUILT_TAR" ]; then
    log "$name: cache hit ($dir)"
    return 0
  fi
  t0=$(now)
  log "$name: building ($dir)"
  WORK="$CACHE/test-work-$name.$$"
  rm -rf "$WORK"; mkdir -p "$WORK"
  ROOTFS="$WORK/rootfs"
  make_rootfs
  if declare -F customize >/dev/null; then customize; fi
  finalize_rootfs
  local args=() r e
  for r in "${IMG_REFS[@]}"; do args+=(--name "$r"); done
  [ -n "$IMG_ENTRYPOINT" ] && args+=(--entrypoint "$IMG_ENTRYPOINT")
  [ -n "$IMG_CMD" ] && args+=(--cmd "$IMG_CMD")
  [ -n "$IMG_USER" ] && args+=(--user "$IMG_USER")
  [ -n "$IMG_WORKDIR" ] && args+=(--workdir "$IMG_WORKDIR")
  for e in "${IMG_ENV[@]}"; do args+=(--env "$e"); done
  args+=(--label "org.opencontainers.image.description=pangeo-appliance test stand-in for $IMG_UPSTREAM")
  local rootfs_mb
  rootfs_mb=$(du -sm "$ROOTFS" | cut -f1)
  python3 "$IMG_DIR/oci-image" "${args[@]}" --mtime "$IMG_EPOCH" --rootfs "$ROOTFS" -o "$WORK/$name.tar"
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  mv "$WORK/$name.tar" "$dir.tmp/$name.tar"
  echo "rootfs_mb=$rootfs_mb archive_bytes=$(stat -c %s "$dir.tmp/$name.tar") build_s=$(elapsed "$t0")" > "$dir.tmp/build-info"
  img_standin_lines "$name" > "$dir.tmp/STAND-IN.txt"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  rm -rf "$WORK"; WORK=""
  log "$name: built in $(elapsed "$t0") s (rootfs $rootfs_mb MB, archive $(du -m "$BUILT_TAR" | cut -f1) MB)"
}

relock() { # name
  local name="$1"
  img_load_recipe "$name"
  [ -f "$IMG_DIR/$name/requirements.in" ] || die "$name has no requirements.in"
  WORK="$CACHE/test-work-relock-$name.$$"
  rm -rf "$WORK"; mkdir -p "$WORK"
  ROOTFS="$WORK/rootfs"
  make_rootfs
  in_root python3 -m venv /opt/venv
  cp "$IMG_DIR/$name/requirements.in" "$ROOTFS/tmp/requirements.in"
  in_root /opt/venv/bin/pip install -q --no-compile --prefer-binary -r /tmp/requirements.in >&2
  in_root /opt/venv/bin/pip check >&2
  {
    echo "# Every package of the $name image's venv, pinned: \`build.sh --relock $name\` resolved"
    echo "# requirements.in with $(in_root /opt/venv/bin/python -c 'import sys; print("Python %d.%d" % sys.version_info[:2])') of Debian $IMG_SUITE, wheels preferred, on $(date -u +%Y-%m-%d)."
    in_root /opt/venv/bin/pip freeze --all --exclude pip --exclude setuptools --exclude wheel
  } > "$IMG_DIR/$name/requirements.txt"
  log "wrote $IMG_DIR/$name/requirements.txt ($(grep -vc '^#' "$IMG_DIR/$name/requirements.txt") packages)"
}

if [ -n "$RELOCK" ]; then relock "$RELOCK"; exit 0; fi

T0=$(now)
LIST=("${IMAGES[@]}")
[ ${#ONLY[@]} -gt 0 ] && LIST=("${ONLY[@]}")
TARS=()
for name in "${LIST[@]}"; do
  build_one "$name"
  [ -n "$BUILT_TAR" ] || continue
  TARS+=("$name=$BUILT_TAR")
  img_standin_lines "$name"
done
if [ ${#NOT_BUILT[@]} -gt 0 ]; then
  printf '[images] not built: %s\n' "${NOT_BUILT[@]}" >&2
  echo "SKIPPED: ${#NOT_BUILT[@]} image(s) not built, a prerequisite is missing: ${NOT_BUILT[*]}"
  exit 3
fi

if [ ${#ONLY[@]} -eq 0 ]; then
  SETKEY="$(printf '%s\n' "${TARS[@]}" | sha256sum | cut -c1-16)"
  SET="$CACHE/test-set-$SETKEY"
  if [ ! -d "$SET" ]; then
    rm -rf "$SET.tmp"; mkdir -p "$SET.tmp"
    for t in "${TARS[@]}"; do
      ln -s "${t#*=}" "$SET.tmp/${t%%=*}.tar"
      img_load_recipe "${t%%=*}"
      img_standin_lines "${t%%=*}" >> "$SET.tmp/STAND-IN.txt"
    done
    mv "$SET.tmp" "$SET"
  fi
  ln -sfn "test-set-$SETKEY" "$CACHE/test-latest"
  log "all images ready in $(elapsed "$T0") s: $SET"
  [ "$PRINT_DIR" = 1 ] && echo "$SET"
fi
exit 0
}
