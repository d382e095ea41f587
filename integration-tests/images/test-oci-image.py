#!/usr/bin/env python3
"""Checks integration-tests/images/oci-image: the archive layout, digests and sizes, JSON shapes,
the layer's entries (ownership, links, skipped device nodes, fixed mtimes), name normalisation and
byte-for-byte determinism. With --ctr CTR --containerd CONTAINERD (or $OCI_TEST_CTR and
$OCI_TEST_CONTAINERD) it also imports the archive into a throwaway containerd started with its own
root, state and socket in a temp dir, and checks the image name and config containerd reports.

Prints `N passed, M failed` last; exit 0 all passed, 1 a failure. Needs root (chown, mknod).
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "oci-image")

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def make_rootfs(d):
    os.makedirs(f"{d}/bin")
    os.makedirs(f"{d}/home/jovyan/sub")
    os.makedirs(f"{d}/dev")
    with open(f"{d}/bin/hello", "w") as f:
        f.write("#!/bin/sh\necho hello\n")
    os.chmod(f"{d}/bin/hello", 0o755)
    with open(f"{d}/home/jovyan/sub/data.bin", "wb") as f:
        f.write(os.urandom(300_000))
    os.chown(f"{d}/home/jovyan", 1000, 100)
    os.chown(f"{d}/home/jovyan/sub/data.bin", 1000, 100)
    os.link(f"{d}/bin/hello", f"{d}/bin/hello-hard")
    os.symlink("hello", f"{d}/bin/hello-sym")
    os.symlink("/nonexistent/target", f"{d}/dangling")
    os.chmod(f"{d}/bin", 0o755)
    os.mkfifo(f"{d}/fifo")
    try:
        os.mknod(f"{d}/dev/null", 0o666 | 0o020000, os.makedev(1, 3))
        have_dev = True
    except PermissionError:
        have_dev = False
    # an mtime that must not leak into the archive
    os.utime(f"{d}/bin/hello", (1234567, 1234567))
    return have_dev


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)


def unit_checks(tmp):
    rootfs = f"{tmp}/rootfs"
    have_dev = make_rootfs(rootfs)
    out1, out2, out3 = f"{tmp}/a.tar", f"{tmp}/b.tar", f"{tmp}/c.tar"
    common = ["--rootfs", rootfs, "--entrypoint", '["/bin/hello"]', "--cmd", '["x","y"]',
              "--env", "HOME=/home/jovyan", "--workdir", "/home/jovyan", "--user", "1000"]
    r = run_tool("--name", "traefik:v3.6.12", "--name", "quay.io/jupyterhub/k8s-hub:4.4.0", *common, "-o", out1)
    check("tool exits 0", r.returncode == 0, r.stderr)
    if r.returncode != 0:
        return None
    time.sleep(1.1)
    os.utime(f"{rootfs}/home/jovyan/sub/data.bin")  # touch: mtimes must not matter
    r2 = run_tool("--name", "traefik:v3.6.12", "--name", "quay.io/jupyterhub/k8s-hub:4.4.0", *common, "-o", out2)
    check("second run exits 0", r2.returncode == 0, r2.stderr)
    check("deterministic: two runs give identical bytes",
          open(out1, "rb").read() == open(out2, "rb").read())

    with tarfile.open(out1) as t:
        names = t.getnames()
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    check("archive has oci-layout and index.json", "oci-layout" in files and "index.json" in files, str(names))
    check("oci-layout version", json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"})
    for n, b in files.items():
        if n.startswith("blobs/sha256/"):
            check(f"blob {n[13:25]}.. digest matches its name", sha(b).split(":")[1] == n[13:])
    index = json.loads(files["index.json"])
    check("index mediaType/schemaVersion",
          index.get("schemaVersion") == 2 and index.get("mediaType") == "application/vnd.oci.image.index.v1+json")
    anns = [m["annotations"] for m in index["manifests"]]
    check("short name fully qualified",
          anns[0] == {"io.containerd.image.name": "docker.io/library/traefik:v3.6.12",
                      "org.opencontainers.image.ref.name": "v3.6.12"}, str(anns[0]))
    check("registry name kept",
          anns[1]["io.containerd.image.name"] == "quay.io/jupyterhub/k8s-hub:4.4.0"
          and anns[1]["org.opencontainers.image.ref.name"] == "4.4.0", str(anns[1]))
    desc = index["manifests"][0]
    check("both names point at one manifest", len({m["digest"] for m in index["manifests"]}) == 1)
    mbytes = files["blobs/sha256/" + desc["digest"].split(":")[1]]
    check("manifest size in index", desc["size"] == len(mbytes))
    check("index platform", desc["platform"] == {"architecture": "amd64", "os": "linux"})
    manifest = json.loads(mbytes)
    check("manifest shape", manifest["schemaVersion"] == 2
          and manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
          and manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
          and len(manifest["layers"]) == 1)
    cbytes = files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]]
    check("config size", manifest["config"]["size"] == len(cbytes))
    config = json.loads(cbytes)
    layer_desc = manifest["layers"][0]
    lbytes = files["blobs/sha256/" + layer_desc["digest"].split(":")[1]]
    check("layer size", layer_desc["size"] == len(lbytes))
    check("layer media type gzip", layer_desc["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip")
    raw = gzip.decompress(lbytes)
    check("gzip header has mtime 0 and no name", lbytes[4:8] == b"\0\0\0\0" and not (lbytes[3] & 0x08))
    check("diff_id is the uncompressed layer digest", config["rootfs"] == {"type": "layers", "diff_ids": [sha(raw)]})
    c = config["config"]
    check("config fields", c.get("Entrypoint") == ["/bin/hello"] and c.get("Cmd") == ["x", "y"]
          and c.get("WorkingDir") == "/home/jovyan" and c.get("User") == "1000"
          and "HOME=/home/jovyan" in c["Env"] and any(e.startswith("PATH=") for e in c["Env"]), str(c))
    check("config os/arch", config["os"] == "linux" and config["architecture"] == "amd64")

    with tarfile.open(fileobj=io.BytesIO(raw)) as lt:
        mem = {m.name: m for m in lt.getmembers()}
        order = [m.name for m in lt.getmembers()]
        data = lt.extractfile(mem["home/jovyan/sub/data.bin"]).read()
    check("layer entry order is sorted depth-first",
          order == ["bin", "bin/hello", "bin/hello-hard", "bin/hello-sym", "dangling", "dev", "fifo",
                    "home", "home/jovyan", "home/jovyan/sub", "home/jovyan/sub/data.bin"], str(order))
    check("no ./ prefix or root entry", all(not n.startswith(("./", "/")) and n != "." for n in order))
    check("all mtimes fixed at 0", all(m.mtime == 0 for m in mem.values()))
    check("uid/gid preserved", mem["home/jovyan"].uid == 1000 and mem["home/jovyan"].gid == 100
          and mem["home/jovyan/sub/data.bin"].uid == 1000 and mem["bin/hello"].uid == 0)
    check("user/group names empty", all(m.uname == "" and m.gname == "" for m in mem.values()))
    check("mode preserved", mem["bin/hello"].mode == 0o755)
    check("hard link", mem["bin/hello-hard"].islnk() and mem["bin/hello-hard"].linkname == "bin/hello")
    check("symlinks", mem["bin/hello-sym"].issym() and mem["bin/hello-sym"].linkname == "hello"
          and mem["dangling"].issym() and mem["dangling"].linkname == "/nonexistent/target")
    check("fifo kept", mem["fifo"].isfifo())
    if have_dev:
        check("device node skipped", "dev/null" not in mem and mem["dev"].isdir())
    check("file content intact", data == open(f"{rootfs}/home/jovyan/sub/data.bin", "rb").read())

    r = run_tool("--name", "pangeo/pangeo-notebook:2026.01.01", "--rootfs", rootfs, "--compress", "none", "-o", out3)
    check("uncompressed: exits 0", r.returncode == 0, r.stderr)
    with tarfile.open(out3) as t:
        files3 = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    idx3 = json.loads(files3["index.json"])
    check("user/repo short name -> docker.io/user/repo",
          idx3["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/pangeo/pangeo-notebook:2026.01.01")
    m3 = json.loads(files3["blobs/sha256/" + idx3["manifests"][0]["digest"][7:]])
    c3 = json.loads(files3["blobs/sha256/" + m3["config"]["digest"][7:]])
    check("uncompressed: layer digest == diff_id, media type tar",
          m3["layers"][0]["digest"] == c3["rootfs"]["diff_ids"][0]
          and m3["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar")
    check("uncompressed: same diff_id as the gzip layer", c3["rootfs"]["diff_ids"] == config["rootfs"]["diff_ids"])
    for bad in (["--name", "Bad/Upper:1"], ["--name", "x@sha256:00"], ["--name", "a:b", "--cmd", "notjson"],
                ["--name", "a:b", "--env", "NOEQUALS"]):
        r = run_tool(*bad, "--rootfs", rootfs, "-o", f"{tmp}/bad.tar")
        check(f"rejects {bad}", r.returncode == 2 and "error" in r.stderr and not os.path.exists(f"{tmp}/bad.tar"))
    return out1


def ctr_checks(tmp, archive, ctr, containerd):
    root = f"{tmp}/ctd"
    os.makedirs(root)
    sock = f"{root}/containerd.sock"
    cfg = f"{root}/config.toml"
    with open(cfg, "w") as f:
        f.write(f"""version = 3
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
""")
    log = open(f"{root}/containerd.log", "w")
    proc = subprocess.Popen([containerd, "--config", cfg], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        check("throwaway containerd started", os.path.exists(sock), f"see {root}/containerd.log")
        if not os.path.exists(sock):
            return
        r = subprocess.run([ctr, "-a", sock, "-n", "k8s.io", "images", "import", archive],
                           capture_output=True, text=True)
        check("ctr images import exits 0", r.returncode == 0, r.stdout + r.stderr)
        r = subprocess.run([ctr, "-a", sock, "-n", "k8s.io", "images", "ls", "-q"], capture_output=True, text=True)
        names = r.stdout.split()
        check("imported under both names", "docker.io/library/traefik:v3.6.12" in names
              and "quay.io/jupyterhub/k8s-hub:4.4.0" in names, str(names))
        r = subprocess.run([ctr, "-a", sock, "-n", "k8s.io", "images", "check"], capture_output=True, text=True)
        check("ctr images check: complete", r.returncode == 0 and "complete" in r.stdout
              and "incomplete" not in r.stdout, r.stdout + r.stderr)
        # unpack into the default snapshotter (what the kubelet's pull does) and read a file back
        os.makedirs(f"{root}/mnt", exist_ok=True)
        r = subprocess.run([ctr, "-a", sock, "-n", "k8s.io", "images", "mount", "quay.io/jupyterhub/k8s-hub:4.4.0",
                            f"{root}/mnt"], capture_output=True, text=True)
        ok = r.returncode == 0 and os.path.isfile(f"{root}/mnt/bin/hello")
        check("ctr images mount: unpacks, rootfs readable", ok, r.stdout + r.stderr)
        if ok:
            st = os.stat(f"{root}/mnt/home/jovyan")
            check("unpacked ownership kept", st.st_uid == 1000 and st.st_gid == 100)
            subprocess.run([ctr, "-a", sock, "-n", "k8s.io", "images", "unmount", "--rm", f"{root}/mnt"],
                           capture_output=True)
        r = subprocess.run([ctr, "-a", sock, "-n", "k8s.io", "images", "import", archive],
                           capture_output=True, text=True)
        check("re-import is idempotent", r.returncode == 0, r.stderr)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # whatever the throwaway containerd left mounted under its dirs (deepest first)
        with open("/proc/self/mounts") as f:
            leftovers = [line.split()[1] for line in f if line.split()[1].startswith(root + "/")]
        for m in sorted(leftovers, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ctr", default=os.environ.get("OCI_TEST_CTR"))
    p.add_argument("--containerd", default=os.environ.get("OCI_TEST_CONTAINERD"))
    a = p.parse_args()
    if os.geteuid() != 0:
        print("SKIPPED: needs root (chown/mknod in the test rootfs); run as root")
        print("0 passed, 0 failed")
        return 3
    tmp = tempfile.mkdtemp(prefix="oci-image-test.")
    try:
        archive = unit_checks(tmp)
        if archive and a.ctr and a.containerd:
            ctr_checks(tmp, archive, a.ctr, a.containerd)
        elif archive:
            print("note: no --ctr/--containerd given; the import into a real containerd was not tried")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
