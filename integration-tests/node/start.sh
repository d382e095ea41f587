#!/usr/bin/env bash
# Starts a real one-node Kubernetes test node beside a control plane started with
#   CONTROLPLANE_FAKE_NODE=0 integration-tests/controlplane/start.sh <workdir>
# in the same <workdir> (its `env` is read; the node's own state goes to <workdir>/node/):
#   containerd (+ runc, CNI bridge/host-local/portmap/loopback) -> kubelet (node pangeo-test-node,
#   InternalIP = the control plane's NODE_IP) -> kube-proxy (iptables) and kube-scheduler ->
#   CoreDNS (Deployment + Service kube-dns at 10.0.0.10) and local-path-provisioner (StorageClass
#   local-path, the default). Images are built locally (images.sh) and imported, never pulled.
# Writes <workdir>/node.env (KEY=value lines), PIDs in <workdir>/node/pids, logs in <workdir>/node/logs/.
# One test node per machine: it owns the cni0 bridge and the KUBE-*/CNI-* iptables chains.
#
# Usage: start.sh <workdir>      (stop with stop.sh <workdir>, BEFORE the control plane's stop.sh)
# Env:   NODE_BIN_DIR (prebuilt node binaries), NODE_START_TIMEOUT (s, default 120), PANGEO_CACHE_DIR
# Exit codes: 0 ready, 1 failure (what started is stopped again), 2 usage, 3 go not found (SKIPPED).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 <workdir>" >&2; exit 2; }
[ -d "$1" ] || die "no workdir $1: start the control plane there first (CONTROLPLANE_FAKE_NODE=0)" 2
WD="$(cd "$1" && pwd)"
ND="$WD/node"
TIMEOUT="${NODE_START_TIMEOUT:-120}"
T_START=$(now)

[ "$(id -u)" = 0 ] || die "the test node needs root (network namespaces, iptables, mounts, cgroups)" 1
[ -s "$WD/env" ] || die "$WD/env not found: start the control plane first (CONTROLPLANE_FAKE_NODE=0 integration-tests/controlplane/start.sh $WD)" 1
envval() { awk -F= -v k="$1" '$1==k{sub(/^[^=]*=/,""); print; exit}' "$WD/env"; }
[ "$(envval CONTROLPLANE_FAKE_NODE)" = 0 ] \
  || die "the control plane in $WD registers a fake node; restart it with CONTROLPLANE_FAKE_NODE=0" 1
CP_BIN="$(envval CONTROLPLANE_BIN_DIR)"
KUBECONFIG_ADMIN="$(envval KUBECONFIG)"
APISERVER_URL="$(envval APISERVER_URL)"
NODE_NAME="$(envval NODE_NAME)"
NODE_IP="$(envval NODE_IP)"
CA_CRT="$WD/pki/ca.crt"; CA_KEY="$WD/pki/ca.key"
for b in kubelet kube-proxy kube-scheduler kubectl; do
  [ -x "$CP_BIN/$b" ] || die "$CP_BIN/$b not found (the control plane's build makes it: integration-tests/controlplane/build.sh)" 1
done
[ -f "$CA_KEY" ] || die "$CA_KEY not found" 1

missing=()
for t in ip iptables ip6tables conntrack openssl mount umount nsenter python3; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (run integration-tests/install-deps)" 1

die_if_running "$ND/pids" "a node"
command -v flock >/dev/null 2>&1 || die "flock not found (util-linux)" 1
mkdir -p "$(dirname "$NODE_LOCK")"
exec 7>>"$NODE_LOCK"
if ! flock -n 7; then
  log "another test node runs on this machine (it holds $NODE_LOCK); waiting up to ${NODE_LOCK_TIMEOUT:-300}s"
  flock -w "${NODE_LOCK_TIMEOUT:-300}" 7 \
    || die "another test node still runs on this machine after ${NODE_LOCK_TIMEOUT:-300}s (one at a time: it holds $NODE_LOCK)" 1
fi
if ip link show cni0 >/dev/null 2>&1; then
  die "a cni0 bridge exists: another test node runs on this machine (one at a time), or one was not stopped; stop it (integration-tests/node/stop.sh <its workdir>) or 'ip link del cni0'" 1
fi

# Binaries.
use_bins NODE_BIN_DIR "${NODE_BIN_DIR:-}" "$NODE_DIR/build.sh" "${NODE_BINARIES[@]}"

# Unix socket paths are limited to 107 bytes.
[ ${#ND} -le 60 ] || die "workdir path too long for containerd's sockets ($ND: keep it under 60 characters)" 2

rm -rf "${ND:?}/logs" "${ND:?}/pki" "${ND:?}/pids" "${ND:?}/etc" "${WD:?}/node.env"
mkdir -p "$ND/logs" "$ND/pki" "$ND/etc/cni" "$ND/run" "$ND/containerd" "$ND/kubelet" "$ND/pod-logs" \
  "$ND/cni/ipam" "$ND/local-path"
fixture_init "$ND" "$ND/pids" "$ND/logs"
echo "$BIN" >"$ND/bin-dir"
echo "$CP_BIN" >"$ND/controlplane-bin-dir"

# On a failed start, stop.sh takes the lock once the node's processes (which hold it too) are gone:
# this script's fd 7 is closed first.
trap '[ "$STARTED_OK" = 1 ] || exec 7>&-; stop_if_start_fails "$NODE_DIR/stop.sh" "$WD"' EXIT

# ---------------------------------------------------------------- host state to restore at stop
# kubelet sets kernel.panic*, vm.overcommit_memory, vm.panic_on_oom, kernel.keys.*; kube-proxy
# nf_conntrack_* and route_localnet; the bridge plugin ip_forward. stop.sh writes these back.
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait net.ipv4.conf.all.route_localnet net.ipv4.ip_forward
  net.ipv6.conf.all.forwarding net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
if [ ! -s "$ND/sysctl.before" ]; then   # kept across a failed start, so the first values win
  for s in "${SYSCTLS[@]}"; do
    v="$(sysctl -n "$s" 2>/dev/null)" && echo "$s=$v"
  done >"$ND/sysctl.before"
fi
# Host paths the kubelet and CNI use that cannot be moved into the workdir: made by us -> removed by stop.sh.
: >"$ND/host-paths.created"
for p in /var/lib/kubelet /var/lib/kubelet/device-plugins /var/log/containers /var/lib/cni /var/lib/cni/results \
         /run/containerd /run/containerd/s; do
  [ -e "$p" ] || echo "$p" >>"$ND/host-paths.created"
done

# Pods talk to each other, to Services and to this machine, never beyond it: the bridge forwards
# nothing from cni0 to another interface (a ClusterIP without rules yet would otherwise be routed
# to the default gateway). A CNI- chain, so stop.sh's sweep removes it.
iptables -w -N CNI-PANGEO-NO-EGRESS 2>/dev/null || iptables -w -F CNI-PANGEO-NO-EGRESS
iptables -w -A CNI-PANGEO-NO-EGRESS -i cni0 ! -o cni0 -j REJECT --reject-with icmp-admin-prohibited \
  || die "iptables: could not add the no-egress rule" 1
iptables -w -C FORWARD -j CNI-PANGEO-NO-EGRESS 2>/dev/null || iptables -w -I FORWARD 1 -j CNI-PANGEO-NO-EGRESS
# The same for this machine's own processes (pangeod, the tests, curl): a connection to a ClusterIP
# made before kube-proxy has written that Service's rules is not DNATed and would follow the default
# route off the machine (seen: a hub client that connected in that window kept the connection and
# got a stranger's 404s for minutes). The filter table sees packets after the nat table, so only a
# destination still in the Service range here was never translated: refuse it on the spot.
iptables -w -N CNI-PANGEO-NO-EGRESS-HOST 2>/dev/null || iptables -w -F CNI-PANGEO-NO-EGRESS-HOST
iptables -w -A CNI-PANGEO-NO-EGRESS-HOST -d 10.0.0.0/24 -p tcp -j REJECT --reject-with tcp-reset \
  && iptables -w -A CNI-PANGEO-NO-EGRESS-HOST -d 10.0.0.0/24 -j REJECT --reject-with icmp-port-unreachable \
  || die "iptables: could not add the host no-egress rule" 1
iptables -w -C OUTPUT -j CNI-PANGEO-NO-EGRESS-HOST 2>/dev/null || iptables -w -I OUTPUT 1 -j CNI-PANGEO-NO-EGRESS-HOST

# ---------------------------------------------------------------- certificates and kubeconfigs
pki_init "$ND/pki" "$ND/logs/openssl.log" "$CA_CRT" "$CA_KEY"
PKI="$ND/pki"
log "certificates for $NODE_NAME (signed by $CA_CRT)"
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
cert kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
cert kube-proxy "/CN=system:kube-proxy" clientAuth
cert kube-scheduler "/CN=system:kube-scheduler" clientAuth
for n in kubelet kube-proxy kube-scheduler; do kubeconfig "$ND/$n.kubeconfig" "$APISERVER_URL" "$CA_CRT" "$n"; done

# ---------------------------------------------------------------- configuration
SERVICE_CIDR=10.0.0.0/24      # the control plane's --service-cluster-ip-range (and the no-egress rules above)
CLUSTER_DNS=10.0.0.10
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SOCK="$ND/run/containerd.sock"
for v in KUBELET_PORT PROXY_HEALTHZ_PORT PROXY_METRICS_PORT SCHED_PORT; do
  free_port "$v" || die "could not find a free port" 1
done

# containerd: config version 3. The listen addresses go in the server plugins' own tables (a
# top-level [grpc] is not read by these versions). restrict_oom_score_adj: this machine's bounding
# set lacks CAP_SYS_RESOURCE, so no process may lower an oom_score_adj (pod sandboxes fail otherwise).
cat >"$ND/etc/containerd.toml" <<EOF
version = 3
root = "$ND/containerd/root"
state = "$ND/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[plugins.'io.containerd.server.v1.grpc']
  address = "$SOCK"
[plugins.'io.containerd.server.v1.ttrpc']
  address = "$SOCK.ttrpc"
[plugins.'io.containerd.server.v1.debug']
  address = ""
[plugins.'io.containerd.server.v1.metrics']
  address = ""
[plugins.'io.containerd.internal.v1.opt']
  path = "$ND/containerd/opt"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "registry.k8s.io/pause:$PAUSE_VERSION"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$ND/etc/certs.d"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$BIN/runc"
        Root = "$ND/run/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$BIN"]
    conf_dir = "$ND/etc/cni"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF

# CNI: one bridge, host-local IPAM (state in the workdir), portmap for hostPort. No ipMasq: pods
# talk to each other, to Services and to this machine only.
cat >"$ND/etc/cni/10-pangeo-test.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pangeo-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$ND/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# Pods resolve through CoreDNS only; no search domains or nameservers of the host.
printf '# test node: no host nameservers or search domains for pods\n' >"$ND/etc/resolv.conf"

# kubelet: cgroup v1 without systemd here (failCgroupV1: false, cgroupfs), no CAP_SYS_RESOURCE
# (oomScoreAdj 0), hard nofile limit 20000 (maxOpenFiles). Eviction thresholds low: a test node
# shares the disk with builds.
cat >"$ND/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CA_CRT}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
maxOpenFiles: 20000
clusterDNS: [$CLUSTER_DNS]
clusterDomain: cluster.local
resolvConf: $ND/etc/resolv.conf
volumePluginDir: $ND/kubelet/volume-plugins
podLogsDir: $ND/pod-logs
serializeImagePulls: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
rotateCertificates: false
serverTLSBootstrap: false
EOF

# kube-proxy: iptables mode; conntrack.maxPerCore 0 leaves nf_conntrack_max alone; NodePorts on
# the node's address only.
cat >"$ND/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $ND/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: ["$NODE_IP/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

# ---------------------------------------------------------------- processes
# Each process in its own session, recorded in <workdir>/node/pids (launch: integration-tests/lib/common.sh),
# with the node's binaries first on its PATH (containerd finds the shim and runc there).
KUBECTL=("$CP_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN")
CTR=("$BIN/ctr" -a "$SOCK")

launch containerd env PATH="$BIN:$PATH" "$BIN/containerd" --config "$ND/etc/containerd.toml"
deadline=$(( $(date +%s) + TIMEOUT ))
until [ -S "$SOCK" ] && "${CTR[@]}" version >/dev/null 2>&1; do
  proc_alive "$PID_CONTAINERD" || fail_with_logs "containerd exited during startup" containerd
  [ "$(date +%s)" -lt "$deadline" ] || fail_with_logs "containerd did not answer on $SOCK within ${TIMEOUT}s" containerd
  sleep 0.1
done
log "containerd up after $(elapsed "$T_START")s"

# Images: built once (cached by content), imported one archive per ctr call.
"$NODE_DIR/images.sh" "$BIN" >"$ND/images.list" || die "building the node images failed" 1
mapfile -t ARCHIVES <"$ND/images.list"
[ ${#ARCHIVES[@]} -gt 0 ] || die "images.sh printed no archive" 1
for a in "${ARCHIVES[@]}"; do
  "${CTR[@]}" -n k8s.io images import "$a" >>"$ND/logs/images.log" 2>&1 \
    || { tail -n 20 "$ND/logs/images.log" >&2; die "ctr images import $a failed" 1; }
done
"${CTR[@]}" -n k8s.io images ls -q >>"$ND/logs/images.log" 2>&1 || true
log "images imported after $(elapsed "$T_START")s"

launch kubelet env PATH="$BIN:$PATH" "$CP_BIN/kubelet" \
  --config="$ND/etc/kubelet.yaml" \
  --kubeconfig="$ND/kubelet.kubeconfig" \
  --root-dir="$ND/kubelet" \
  --cert-dir="$ND/kubelet/pki" \
  --hostname-override="$NODE_NAME" \
  --node-ip="$NODE_IP" \
  --v=1
launch kube-scheduler env PATH="$BIN:$PATH" "$CP_BIN/kube-scheduler" \
  --kubeconfig="$ND/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$ND/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$ND/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
  --leader-elect=false --v=1
launch kube-proxy env PATH="$BIN:$PATH" "$CP_BIN/kube-proxy" --config="$ND/etc/kube-proxy.yaml" --v=1

log "waiting for node $NODE_NAME Ready"
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  for n in containerd kubelet kube-scheduler kube-proxy; do
    v="PID_$(echo "$n" | tr 'a-z-' 'A-Z_')"
    proc_alive "${!v}" || fail_with_logs "$n exited during startup" "$n"
  done
  ready="$("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
  taints="$("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{.spec.taints}' 2>/dev/null || true)"
  [ "$ready" = True ] && [ -z "$taints" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || fail_with_logs "node $NODE_NAME not Ready and untainted within ${TIMEOUT}s (Ready=$ready taints=$taints)" kubelet containerd
  sleep 0.5
done
log "node $NODE_NAME Ready after $(elapsed "$T_START")s"

# ---------------------------------------------------------------- cluster add-ons
# CoreDNS: the kubernetes plugin for cluster.local and reverse zones, nothing forwarded (no
# traffic leaves the machine: other names get SERVFAIL).
"${KUBECTL[@]}" apply --server-side --field-manager=pangeo-node-fixture -f - >"$ND/logs/addons.log" 2>&1 <<EOF \
  || fail_with_logs "applying the CoreDNS manifests failed" addons
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 2s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loop
        reload
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      tolerations: [{key: CriticalAddonsOnly, operator: Exists}]
      containers:
      - name: coredns
        image: registry.k8s.io/coredns/coredns:$COREDNS_VERSION
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          initialDelaySeconds: 10
        resources:
          requests: {cpu: 50m, memory: 50Mi}
          limits: {memory: 170Mi}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
      - name: config
        configMap: {name: coredns, items: [{key: Corefile, path: Corefile}]}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $CLUSTER_DNS
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
EOF

# local-path-provisioner (as upstream's deploy/local-path-storage.yaml, v0.0.30), volumes under
# <workdir>/node/local-path, helper pods on the local busybox image. The default StorageClass, as k3s.
"${KUBECTL[@]}" apply --server-side --field-manager=pangeo-node-fixture -f - >>"$ND/logs/addons.log" 2>&1 <<EOF \
  || fail_with_logs "applying the local-path-provisioner manifests failed" addons
apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-path-provisioner-role, namespace: local-path-storage}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: local-path-provisioner-role}
rules:
- apiGroups: [""]
  resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: local-path-provisioner-bind, namespace: local-path-storage}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-path-provisioner-role}
subjects: [{kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: local-path-provisioner-bind}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: local-path-provisioner-role}
subjects: [{kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: local-path-provisioner, namespace: local-path-storage}
spec:
  replicas: 1
  selector: {matchLabels: {app: local-path-provisioner}}
  template:
    metadata: {labels: {app: local-path-provisioner}}
    spec:
      serviceAccountName: local-path-provisioner-service-account
      containers:
      - name: local-path-provisioner
        image: docker.io/rancher/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION
        imagePullPolicy: Never
        command: [local-path-provisioner, --debug, start, --config, /etc/config/config.json]
        volumeMounts: [{name: config-volume, mountPath: /etc/config/}]
        env:
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - {name: CONFIG_MOUNT_PATH, value: /etc/config/}
      volumes:
      - name: config-volume
        configMap: {name: local-path-config}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$ND/local-path"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      priorityClassName: system-node-critical
      tolerations:
      - key: node.kubernetes.io/disk-pressure
        operator: Exists
        effect: NoSchedule
      containers:
      - name: helper-pod
        image: docker.io/library/busybox:latest
        imagePullPolicy: Never
EOF

log "waiting for CoreDNS and local-path-provisioner"
"${KUBECTL[@]}" -n kube-system rollout status deployment/coredns --timeout="${TIMEOUT}s" >>"$ND/logs/addons.log" 2>&1 || {
  "${KUBECTL[@]}" -n kube-system describe pods -l k8s-app=kube-dns >>"$ND/logs/addons.log" 2>&1 || true
  fail_with_logs "CoreDNS not available within ${TIMEOUT}s" addons kubelet
}
"${KUBECTL[@]}" -n local-path-storage rollout status deployment/local-path-provisioner --timeout="${TIMEOUT}s" \
  >>"$ND/logs/addons.log" 2>&1 || fail_with_logs "local-path-provisioner not available within ${TIMEOUT}s" addons kubelet

cat >"$WD/node.env" <<EOF
KUBECONFIG=$KUBECONFIG_ADMIN
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
NODE_BIN_DIR=$BIN
CONTAINERD_SOCKET=$SOCK
CONTAINER_RUNTIME_ENDPOINT=unix://$SOCK
CTR=$BIN/ctr
CRICTL=$BIN/crictl
HELM=$BIN/helm
KUBECTL=$CP_BIN/kubectl
CLUSTER_DNS=$CLUSTER_DNS
SERVICE_CIDR=$SERVICE_CIDR
POD_CIDR=$POD_CIDR
STORAGE_CLASS=local-path
TEST_IMAGE=docker.io/library/busybox:latest
PAUSE_IMAGE=registry.k8s.io/pause:$PAUSE_VERSION
CONTAINERD_PID=$PID_CONTAINERD
KUBELET_PID=$PID_KUBELET
KUBE_PROXY_PID=$PID_KUBE_PROXY
KUBE_SCHEDULER_PID=$PID_KUBE_SCHEDULER
NODE_WORKDIR=$ND
EOF
started
log "node $NODE_NAME up after $(elapsed "$T_START")s; env in $WD/node.env"
