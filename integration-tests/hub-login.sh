#!/usr/bin/env bash
# Real logins with the hub config pangeod renders: writes a pangeod config for the running
# 389-ds fixture ($LDAP_WORKDIR), renders the hub's config from it (`pangeod --print-hub-config`,
# the same traitlets as the chart's hub.config), and runs the hub fixture's smoke test on it:
# a member, a nested member, a non-member, a disabled account and a wrong password, through the
# real JupyterHub login form; then servers and the gateway.
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
HUB_SMOKE_CONFIG="$WORK/jupyterhub_config.py" integration-tests/fixtures/hub/smoke.sh
