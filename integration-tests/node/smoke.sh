#!/usr/bin/env bash
# Smoke test of the real test node: build (cached), start a control plane (CONTROLPLANE_FAKE_NODE=0)
# and the node in a temp dir, run pods through it, stop everything and check that nothing is left.
# Last line: "N passed, M failed". Exit 0 only if all passed; 3 (after "SKIPPED: ...") without Go
# or root. KEEP_WORKDIR=1 keeps the temp dir (logs) afterwards; it is kept anyway after a failure.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "$(id -u)" != 0 ]; then
  skip_suite "the test node needs root (network namespaces, iptables, mounts); run as root"
fi

# ------------------------------------------------------------------ 1. build
echo "== build (cached)"
# CONTROLPLANE_BIN_DIR / NODE_BIN_DIR, when set, name prebuilt binaries (no build).
rc=0
[ -n "${CONTROLPLANE_BIN_DIR:-}" ] || CONTROLPLANE_BIN_DIR="$("$CP_DIR/build.sh" --print-bin-dir)" || rc=$?
if [ "$rc" -eq 3 ]; then skip_suite "go not found (install Go >= 1.26.7)"; fi
[ "$rc" -eq 0 ] || { fail "controlplane/build.sh (exit $rc)"; finish; }
[ -n "${NODE_BIN_DIR:-}" ] || NODE_BIN_DIR="$("$NODE_DIR/build.sh" --print-bin-dir)" || rc=$?
if [ "$rc" -eq 3 ]; then skip_suite "go not found (install Go >= 1.26.7)"; fi
[ "$rc" -eq 0 ] || { fail "node/build.sh (exit $rc)"; finish; }
export CONTROLPLANE_BIN_DIR NODE_BIN_DIR
pass "binaries built or cached (control plane: $CONTROLPLANE_BIN_DIR, node: $NODE_BIN_DIR)"

WD="$(mktemp -d /tmp/pgnode.XXXXXX)"
SYSCTL_SNAPSHOT="$(for s in kernel.panic kernel.panic_on_oops vm.overcommit_memory net.netfilter.nf_conntrack_max \
  net.ipv4.conf.all.route_localnet net.ipv4.ip_forward; do echo "$s=$(sysctl -n "$s" 2>/dev/null)"; done)"
VETHS_BEFORE="$(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | sort | tr '\n' ' ')"
STOPPED=0
stop_all() {
  [ "$STOPPED" = 0 ] || return 0
  STOPPED=1
  "$NODE_DIR/stop.sh" "$WD" || true
  "$CP_DIR/stop.sh" "$WD" || true
}
cleanup() {
  local rc=$?
  stop_all >/dev/null 2>&1
  keep_or_remove "$WD"
  exit "$rc"
}
trap cleanup EXIT

# ------------------------------------------------------------------ 2. start
echo "== start control plane and node in $WD"
t0=$(now)
if ! CONTROLPLANE_FAKE_NODE=0 "$CP_DIR/start.sh" "$WD"; then
  fail "controlplane/start.sh with CONTROLPLANE_FAKE_NODE=0"
  for f in "$WD"/logs/*.log; do echo "---- $f"; tail -n 20 "$f"; done
  finish
fi
t1=$(now)
if ! "$NODE_DIR/start.sh" "$WD"; then
  fail "node/start.sh"
  for f in "$WD"/node/logs/*.log; do echo "---- $f"; tail -n 20 "$f"; done
  finish
fi
pass "control plane ($(elapsed "$t0")s with the node; node alone $(elapsed "$t1")s) started: node Ready, CoreDNS and local-path-provisioner available"
# shellcheck disable=SC1091
. "$WD/node.env"
export KUBECONFIG
k() { "$KUBECTL" "$@"; }

# ------------------------------------------------------------------ 3. the node
check_node() {
  local ready ip kubelet runtime
  ready="$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" || return 1
  ip="$(k get node "$NODE_NAME" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
  kubelet="$(k get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion}')"
  runtime="$(k get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')"
  echo "  node $NODE_NAME Ready=$ready InternalIP=$ip kubelet=$kubelet runtime=$runtime"
  [ "$ready" = True ] && [ "$ip" = "$NODE_IP" ] && [ "$kubelet" = "$KUBERNETES_VERSION" ] \
    && [ "$runtime" = "containerd://${CONTAINERD_VERSION#v}" ]
}
KUBERNETES_VERSION="$(awk -F= '$1=="KUBERNETES_VERSION"{print $2}' "$WD/env")"
if check_node; then pass "node Ready with InternalIP, kubelet $KUBERNETES_VERSION, containerd $CONTAINERD_VERSION"; else fail "node check"; fi

# ------------------------------------------------------------------ 4. pods, Service, DNS
NS=smoke
TOKEN="pangeo-node-smoke-$RANDOM$RANDOM"
k create namespace "$NS" >/dev/null
wait_for 30 k -n "$NS" get serviceaccount default || echo "  (no default ServiceAccount after 30s)"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: $NS, labels: {app: web}}
spec:
  containers:
  - name: web
    image: $TEST_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /tmp/www && echo $TOKEN > /tmp/www/index.html && echo serving-$TOKEN && exec httpd -f -v -p 8080 -h /tmp/www']
    ports: [{containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: $NS}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: $NS}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: $TEST_IMAGE
    imagePullPolicy: Never
    command: [sleep, "3600"]
EOF
t0=$(now)
if k -n "$NS" wait --for=condition=Ready pod/web pod/client --timeout=90s >/dev/null; then
  WEB_IP="$(k -n "$NS" get pod web -o jsonpath='{.status.podIP}')"
  CLIENT_IP="$(k -n "$NS" get pod client -o jsonpath='{.status.podIP}')"
  echo "  pods Ready after $(elapsed "$t0")s: web $WEB_IP, client $CLIENT_IP"
  case "$WEB_IP" in 10.244.0.*) pass "pods run and get pod IPs from $POD_CIDR" ;; *) fail "pod IP $WEB_IP not in $POD_CIDR" ;; esac
else
  fail "pods web/client not Ready within 90s"
  k -n "$NS" describe pods | tail -n 30
fi

SVC_IP="$(k -n "$NS" get svc web -o jsonpath='{.spec.clusterIP}')"
check_dns() {
  local out
  out="$(k -n "$NS" exec client -- nslookup web.$NS.svc.cluster.local 2>&1)" || { echo "$out" | sed 's/^/  /'; return 1; }
  echo "$out" | sed 's/^/  /' | head -n 8
  grep -q "Address:.*$SVC_IP" <<<"$out" || { echo "  expected $SVC_IP"; return 1; }
}
if wait_for 30 check_dns && check_dns; then pass "web.$NS.svc.cluster.local resolves to the ClusterIP $SVC_IP through CoreDNS ($CLUSTER_DNS)"
else fail "DNS: web.$NS.svc.cluster.local did not resolve to $SVC_IP"; fi

http_get() { # host port -> body of GET /index.html from the client pod
  k -n "$NS" exec client -- sh -c "printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 5 $1 $2"
}
# kube-proxy programs the Service's rules asynchronously (after the endpoints are ready): retry.
service_reached() { out="$(http_get "web.$NS.svc.cluster.local" 80 2>&1 || true)"; grep -q "^$TOKEN" <<<"$out"; }
t0=$(now)
if wait_for 30 service_reached; then
  pass "client pod reaches the web pod through the Service (name -> $SVC_IP:80 -> :8080; $(elapsed "$t0")s)"
else
  fail "Service web not reachable from client within 30s (last answer: $(echo "$out" | head -c 200))"
fi

# This machine reaches the Service through kube-proxy's rules too, and a ClusterIP that no rule
# translates is refused here rather than routed off the machine (CNI-PANGEO-NO-EGRESS-HOST). The
# unused address is probed only when the rule is in place, so a missing rule sends nothing out.
host_reached() { out="$(curl -sS --max-time 5 "http://$SVC_IP/index.html" 2>&1 || true)"; grep -q "^$TOKEN" <<<"$out"; }
if wait_for 30 host_reached; then pass "this machine reaches the web pod through the ClusterIP $SVC_IP"
else fail "ClusterIP $SVC_IP from this machine (last answer: $(echo "$out" | head -c 200))"; fi
if iptables -w -C OUTPUT -j CNI-PANGEO-NO-EGRESS-HOST 2>/dev/null; then
  rejected() { iptables -w -L CNI-PANGEO-NO-EGRESS-HOST -v -x -n | awk '/tcp-reset/ {print $1; exit}'; }
  before=$(rejected); t0=$(now)
  if out="$(curl -sS --max-time 5 http://10.0.0.254:9/ 2>&1)"; then fail "an untranslated ClusterIP answered: $out"
  elif [ "$(rejected)" -gt "$before" ] && grep -qE "refused|Couldn't connect" <<<"$out"; then
    pass "an untranslated ClusterIP (10.0.0.254) is refused by the host no-egress rule ($(elapsed "$t0")s), not routed off the machine"
  else fail "an untranslated ClusterIP: $out (rule counter $before -> $(rejected))"; fi
else
  fail "the host no-egress rule (OUTPUT -j CNI-PANGEO-NO-EGRESS-HOST) is missing"
fi

# The apiserver through the `kubernetes` Service (what CoreDNS and in-cluster clients use). Go's TLS
# server answers a plaintext HTTP request with "400 ... Client sent an HTTP request to an HTTPS server".
out="$(k -n "$NS" exec client -- sh -c "printf 'GET /livez HTTP/1.0\r\n\r\n' | nc -w 5 10.0.0.1 443" 2>&1 || true)"
api_ep="$(k get endpointslices -n default -l kubernetes.io/service-name=kubernetes -o jsonpath='{.items[0].endpoints[0].addresses[0]}')"
if grep -q 'HTTPS server' <<<"$out" && [ "$api_ep" = "$NODE_IP" ]; then
  pass "a pod reaches the apiserver through the kubernetes Service 10.0.0.1:443 (endpoint $api_ep)"
else
  fail "kubernetes Service from a pod: endpoint '$api_ep' (expected $NODE_IP), answer: $(echo "$out" | head -c 120)"
fi

# ------------------------------------------------------------------ 5. logs and exec
# (The output is read whole first: `kubectl logs | grep -q` fails under pipefail when grep exits early.)
out="$(k -n "$NS" logs web 2>&1 || true)"
if grep -q "^serving-$TOKEN\$" <<<"$out"; then pass "kubectl logs"; else fail "kubectl logs web lacks serving-$TOKEN (got: $(head -c 200 <<<"$out"))"; fi
out="$(k -n "$NS" exec client -- sh -c 'echo exec-ok $((6*7))' 2>&1 || true)"
if [ "$out" = "exec-ok 42" ]; then pass "kubectl exec"; else fail "kubectl exec (got: $out)"; fi

# ------------------------------------------------------------------ 6. local-path PVC
check_pvc() {
  k apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: $NS}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-path
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer, namespace: $NS}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: writer
    image: $TEST_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'echo $TOKEN > /data/token && sleep 3600']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
EOF
  k -n "$NS" wait --for=condition=Ready pod/writer --timeout=90s >/dev/null || { k -n "$NS" describe pvc data | tail -n 10; return 1; }
  local pv dir
  pv="$(k -n "$NS" get pvc data -o jsonpath='{.spec.volumeName}')"
  dir="$(k get pv "$pv" -o jsonpath='{.spec.hostPath.path}{.spec.local.path}')"
  echo "  pvc data Bound to $pv at $dir"
  case "$dir" in "$NODE_WORKDIR/local-path/"*) ;; *) echo "  not under $NODE_WORKDIR/local-path"; return 1 ;; esac
  wait_for 10 grep -qx "$TOKEN" "$dir/token" || { echo "  $dir/token does not hold the token"; return 1; }
  [ "$(k -n "$NS" exec writer -- cat /data/token)" = "$TOKEN" ] || return 1
  # Delete: the provisioner's teardown helper pod (busybox) removes the directory, then the PV.
  k -n "$NS" delete pod writer --wait=true --timeout=60s >/dev/null || return 1
  k -n "$NS" delete pvc data --wait=true --timeout=60s >/dev/null || return 1
  wait_for 60 sh -c "! '$KUBECTL' get pv '$pv'" || { echo "  PV $pv not deleted"; return 1; }
  wait_for 30 test ! -e "$dir" || { echo "  $dir not removed"; return 1; }
  echo "  deleted: PV gone, $dir removed by the teardown helper pod"
}
if check_pvc; then pass "local-path PVC: provisioned (WaitForFirstConsumer), written by a pod, cleaned up on delete"
else fail "local-path PVC"; fi

# ------------------------------------------------------------------ 7. stop and leftovers
k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
NETNS_BEFORE="$(awk -v p="$WD/" 'index($5, p) == 1 {for (i = 7; i < NF; i++) if ($i == "-") {if ($(i+1) == "nsfs") print $5; break}}' /proc/self/mountinfo | wc -l)"
echo "  before stop: $NETNS_BEFORE pod network namespaces mounted under the workdir"
t0=$(now)
"$NODE_DIR/stop.sh" "$WD" && node_rc=0 || node_rc=$?
"$CP_DIR/stop.sh" "$WD" >/dev/null 2>&1 || true
STOPPED=1
echo "  stop took $(elapsed "$t0")s (node stop.sh exit $node_rc)"
left_procs=""
for p in /proc/[0-9]*; do
  pid="${p#/proc/}"
  [ "$pid" = $$ ] && continue
  c="$(tr "\0" " " 2>/dev/null <"$p/cmdline" || true)"; [[ "$c" == *"$WD"* ]] && left_procs="$left_procs $pid:$(tr '\0' ' ' <"$p/cmdline" | cut -c1-60)"
done
[ -z "$left_procs" ] && pass "no process of the workdir left" || fail "processes left:$left_procs"
mounts="$(awk -v p="$WD/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo)"
[ -z "$mounts" ] && pass "no mount under the workdir left" || fail "mounts left: $(echo "$mounts" | head -3)"
chains="$( { iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; } | { grep -E '^:(KUBE|CNI)-' || true; } | cut -d' ' -f1 | sort -u | tr '\n' ' ')"
[ -z "$chains" ] && pass "no KUBE-*/CNI-* iptables chains left" || fail "chains left: $chains"
veths_now="$(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | sort | tr '\n' ' ')"
if ip link show cni0 >/dev/null 2>&1; then fail "cni0 bridge left"
elif [ "$veths_now" != "$VETHS_BEFORE" ]; then fail "veths differ: before [$VETHS_BEFORE] now [$veths_now]"
else pass "no cni0 bridge or new veth left"; fi
ns_left="$(awk -v p="$WD/" 'index($5, p) == 1 {for (i = 7; i < NF; i++) if ($i == "-") {if ($(i+1) == "nsfs") print $5; break}}' /proc/self/mountinfo | wc -l)"
[ "$NETNS_BEFORE" -gt 0 ] && [ "$ns_left" -eq 0 ] && pass "no pod network namespace left ($NETNS_BEFORE before stop)" \
  || fail "pod netns: $NETNS_BEFORE before stop, $ns_left after"
sysctl_now="$(for s in kernel.panic kernel.panic_on_oops vm.overcommit_memory net.netfilter.nf_conntrack_max \
  net.ipv4.conf.all.route_localnet net.ipv4.ip_forward; do echo "$s=$(sysctl -n "$s" 2>/dev/null)"; done)"
[ "$sysctl_now" = "$SYSCTL_SNAPSHOT" ] && pass "sysctls restored" || fail "sysctls differ: $(diff <(echo "$SYSCTL_SNAPSHOT") <(echo "$sysctl_now") | grep '^[<>]' | tr '\n' ' ')"
if ip -4 -o addr show dev lo | grep -q " $NODE_IP/"; then fail "$NODE_IP still on lo"; else pass "$NODE_IP removed from lo"; fi

finish
