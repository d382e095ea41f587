#!/usr/bin/env python3
"""Read images/manifest.toml; verify and install an artifacts folder.

    manifest.py list MANIFEST                 TSV: kind name url-or-ref sha256-or-digest path
    manifest.py get MANIFEST KEY              e.g. k3s.version
    manifest.py verify [--strict] MANIFEST DIR
    manifest.py install MANIFEST DIR ROOTFS
    manifest.py chart-images CHART.tgz        image references named in a chart's values.yaml files
    manifest.py image-file REF                the artifacts-relative tar path of an image

An artifacts folder (made by images/fetch-artifacts) holds the files at their
`path`, images as images/<ref with / and : as _>.tar, SHA256SUMS (sha256sum
format, paths relative to DIR) and images.lock (ref<TAB>digest as fetched).
"""

import hashlib
import os
import re
import shutil
import sys
import tarfile
import tomllib

TODO = "TODO-verify"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def load(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def image_file(ref):
    return "images/" + re.sub(r"[/:@]", "_", ref) + ".tar"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_sums(d):
    sums = {}
    p = os.path.join(d, "SHA256SUMS")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            for line in f:
                parts = line.strip().split(None, 1)
                if len(parts) == 2:
                    sums[parts[1].lstrip("*")] = parts[0]
    return sums


def read_lock(d):
    lock = {}
    p = os.path.join(d, "images.lock")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 2:
                    lock[parts[0]] = parts[1]
    return lock


def cmd_list(m):
    for f in m.get("file", []):
        print("\t".join(["file", f["name"], f["url"], f.get("sha256", TODO), f["path"]]))
    for i in m.get("image", []):
        print("\t".join(["image", i.get("chart", ""), i["ref"], i.get("digest", TODO), image_file(i["ref"])]))
    return 0


def cmd_get(m, key):
    v = m
    for k in key.split("."):
        v = v[k]
    print(v)
    return 0


def cmd_verify(m, d, strict):
    sums = read_sums(d)
    lock = read_lock(d)
    errors, unverified = [], []
    entries = [(f["name"], f["path"], f.get("sha256", TODO), None) for f in m.get("file", [])]
    entries += [(i["ref"], image_file(i["ref"]), None, i.get("digest", TODO)) for i in m.get("image", [])]
    for name, rel, want_sha, want_digest in entries:
        if TODO in name:
            errors.append("%s: the reference itself is unresolved (TODO-verify in manifest)" % name)
            continue
        p = os.path.join(d, rel)
        if not os.path.exists(p):
            errors.append("%s: %s missing" % (name, rel))
            continue
        got = sha256_file(p)
        if sums.get(rel) != got:
            errors.append("%s: sha256 %s does not match SHA256SUMS (%s)" % (rel, got, sums.get(rel)))
            continue
        if want_sha is not None:
            if HEX64.match(want_sha):
                if got != want_sha:
                    errors.append("%s: sha256 %s, manifest pins %s" % (rel, got, want_sha))
            else:
                unverified.append("%s (sha256 %s not pinned in manifest)" % (name, got))
        if want_digest is not None:
            have = lock.get(name, "")
            if DIGEST.match(want_digest):
                if have != want_digest:
                    errors.append("%s: fetched digest %s, manifest pins %s" % (name, have or "?", want_digest))
            else:
                unverified.append("%s (digest %s not pinned in manifest)" % (name, have or "?"))
    for u in unverified:
        print("manifest: UNVERIFIED %s" % u, file=sys.stderr)
    for e in errors:
        print("manifest: ERROR %s" % e, file=sys.stderr)
    if errors:
        return 1
    if unverified and strict:
        print("manifest: --strict: %d unverified entries" % len(unverified), file=sys.stderr)
        return 1
    print("manifest: %d entries ok, %d unverified" % (len(entries), len(unverified)), file=sys.stderr)
    return 0


def cmd_install(m, d, root):
    def dest(path):
        return os.path.join(root, path.lstrip("/"))

    # sha256 of every installed file, by its path on the appliance: pangeod's k3s step checks
    # the bundle against the manifest and, for what the manifest pins by registry digest
    # (image tarballs) or does not pin yet, against this record.
    installed = []
    for f in m.get("file", []):
        target = dest(f["install"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(d, f["path"]), target)
        os.chmod(target, int(f.get("mode", "0644"), 8))
        installed.append((sha256_file(target), f["install"]))
        print("installed %s -> %s" % (f["path"], f["install"]), file=sys.stderr)
    img_dir = dest("/var/lib/rancher/k3s/agent/images")
    os.makedirs(img_dir, exist_ok=True)
    for i in m.get("image", []):
        rel = image_file(i["ref"])
        target = os.path.join(img_dir, os.path.basename(rel))
        shutil.copyfile(os.path.join(d, rel), target)
        installed.append((sha256_file(target), "/var/lib/rancher/k3s/agent/images/" + os.path.basename(rel)))
    os.makedirs(dest("/usr/share/pangeo"), exist_ok=True)
    with open(dest("/usr/share/pangeo/installed.sha256"), "w", encoding="utf-8") as out:
        for digest, path in installed:
            out.write("%s  %s\n" % (digest, path))
    charts = dest("/usr/share/pangeo/charts")
    os.makedirs(charts, exist_ok=True)
    with open(os.path.join(charts, "index.toml"), "w", encoding="utf-8") as out:
        out.write("# charts baked into this image (from images/manifest.toml)\n")
        for f in m.get("file", []):
            if "chart" in f:
                out.write('[%s]\nversion = "%s"\nfile = "%s"\n\n' % (f["chart"], f["version"], f["install"]))
    lock = read_lock(d)
    with open(dest("/usr/share/pangeo/images.lock"), "w", encoding="utf-8") as out:
        for ref, digest in sorted(lock.items()):
            out.write("%s\t%s\n" % (ref, digest))
    return 0


IMAGE_RE = re.compile(r"^\s*(name|repository|registry|tag)\s*:\s*['\"]?([^'\"#\s]*)")


def cmd_chart_images(tgz):
    """Best-effort scan of values.yaml files: name/repository (+registry) followed by tag."""
    found = set()
    with tarfile.open(tgz) as t:
        for member in t.getmembers():
            if not member.name.endswith("values.yaml"):
                continue
            text = t.extractfile(member).read().decode("utf-8", "replace")
            registry = name = None
            since = 0
            for line in text.splitlines():
                since += 1
                if since > 4:  # name/repository and tag sit together in an image: block
                    registry = name = None
                mt = IMAGE_RE.match(line)
                if not mt:
                    continue
                key, val = mt.groups()
                if key == "registry":
                    registry = val
                    since = 0
                elif key in ("name", "repository") and val:
                    name = val
                    since = 0
                elif key == "tag" and name:
                    ref = "%s/%s" % (registry, name) if registry and not name.startswith(registry) else name
                    found.add("%s:%s" % (ref, val or "<chart appVersion>"))
                    registry = name = None
    for ref in sorted(found):
        print(ref)
    return 0


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    strict = "--strict" in rest
    rest = [a for a in rest if a != "--strict"]
    if cmd == "list":
        return cmd_list(load(rest[0]))
    if cmd == "get":
        return cmd_get(load(rest[0]), rest[1])
    if cmd == "verify":
        return cmd_verify(load(rest[0]), rest[1], strict)
    if cmd == "install":
        return cmd_install(load(rest[0]), rest[1], rest[2])
    if cmd == "chart-images":
        return cmd_chart_images(rest[0])
    if cmd == "image-file":
        print(image_file(rest[0]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
