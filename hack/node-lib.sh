# The real node of the local cluster (sourced by hack/cluster.sh, not run):
# containerd with its own root, state and socket under the cluster's state dir,
# a kubelet registered as node `${REAL_NODE}`, kube-proxy, CNI bridge
# networking, a pause image built here from the pinned Kubernetes source, and
# the iptables rules that keep the pod network on this machine.
#
# Network layout (all inside 198.18.0.0/15, the benchmarking range that no
# real network uses; nothing here is routed anywhere else):
#   198.18.0.0/16   pods (POD_CIDR); the real node owns 198.18.0.0/24, the kwok
#                   nodes 198.18.16.0/20 and 198.18.32.0/20 (fake IPs, never used)
#   198.18.0.1      the bridge `${BRIDGE}` = the node's IP (NODE_IP)
#   198.19.0.0/16   Services (SERVICE_CIDR); 198.19.0.1 is `kubernetes`
# Pods get one route, to 198.18.0.0/15 via the bridge, so an outside address
# has no route at all; on top of that, iptables drops anything from the pod
# network that would be forwarded to an interface other than the bridge.
#
# Host services stay on loopback (Postgres, mock upstreams, the kubelet's
# healthz): pods reach them at NODE_IP:<port>, which a DNAT rule maps to
# 127.0.0.1:<port> (route_localnet on the bridge only). The kube-apiserver is
# the exception: pods reach it through the `kubernetes` Service, whose endpoint
# must be a non-loopback address, so it listens on all addresses and an INPUT
# rule accepts its port only from loopback and the bridge. The cluster's DNS
# (CoreDNS, the kubelet's clusterDNS) listens on NODE_IP:53 itself: pods
# resolve <service>.<namespace>.svc.cluster.local as on any cluster, and any
# other name is NXDOMAIN (nothing is forwarded off the machine).
#
# Settings that this kind of machine needs (Firecracker VM, cgroup v1/v2
# hybrid, Debian's containerd 1.6 and runc 1.1, CAP_SYS_RESOURCE withheld):
#   containerd CRI restrict_oom_score_adj = true: the sandbox asks for
#     oom_score_adj -998; lowering it needs CAP_SYS_RESOURCE, which this machine
#     withholds, and runc then dies with "can't get final child's PID from
#     pipe: EOF". With the option containerd clamps it to our own value.
#   kubelet failCgroupV1: false: the kernel mounts v1 controllers (plus an empty
#     v2 hierarchy); kubelet 1.35+ refuses v1 unless told.
#   kubelet cgroupDriver: cgroupfs (and SystemdCgroup = false): there is no
#     systemd here to delegate cgroups to.
#   containerd sandbox_image = our local pause image: nothing is ever pulled
#     (and containerd's registry traffic goes to a closed loopback proxy).
#   containerd 1.6 lacks the CRI RuntimeConfig call (cgroup driver discovery);
#     the kubelet logs that once and uses its own cgroupDriver.
# shellcheck shell=bash

REAL_NODE=switchboard-node
BRIDGE=switchboard0
NODE_IP=198.18.0.1
NODE_POD_CIDR=198.18.0.0/24
POD_NET=198.18.0.0/15 # pods + services: the only destinations a pod has a route to
PAUSE_IMAGE="localhost/switchboard-pause:${KUBERNETES_VERSION}"
CONTAINERD_DIR="${STATE}/containerd"
CONTAINERD_SOCK="${CONTAINERD_DIR}/containerd.sock"
KUBELET_DIR="${STATE}/kubelet"
CNI_CONF_DIR="${STATE}/cni/net.d"
# iptables chains of ours (removed on down); kube-proxy's KUBE-* are its own.
FWD_CHAIN=SWITCHBOARD-FORWARD
DNAT_CHAIN=SWITCHBOARD-HOST
INPUT_CHAIN=SWITCHBOARD-INPUT
# The state dir of the cluster whose network is up (one per machine).
NODE_OWNER=/run/switchboard-node.owner

ctr_node() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# ---- pause image (built once, cached) ------------------------------------------

# pause_archive: a docker-archive of the pause image, built from pause.c of the
# pinned k8s.io/kubernetes module (static, no libc at run time) with buildah
# from scratch, cached next to the binaries.
pause_archive() {
  local out="${BIN_DIR}/pause-image-${KUBERNETES_VERSION}.tar" src work
  if [[ -s "$out" ]]; then
    echo "$out"
    return 0
  fi
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then PATH="/usr/local/go/bin:${PATH}"; fi
  src=$(cd "${HACK_DIR}/gomod/kubernetes" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
  [[ -f "${src}/build/pause/linux/pause.c" ]] || die "pause.c not found in k8s.io/kubernetes@${KUBERNETES_VERSION}"
  command -v gcc >/dev/null || apt_install gcc libc6-dev
  work=$(mktemp -d)
  log "building the pause image from ${src}/build/pause/linux/pause.c (one time)"
  mkdir -p "${work}/rootfs"
  gcc -Os -Wall -Werror -static -DVERSION="${KUBERNETES_VERSION}" -o "${work}/rootfs/pause" "${src}/build/pause/linux/pause.c"
  printf 'FROM scratch\nCOPY rootfs/ /\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"${work}/Containerfile"
  buildah bud --quiet --layers=false --format oci --pull-never -f "${work}/Containerfile" -t "$PAUSE_IMAGE" "$work" >/dev/null
  buildah push --quiet "$PAUSE_IMAGE" "docker-archive:${work}/pause.tar:${PAUSE_IMAGE}" >/dev/null
  mv -f "${work}/pause.tar" "$out"
  rm -rf "$work"
  echo "$out"
}

# ---- network ------------------------------------------------------------------

sysctl_set() { [[ "$(cat "/proc/sys/${1//.//}")" == "$2" ]] || echo "$2" >"/proc/sys/${1//.//}"; }

# ipt TABLE ARGS...: iptables, waiting for the xtables lock (kube-proxy shares it).
ipt() { iptables -w 5 "$@"; }

network_up() {
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    local owner
    owner=$(cat "$NODE_OWNER" 2>/dev/null || true)
    if node_procs_alive; then
      die "bridge ${BRIDGE} belongs to another local cluster with a real node that is running${owner:+ (state ${owner})}: one per machine; stop it (make cluster-down in its worktree)"
    fi
    # Nothing runs on it: a cluster that was never stopped (its processes
    # killed, the machine's network left as it was). Its bridge and chains go.
    log "removing the network of a stopped cluster${owner:+ (state ${owner})}: bridge ${BRIDGE} and our iptables chains, with no process of a node left"
    network_remove
  fi
  # From here on the bridge and the chains are this state's: only then does
  # network_down remove them (a failed up must not tear down another cluster's).
  : >"${STATE}/network.owned"
  echo "$STATE" >"$NODE_OWNER"
  # The machine's sysctls that we or the kubelet change, restored on down. The
  # kubelet sets vm.overcommit_memory=1, kernel.panic=10 and
  # kernel.panic_on_oops=1, as on every Kubernetes node (its only other choice,
  # protectKernelDefaults, refuses to start when they differ).
  local k
  for k in net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/ipv4/conf/default/route_localnet vm/overcommit_memory kernel/panic kernel/panic_on_oops; do
    echo "${k} $(cat "/proc/sys/${k}")"
  done >"${STATE}/sysctls.saved"
  # The bridge carries the node IP before the kubelet starts (it checks that
  # its node IP is a local address); the CNI bridge plugin adopts it.
  ip link add "$BRIDGE" type bridge
  ip addr add "${NODE_IP}/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Every address of 198.18.0.0/15 that is not a pod of this node (other pods'
  # ranges, the kwok nodes' fake IPs, Service IPs without a rule) is routed to
  # the bridge, where it finds nobody: never to the default route.
  ip route add "$POD_NET" dev "$BRIDGE"
  # Services that land on another pod of the bridge are routed back into it.
  sysctl_set net.ipv4.ip_forward 1
  # Bridged pod-to-pod traffic passes iptables too (kube-proxy's Service DNAT
  # for a backend on the same bridge, and our forward rule).
  sysctl_set net.bridge.bridge-nf-call-iptables 1
  # DNAT from the bridge to 127.0.0.1 (host services stay on loopback).
  sysctl_set "net.ipv4.conf.${BRIDGE}.route_localnet" 1
  # ... and on interfaces created later (the CNI bridge plugin re-creates the
  # bridge if it ever disappears), never on "all" (that would include the
  # machine's outside interface).
  sysctl_set net.ipv4.conf.default.route_localnet 1

  # Nothing from the pod network is forwarded to any interface but the bridge
  # (first rule of FORWARD, ahead of kube-proxy's accepts).
  ipt -N "$FWD_CHAIN"
  ipt -A "$FWD_CHAIN" -s "$POD_NET" ! -o "$BRIDGE" -m comment --comment "switchboard: pod network stays on ${BRIDGE}" -j DROP
  ipt -A "$FWD_CHAIN" -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment "switchboard: nothing from ${BRIDGE} leaves it" -j DROP
  ipt -I FORWARD 1 -m comment --comment "switchboard pod network" -j "$FWD_CHAIN"
  # Pods reach the host's loopback services at NODE_IP:<port>.
  ipt -t nat -N "$DNAT_CHAIN"
  # ... except the cluster's DNS, which listens on NODE_IP:53 itself (dns_up).
  ipt -t nat -A "$DNAT_CHAIN" -i "$BRIDGE" -d "$NODE_IP" -p tcp --dport 53 -m comment --comment "switchboard: cluster DNS on the node IP" -j RETURN
  ipt -t nat -A "$DNAT_CHAIN" -i "$BRIDGE" -d "$NODE_IP" -p tcp -m comment --comment "switchboard: pods reach host loopback services" -j DNAT --to-destination 127.0.0.1
  ipt -t nat -A PREROUTING -m comment --comment "switchboard host services" -j "$DNAT_CHAIN"
  # The host reaches them at the same address (tenant database URLs name NODE_IP).
  ipt -t nat -A OUTPUT -d "$NODE_IP" -p tcp -m comment --comment "switchboard host services (local)" -j DNAT --to-destination 127.0.0.1
  # ... and see a loopback client, as they would from this machine (Postgres
  # accepts loopback clients only). Bridge traffic is SNATed on INPUT, local
  # traffic on POSTROUTING.
  ipt -t nat -A INPUT -d 127.0.0.1 -m conntrack --ctstate DNAT --ctorigdst "$NODE_IP" -m comment --comment "switchboard: host services see loopback clients" -j SNAT --to-source 127.0.0.1
  ipt -t nat -A POSTROUTING -o lo -m conntrack --ctstate DNAT --ctorigdst "$NODE_IP" -m comment --comment "switchboard: host services see loopback clients" -j SNAT --to-source 127.0.0.1
  # The apiserver listens on all addresses (see the top): its port only from
  # loopback and the bridge.
  ipt -N "$INPUT_CHAIN"
  ipt -A "$INPUT_CHAIN" -i lo -j RETURN
  ipt -A "$INPUT_CHAIN" -i "$BRIDGE" -j RETURN
  ipt -A "$INPUT_CHAIN" -m comment --comment "switchboard: apiserver only from loopback and ${BRIDGE}" -j DROP
  ipt -I INPUT 1 -p tcp --dport "$API_PORT" -m comment --comment "switchboard apiserver" -j "$INPUT_CHAIN"
}

# node_procs_alive: a kubelet or kube-proxy of a local cluster's real node (ours
# or another worktree's) runs, or a containerd of a cluster state.
node_procs_alive() {
  pgrep -f -- "--hostname-override=${REAL_NODE}" >/dev/null 2>&1 && return 0
  local owner
  owner=$(cat "$NODE_OWNER" 2>/dev/null || true)
  [[ -n "$owner" ]] && pgrep -f -- "containerd --config ${owner}/containerd/config.toml" >/dev/null 2>&1
}

network_down() {
  [[ -f "${STATE}/network.owned" ]] || return 0
  rm -f "${STATE}/network.owned"
  local owner
  owner=$(cat "$NODE_OWNER" 2>/dev/null || true)
  # Another cluster took the network over after ours was killed: it is theirs.
  [[ -z "$owner" || "$owner" == "$STATE" ]] || return 0
  network_remove
  rm -f "$NODE_OWNER"
}

# network_remove: the bridge, our chains and the rules that jump to them,
# whichever cluster state made them.
network_remove() {
  ipt -D FORWARD -m comment --comment "switchboard pod network" -j "$FWD_CHAIN" 2>/dev/null || true
  ipt -F "$FWD_CHAIN" 2>/dev/null && ipt -X "$FWD_CHAIN" 2>/dev/null || true
  ipt -t nat -D PREROUTING -m comment --comment "switchboard host services" -j "$DNAT_CHAIN" 2>/dev/null || true
  ipt -t nat -F "$DNAT_CHAIN" 2>/dev/null && ipt -t nat -X "$DNAT_CHAIN" 2>/dev/null || true
  ipt -t nat -D OUTPUT -d "$NODE_IP" -p tcp -m comment --comment "switchboard host services (local)" -j DNAT --to-destination 127.0.0.1 2>/dev/null || true
  ipt -t nat -D INPUT -d 127.0.0.1 -m conntrack --ctstate DNAT --ctorigdst "$NODE_IP" -m comment --comment "switchboard: host services see loopback clients" -j SNAT --to-source 127.0.0.1 2>/dev/null || true
  ipt -t nat -D POSTROUTING -o lo -m conntrack --ctstate DNAT --ctorigdst "$NODE_IP" -m comment --comment "switchboard: host services see loopback clients" -j SNAT --to-source 127.0.0.1 2>/dev/null || true
  local rule
  while read -r rule; do
    # shellcheck disable=SC2086 # the rule's words, as iptables -S printed them
    eval "ipt -D ${rule#-A }" 2>/dev/null || true
  done < <(ipt -S INPUT 2>/dev/null | grep -F -- "-j ${INPUT_CHAIN}" || true)
  ipt -F "$INPUT_CHAIN" 2>/dev/null && ipt -X "$INPUT_CHAIN" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
}

write_cni_conf() {
  mkdir -p "$CNI_CONF_DIR" "${STATE}/cni/ipam"
  cat >"${CNI_CONF_DIR}/10-switchboard.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "switchboard",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${STATE}/cni/ipam",
        "ranges": [[{"subnet": "${NODE_POD_CIDR}", "gateway": "${NODE_IP}"}]],
        "routes": [{"dst": "${POD_NET}"}]
      }
    }
  ]
}
EOF
}

# ---- containerd -----------------------------------------------------------------

write_containerd_conf() {
  mkdir -p "${CONTAINERD_DIR}/root" "${CONTAINERD_DIR}/state"
  cat >"${CONTAINERD_DIR}/config.toml" <<EOF
version = 2
root = "${CONTAINERD_DIR}/root"
state = "${CONTAINERD_DIR}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "${CONTAINERD_SOCK}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN_DIR}"
    conf_dir = "${CNI_CONF_DIR}"
    max_conf_num = 1
EOF
}

containerd_ready() { ctr --address "$CONTAINERD_SOCK" version; }

# ---- kubelet and kube-proxy ---------------------------------------------------------

write_kubelet_conf() {
  mkdir -p "$KUBELET_DIR" "${STATE}/pod-logs"
  cat >"${STATE}/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# On loopback: the apiserver dials NODE_IP:port, which the OUTPUT DNAT rule
# maps to 127.0.0.1:port (see network_up).
address: 127.0.0.1
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
tlsCertFile: ${PKI}/kubelet-serving.crt
tlsPrivateKeyFile: ${PKI}/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${PKI}/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://${CONTAINERD_SOCK}
# See the top of this file: cgroup v1 hybrid, no systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
# The cluster's DNS (CoreDNS, dns_up) on the node IP: pods resolve Services
# by name (<service>.<namespace>.svc.cluster.local) as on any cluster.
clusterDNS: ["${NODE_IP}"]
podCIDR: ${NODE_POD_CIDR}
podLogsDir: ${STATE}/pod-logs
maxPods: 110
serializeImagePulls: false
# No registry is reachable (containerd's registry traffic goes to a closed
# loopback proxy): a missing image is ErrImagePull at once, then ImagePullBackOff.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A shared development disk: do not evict pods for disk or memory pressure.
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
protectKernelDefaults: false
makeIPTablesUtilChains: true
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
syncFrequency: 10s
nodeStatusReportFrequency: 10s
EOF
}

write_kube_proxy_conf() {
  cat >"${STATE}/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: ${STATE}/kubeconfigs/kube-proxy.kubeconfig}
hostnameOverride: ${REAL_NODE}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:${PROXY_HEALTHZ_PORT}
metricsBindAddress: 127.0.0.1:${PROXY_METRICS_PORT}
clusterCIDR: ${POD_CIDR}
# NodePorts only on the node IP (never on the machine's outside interfaces).
nodePortAddresses: ["${NODE_IP}/32"]
# Leave the machine's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

node_ready() {
  [[ "$(kubectl_admin get node "$REAL_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# node_up: containerd (pause image imported), kubelet and kube-proxy. Needs
# PKI, the ports and the network (network_up) in place.
node_up() {
  local kubelet="${BIN_DIR}/kubelet-${KUBERNETES_VERSION}" proxy="${BIN_DIR}/kube-proxy-${KUBERNETES_VERSION}" pause
  pause=$(pause_archive)
  write_cni_conf
  write_containerd_conf
  write_kubelet_conf
  write_kube_proxy_conf
  log "starting containerd $(containerd --version | awk '{print $3}') (socket ${CONTAINERD_SOCK})"
  # No pull ever leaves this machine: every registry request of containerd
  # goes through a proxy at a loopback port where nothing listens, so pulling an
  # image that is not here fails at once (ErrImagePull: "proxyconnect tcp: dial
  # tcp 127.0.0.1:9: connect: connection refused"), without even resolving the
  # registry's name. (containerd 1.6 has no catch-all registry host; its
  # mirrors fall back to the real registry.) Registries named localhost are
  # never proxied, and are loopback anyway.
  start_bg containerd "${CONTAINERD_DIR}/config.toml" env HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
    https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy= \
    containerd --config "${CONTAINERD_DIR}/config.toml"
  wait_for 30 "containerd" containerd containerd_ready
  ctr_node images import "$pause" >/dev/null
  dns_up
  log "starting kubelet (node ${REAL_NODE}, ${NODE_IP}) and kube-proxy"
  start_bg kubelet "$KUBELET_DIR" "$kubelet" --config="${STATE}/kubelet-config.yaml" \
    --kubeconfig="${STATE}/kubeconfigs/kubelet.kubeconfig" --root-dir="$KUBELET_DIR" \
    --cert-dir="${KUBELET_DIR}/pki" --hostname-override="$REAL_NODE" --node-ip="$NODE_IP" \
    --node-labels="type=real" --v=1
  start_bg kube-proxy "${STATE}/kube-proxy-config.yaml" "$proxy" --config="${STATE}/kube-proxy-config.yaml" --v=1
}

# ---- cluster DNS ------------------------------------------------------------------

# dns_up: CoreDNS (our build, hack/gomod/coredns) on NODE_IP:53, UDP and TCP,
# answering cluster.local (Services, their endpoints, pods) and reverse
# lookups from the apiserver, and NXDOMAIN for every other name at once:
# nothing is forwarded off the machine. Its readiness (the kubernetes plugin
# has listed Services) on a loopback port.
dns_up() {
  local coredns="${BIN_DIR}/coredns-${COREDNS_VERSION}"
  cat >"${STATE}/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind ${NODE_IP}
    errors
    health 127.0.0.1:${DNS_HEALTH_PORT}
    ready 127.0.0.1:${DNS_READY_PORT}
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig ${KUBECONFIG_FILE}
        pods verified
        ttl 5
    }
    cache 5
}
.:53 {
    bind ${NODE_IP}
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
  log "starting CoreDNS ${COREDNS_VERSION} on ${NODE_IP}:53 (cluster.local)"
  start_bg coredns "${STATE}/Corefile" "$coredns" -conf "${STATE}/Corefile"
  wait_for 60 "CoreDNS to list Services" coredns dns_ready
}

dns_ready() { curl -fsS "http://127.0.0.1:${DNS_READY_PORT}/ready"; }

# proxy_synced: kube-proxy has written its rules once (its jumps into FORWARD come
# first in that pass). Its /healthz answers 200 before that on a fresh start, so the
# sync's own timestamp is what counts.
proxy_synced() {
  curl -fsS "http://127.0.0.1:${PROXY_METRICS_PORT}/metrics" |
    awk '/^kubeproxy_sync_proxy_rules_last_timestamp_seconds[ {]/ && $NF > 0 { ok = 1 } END { exit !ok }'
}

# forward_rule_first: kube-proxy prepends its own FORWARD jumps (accepting marked
# and established flows) when it starts; ours goes back in front of them.
forward_rule_first() {
  wait_for 60 "kube-proxy's first sync" kube-proxy proxy_synced
  local first
  first=$(ipt -S FORWARD | grep -m1 '^-A FORWARD' || true)
  if [[ "$first" != *"-j ${FWD_CHAIN}" ]]; then
    ipt -D FORWARD -m comment --comment "switchboard pod network" -j "$FWD_CHAIN"
    ipt -I FORWARD 1 -m comment --comment "switchboard pod network" -j "$FWD_CHAIN"
  fi
}

# node_down: kubelet and kube-proxy, then every container of our containerd
# (tasks killed through its API, then its shims), containerd, the pods'
# network namespaces and mounts, and the network. Only what carries our paths.
node_down() {
  stop_procs kube-proxy kubelet coredns
  local netns=() id ns
  if running containerd; then
    for id in $(ctr_node containers ls -q 2>/dev/null); do
      ns=$(ctr_node containers info "$id" 2>/dev/null | grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' | head -n1 || true)
      [[ -z "$ns" ]] || netns+=("$ns")
      ctr_node tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(ctr_node containers ls -q 2>/dev/null); do
      ctr_node tasks rm -f "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_procs containerd
  # Shims of our containerd name its socket on their command line.
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address ${CONTAINERD_SOCK}" 2>/dev/null || true); do
    ours "$pid" "$CONTAINERD_SOCK" && kill -KILL "$pid" 2>/dev/null || true
  done
  for ns in "${netns[@]}"; do
    umount "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
  # Mounts under our state (pod volumes, overlay rootfs, shm), deepest first.
  local m
  for m in $(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  network_down
  local k v
  if [[ -f "${STATE}/sysctls.saved" ]]; then
    while read -r k v; do
      [[ -n "$v" ]] && echo "$v" >"/proc/sys/${k}" 2>/dev/null || true
    done <"${STATE}/sysctls.saved"
  fi
}
