# shellcheck shell=bash
# busybox for local-path-provisioner v0.0.30's helper pods (its default helper image `busybox`,
# = docker.io/library/busybox:latest; the pods run `sh -c` with mkdir/rm/chmod). Debian's
# busybox-static, extracted (no dpkg, no libc), with its applet links.
IMG_REFS=(busybox:latest)
IMG_UPSTREAM="docker.io/library/busybox:latest"
IMG_FROM="Debian trixie busybox-static (extracted) with its applet symlinks"
IMG_DEBS="busybox-static"
IMG_VARIANT=extract
IMG_CMD='["sh"]'

customize() {
  local a
  for a in $("$ROOTFS/bin/busybox" --list); do
    [ -e "$ROOTFS/bin/$a" ] || ln -s busybox "$ROOTFS/bin/$a"
  done
  mkdir -p "$ROOTFS/etc" "$ROOTFS/tmp" "$ROOTFS/root"
  chmod 1777 "$ROOTFS/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ROOTFS/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOTFS/etc/group"
  rm -rf "$ROOTFS/var/lib/dpkg" "$ROOTFS/usr/share"
  "$ROOTFS/bin/sh" -c 'echo busybox sh works' >&2
}
