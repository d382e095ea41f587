#!/usr/bin/env bash
# Imports every stand-in image archive (build.sh) into a containerd's k8s.io namespace, one
# archive per `ctr images import` (ctr takes one), skipping an archive whose every ref already
# points at its manifest. Prints the STAND-IN line of each ref.
#
# Usage: import.sh <ctr-binary> <containerd-socket>
# Env:   PANGEO_TEST_IMAGES_DIR  a set dir with *.tar (default: `build.sh --print-dir`, which
#                                builds what is missing and is a quick cache hit otherwise)
# Exit:  0 all imported, 1 a failure, 2 usage, 3 images not built (SKIPPED: why).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 2 ] || { echo "usage: $0 <ctr-binary> <containerd-socket>" >&2; exit 2; }
CTR="$1"
SOCK="$2"
[ -x "$CTR" ] || die "ctr binary $CTR is not executable (integration-tests/node/build.sh --print-bin-dir has it)" 2
case "$SOCK" in /*) ;; *) SOCK="$(pwd)/$SOCK" ;; esac
[ -S "$SOCK" ] || die "$SOCK is not a socket (is containerd running?)" 2

DIR="${PANGEO_TEST_IMAGES_DIR:-}"
if [ -z "$DIR" ]; then
  rc=0
  out="$("$IMG_DIR/build.sh" --print-dir)" || rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '%s\n' "$out" | grep '^SKIPPED' || true
    [ "$rc" -eq 3 ] && exit 3
    die "build.sh failed (exit $rc)" 1
  fi
  DIR="$(printf '%s\n' "$out" | tail -n 1)"
fi
[ -d "$DIR" ] || die "$DIR is not a directory of image archives" 1
shopt -s nullglob
ARCHIVES=("$DIR"/*.tar)
[ ${#ARCHIVES[@]} -gt 0 ] || die "no *.tar in $DIR" 1

ctr_() { "$CTR" -a "$SOCK" -n k8s.io "$@"; }

# name<TAB>digest for every image the namespace has
present="$(ctr_ images ls 2>/dev/null | awk 'NR>1 {print $1 "\t" $3}')" \
  || die "ctr images ls failed on $SOCK" 1

t0=$(now)
n_imported=0
n_skipped=0
for a in "${ARCHIVES[@]}"; do
  # name<TAB>digest of every index entry of the archive
  want="$(python3 - "$a" <<'PY'
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    idx = json.load(t.extractfile("index.json"))
for m in idx["manifests"]:
    print(m["annotations"]["io.containerd.image.name"] + "\t" + m["digest"])
PY
)" || die "$a: not an OCI archive with an index.json" 1
  missing=0
  while IFS= read -r line; do
    grep -qxF "$line" <<<"$present" || missing=1
  done <<<"$want"
  if [ "$missing" = 0 ]; then
    log "$(basename "$a"): already imported"
    n_skipped=$((n_skipped + 1))
  else
    ts=$(now)
    ctr_ images import "$a" >&2 || die "ctr images import $a failed" 1
    log "$(basename "$a"): imported in $(elapsed "$ts") s"
    n_imported=$((n_imported + 1))
  fi
done
log "$n_imported archive(s) imported, $n_skipped already present, in $(elapsed "$t0") s"
if [ -f "$DIR/STAND-IN.txt" ]; then
  cat "$DIR/STAND-IN.txt"
fi
