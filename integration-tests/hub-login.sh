#!/usr/bin/env bash
# Real logins with the hub config pangeod renders: writes a pangeod config for the running
# 389-ds fixture ($LDAP_WORKDIR), renders the hub's config from it (`pangeod --print-hub-config`,
# the same traitlets as the chart's hub.config), and runs the hub fixture's smoke test on it:
# a member, a nested member, a non-member, a disabled account and a wrong password, through the
# real JupyterHub login form; then servers and the gateway. Before that, every key of the
# rendered config is checked against the pinned packages (integration-tests/hub-config-keys.py).
# Usage: LDAP_WORKDIR=... integration-tests/hub-login.sh   (exit codes as smoke.sh's)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LDAP_WORKDIR:?set LDAP_WORKDIR to a running 389-ds fixture}"
# shellcheck disable=SC1091
. "$LDAP_WORKDIR/env"
WORK=$(mktemp -d /tmp/pangeo-hub-login.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/pangeod.toml" <<TOML
[cluster]
name = "demo"
external_ip = "192.0.2.10"
[freeipa]
server = "127.0.0.1:$LDAPS_PORT"
tls = "ldaps"
base_dn = "$LDAP_BASE_DN"
bind_dn = "$LDAP_BIND_DN"
password_file = "$LDAP_BIND_PASSWORD_FILE"
ca_file = "$LDAP_CA"
TOML
cargo build -q --locked -p pangeod --bin pangeod
target/debug/pangeod --print-hub-config --config "$WORK/pangeod.toml" > "$WORK/jupyterhub_config.py"
echo "rendered $WORK/jupyterhub_config.py"
# Every key must be one the pinned authenticator, spawner and hub define (traitlets ignores
# the others silently); first, the check must refuse the camelCase key that once let everyone in.
rc=0
VENV=$(integration-tests/fixtures/hub/install.sh --print-prefix | tail -n1) || rc=$?
if [ "$rc" -eq 3 ]; then echo "SKIPPED: no hub venv"; exit 3; fi
[ "$rc" -eq 0 ] || exit "$rc"
printf 'c = get_config()\nc.LDAPAuthenticator.allowedGroups = ["demo_notebook_users"]\n' > "$WORK/camel.py"
"$VENV/bin/python" integration-tests/hub-config-keys.py "$WORK/camel.py" --expect-unknown
"$VENV/bin/python" integration-tests/hub-config-keys.py "$WORK/jupyterhub_config.py"
HUB_SMOKE_CONFIG="$WORK/jupyterhub_config.py" integration-tests/fixtures/hub/smoke.sh
