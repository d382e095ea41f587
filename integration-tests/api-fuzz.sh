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
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cp config/dev/ipa-password config/dev/ipa-ca.pem "$WORK/"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$WORK/pangeod.toml" <<TOML
[cluster]
name = "fuzz"
external_ip = "192.0.2.10"
[freeipa]
server = "localhost:636"
base_dn = "dc=example,dc=test"
bind_dn = "uid=pangeod,cn=sysaccounts,cn=etc,dc=example,dc=test"
password_file = "ipa-password"
ca_file = "ipa-ca.pem"
[api]
socket = "run/admin.sock"
listen = "127.0.0.1:$PORT"
admin_allowed_cidrs = ["127.0.0.0/8"]
[daemon]
state_dir = "state"
data_dir = "."
require_data_disk = false
min_free_gb = 0
TOML
RUST_LOG=warn "$ROOT/target/debug/pangeod" --config "$WORK/pangeod.toml" 2>"$WORK/pangeod.log" &
PID=$!
for _ in $(seq 100); do [ -f "$WORK/state/api-token" ] && [ -S "$WORK/run/admin.sock" ] && break; sleep 0.1; done
TOKEN=$(cut -d: -f2 "$WORK/state/api-token")

set +e
(cd "$WORK" && "$VENV/bin/st" run "https://localhost:$PORT/v1/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --tls-verify "$WORK/state/tls/ca.pem" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --workers 1 --request-timeout 10 --no-color)
rc=$?
set -e
if ! kill -0 "$PID" 2>/dev/null; then
    echo "FAIL: pangeod died during the fuzz run"; tail -20 "$WORK/pangeod.log"; exit 1
fi
if [ $rc -ne 0 ]; then
    echo "FAIL: schemathesis found problems (exit $rc)"; tail -20 "$WORK/pangeod.log"
    exit 1
fi
echo "api fuzz: no 5xx and every response matched its schema"
