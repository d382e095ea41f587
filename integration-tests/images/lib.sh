# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# Shared helpers of build.sh / import.sh. Source, don't execute.

IMG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/common.sh
. "$IMG_DIR/../lib/common.sh"
PANGEO_LOG_TAG=images

# Bump when the build machinery (build.sh, this file) changes what an image contains: every
# image's cache key includes it. An image's own recipe (<name>/*) is hashed into its key directly.
IMAGES_REV=2
# Debian suite and mirror of every rootfs (images/build's defaults and its PANGEO_MIRROR).
IMG_SUITE=${PANGEO_IMAGES_SUITE:-trixie}
IMG_MIRROR=${PANGEO_MIRROR:-http://deb.debian.org/debian}
# Every file's mtime in the layers (2026-01-01T00:00:00Z); also makes pip write hash-based .pyc.
IMG_EPOCH=1767225600
# Build order: the images that need the node's binaries (traefik, helm) last. busybox and pause
# (local-path helper, sandbox) are the node's: integration-tests/node/images.sh.
IMAGES=(network-tools chp hub gateway-server notebook helm-job traefik)

img_cache_root() { pangeo_cache_dir; }
# The recipes (<name>/recipe.sh) log and fail through these names: every recipe file is hashed
# into its image's cache key, so renaming the calls there would rebuild the images cold.
img_log() { log "$@"; }
img_die() { die "$@"; }

# The node's bin dir (traefik, helm): $PANGEO_NODE_BIN_DIR, else integration-tests/node/build.sh
# --print-bin-dir (which builds them when missing). Empty output: not available.
img_node_bin_dir() {
  if [ -n "${PANGEO_NODE_BIN_DIR:-}" ]; then echo "$PANGEO_NODE_BIN_DIR"; return 0; fi
  local nb="$IMG_DIR/../node/build.sh"
  [ -x "$nb" ] || return 1
  "$nb" --print-bin-dir 2>/dev/null | tail -n 1
}

# Loads <name>/recipe.sh into the IMG_* variables and the customize function.
img_load_recipe() {
  local name="$1"
  [ -f "$IMG_DIR/$name/recipe.sh" ] || die "no recipe $IMG_DIR/$name/recipe.sh"
  unset -f customize extra_key available 2>/dev/null || true
  IMG_REFS=(); IMG_UPSTREAM=""; IMG_FROM=""; IMG_DEBS=""; IMG_ENTRYPOINT=""; IMG_CMD=""
  IMG_USER=""; IMG_WORKDIR=""; IMG_ENV=(); IMG_VARIANT=minbase
  # shellcheck disable=SC1090
  . "$IMG_DIR/$name/recipe.sh"
  [ ${#IMG_REFS[@]} -gt 0 ] || die "$name/recipe.sh sets no IMG_REFS"
}

# Cache key of the loaded recipe: its files, the shared settings, the refs, and what
# extra_key prints (hashes of binaries taken from elsewhere).
img_key() {
  local name="$1" extra=""
  if declare -F extra_key >/dev/null; then extra="$(extra_key)" || return 1; fi
  {
    echo "rev=$IMAGES_REV suite=$IMG_SUITE mirror=$IMG_MIRROR epoch=$IMG_EPOCH"
    printf 'ref=%s\n' "${IMG_REFS[@]}"
    echo "extra=$extra"
    sha256sum < "$IMG_DIR/oci-image"  # the content only: a path would key each checkout apart
    (cd "$IMG_DIR/$name" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}

# The line build.sh and import.sh print for each ref of an image.
img_standin_lines() { # name
  local r
  for r in "${IMG_REFS[@]}"; do
    echo "STAND-IN $r (built from $IMG_FROM) for the upstream image"
  done
}
