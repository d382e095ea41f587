#!/usr/bin/env bash
# Renders the real JupyterHub and dask-gateway charts (the archives images/manifest.toml pins)
# with `helm template` and the values pangeod renders (`pangeod --print-helmcharts`), for two
# configs, and checks what the cluster would run:
#   - both charts render, from the archive the HelmChart names, in its targetNamespace;
#   - every image the manifests name, and every image the hub spawns (singleuser, network
#     tools) and the gateway starts (schedulers/workers), is a ref in images/manifest.toml
#     (docker.io/ and docker.io/library/ prefixes normalised), and none is the chart's sample;
#   - the hub's singleuser image and the gateway's backend image are the manifest's notebook
#     image (chart = "pangeod-values");
#   - the notebooks' DASK_GATEWAY__* variables point at the gateway Service and prefix the
#     rendered dask-gateway chart actually has, and the hub service for the gateway too;
#   - the token the gateway presents to the hub is the hub's dask-gateway service token;
#   - each config's domain and notebook limits reach the rendered hub.
# Usage: integration-tests/chart-render.sh
#   HELM=/path/to/helm          (default: the test node's bin dir; skips without one)
#   PANGEO_CHARTS_DIR=DIR       (default: ${K3S_ARTIFACTS:-$PANGEO_CACHE_DIR/artifacts}/charts)
#   PANGEOD=/path/to/pangeod    (default: builds target/debug/pangeod)
# Exit: 0 all passed, 1 a check failed, 3 skipped (helm or the chart archives missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PANGEO_CACHE_DIR=${PANGEO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pangeo-appliance}
KUBE_VERSION=1.36.5
MANIFEST=$ROOT/images/manifest.toml

# Everything missing is named at once, then the suite skips.
skip=()

# --- the chart archives, named and placed as images/fetch-artifacts writes them.
CHARTS_DIR=${PANGEO_CHARTS_DIR:-${K3S_ARTIFACTS:-$PANGEO_CACHE_DIR/artifacts}/charts}
mapfile -t ARCHIVES < <(python3 - "$MANIFEST" <<'PY'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))
for f in m["file"]:
    if f.get("chart") in ("jupyterhub", "dask-gateway"):
        print(f["path"].rsplit("/", 1)[-1] + " " + f["url"])
PY
)
[ ${#ARCHIVES[@]} -eq 2 ] || { echo "images/manifest.toml: expected the jupyterhub and dask-gateway chart files, found: ${ARCHIVES[*]}" >&2; exit 1; }
for entry in "${ARCHIVES[@]}"; do
    file=${entry%% *}
    [ -f "$CHARTS_DIR/$file" ] ||
        skip+=("chart archive $CHARTS_DIR/$file is missing: put the published chart there (${entry#* }; images/fetch-artifacts DIR downloads it to DIR/charts/), or point PANGEO_CHARTS_DIR or K3S_ARTIFACTS at a folder that has it")
done

# --- helm: $HELM, else the test node's (built by integration-tests/node/build.sh).
if [ -z "${HELM:-}" ]; then
    bin_dir=$( (. integration-tests/node/lib.sh && node_bin_dir) 2>/dev/null) || bin_dir=
    if [ -n "$bin_dir" ] && [ -x "$bin_dir/helm" ]; then
        HELM=$bin_dir/helm
    else
        skip+=("no helm: set HELM=/path/to/helm (v3.21.4), or build the test node's with integration-tests/node/build.sh (expected at ${bin_dir:-<node bin dir>}/helm)")
    fi
fi
if [ ${#skip[@]} -gt 0 ]; then
    for reason in "${skip[@]}"; do echo "SKIPPED: $reason"; done
    echo "0 passed, 0 failed"
    exit 3
fi
[ -x "$HELM" ] || { echo "HELM=$HELM is not an executable" >&2; exit 1; }
ARCHIVES=("${ARCHIVES[@]%% *}")

# --- pangeod
if [ -z "${PANGEOD:-}" ]; then
    cargo build -q --locked -p pangeod --bin pangeod
    PANGEOD=$ROOT/target/debug/pangeod
fi

WORK=$(mktemp -d /tmp/pangeo-chart-render.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
echo "helm: $HELM ($("$HELM" version --short 2>/dev/null || echo '?'))"
echo "charts: $CHARTS_DIR (${ARCHIVES[*]})"
echo "pangeod: $PANGEOD"

echo x > "$WORK/pw"
printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' > "$WORK/ca.pem"
common() {
    cat <<TOML
[freeipa]
server = "ipa.example.test"
base_dn = "dc=example,dc=test"
bind_dn = "uid=pangeod,cn=sysaccounts,cn=etc,dc=example,dc=test"
password_file = "$WORK/pw"
ca_file = "$WORK/ca.pem"
TOML
}
# A typical appliance: a private address (local CA), the default sizes.
{ printf '[cluster]\nname = "demo"\nexternal_ip = "192.0.2.10"\n'; common; } > "$WORK/typical.toml"
# Another: a public address and its own domain (ACME), other sizes and Dask limits.
{ printf '[cluster]\nname = "lab"\nexternal_ip = "203.0.114.7"\ndomain = "hub.lab.example.org"\n'
  common
  printf '[notebook]\ncpus = 6\nram_gb = 24\nstorage_gb = 200\nidle_cull_timeout_minutes = 0\n'
  printf '[dask]\nmax_worker_cores = 8\nmax_worker_memory_gb = 16\n'; } > "$WORK/other.toml"

# What each config must show in the rendered hub: its domain, and its notebook sizes.
declare -A EXPECT=(
    [typical]='{"host": "pangeo.192-0-2-10.sslip.io"}'
    [other]='{"host": "hub.lab.example.org", "cpu": 6, "memory": "24G"}'
)
status=0
for name in typical other; do
    echo "== config $name"
    if ! "$PANGEOD" --print-helmcharts --config "$WORK/$name.toml" > "$WORK/$name.json"; then
        echo "FAIL  pangeod --print-helmcharts --config $name.toml (its error is above)"
        echo "0 1" >> "$WORK/counts"
        status=1
        continue
    fi
    python3 - "$WORK" "$name" "$HELM" "$CHARTS_DIR" "$KUBE_VERSION" "$MANIFEST" "${EXPECT[$name]}" <<'PY' || status=1
import ast, base64, json, os, subprocess, sys, tomllib
import yaml

work, name, helm, charts_dir, kube_version, manifest_path, expect = sys.argv[1:]
expect = json.loads(expect)
passed = failed = 0

def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}" + (f": {detail}" if detail else ""))
    return ok

def norm(ref):
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
    return ref

manifest = tomllib.load(open(manifest_path, "rb"))
allowed = {norm(i["ref"]) for i in manifest["image"]}
notebooks = [norm(i["ref"]) for i in manifest["image"] if i.get("chart") == "pangeod-values"]
assert len(notebooks) == 1, f"one pangeod-values image in {manifest_path}: {notebooks}"
notebook = notebooks[0]
SAMPLE = "k8s-singleuser-sample"

helmcharts = {h["metadata"]["name"]: h for h in json.load(open(f"{work}/{name}.json"))}

def render(release):
    spec = helmcharts[release]["spec"]
    archive = spec["chart"].rsplit("/", 1)[-1]
    namespace = spec["targetNamespace"]
    values = f"{work}/{name}-{release}-values.yaml"
    with open(values, "w") as f:
        f.write(spec["valuesContent"])
    tgz = os.path.join(charts_dir, archive)
    cmd = [helm, "template", release, tgz, "--namespace", namespace,
           "--kube-version", kube_version, "-f", values]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if not check(run.returncode == 0, f"helm template {release} {archive} --namespace {namespace}",
                 run.stderr.strip()[-2000:]):
        return namespace, []
    docs = [d for d in yaml.safe_load_all(run.stdout) if d]
    print(f"      {len(docs)} objects: " + ", ".join(sorted({d['kind'] for d in docs})))
    return namespace, docs

def images_in(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "image" and isinstance(v, str):
                out.append(v)
            else:
                images_in(v, out)
    elif isinstance(node, list):
        for v in node:
            images_in(v, out)
    return out

def image_ref(block):
    return f"{block['name']}:{block['tag']}" if block.get("tag") else block["name"]

def secret_values(docs, kind, pred, key):
    for d in docs:
        if d["kind"] == kind and pred(d):
            if kind == "Secret":
                if key in d.get("stringData", {}):
                    return yaml.safe_load(d["stringData"][key])
                return yaml.safe_load(base64.b64decode(d["data"][key]))
            return yaml.safe_load(d["data"][key])
    return None

hub_ns, hub_docs = render("jupyterhub")
gw_ns, gw_docs = render("dask-gateway")

# Every image the manifests name.
for release, docs in (("jupyterhub", hub_docs), ("dask-gateway", gw_docs)):
    refs = sorted(set(images_in(docs, [])))
    print(f"      {release} images: {' '.join(refs)}")
    outside = [r for r in refs if norm(r) not in allowed]
    check(bool(docs) and not outside, f"{release}: every image is in images/manifest.toml",
          f"not listed: {outside}")
    check(bool(docs) and not [r for r in refs if SAMPLE in r], f"{release}: no sample image")

# The hub's own config (the chart mounts its values in the hub Secret; z2jh.get_config reads
# singleuser.* from there into KubeSpawner).
hub_values = secret_values(hub_docs, "Secret",
                           lambda d: d["metadata"]["name"] == "hub", "values.yaml") or {}
single = hub_values.get("singleuser", {})
spawned = []
if single.get("image"):
    spawned.append(image_ref(single["image"]))
if single.get("cloudMetadata", {}).get("blockWithIptables") and single.get("networkTools"):
    spawned.append(image_ref(single["networkTools"]["image"]))
spawned += images_in(single.get("initContainers", []), [])
spawned += images_in(single.get("extraContainers", []), [])
print(f"      spawned by the hub: {' '.join(spawned)}")
check(bool(single) and norm(image_ref(single.get("image") or {"name": "?"})) == notebook,
      "hub: the singleuser image is the manifest's notebook image",
      f"{single.get('image')} != {notebook}")
check(bool(spawned) and all(norm(r) in allowed for r in spawned) and not any(SAMPLE in r for r in spawned),
      "hub: every image it spawns is in images/manifest.toml and none is the sample",
      f"{spawned}")

# The gateway's config: the chart embeds its values as JSON in the API's ConfigMap
# (`_PROPERTIES = json.loads("...")` in dask_gateway_config.py, read by get_property, which
# sets KubeClusterConfig.image from gateway.backend.image).
gw_values = None
for d in gw_docs:
    if d["kind"] == "ConfigMap" and "dask_gateway_config.py" in (d.get("data") or {}):
        for line in d["data"]["dask_gateway_config.py"].splitlines():
            if line.startswith("_PROPERTIES = json.loads(") and line.endswith(")"):
                gw_values = json.loads(ast.literal_eval(line[len("_PROPERTIES = json.loads("):-1]))
check(gw_values is not None, "dask-gateway: the API's config embeds its values")
gw = (gw_values or {}).get("gateway", {})
backend = gw.get("backend", {}).get("image")
check(backend is not None and norm(image_ref(backend)) == notebook,
      "dask-gateway: schedulers and workers run the manifest's notebook image",
      f"{backend} != {notebook}")

# This config's own settings made it into the rendered hub.
hosts = [r["host"] for d in hub_docs if d["kind"] == "Ingress" for r in d["spec"].get("rules", [])]
check(hosts == [expect["host"]], f"hub Ingress host {expect['host']}", f"{hosts}")
if "cpu" in expect:
    got = (single.get("cpu", {}).get("limit"), single.get("memory", {}).get("limit"))
    check(got == (expect["cpu"], expect["memory"]),
          f"notebook limits {expect['cpu']} CPUs, {expect['memory']}", f"{got}")

# Where the gateway actually is, from its rendered objects.
traefik_svcs = [d for d in gw_docs if d["kind"] == "Service"
                and d["spec"]["selector"].get("app.kubernetes.io/component") == "traefik"]
routes = [d for d in gw_docs if d["kind"] == "IngressRoute"]
env = single.get("extraEnv") or {}
if check(len(traefik_svcs) == 1 and len(routes) == 1,
         "dask-gateway: one Traefik Service and one API IngressRoute",
         f"{len(traefik_svcs)} Services, {len(routes)} IngressRoutes"):
    svc = traefik_svcs[0]
    host = f"{svc['metadata']['name']}.{gw_ns}"
    web = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "web")
    match = routes[0]["spec"]["routes"][0]["match"]
    prefix = match.split("`")[1].rstrip("/") if "`" in match else None
    expected = {
        "DASK_GATEWAY__ADDRESS": f"http://{host}:{web}{prefix}",
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://{host}:{web}",
        "DASK_GATEWAY__PUBLIC_ADDRESS": f"{prefix}/",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }
    for key, value in expected.items():
        check(env.get(key) == value, f"singleuser env {key}={value}", f"got {env.get(key)!r}")
    # The hub service whose path the dashboard links use: the same prefix, the same Traefik.
    services = hub_values.get("hub", {}).get("services", {})
    url = services.get("dask-gateway", {}).get("url")
    short = svc["metadata"]["name"] if hub_ns == gw_ns else host   # resolvable from the hub pod
    check(url in (f"http://{h}{p}" for h in (host, short) for p in ("", f":{web}")),
          "hub service dask-gateway points at the gateway's Traefik", f"url {url!r}, Service {host}:{web}")
    check(prefix == "/services/dask-gateway",
          "the gateway serves under the hub service's path /services/dask-gateway", f"route {match}")
    check(gw.get("auth", {}).get("type") == "jupyterhub", "the gateway authenticates with JupyterHub",
          f"{gw.get('auth', {}).get('type')!r}")

# The token the gateway presents to the hub is the one the hub knows the dask-gateway service by.
def secret_key(docs, name, key):
    for d in docs:
        if d["kind"] == "Secret" and d["metadata"]["name"] == name and key in (d.get("data") or {}):
            return base64.b64decode(d["data"][key]).decode()
    return None
ref = None
for d in gw_docs:
    if d["kind"] == "Deployment" and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway":
        for e in d["spec"]["template"]["spec"]["containers"][0].get("env", []):
            if e["name"] == "JUPYTERHUB_API_TOKEN":
                ref = e.get("valueFrom", {}).get("secretKeyRef")
presented = secret_key(gw_docs, ref["name"], ref["key"]) if ref else None
known = secret_key(hub_docs, "hub", "hub.services.dask-gateway.apiToken")
check(presented is not None and presented == known,
      "the gateway's JUPYTERHUB_API_TOKEN is the hub's dask-gateway service token",
      f"gateway {ref}, hub service token {'set' if known else 'missing'}")

print(f"config {name}: {passed} passed, {failed} failed")
with open(f"{work}/counts", "a") as f:
    f.write(f"{passed} {failed}\n")
sys.exit(1 if failed else 0)
PY
done
read -r total_passed total_failed < <(awk '{p += $1; f += $2} END {print p + 0, f + 0}' "$WORK/counts" 2>/dev/null || echo "0 1")
if [ "$status" -ne 0 ] && [ "$total_failed" -eq 0 ]; then total_failed=1; fi   # a crash counts
echo "$total_passed passed, $total_failed failed"
[ "$status" -eq 0 ] && [ "$total_failed" -eq 0 ]
