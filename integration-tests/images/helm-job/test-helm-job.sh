#!/usr/bin/env bash
# Checks the helm job entrypoint (helm-job) against helm-controller's job contract with a fake
# `helm` and `curl` on PATH that record their calls and play a release's state, under a
# HELM_JOB_ROOT prefix (so /config, /chart, /static/charts, the service account are temp dirs).
# Prints `N passed, M failed` last; exit 0 all passed, 1 a failure.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JOB="$HERE/helm-job"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
no() { FAIL=$((FAIL + 1)); echo "FAIL $1"; [ -f "$T/log" ] && sed 's/^/     | /' "$T/log"; true; }

mkdir -p "$T/bin"
cat > "$T/bin/helm" <<'EOF'
#!/usr/bin/env bash
echo "helm $*" >> "$FAKE_DIR/log"
case "$1" in
  status)
    if [ ! -s "$FAKE_DIR/status" ]; then echo "Error: release: not found" >&2; exit 1; fi
    printf '{"info":{"status":"%s"},"version":%s}\n' "$(cat "$FAKE_DIR/status")" "$(cat "$FAKE_DIR/revision")" ;;
  history) cat "$FAKE_DIR/history" 2>/dev/null || echo '[]' ;;
  install|upgrade|uninstall|rollback)
    if [ -f "$FAKE_DIR/fail-$1" ]; then echo "Error: $1 failed" >&2; exit 1; fi ;;
  version) echo "v3.21.4" ;;
esac
exit 0
EOF
cat > "$T/bin/curl" <<'EOF'
#!/usr/bin/env bash
echo "curl $*" >> "$FAKE_DIR/log"
out=""
while [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done
echo fetched > "$out"
EOF
chmod +x "$T/bin/helm" "$T/bin/curl"

# run CASE-SETUP... : fresh root and fake state, then the job with the given env and args
setup() { # status revision
  rm -rf "$T/root" "$T/log"; : > "$T/log"
  mkdir -p "$T/root"/{config,chart,static/charts,tmp,dev,ca-files} "$T/root/var/run/secrets/kubernetes.io/serviceaccount"
  echo "ca" > "$T/root/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
  echo "tok3n" > "$T/root/var/run/secrets/kubernetes.io/serviceaccount/token"
  echo "a: 1" > "$T/root/config/values-0-000-HelmChart-ValuesContent.yaml"
  printf '%s' "${1:-}" > "$T/status"; printf '%s' "${2:-}" > "$T/revision"
  rm -f "$T"/fail-* "$T/history"
}
job() {
  RC=0
  env -i PATH="$T/bin:/usr/bin:/bin" FAKE_DIR="$T" HELM_JOB_ROOT="$T/root" HOME="$T/root/home" \
    NAME=jupyterhub TARGET_NAMESPACE=pangeo CHART_NAMESPACE=pangeo \
    CHART="https://%{KUBERNETES_API}%/static/charts/jupyterhub-4.4.0.tgz" \
    KUBERNETES_SERVICE_HOST=10.96.0.1 KUBERNETES_SERVICE_PORT=443 CONFIG_HASH=SHA256=AB \
    "$@" >"$T/out" 2>&1 || RC=$?
}
calls() { grep -c "^helm $1 " "$T/log" || true; }
has() { grep -qF -- "$1" "$T/log"; }

setup "" ""
echo x > "$T/root/static/charts/jupyterhub-4.4.0.tgz"
job "$JOB" install --namespace pangeo
[ $RC = 0 ] && [ "$(calls install)" = 1 ] && [ "$(calls upgrade)" = 0 ] \
  && has "helm install jupyterhub $T/root/static/charts/jupyterhub-4.4.0.tgz --namespace pangeo" \
  && has "--values $T/root/config/values-0-000-HelmChart-ValuesContent.yaml" \
  && has "--labels helmcharts.helm.cattle.io/configHash=SHA256=AB" \
  && ok "not installed: helm install from the baked /static/charts archive with the values and labels" \
  || no "not installed: install (rc=$RC)"

setup "" ""
job "$JOB" install --namespace pangeo
[ $RC = 0 ] && has "curl " && has "https://10.96.0.1:443/static/charts/jupyterhub-4.4.0.tgz" \
  && has "Authorization: Bearer tok3n" && has "helm install jupyterhub $T/root/tmp/jupyterhub-4.4.0.tgz" \
  && ok "%{KUBERNETES_API}% substituted; chart fetched from the API server with the token and CA" \
  || no "%{KUBERNETES_API}% fetch (rc=$RC)"

setup "" ""
job env KUBERNETES_SERVICE_HOST=fd00::1 "$JOB" install
has "https://[fd00::1]:443/static/charts/" && ok "IPv6 API host in brackets" || no "IPv6 API host"

setup "" ""
printf 'chart-bytes' | base64 > "$T/root/chart/jupyterhub.tgz.base64"
job "$JOB" install --namespace pangeo
[ $RC = 0 ] && has "helm install jupyterhub $T/root/tmp/jupyterhub.tgz" && [ "$(cat "$T/root/tmp/jupyterhub.tgz")" = chart-bytes ] \
  && ! has "curl " && ok "spec.chartContent: decoded and used, nothing fetched" || no "chartContent (rc=$RC)"

setup deployed 3
echo x > "$T/root/static/charts/jupyterhub-4.4.0.tgz"
job "$JOB" install --namespace pangeo --set a=1
[ $RC = 0 ] && [ "$(calls upgrade)" = 1 ] && [ "$(calls install)" = 0 ] && has "--namespace pangeo --set a=1" \
  && ok "deployed: helm upgrade with the controller's args" || no "deployed: upgrade (rc=$RC)"

setup deployed 3
job env EXPECTED_RELEASE_REVISION=2 "$JOB" install --namespace pangeo
[ $RC = 0 ] && [ "$(calls upgrade)" = 0 ] && [ "$(calls install)" = 0 ] \
  && ok "EXPECTED_RELEASE_REVISION differs: nothing done, exit 0" || no "expected revision (rc=$RC)"

for policy in abort reinstall retry; do
  setup failed 2
  echo '[{"revision":1,"status":"superseded"},{"revision":2,"status":"failed"}]' > "$T/history"
  job env FAILURE_POLICY=$policy "$JOB" install --namespace pangeo
  case $policy in
    abort) [ $RC != 0 ] && [ "$(calls install)$(calls upgrade)$(calls uninstall)" = 000 ] \
             && grep -q "operator intervention" "$T/root/dev/termination-log" \
             && ok "failed + abort: exit $RC, nothing touched, termination log says why" || no "failed + abort (rc=$RC)" ;;
    reinstall) [ $RC = 0 ] && [ "$(calls uninstall)$(calls install)" = 11 ] \
             && ok "failed + reinstall: uninstall, then install" || no "failed + reinstall (rc=$RC)" ;;
    retry) [ $RC = 0 ] && [ "$(calls uninstall)$(calls install)$(calls upgrade)" = 001 ] \
             && ok "failed + retry (was deployed once): upgrade, never uninstall" || no "failed + retry (rc=$RC)" ;;
  esac
done

setup failed 1
echo '[{"revision":1,"status":"failed"}]' > "$T/history"
job env FAILURE_POLICY=retry "$JOB" install
[ $RC = 0 ] && [ "$(calls uninstall)$(calls install)$(calls upgrade)" = 110 ] \
  && ok "failed + retry, never deployed: uninstall, then install (helm cannot upgrade it)" || no "retry never deployed (rc=$RC)"

setup failed 2
job env FAILURE_POLICY=bogus "$JOB" install
[ $RC != 0 ] && ok "unknown failure policy: non-zero exit" || no "unknown policy (rc=$RC)"

setup pending-upgrade 4
job env FAILURE_POLICY=retry "$JOB" install
[ $RC = 0 ] && [ "$(calls rollback)$(calls upgrade)" = 11 ] && ok "pending-upgrade: rollback, then upgrade" || no "pending-upgrade (rc=$RC)"

setup "" ""
touch "$T/fail-install"
job "$JOB" install
[ $RC != 0 ] && grep -q "helm install jupyterhub failed" "$T/root/dev/termination-log" \
  && ok "helm install fails: non-zero exit, termination log" || no "install failure (rc=$RC)"

setup "" ""
job "$JOB" delete
[ $RC = 0 ] && [ "$(calls uninstall)" = 0 ] && ok "delete, not installed: nothing to do, exit 0" || no "delete not installed (rc=$RC)"

setup deployed 5
job "$JOB" delete
[ $RC = 0 ] && has "helm uninstall jupyterhub --namespace pangeo --wait" && ok "delete: helm uninstall --wait in the target namespace" || no "delete (rc=$RC)"

setup deployed 5
touch "$T/fail-uninstall"
job "$JOB" delete
[ $RC != 0 ] && ok "delete fails: non-zero exit" || no "delete failure (rc=$RC)"

setup "" ""
job env HELM_VERSION=v2 "$JOB" install
[ $RC = 64 ] && ok "HELM_VERSION=v2: exit 64" || no "helm v2 (rc=$RC)"

setup "" ""
job "$JOB" bogus
[ $RC != 0 ] && ok "unknown action: non-zero exit" || no "unknown action (rc=$RC)"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
