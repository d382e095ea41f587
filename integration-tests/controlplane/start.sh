#!/usr/bin/env bash
# Starts a test Kubernetes control plane in <workdir>:
#   kine (SQLite in <workdir>/data) -> kube-apiserver (RBAC, client certs) -> kube-controller-manager,
#   helm-controller; installs the HelmChart, HelmChartConfig and DaskCluster CRDs from shared/reference;
#   registers a Ready Node (no kubelet runs; its status is set once and never expires).
# Also writes <workdir>/apiserver.args (the kube-apiserver argv, "{port}" for the secure port) and a
# restricted.kubeconfig (authenticated user with no RBAC grants).
# All listen on 127.0.0.1 with ports picked at run time. Each process runs in its own session (setsid);
# PIDs in <workdir>/pids, logs in <workdir>/logs/, settings in <workdir>/env (KEY=value lines).
#
# Usage: start.sh <workdir>      (stop with stop.sh <workdir>)
# Env:   CONTROLPLANE_START_TIMEOUT (seconds to wait for /readyz, default 90)
#        CONTROLPLANE_BIN_DIR (use these binaries instead of building), PANGEO_CACHE_DIR
#        PANGEO_REFERENCE_DIR (default: <repo>/../shared/reference)
#        CONTROLPLANE_FAKE_NODE (default 1: register the Ready node pangeo-test-node, no kubelet behind it).
#        CONTROLPLANE_NODE_NAME (default pangeo-test-node: the node's name, fake or real).
#          0: a real kubelet joins (integration-tests/node/start.sh): no fake node; the apiserver binds
#          and advertises CONTROLPLANE_NODE_IP (default 10.201.255.254, added to `lo` as a /32 if absent
#          and removed again by stop.sh), an address pods reach for the `kubernetes` Service;
#          authorization Node,RBAC with NodeRestriction; the node-lifecycle controller runs.
# Exit codes: 0 ready, 1 failure (processes started so far are stopped), 2 usage, 3 go not found (SKIPPED).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 <workdir>" >&2; exit 2; }
mkdir -p "$1"
WD="$(cd "$1" && pwd)"
case "$WD" in *[[:space:]]*) die "workdir must not contain whitespace: $WD" 2 ;; esac
TIMEOUT="${CONTROLPLANE_START_TIMEOUT:-90}"
FAKE_NODE="${CONTROLPLANE_FAKE_NODE:-1}"
case "$FAKE_NODE" in 0|1) ;; *) die "CONTROLPLANE_FAKE_NODE must be 0 or 1, not $FAKE_NODE" 2 ;; esac
NODE_IP=127.0.0.1
if [ "$FAKE_NODE" = 0 ]; then
  NODE_IP="${CONTROLPLANE_NODE_IP:-10.201.255.254}"
  [[ "$NODE_IP" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "CONTROLPLANE_NODE_IP must be an IPv4 address, not $NODE_IP" 2
fi
T_START=$(now)

for tool in openssl curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (needed to start the control plane)" 1
done

die_if_running "$WD/pids" "a control plane"

# Binaries (cached build; "SKIPPED: go not found" -> exit 3).
use_bins CONTROLPLANE_BIN_DIR "${CONTROLPLANE_BIN_DIR:-}" "$CP_DIR/build.sh" "${CP_BINARIES[@]}"

REF="$(pangeo_reference_dir)"
CRD_FILES=(
  "$REF/k3s-helm-controller/helm.cattle.io_helmcharts.yaml"
  "$REF/k3s-helm-controller/helm.cattle.io_helmchartconfigs.yaml"
  "$REF/dask-gateway-chart/daskclusters.yaml"
)
for f in "${CRD_FILES[@]}"; do [ -f "$f" ] || die "CRD file not found: $f (set PANGEO_REFERENCE_DIR?)" 1; done

rm -rf "$WD/logs" "$WD/pki" "$WD/data" "$WD/kcm-certs" "$WD/pids" "$WD/env" "$WD/kubeconfig" "$WD"/*.kubeconfig \
  "$WD/apiserver.args" "$WD/node-ip.added"
mkdir -p "$WD/logs" "$WD/pki" "$WD/data" "$WD/kcm-certs"
fixture_init "$WD" "$WD/pids" "$WD/logs"
pki_init "$WD/pki" "$WD/logs/openssl.log"
PKI="$WD/pki"

trap 'stop_if_start_fails "$CP_DIR/stop.sh" "$WD"' EXIT

# A real node: the apiserver must be reachable from pods (through the `kubernetes` Service, which
# kube-proxy maps to the advertised address), so not on 127.0.0.1. A /32 on `lo` is reachable from
# this machine's pods and processes only. stop.sh removes it if this start added it.
if [ "$FAKE_NODE" = 0 ] && ! ip -4 -o addr show | awk '{print $4}' | grep -qx "$NODE_IP/[0-9]*"; then
  command -v ip >/dev/null 2>&1 || die "ip (iproute2) not found: needed for CONTROLPLANE_FAKE_NODE=0" 1
  log "adding $NODE_IP/32 to lo (the apiserver's address for a real node)"
  ip addr add "$NODE_IP/32" dev lo || die "ip addr add $NODE_IP/32 dev lo failed (needs root)" 1
  echo "$NODE_IP" >"$WD/node-ip.added"
fi

# ---------------------------------------------------------------- certificates
log "generating certificates in $PKI"
ca_cert ca pangeo-test-ca
APISERVER_EXTRA_SAN=""
[ "$FAKE_NODE" = 0 ] && APISERVER_EXTRA_SAN="IP:$NODE_IP,"
cert apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1,${APISERVER_EXTRA_SAN}IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin "/O=system:masters/CN=pangeo-test-admin" clientAuth
# The apiserver's client identity towards kubelets (logs, exec, port-forward), as kubeadm's.
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
cert helm-controller "/O=system:masters/CN=helm-controller" clientAuth
# Restricted identity for tests of "authenticated but not authorised": no O= (group), so the only
# groups are system:authenticated (added by the apiserver), which the bootstrap RBAC policy lets do
# discovery, self-subject reviews and nothing else; any resource request answers 403 Forbidden.
cert restricted "/CN=pangeo-restricted" clientAuth
# Front proxy (aggregation layer) CA + client, as kubeadm/k3s: fills the requestheader CA in
# kube-system/extension-apiserver-authentication that delegated authn (controller-manager) reads.
ca_cert front-proxy-ca pangeo-test-front-proxy-ca
pki_init "$PKI" "$WD/logs/openssl.log" "$PKI/front-proxy-ca.crt" "$PKI/front-proxy-ca.key"
cert front-proxy-client "/CN=front-proxy-client" clientAuth
# ServiceAccount token signing key pair (RSA, as kubeadm).
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key"
ossl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
chmod 600 "$PKI"/*.key

# ---------------------------------------------------------------- ports
for v in KINE_PORT API_PORT KCM_PORT; do free_port "$v" || die "could not find a free port" 1; done
APISERVER_URL="https://$NODE_IP:$API_PORT"
KINE_ENDPOINT="http://127.0.0.1:$KINE_PORT"

kubeconfig "$WD/kubeconfig" "$APISERVER_URL" "$PKI/ca.crt" admin
kubeconfig "$WD/kube-controller-manager.kubeconfig" "$APISERVER_URL" "$PKI/ca.crt" kube-controller-manager
kubeconfig "$WD/helm-controller.kubeconfig" "$APISERVER_URL" "$PKI/ca.crt" helm-controller
kubeconfig "$WD/restricted.kubeconfig" "$APISERVER_URL" "$PKI/ca.crt" restricted

# ---------------------------------------------------------------- processes
# Each process in its own session, recorded in <workdir>/pids (launch: integration-tests/lib/common.sh).
launch kine "$BIN/kine" \
  --listen-address "127.0.0.1:$KINE_PORT" \
  --endpoint "sqlite://$WD/data/state.db?_journal=WAL&cache=shared&_busy_timeout=30000&_txlock=immediate" \
  --metrics-bind-address 0

# kine answers etcd's grpc on the port; wait until it listens.
deadline=$(( $(date +%s) + TIMEOUT ))
until port_open 127.0.0.1 "$KINE_PORT"; do
  proc_alive "$PID_KINE" || fail_with_logs "kine exited during startup" kine
  [ "$(date +%s)" -lt "$deadline" ] || fail_with_logs "kine did not listen on 127.0.0.1:$KINE_PORT within ${TIMEOUT}s" kine
  sleep 0.1
done

# ---------------------------------------------------------------- kube-apiserver arguments
# Flags modelled on controller-runtime envtest (pkg/internal/testing/controlplane/apiserver.go),
# plus RBAC and what k3s sets for a kine-backed single node.
#
# Written to <workdir>/apiserver.args, one argument per line, without the binary, with the literal
# placeholder {port} for the secure port. Tests start their OWN kube-apiserver from that file (same
# kine, same PKI, a port of their choosing) to kill -9 and restart it without disturbing the shared
# one; the shared apiserver below is launched from the very same file, so the two cannot drift.
# Several apiservers on one storage are an ordinary HA setup; what must not differ between them:
# - --endpoint-reconciler-type=none: no apiserver writes itself into the `kubernetes` Service's
#   Endpoints. With the default "lease" reconciler each would keep rewriting them with its own
#   secure port (and a killed one's lease would linger until it expires); besides, 127.0.0.1 is
#   rejected in Endpoints, and nothing in-cluster needs them.
# - --service-account-issuer and --api-audiences stay the SHARED apiserver's URL in every copy (no
#   {port} there): the issuer is only an identifier here (nothing fetches OIDC discovery from it),
#   and with one issuer, audience and signing key a ServiceAccount token minted through either
#   apiserver is accepted by both. Only --secure-port differs.
if [ "$FAKE_NODE" = 1 ]; then
  NODE_MODE_ARGS=(--authorization-mode=RBAC --endpoint-reconciler-type=none)
else
  # A kubelet (CN=system:node:<name>, O=system:nodes) is authorised by the Node authorizer and
  # NodeRestriction, as in kubeadm and k3s; the lease reconciler publishes the `kubernetes` Service's
  # endpoint (NODE_IP:port) so pods reach the apiserver through 10.0.0.1:443. (Extra apiservers on the
  # same kine would rewrite that endpoint with their own port: not meant for this mode.)
  NODE_MODE_ARGS=(--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
    --endpoint-reconciler-type=lease)
fi
API_ARGS=(
  --etcd-servers="$KINE_ENDPOINT"
  --storage-backend=etcd3
  --bind-address="$NODE_IP"
  --advertise-address="$NODE_IP"
  --secure-port='{port}'
  --cert-dir="$WD/pki"
  --tls-cert-file="$PKI/apiserver.crt"
  --tls-private-key-file="$PKI/apiserver.key"
  --client-ca-file="$PKI/ca.crt"
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt"
  --requestheader-allowed-names=front-proxy-client
  --requestheader-username-headers=X-Remote-User
  --requestheader-group-headers=X-Remote-Group
  --requestheader-extra-headers-prefix=X-Remote-Extra-
  --proxy-client-cert-file="$PKI/front-proxy-client.crt"
  --proxy-client-key-file="$PKI/front-proxy-client.key"
  "${NODE_MODE_ARGS[@]}"
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
  --kubelet-preferred-address-types=InternalIP
  --anonymous-auth=false
  --allow-privileged=true
  --service-cluster-ip-range=10.0.0.0/24
  --service-account-issuer="$APISERVER_URL"
  --service-account-key-file="$PKI/sa.pub"
  --service-account-signing-key-file="$PKI/sa.key"
  --api-audiences="$APISERVER_URL"
  --profiling=false
  --v=1
)
printf '%s\n' "${API_ARGS[@]}" >"$WD/apiserver.args"

# The shared apiserver: read the file back and substitute the port.
PORT_PLACEHOLDER='{port}'
mapfile -t api_args <"$WD/apiserver.args"
launch kube-apiserver "$BIN/kube-apiserver" "${api_args[@]//"$PORT_PLACEHOLDER"/$API_PORT}"

log "waiting for $APISERVER_URL/readyz (timeout ${TIMEOUT}s)"
CURL=(curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key")
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  proc_alive "$PID_KUBE_APISERVER" || fail_with_logs "kube-apiserver exited during startup" kube-apiserver kine
  proc_alive "$PID_KINE" || fail_with_logs "kine exited during startup" kine
  out="$("${CURL[@]}" "$APISERVER_URL/readyz" 2>&1)" && [ "$out" = ok ] && break
  [ "$(date +%s)" -lt "$deadline" ] || {
    echo "---- /readyz?verbose:" >&2
    "${CURL[@]}" "$APISERVER_URL/readyz?verbose" >&2 || true
    fail_with_logs "kube-apiserver not ready within ${TIMEOUT}s (last answer: $out)" kube-apiserver kine
  }
  sleep 0.2
done
log "kube-apiserver ready after $(elapsed "$T_START")s"

# All default controllers except node-lifecycle-controller (see "node" below: no kubelet heartbeats);
# with a real kubelet, all of them (node-lifecycle lifts the not-ready taint once the node is Ready).
KCM_CONTROLLERS='*,-node-lifecycle-controller'
[ "$FAKE_NODE" = 0 ] && KCM_CONTROLLERS='*'
launch kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$WD/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$WD/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$WD/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --cert-dir="$WD/kcm-certs" \
  --leader-elect=false \
  --controllers="$KCM_CONTROLLERS" \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" \
  --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --profiling=false \
  --v=1

KUBECTL=("$BIN/kubectl" --kubeconfig "$WD/kubeconfig")

# ---------------------------------------------------------------- node
# No kubelet runs, so nothing registers a Node; code that looks for a Ready node (and helm-controller,
# whose --node-name is this name) gets one registered here. Its status is set once, by hand. The
# controller-manager runs without node-lifecycle-controller (see --controllers above): that controller
# would mark the node Unknown and taint it (NoSchedule, then NoExecute) once no kubelet heartbeat came
# within the grace period (--node-monitor-grace-period, 50 s). Nothing else in the controller-manager
# cares about heartbeats; the ttl controller only annotates the node.
# CONTROLPLANE_NODE_NAME: pangeod waits for the node named after its cluster.name (fullstack.sh).
NODE_NAME=${CONTROLPLANE_NODE_NAME:-pangeo-test-node}
case "$(uname -m)" in x86_64) NODE_ARCH=amd64 ;; aarch64|arm64) NODE_ARCH=arm64 ;; *) NODE_ARCH="$(uname -m)" ;; esac
if [ "$FAKE_NODE" = 1 ]; then
log "registering node $NODE_NAME"
"${KUBECTL[@]}" apply --server-side --field-manager=pangeo-controlplane-fixture -f - >>"$WD/logs/node.log" 2>&1 <<EOF \
  || fail_with_logs "registering node $NODE_NAME failed" node kube-apiserver
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  labels:
    kubernetes.io/hostname: $NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/arch: $NODE_ARCH
EOF
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
"${KUBECTL[@]}" patch node "$NODE_NAME" --subresource=status --type=merge -p "$(cat <<EOF
{"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
  "message": "registered by the test fixture", "lastHeartbeatTime": "$now", "lastTransitionTime": "$now"}]}}
EOF
)" >>"$WD/logs/node.log" 2>&1 || fail_with_logs "setting node $NODE_NAME Ready failed" node kube-apiserver
# The TaintNodesByCondition admission plugin taints every new Node node.kubernetes.io/not-ready:NoSchedule;
# node-lifecycle-controller would lift it once the node is Ready. It is disabled, so lift it here (the
# node has no other taints: no cloud provider adds node.cloudprovider.kubernetes.io/uninitialized).
"${KUBECTL[@]}" patch node "$NODE_NAME" --type=merge -p '{"spec": {"taints": null}}' >>"$WD/logs/node.log" 2>&1 \
  || fail_with_logs "removing the not-ready taint from node $NODE_NAME failed" node kube-apiserver
"${KUBECTL[@]}" wait --for=condition=Ready --timeout=10s "node/$NODE_NAME" >>"$WD/logs/node.log" 2>&1 \
  || fail_with_logs "node $NODE_NAME not Ready after the status patch" node kube-apiserver
else
  log "no fake node: a kubelet registers $NODE_NAME (integration-tests/node/start.sh)"
fi

# ---------------------------------------------------------------- CRDs
log "installing CRDs from $REF"
for f in "${CRD_FILES[@]}"; do
  "${KUBECTL[@]}" apply --server-side --field-manager=pangeo-controlplane-fixture -f "$f" >>"$WD/logs/crds.log" 2>&1 \
    || fail_with_logs "applying $f failed" crds kube-apiserver
done
crd_names=()
for f in "${CRD_FILES[@]}"; do
  crd_names+=("crd/$(awk '/^metadata:/{m=1;next} m && /^  name:/{print $2; exit}' "$f")")
done
"${KUBECTL[@]}" wait --for=condition=Established --timeout="${TIMEOUT}s" "${crd_names[@]}" >>"$WD/logs/crds.log" 2>&1 \
  || fail_with_logs "CRDs not Established within ${TIMEOUT}s" crds kube-apiserver

# helm-controller: all namespaces (as k3s runs it), lease in kube-system.
launch helm-controller "$BIN/helm-controller" \
  --kubeconfig "$WD/helm-controller.kubeconfig" \
  --namespace "" \
  --node-name "$NODE_NAME"

sleep 0.5
for n in kine kube-apiserver kube-controller-manager helm-controller; do
  pid="$(launched_pid "$n")"
  proc_alive "$pid" || fail_with_logs "$n exited right after start" "$n"
done

cat >"$WD/env" <<EOF
KUBECONFIG=$WD/kubeconfig
RESTRICTED_KUBECONFIG=$WD/restricted.kubeconfig
APISERVER_URL=$APISERVER_URL
KUBERNETES_VERSION=$KUBERNETES_VERSION
CONTROLPLANE_BIN_DIR=$BIN
KUBECTL=$BIN/kubectl
CA_CERT=$PKI/ca.crt
ADMIN_CERT=$PKI/admin.crt
ADMIN_KEY=$PKI/admin.key
KINE_ENDPOINT=$KINE_ENDPOINT
KUBE_APISERVER_BIN=$BIN/kube-apiserver
APISERVER_ARGS=$WD/apiserver.args
NODE_NAME=$NODE_NAME
CONTROLPLANE_FAKE_NODE=$FAKE_NODE
NODE_IP=$NODE_IP
KINE_PID=$PID_KINE
KUBE_APISERVER_PID=$PID_KUBE_APISERVER
KUBE_CONTROLLER_MANAGER_PID=$PID_KUBE_CONTROLLER_MANAGER
HELM_CONTROLLER_PID=$PID_HELM_CONTROLLER
CONTROLPLANE_WORKDIR=$WD
EOF
started
log "control plane up at $APISERVER_URL after $(elapsed "$T_START")s; env in $WD/env"
