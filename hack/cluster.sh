#!/usr/bin/env bash
# Local Kubernetes cluster + Postgres for Switchboard's end-to-end tests and
# demo, on this machine only (loopback with free ports, and 198.18.0.0/15):
#   etcd, kube-apiserver (TLS, RBAC, PodSecurity/ServiceAccount admission,
#   ServiceAccount tokens), kube-controller-manager (client rate 200/s, burst
#   400, as large clusters set it: its default 20/s alone would hold 2,000
#   agents' Deployments back for 200 s in the operator bench), kube-scheduler;
#   a real node `switchboard-node`: containerd, kubelet, kube-proxy, CNI bridge
#   networking, a local pause image, the cluster's DNS (CoreDNS for
#   cluster.local; hack/node-lib.sh: settings and network rules, with the why
#   of each);
#   kwok (fake nodes kwok-node-0/1 for scale tests: pods get scheduled, Running
#   and Ready without running; tainted switchboard.dev/kwok=true:NoSchedule, so
#   only pods that tolerate it land there), plus a throwaway Postgres
#   (hack/postgres.sh). Needs root (containers, bridge, iptables).
#
#   hack/cluster.sh up      build missing binaries, start everything, wait until ready
#   hack/cluster.sh down    stop exactly the processes `up` started, remove the state dir
#   hack/cluster.sh env     print shell exports: eval "$(hack/cluster.sh env)"
#   hack/cluster.sh images  build the project's images from the debug binaries and
#                           import them into the node's containerd (up does it too
#                           when the binaries exist; make test and make demo call it)
#   hack/cluster.sh status  print up/down (exit 0 if up, 1 if down)
#
# State (certificates, kubeconfigs, data, logs, pid files):
#   ${SWITCHBOARD_STATE:-<repo>/.switchboard}/cluster
# Binaries: ${SWITCHBOARD_CACHE:-~/.cache/switchboard}/bin (hack/build-binaries.sh).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_PREFIX=cluster
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"
# shellcheck source=cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"
# shellcheck source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

CONTEXT=switchboard-harness
KUBECONFIG_FILE="${STATE}/kubeconfig"
ENV_FILE="${STATE}/env.sh"
PKI="${STATE}/pki"
SERVICE_CIDR=198.19.0.0/16
SERVICE_IP=198.19.0.1 # first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR=198.18.0.0/16
KWOK_NODE_IP=198.18.255.254 # reported by the fake nodes; nothing answers there
KWOK_TAINT=switchboard.dev/kwok
NODES=(kwok-node-0 kwok-node-1)
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok containerd coredns kubelet kube-proxy) # start order

# ---- status -------------------------------------------------------------------

# is_up: every component and Postgres are running, and the env file exists.
is_up() {
  [[ -f "$ENV_FILE" ]] || return 1
  local c
  for c in "${COMPONENTS[@]}" postgres; do running "$c" || return 1; done
}

cmd_status() {
  if is_up; then
    echo "up"
  else
    echo "down"
    return 1
  fi
}

# cmd_diagnose: what a failed run needs to say why pods stayed Pending or the
# node's containerd did not answer: each component running or not, the nodes'
# taints and conditions, and the last lines of the real node's logs (and of any
# component that exited). Printed to stderr by `make test` when tests failed.
cmd_diagnose() {
  local c down=()
  KUBECTL="$("${HACK_DIR}/build-binaries.sh" --print-bin-dir)/kubectl-${KUBERNETES_VERSION}"
  {
    echo "---- local cluster (state: ${STATE})"
    for c in "${COMPONENTS[@]}" postgres; do
      if running "$c"; then echo "  ${c}: running"; else echo "  ${c}: NOT running"; down+=("$c"); fi
    done
    echo "---- nodes: taints and conditions"
    kubectl_admin get nodes -o jsonpath='{range .items[*]}{.metadata.name}: taints={.spec.taints}{"\n"}{range .status.conditions[*]}    {.type}={.status} {.reason}: {.message}{"\n"}{end}{end}' 2>&1 || true
    for c in kubelet containerd "${down[@]}"; do
      echo "---- last lines of ${LOG_DIR}/${c}.log"
      tail -n 25 "${LOG_DIR}/${c}.log" 2>&1 || true
    done
    echo "---- memory and disk"
    grep -E '^(MemTotal|MemAvailable|Active\(file\)|Inactive\(file\))' /proc/meminfo || true
    df -h "$STATE" || true
  } >&2
}

cmd_env() {
  if ! is_up; then
    log "the local cluster is not up (state: ${STATE}); run: make cluster-up"
    return 1
  fi
  cat "$ENV_FILE"
  # The project images last imported (hack/images.sh), if any.
  "${HACK_DIR}/images.sh" env --profile debug 2>/dev/null || true
}

# cmd_images: the debug images, built and imported into the node's containerd
# (the test and demo path: no release build; see hack/images.sh).
cmd_images() {
  is_up || die "the local cluster is not up; run: make cluster-up"
  "${HACK_DIR}/images.sh" build --profile debug --import "$CONTAINERD_SOCK"
}

# ---- down ---------------------------------------------------------------------

cmd_down() {
  if [[ ! -e "$STATE" ]]; then
    log "already down"
    return 0
  fi
  log "stopping (state: ${STATE})"
  node_down
  stop_procs kwok kube-scheduler kube-controller-manager
  stop_procs kube-apiserver
  stop_procs etcd
  "${HACK_DIR}/postgres.sh" down >/dev/null 2>&1 || "${HACK_DIR}/postgres.sh" down
  rm -rf "$STATE"
  log "down"
}

# ---- certificates -------------------------------------------------------------

ensure_openssl() {
  command -v openssl >/dev/null || apt_install openssl
}

# new_ca NAME CN
new_ca() {
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "${PKI}/$1.key" -out "${PKI}/$1.crt" -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# new_cert NAME CA SUBJECT serverAuth|clientAuth|serverAuth,clientAuth [SANS]
new_cert() {
  local name=$1 ca=$2 subj=$3 usage=$4 sans=${5:-}
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "${PKI}/${name}.key" -out "${PKI}/${name}.csr" -subj "$subj" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=${usage}"
    [[ -z "$sans" ]] || echo "subjectAltName=${sans}"
  } >"${PKI}/${name}.ext"
  openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/${ca}.crt" -CAkey "${PKI}/${ca}.key" \
    -CAcreateserial -CAserial "${PKI}/${ca}.srl" -days 3650 -sha256 \
    -extfile "${PKI}/${name}.ext" -out "${PKI}/${name}.crt" 2>/dev/null
  rm -f "${PKI}/${name}.csr" "${PKI}/${name}.ext"
}

gen_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  new_ca ca switchboard-harness-ca
  new_ca front-proxy-ca switchboard-harness-front-proxy-ca
  local api_sans="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  api_sans+=",DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:${SERVICE_IP},IP:${NODE_IP}"
  new_cert kube-apiserver ca "/CN=kube-apiserver" serverAuth "$api_sans"
  new_cert etcd-server ca "/CN=etcd" serverAuth "DNS:localhost,IP:127.0.0.1"
  new_cert apiserver-etcd-client ca "/CN=kube-apiserver-etcd-client" clientAuth
  new_cert admin ca "/O=system:masters/CN=switchboard-admin" clientAuth
  new_cert kube-controller-manager ca "/CN=system:kube-controller-manager" clientAuth
  new_cert kube-scheduler ca "/CN=system:kube-scheduler" clientAuth
  # kwok writes node and pod status, leases and events for its fake nodes.
  new_cert kwok ca "/O=system:masters/CN=kwok" clientAuth
  # The real node: the kubelet's client (Node authorizer) and serving certs,
  # kube-proxy, and the apiserver's client cert for the kubelet (logs, exec).
  new_cert kubelet ca "/O=system:nodes/CN=system:node:${REAL_NODE}" clientAuth
  new_cert kubelet-serving ca "/CN=${REAL_NODE}" serverAuth "DNS:${REAL_NODE},IP:${NODE_IP},IP:127.0.0.1"
  new_cert kube-proxy ca "/CN=system:kube-proxy" clientAuth
  new_cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  new_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
  # ServiceAccount token signing key pair.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "${PKI}/sa.key" 2>/dev/null
  openssl pkey -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
  chmod 600 "${PKI}"/*.key
}

# write_kubeconfig FILE CERTNAME: a kubeconfig for the harness apiserver with
# the certificates embedded (so it can be copied around).
write_kubeconfig() {
  local file=$1 cert=$2
  (
    umask 077
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ${CONTEXT}
  cluster:
    server: https://127.0.0.1:${API_PORT}
    certificate-authority-data: $(base64 -w0 <"${PKI}/ca.crt")
users:
- name: ${cert}
  user:
    client-certificate-data: $(base64 -w0 <"${PKI}/${cert}.crt")
    client-key-data: $(base64 -w0 <"${PKI}/${cert}.key")
contexts:
- name: ${CONTEXT}
  context:
    cluster: ${CONTEXT}
    user: ${cert}
current-context: ${CONTEXT}
EOF
  )
}

# ---- up -----------------------------------------------------------------------

kubectl_admin() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=10s "$@"; }

apiserver_ready() { [[ "$(kubectl_admin get --raw /readyz 2>/dev/null)" == ok ]]; }

nodes_ready() {
  local out
  out=$(kubectl_admin get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status},{.spec.taints}{"\n"}{end}' 2>/dev/null) || return 1
  local n
  for n in "${NODES[@]}"; do
    # Ready, and the node lifecycle controller has lifted the not-ready taint
    # (ours, switchboard.dev/kwok, stays).
    grep -q "^${n}=True," <<<"$out" || return 1
    if grep "^${n}=" <<<"$out" | grep -q "not-ready"; then return 1; fi
  done
  return 0
}

default_sa_ready() { kubectl_admin -n default get serviceaccount default; }

create_nodes() {
  local i=0 n manifest=""
  for n in "${NODES[@]}"; do
    manifest+="
---
apiVersion: v1
kind: Node
metadata:
  name: ${n}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: ${n}
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: \"\"
    type: kwok
spec:
  # For scale tests only: ordinary pods go to the real node.
  taints:
  - {key: ${KWOK_TAINT}, value: \"true\", effect: NoSchedule}
  podCIDR: 198.18.$(((i + 1) * 16)).0/20
  podCIDRs:
  - 198.18.$(((i + 1) * 16)).0/20
status:
  allocatable: {cpu: \"64\", memory: 256Gi, ephemeral-storage: 1Ti, pods: \"1000\"}
  capacity: {cpu: \"64\", memory: 256Gi, ephemeral-storage: 1Ti, pods: \"1000\"}
  nodeInfo: {kubeletVersion: ${KUBERNETES_VERSION}, architecture: amd64, operatingSystem: linux}
"
    i=$((i + 1))
  done
  kubectl_admin apply -f - <<<"$manifest" >/dev/null
}

UP_DONE=0
on_up_exit() {
  local rc=$?
  [[ $UP_DONE -eq 0 ]] || return 0
  log "cluster-up failed (exit ${rc}); stopping what was started. Logs: ${LOG_DIR}"
  node_down >/dev/null 2>&1 || true
  stop_procs kwok kube-scheduler kube-controller-manager kube-apiserver etcd >/dev/null 2>&1 || true
  "${HACK_DIR}/postgres.sh" down >/dev/null 2>&1 || true
  rm -f "$ENV_FILE"
}

cmd_up() {
  if is_up; then
    log "already up (state: ${STATE}); nothing started. eval \"\$(make -s cluster-env)\" to use it"
    return 0
  fi
  if [[ -e "$STATE" ]]; then
    log "found stale state in ${STATE} (not all processes running); cleaning it up first"
    cmd_down
  fi
  local t0=$SECONDS
  "${HACK_DIR}/build-binaries.sh"
  BIN_DIR=$("${HACK_DIR}/build-binaries.sh" --print-bin-dir)
  local etcd="${BIN_DIR}/etcd-${ETCD_VERSION}" apiserver="${BIN_DIR}/kube-apiserver-${KUBERNETES_VERSION}"
  local kcm="${BIN_DIR}/kube-controller-manager-${KUBERNETES_VERSION}"
  local scheduler="${BIN_DIR}/kube-scheduler-${KUBERNETES_VERSION}" kwok="${BIN_DIR}/kwok-${KWOK_VERSION}"
  local stages="${BIN_DIR}/kwok-stages-${KWOK_VERSION}.yaml"
  KUBECTL="${BIN_DIR}/kubectl-${KUBERNETES_VERSION}"
  ensure_openssl
  ensure_node_packages

  mkdir -p "$STATE" "$PID_DIR" "$LOG_DIR"
  trap on_up_exit EXIT

  pick_port ETCD_PORT
  pick_port ETCD_PEER_PORT
  pick_port API_PORT
  pick_port KCM_PORT
  pick_port SCHED_PORT
  pick_port KUBELET_PORT
  pick_port KUBELET_HEALTHZ_PORT
  pick_port PROXY_HEALTHZ_PORT
  pick_port PROXY_METRICS_PORT
  pick_port DNS_HEALTH_PORT
  pick_port DNS_READY_PORT
  cat >"${STATE}/ports.env" <<EOF
ETCD_PORT=${ETCD_PORT}
ETCD_PEER_PORT=${ETCD_PEER_PORT}
API_PORT=${API_PORT}
KCM_PORT=${KCM_PORT}
SCHED_PORT=${SCHED_PORT}
KUBELET_PORT=${KUBELET_PORT}
EOF
  gen_pki
  mkdir -p "${STATE}/kubeconfigs"
  write_kubeconfig "$KUBECONFIG_FILE" admin
  write_kubeconfig "${STATE}/kubeconfigs/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "${STATE}/kubeconfigs/kube-scheduler.kubeconfig" kube-scheduler
  write_kubeconfig "${STATE}/kubeconfigs/kwok.kubeconfig" kwok
  write_kubeconfig "${STATE}/kubeconfigs/kubelet.kubeconfig" kubelet
  write_kubeconfig "${STATE}/kubeconfigs/kube-proxy.kubeconfig" kube-proxy
  network_up

  log "starting etcd ${ETCD_VERSION} on 127.0.0.1:${ETCD_PORT}"
  mkdir -p "${STATE}/etcd"
  chmod 700 "${STATE}/etcd"
  start_bg etcd "$STATE" "$etcd" --name=switchboard --data-dir="${STATE}/etcd" \
    --listen-client-urls="https://127.0.0.1:${ETCD_PORT}" --advertise-client-urls="https://127.0.0.1:${ETCD_PORT}" \
    --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster="switchboard=http://127.0.0.1:${ETCD_PEER_PORT}" --initial-cluster-state=new \
    --cert-file="${PKI}/etcd-server.crt" --key-file="${PKI}/etcd-server.key" \
    --client-cert-auth --trusted-ca-file="${PKI}/ca.crt" \
    --unsafe-no-fsync --log-level=warn

  log "starting kube-apiserver ${KUBERNETES_VERSION} on https://127.0.0.1:${API_PORT}"
  start_bg kube-apiserver "$STATE" "$apiserver" \
    --bind-address=0.0.0.0 --advertise-address="${NODE_IP}" --secure-port="${API_PORT}" \
    --endpoint-reconciler-type=lease \
    --kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt" \
    --kubelet-client-key="${PKI}/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --etcd-servers="https://127.0.0.1:${ETCD_PORT}" --etcd-cafile="${PKI}/ca.crt" \
    --etcd-certfile="${PKI}/apiserver-etcd-client.crt" --etcd-keyfile="${PKI}/apiserver-etcd-client.key" \
    --tls-cert-file="${PKI}/kube-apiserver.crt" --tls-private-key-file="${PKI}/kube-apiserver.key" \
    --client-ca-file="${PKI}/ca.crt" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,DefaultStorageClass,DefaultTolerationSeconds,ResourceQuota,NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --allow-privileged=true \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="${PKI}/sa.pub" --service-account-signing-key-file="${PKI}/sa.key" \
    --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User \
    --proxy-client-cert-file="${PKI}/front-proxy-client.crt" --proxy-client-key-file="${PKI}/front-proxy-client.key" \
    --profiling=false

  wait_for 120 "kube-apiserver /readyz" kube-apiserver apiserver_ready
  log "kube-apiserver ready after $((SECONDS - t0))s"

  log "starting kube-controller-manager, kube-scheduler and kwok"
  local kcm_kc="${STATE}/kubeconfigs/kube-controller-manager.kubeconfig"
  start_bg kube-controller-manager "$STATE" "$kcm" \
    --kubeconfig="$kcm_kc" --authentication-kubeconfig="$kcm_kc" --authorization-kubeconfig="$kcm_kc" \
    --bind-address=127.0.0.1 --secure-port="${KCM_PORT}" \
    --service-account-private-key-file="${PKI}/sa.key" --root-ca-file="${PKI}/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="${PKI}/ca.crt" --cluster-signing-key-file="${PKI}/ca.key" \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" \
    --kube-api-qps=200 --kube-api-burst=400 \
    --leader-elect=true --profiling=false
  local sched_kc="${STATE}/kubeconfigs/kube-scheduler.kubeconfig"
  start_bg kube-scheduler "$STATE" "$scheduler" \
    --kubeconfig="$sched_kc" --authentication-kubeconfig="$sched_kc" --authorization-kubeconfig="$sched_kc" \
    --bind-address=127.0.0.1 --secure-port="${SCHED_PORT}" --leader-elect=true --profiling=false
  # kwok reads ~/.kwok/kwok.yaml if present: give it an empty home of its own.
  mkdir -p "${STATE}/kwok-home"
  start_bg kwok "$STATE" env HOME="${STATE}/kwok-home" "$kwok" \
    --kubeconfig="${STATE}/kubeconfigs/kwok.kubeconfig" --config="$stages" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr="${POD_CIDR}" --node-ip="${KWOK_NODE_IP}" --node-lease-duration-seconds=40

  node_up

  create_nodes
  wait_for 120 "nodes ${NODES[*]} to be Ready" kwok nodes_ready
  wait_for 120 "node ${REAL_NODE} to be Ready" kubelet node_ready
  forward_rule_first
  wait_for 60 "the default ServiceAccount" kube-controller-manager default_sa_ready
  local c
  for c in "${COMPONENTS[@]}"; do running "$c" || die "$c exited; see ${LOG_DIR}/${c}.log"; done
  log "control plane ready after $((SECONDS - t0))s"

  "${HACK_DIR}/postgres.sh" up
  local db_url
  db_url=$("${HACK_DIR}/postgres.sh" url)

  local tmp="${ENV_FILE}.tmp"
  {
    printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_FILE"
    printf 'export SWITCHBOARD_HARNESS_KUBECONFIG=%q\n' "$KUBECONFIG_FILE"
    printf 'export SWITCHBOARD_DATABASE_ADMIN_URL=%q\n' "$db_url"
    # shellcheck disable=SC2016 # $PATH is expanded by the shell that evals this
    printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
    printf 'export SWITCHBOARD_CONTAINERD_SOCK=%q\n' "$CONTAINERD_SOCK"
    printf 'export SWITCHBOARD_NODE_IP=%q\n' "$NODE_IP"
  } >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$ENV_FILE"
  UP_DONE=1
  trap - EXIT
  if [[ -x "${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/agent-runtime" && -x "${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/switchboard-operator" ]]; then
    cmd_images
  else
    log "no debug binaries yet: after cargo build, hack/cluster.sh images imports the project's images"
  fi
  log "up in $((SECONDS - t0))s: kube-apiserver https://127.0.0.1:${API_PORT}, postgres 127.0.0.1:$(cat "${STATE}/postgres/port")"
  log "use it: eval \"\$(make -s cluster-env)\"   (kubeconfig: ${KUBECONFIG_FILE})"
}

# Serialise up/down/status of one state dir.
with_lock() {
  if command -v flock >/dev/null; then
    exec 8>"${STATE_ROOT}/.cluster.lock"
    if ! flock -n 8; then
      log "waiting for another hack/cluster.sh on ${STATE} to finish"
      flock -w 600 8 || die "timed out waiting for the lock ${STATE_ROOT}/.cluster.lock"
    fi
  fi
  "$@"
}

case "${1:-}" in
  up) with_lock cmd_up ;;
  down) with_lock cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  diagnose) cmd_diagnose ;;
  images) with_lock cmd_images ;;
  *)
    echo "usage: $0 up|down|env|status|diagnose|images" >&2
    exit 2
    ;;
esac
