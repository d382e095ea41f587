#!/usr/bin/env bash
# Schema-driven fuzz of the admin API from its own OpenAPI document, with schemathesis:
# every generated request (valid and invalid) must get an answer that is not a 5xx, and
# responses must match the documented schemas. Runs against the real pangeod over TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${PANGEO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pangeo-appliance}
ST_VERSION=4.32.5
VENV=$CACHE/venv-schemathesis-$ST_VERSION
EXAMPLES=${API_FUZZ_EXAMPLES:-60}

if [ ! -x "$VENV/bin/st" ]; then
    echo "installing schemathesis $ST_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

cargo build -q --bin pangeod
WORK=$(mktemp -d)
PID=""
OWN_LDAP=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
    if [ -n "$OWN_LDAP" ]; then integration-tests/fixtures/389ds/stop.sh "$LDAP_WORKDIR" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A real directory, so that the platform is ready and the users routes have data: the test
# command's 389-ds fixture (LDAP_WORKDIR), or one of our own.
LDAP_FIXTURE=integration-tests/fixtures/389ds
if [ -z "${LDAP_WORKDIR:-}" ] || [ ! -f "$LDAP_WORKDIR/env" ]; then
    export LDAP_WORKDIR=$WORK/389ds
    mkdir -p "$LDAP_WORKDIR/data"; chmod 755 "$WORK" "$LDAP_WORKDIR"
    OWN_LDAP=1
    "$LDAP_FIXTURE/setup.sh" "$LDAP_WORKDIR"
    "$LDAP_FIXTURE/start.sh" "$LDAP_WORKDIR"
    python3 "$LDAP_FIXTURE/gen-ldif.py" --cluster demo --users 100 -o "$LDAP_WORKDIR/data/base.ldif"
    "$LDAP_FIXTURE/load.sh" "$LDAP_WORKDIR" "$LDAP_WORKDIR/data/base.ldif"
fi
# shellcheck disable=SC1091
. "$LDAP_WORKDIR/env"
cat > "$WORK/pangeod.toml" <<TOML
[cluster]
name = "demo"
external_ip = "192.0.2.10"
[freeipa]
server = "127.0.0.1:$LDAPS_PORT"
base_dn = "$LDAP_BASE_DN"
bind_dn = "$LDAP_BIND_DN"
password_file = "$LDAP_BIND_PASSWORD_FILE"
ca_file = "$LDAP_CA"
[api]
socket = "run/admin.sock"
listen = "127.0.0.1:$PORT"
admin_allowed_cidrs = ["127.0.0.0/8"]
[daemon]
state_dir = "state"
data_dir = "."
require_data_disk = false
min_free_gb = 0
[k3s]
# The API is fuzzed, not Kubernetes (daemon/tests/kubernetes.rs covers it): the k3s steps skip.
mode = "off"
TOML
RUST_LOG=warn "$ROOT/target/debug/pangeod" --config "$WORK/pangeod.toml" 2>"$WORK/pangeod.log" &
PID=$!
for _ in $(seq 100); do [ -f "$WORK/state/api-token" ] && [ -S "$WORK/run/admin.sock" ] && break; sleep 0.1; done
# Fuzz a ready platform: wait for the first directory sync.
for _ in $(seq 300); do
    curl -sf --unix-socket "$WORK/run/admin.sock" http://localhost/v1/ready >/dev/null && break
    sleep 0.2
done
curl -sf --unix-socket "$WORK/run/admin.sock" http://localhost/v1/ready >/dev/null || {
    echo "FAIL: pangeod did not become ready"; curl -s --unix-socket "$WORK/run/admin.sock" http://localhost/v1/status; exit 1; }
TOKEN=$(cut -d: -f2 "$WORK/state/api-token")

# The routes that act through the hub or read Kubernetes answer a documented 503 here (no hub,
# k3s off): they are fuzzed for conformance (status code documented, body matches its schema),
# every other route also for "no 5xx at all".
OUTSIDE='/(server|dask-clusters|kubeconfig)$|/v1/homes'
fuzz() {
    (cd "$WORK" && API_FUZZ_CA_PEM="$LDAP_CA" PYTHONPATH="$ROOT/integration-tests/fuzz" SCHEMATHESIS_HOOKS=hooks \
        "$VENV/bin/st" run "https://localhost:$PORT/v1/openapi.json" \
        --header "Authorization: Bearer $TOKEN" \
        --tls-verify "$WORK/state/tls/ca.pem" \
        --max-examples "$EXAMPLES" --workers 1 --request-timeout 10 --no-color "$@")
}
revision() {
    curl -sf --unix-socket "$WORK/run/admin.sock" http://localhost/v1/config \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])'
}
BEFORE=$(revision)
set +e
# Every check (--checks all): no 5xx, documented statuses and bodies, schema-violating bodies
# refused, schema-valid bodies accepted (2xx, or 409 where the state in force refuses them: a
# locked key, the directory's answer), methods and auth as documented. The config's rules are
# declared in the schema (ranges, names, DN and server patterns); the hooks stand in for what
# no schema can say (a real CA certificate) and keep the directory check on this machine.
fuzz --exclude-path-regex "$OUTSIDE" --checks all
rc=$?
# The run must have changed the config for real, not only been refused.
AFTER=$(revision)
echo "api fuzz: $((AFTER - BEFORE)) config changes accepted (revision $BEFORE -> $AFTER)"
# (5 to 11 per run with 60 examples; most bodies the fuzzer makes touch freeipa, which the
# directory check refuses with 409, so the bar is one.)
if [ $((AFTER - BEFORE)) -lt 1 ]; then
    echo "FAIL: the fuzz run made no real config change: schema-valid bodies are being refused"
    [ $rc -ne 0 ] || rc=1
fi
fuzz --include-path-regex "$OUTSIDE" \
    --checks status_code_conformance,content_type_conformance,response_schema_conformance
rc2=$?
[ $rc -ne 0 ] || rc=$rc2
set -e
if ! kill -0 "$PID" 2>/dev/null; then
    echo "FAIL: pangeod died during the fuzz run"; tail -20 "$WORK/pangeod.log"; exit 1
fi
if [ $rc -ne 0 ]; then
    echo "FAIL: schemathesis found problems (exit $rc)"; tail -20 "$WORK/pangeod.log"
    exit 1
fi
echo "api fuzz: no 5xx (outside the hub and Kubernetes routes, whose 503 is documented), every response matched its schema, schema-valid bodies were accepted and invalid ones refused"
