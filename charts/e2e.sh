#!/usr/bin/env bash
# End to end: install, upgrade and uninstall the chart on the local cluster.
#
#   make cluster-up && eval "$(make -s cluster-env)" && charts/e2e.sh
#
# - `helm install` into a fresh namespace, watching one tenant namespace
#   (watchNamespaces), with the admin DSN of the cluster's Postgres in
#   database.existingSecret. The operator runs as the chart's pods under the chart's
#   ServiceAccount: on kwok nodes the pods' containers run as local processes
#   (tests' pod-runner: the pod's args and env, a token minted for the pod through the
#   TokenRequest API, so exactly the RBAC the chart grants), with their metrics server
#   on an ephemeral loopback port (two replicas on one machine).
# - A sample agent (config/samples/agent-minimal.yaml, model = mock-llm) and its
#   OpenAI channel: its database created, its runtime pod Ready with the pull policy
#   and pull Secret the chart's runtime.image.pullPolicy (Never) and
#   runtime.imagePullSecrets set, a chat answered by the runtime process of the pod
#   behind the agent's Service (listed in its EndpointSlice).
# - RBAC: the chart's Role and RoleBinding in the tenant namespace are named
#   switchboard-operator:tenant (no agent can share it); the operator's ServiceAccount
#   can read Secrets in the tenant namespace and the admin Secret by name, and cannot
#   read Secrets in a namespace it does not manage.
# - `helm upgrade` to a new image tag: new operator pods, the Lease moves to one of
#   them, the runtime pod and its Deployment untouched (same uid, same generation), a
#   chat answered after the upgrade.
# - `helm uninstall`: the operator's objects gone; the CRDs, the agent, its runtime
#   Deployment and its database (with the chat in it) left; then the documented cleanup
#   path for an uninstalled operator (finalizers, namespaces, database by hand).
#
# Needs the binaries switchboard-operator, agent-runtime, mock-llm and pod-runner
# (cargo build -p operator -p agent-runtime -p tests --bins) in $SWITCHBOARD_BIN_DIR
# (default $CARGO_TARGET_DIR/debug, else target/debug) and psql from hack/postgres.sh's Postgres.
#
# On a cluster with a real kubelet node (the cluster env exports SWITCHBOARD_NODE_IP,
# SWITCHBOARD_CONTAINERD_SOCK and the images imported into the node's containerd,
# SWITCHBOARD_OPERATOR_IMAGE and SWITCHBOARD_AGENT_RUNTIME_IMAGE), the same steps run
# with those images as real pods instead of local processes: the pods reach mock-llm
# and Postgres on this machine's loopback at SWITCHBOARD_NODE_IP (the node's DNAT);
# the upgrade goes to a second tag of the operator image (ctr images tag); the chat goes
# to the agent's Service ClusterIP (kube-proxy). SWITCHBOARD_E2E_KWOK=1 forces the kwok
# mode.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
chart=charts/switchboard
bin="${SWITCHBOARD_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"
export PATH="$HOME/.cache/switchboard/bin:/usr/lib/postgresql/15/bin:$PATH"
: "${KUBECONFIG:?no cluster: make cluster-up; eval \"\$(make -s cluster-env)\"}"
: "${SWITCHBOARD_DATABASE_ADMIN_URL:?no Postgres: make cluster-up; eval \"\$(make -s cluster-env)\"}"
real_node=false
if [[ -n "${SWITCHBOARD_NODE_IP:-}" && -n "${SWITCHBOARD_OPERATOR_IMAGE:-}" && -z "${SWITCHBOARD_E2E_KWOK:-}" ]]; then
  real_node=true
  : "${SWITCHBOARD_AGENT_RUNTIME_IMAGE:?the runtime image is not imported (hack/images.sh)}"
  : "${SWITCHBOARD_CONTAINERD_SOCK:?no containerd socket in the cluster env}"
fi
# The address pods reach this machine's loopback services by.
host_ip=127.0.0.1
$real_node && host_ip="$SWITCHBOARD_NODE_IP"
# The admin DSN as the operator's pods see it.
admin_url="${SWITCHBOARD_DATABASE_ADMIN_URL/@127.0.0.1:/@$host_ip:}"
# A DSN handed to pods, as this machine reaches it.
local_dsn() { sed "s/@$host_ip:/@127.0.0.1:/" <<<"$1"; }

run_id="$(date +%s)-$$"
release=switchboard
ns="sb-e2e-system-${run_id##*-}"
tenant="sb-e2e-tenant-${run_id##*-}"
other="sb-e2e-other-${run_id##*-}"
state="$root/.switchboard/chart-e2e/$run_id"
mkdir -p "$state"
pids=()

step() { printf '\n==> %s\n' "$*"; }
die() { echo "charts/e2e.sh: FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}s')" "$1" "$(now)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_bg() { # start_bg NAME CMD...: a process of this test, stopped at the end by its pid
  local name=$1; shift
  setsid "$@" >"$state/$name.log" 2>&1 </dev/null &
  pids+=($!)
}
# until TIMEOUT WHAT CMD...: polls CMD until it succeeds (events over the API or a port).
until_ok() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for ${what}"
    sleep 0.5
  done
}
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  helm uninstall "$release" -n "$ns" --wait >/dev/null 2>&1 || true
  for n in "$tenant" "$other"; do
    kubectl get agd,chc -n "$n" -o name 2>/dev/null | while read -r o; do
      kubectl patch -n "$n" "$o" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
  done
  kubectl delete namespace "$ns" "$tenant" "$other" --wait=false >/dev/null 2>&1 || true
  echo "logs: $state"
}
trap cleanup EXIT

[[ -x "$bin/mock-llm" ]] || die "$bin/mock-llm missing (cargo build -p tests --bins, or SWITCHBOARD_BIN_DIR)"
if ! $real_node; then
  [[ -x "$bin/pod-runner" ]] || die "no real node with imported images in the cluster env (SWITCHBOARD_NODE_IP, SWITCHBOARD_OPERATOR_IMAGE, SWITCHBOARD_AGENT_RUNTIME_IMAGE: make cluster-up after cargo build), and no pod-runner in $bin for the kwok mode"
  for b in switchboard-operator agent-runtime; do
    [[ -x "$bin/$b" ]] || die "$bin/$b missing (cargo build -p operator -p agent-runtime, or SWITCHBOARD_BIN_DIR)"
  done
fi

step "CRDs and namespaces"
kubectl apply --server-side --force-conflicts -f "$chart/crds/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/agentdeployments.switchboard.dev crd/chatchannels.switchboard.dev >/dev/null
for n in "$ns" "$tenant" "$other"; do kubectl create namespace "$n" >/dev/null; done
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
kubectl -n "$ns" create secret generic switchboard-database-admin \
  --from-literal=uri="$admin_url" >/dev/null
kubectl -n "$other" create secret generic not-yours --from-literal=token=secret >/dev/null
# The runtime's pull Secret (runtime.imagePullSecrets), in the agent's namespace; never
# used to pull (the pull policy is Never), only checked on the pod.
kubectl -n "$tenant" create secret docker-registry regcred --docker-server=registry.invalid \
  --docker-username=e2e --docker-password=e2e >/dev/null

# The runtime images are imported, never pulled: the operator passes Never on to the
# agents' pods. The operator logs text for people.
values=(--set "watchNamespaces={$tenant}" --set runtime.image.pullPolicy=Never --set logFormat=text
  --set "runtime.imagePullSecrets={regcred}")
if $real_node; then
  # The real node: the one node kwok does not fake.
  node="$(kubectl get nodes -o json | jq -r '[.items[] | select(.metadata.annotations["kwok.x-k8s.io/node"] != "fake")][0].metadata.name')"
  [[ -n "$node" && "$node" != null ]] || die "no real node in the cluster"
  values+=(--set-string "nodeSelector.kubernetes\.io/hostname=$node")
  values+=(--set "image.repository=${SWITCHBOARD_OPERATOR_IMAGE%:*}" --set "image.tag=${SWITCHBOARD_OPERATOR_IMAGE##*:}"
    --set "runtime.image.repository=${SWITCHBOARD_AGENT_RUNTIME_IMAGE%:*}"
    --set "runtime.image.tag=${SWITCHBOARD_AGENT_RUNTIME_IMAGE##*:}")
else
  values+=(--set image.tag=e2e-1)
fi

step "helm install (release $release in $ns, watching $tenant)"
t0="$(now)"
helm install "$release" "$chart" -n "$ns" "${values[@]}" --wait --timeout 5m >"$state/helm-install.log"
install_time="$(since "$t0")"
sa=system:serviceaccount:$ns:switchboard-operator
operator_selector="app.kubernetes.io/name=switchboard-operator,app.kubernetes.io/instance=$release"

if ! $real_node; then
  start_bg operator-pods "$bin/pod-runner" --kubeconfig "$SWITCHBOARD_HARNESS_KUBECONFIG" --namespace "$ns" \
    --selector "$operator_selector" --binary "$bin/switchboard-operator" --workdir "$state/pods" \
    --env RUST_LOG=info --env SWITCHBOARD_METRICS_ADDR=127.0.0.1:0
  start_bg runtime-pods "$bin/pod-runner" --kubeconfig "$SWITCHBOARD_HARNESS_KUBECONFIG" --namespace "$tenant" \
    --selector app.kubernetes.io/name=switchboard-agent --binary "$bin/agent-runtime" --workdir "$state/pods" \
    --env RUST_LOG=info
fi
# The model: mock-llm, speaking the OpenAI wire format (no traffic leaves the machine).
upstream_port="$(free_port)"
start_bg mock-llm "$bin/mock-llm" --listen "127.0.0.1:$upstream_port"
until_ok 30 "mock-llm" bash -c "exec 3<>/dev/tcp/127.0.0.1/$upstream_port"
upstream="http://$host_ip:$upstream_port/v1"
lease_holder() { kubectl -n "$ns" get lease switchboard-operator -o jsonpath='{.spec.holderIdentity}'; }
until_ok 120 "an operator pod to hold the Lease" test -n "$(lease_holder 2>/dev/null)"
first_leader="$(lease_holder)"
kubectl -n "$ns" get pod "$first_leader" -o jsonpath='{.spec.serviceAccountName}' | grep -qx switchboard-operator \
  || die "the leader $first_leader does not run as the chart's ServiceAccount"
echo "leader: pod $first_leader (ServiceAccount switchboard-operator)"

step "RBAC of $sa"
kubectl -n "$tenant" get role/switchboard-operator:tenant rolebinding/switchboard-operator:tenant >/dev/null \
  || die "the chart's Role and RoleBinding in $tenant are not named switchboard-operator:tenant"
kubectl -n "$ns" get role/switchboard-operator:leader-election rolebinding/switchboard-operator:leader-election >/dev/null \
  || die "the leader-election Role and RoleBinding are not named switchboard-operator:leader-election"
can() { kubectl auth can-i "$@" --as="$sa"; }
[[ "$(can get secrets -n "$tenant")" == yes ]] || die "cannot read Secrets in the watched namespace"
[[ "$(can get secrets/switchboard-database-admin -n "$ns")" == yes ]] || die "cannot read the admin Secret"
for n in "$other" default; do
  for verb in get list watch; do
    [[ "$(can "$verb" secrets -n "$n" || true)" == no ]] || die "can $verb Secrets in unmanaged namespace $n"
  done
done
[[ "$(can list secrets -n "$ns" || true)" == no ]] || die "can list Secrets in its own namespace"
[[ "$(can get secrets/not-yours -n "$other" || true)" == no ]] || die "can read $other/not-yours"
[[ "$(can create agentdeployments -n "$tenant" || true)" == no ]] || die "can create AgentDeployments"
[[ "$(can delete deployments -n "$tenant" || true)" == no ]] || die "can delete Deployments"
echo "watched $tenant: Secrets yes; admin Secret by name: yes; Secrets in $other and default: no; list Secrets in $ns: no"

step "A sample agent in $tenant"
t_agent="$(now)"
kubectl apply -n "$tenant" -f config/samples/model-credentials.yaml -f config/samples/channel-openai.yaml >/dev/null
# The sample as it is, its model pointed at mock-llm.
python3 -c 'import json, sys, yaml
agent = yaml.safe_load(open(sys.argv[1]))
agent["spec"]["model"]["baseUrl"] = sys.argv[2]
if sys.argv[3]:
    agent["spec"]["scheduling"] = {"nodeSelector": {"kubernetes.io/hostname": sys.argv[3]}}
print(json.dumps(agent))' config/samples/agent-minimal.yaml "$upstream" "${node:-}" | kubectl apply -n "$tenant" -f - >/dev/null
if ! kubectl wait --for=condition=Ready agd/hello -n "$tenant" --timeout=180s >/dev/null; then
  kubectl get agd hello -n "$tenant" -o yaml | sed -n '/^status:/,$p' >&2
  die "agent hello not Ready"
fi
agent_time="$(since "$t_agent")"
db_uri="$(local_dsn "$(kubectl get secret hello-db -n "$tenant" -o jsonpath='{.data.uri}' | base64 -d)")"
psql "$db_uri" -Atc 'select current_database()' >/dev/null || die "the agent's database is not reachable"
echo "database $(psql "$db_uri" -Atc 'select current_database()') created; agent Ready in $agent_time"
runtime_pod="$(kubectl get pods -n "$tenant" -l app.kubernetes.io/name=switchboard-agent -o jsonpath='{.items[0].metadata.name}')"
kubectl wait --for=condition=Ready "pod/$runtime_pod" -n "$tenant" --timeout=60s >/dev/null
policy="$(kubectl get pod "$runtime_pod" -n "$tenant" -o jsonpath='{.spec.containers[0].imagePullPolicy}')"
[[ "$policy" == Never ]] || die "runtime pod pulls with $policy, not the chart's runtime.image.pullPolicy=Never"
pull_secrets="$(kubectl get pod "$runtime_pod" -n "$tenant" -o jsonpath='{.spec.imagePullSecrets[*].name}')"
[[ "$pull_secrets" == regcred ]] || die "runtime pod pull Secrets '$pull_secrets', not the chart's runtime.imagePullSecrets={regcred}"
if $real_node; then
  first_line="$(kubectl logs -n "$ns" "$first_leader" --limit-bytes=4096 | head -1 || true)"
  [[ -n "$first_line" && "$first_line" != "{"* ]] || die "logFormat=text, but the operator logs: $first_line"
fi
echo "runtime pod pull policy: $policy (runtime.image.pullPolicy), pull Secret $pull_secrets (runtime.imagePullSecrets); operator logs as text (logFormat)"
key="$(kubectl get secret hello-api-key -n "$tenant" -o jsonpath='{.data.api-key}' | base64 -d)"

# chat MESSAGE: one chat completion through the channel hello-openai; prints the answer.
chat() {
  local base
  if $real_node; then
    base="http://$(kubectl get svc hello -n "$tenant" -o jsonpath='{.spec.clusterIP}:{.spec.ports[?(@.name=="http")].port}')"
  else
    # The pod behind the Service: the runtime process pod-runner started for it.
    local pod; pod="$(kubectl get endpointslices -n "$tenant" -l kubernetes.io/service-name=hello \
      -o jsonpath='{.items[*].endpoints[*].targetRef.name}' | tr ' ' '\n' | head -1)"
    [[ -n "$pod" ]] || die "the Service hello has no endpoints"
    base="$(grep -m1 "^$tenant/$pod " "$state/runtime-pods.log" | awk '{print $2}')"
    [[ -n "$base" ]] || die "pod $pod of the Service hello is not running"
  fi
  local path; path="$(kubectl get chc hello-openai -n "$tenant" -o jsonpath='{.status.endpoint}' | sed 's|.*/channels/||')"
  curl -sf "$base/channels/$path/v1/chat/completions" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' \
    -d "{\"model\":\"hello\",\"messages\":[{\"role\":\"user\",\"content\":\"$1\"}]}"
}
until_ok 60 "channel hello-openai Ready" kubectl wait --for=condition=Ready chc/hello-openai -n "$tenant" --timeout=5s
answer="$(chat "hello before the upgrade")" || die "chat failed"
grep -q "hello before the upgrade" <<<"$answer" || die "unexpected answer: $answer"
echo "chat answered: ${answer:0:120}"

step "helm upgrade to a new image tag"
runtime_uid="$(kubectl get pod "$runtime_pod" -n "$tenant" -o jsonpath='{.metadata.uid}')"
runtime_gen="$(kubectl get deploy hello -n "$tenant" -o jsonpath='{.metadata.generation}')"
old_pods="$(kubectl get pods -n "$ns" -l "$operator_selector" -o jsonpath='{.items[*].metadata.name}')"
upgrade_values=(--reuse-values)
if $real_node; then
  # A new tag of the same image, as a release would bring.
  ctr --address "$SWITCHBOARD_CONTAINERD_SOCK" --namespace k8s.io images tag --force \
    "$SWITCHBOARD_OPERATOR_IMAGE" "${SWITCHBOARD_OPERATOR_IMAGE}-upgrade" >/dev/null
  upgrade_values+=(--set "image.tag=${SWITCHBOARD_OPERATOR_IMAGE##*:}-upgrade")
else
  upgrade_values+=(--set image.tag=e2e-2)
fi
t0="$(now)"
helm upgrade "$release" "$chart" -n "$ns" "${upgrade_values[@]}" --wait --timeout 5m >"$state/helm-upgrade.log"
# The rollout is complete when no old pod is left and a new one leads.
new_leader() {
  local holder; holder="$(lease_holder)"
  [[ -n "$holder" && " $old_pods " != *" $holder "* ]] && kubectl get pod -n "$ns" "$holder" >/dev/null
}
until_ok 120 "the Lease to move to a new operator pod" new_leader
until_ok 120 "the old operator pods to go" bash -c \
  "! kubectl get pods -n '$ns' -l '$operator_selector' -o name | grep -qE '$(tr ' ' '|' <<<"$old_pods")'"
upgrade_time="$(since "$t0")"
echo "new leader $(lease_holder); image $(kubectl get deploy switchboard-operator -n "$ns" -o jsonpath='{.spec.template.spec.containers[0].image}')"
# The new leader reconciles every agent at start; its status says so (observedGeneration,
# Ready) and the runtime is untouched.
kubectl wait --for=condition=Ready agd/hello -n "$tenant" --timeout=60s >/dev/null
answer="$(chat "hello after the upgrade")" || die "chat after the upgrade failed"
grep -q "hello after the upgrade" <<<"$answer" || die "unexpected answer: $answer"
[[ "$(kubectl get pod "$runtime_pod" -n "$tenant" -o jsonpath='{.metadata.uid}' 2>/dev/null)" == "$runtime_uid" ]] \
  || die "the runtime pod was restarted by the operator upgrade"
[[ "$(kubectl get deploy hello -n "$tenant" -o jsonpath='{.metadata.generation}')" == "$runtime_gen" ]] \
  || die "the runtime Deployment changed on the operator upgrade"
echo "runtime pod $runtime_pod untouched (uid, Deployment generation $runtime_gen); chat answered"

step "helm uninstall"
t0="$(now)"
helm uninstall "$release" -n "$ns" --wait --timeout 5m >"$state/helm-uninstall.log"
uninstall_time="$(since "$t0")"
[[ -z "$(kubectl get deploy,sa,role,rolebinding,svc,pdb -n "$ns" -l app.kubernetes.io/instance=$release -o name)" ]] \
  || die "objects of the release left in $ns"
[[ -z "$(kubectl get role,rolebinding -n "$tenant" -l app.kubernetes.io/instance=$release -o name)" ]] \
  || die "the release's Role left in $tenant"
kubectl get crd agentdeployments.switchboard.dev chatchannels.switchboard.dev >/dev/null || die "CRDs removed"
kubectl get agd/hello chc/hello-openai deploy/hello secret/hello-db -n "$tenant" >/dev/null || die "agent objects removed"
stored="$(psql "$db_uri" -Atc "select count(*) from messages where content like '%before the upgrade%'" 2>&1)" \
  || die "the agent's database is gone after uninstall: $stored"
[[ "$stored" -ge 1 ]] || die "the chat is not in the agent's database after uninstall"
echo "kept: CRDs, agd/hello, chc/hello-openai, deploy/hello, its database ($stored stored message(s))"

step "Cleanup path of an uninstalled operator (charts/switchboard/README.md)"
db_name="$(psql "$db_uri" -Atc 'select current_database()')"
db_role="$(psql "$db_uri" -Atc 'select current_user')"
for o in agentdeployment/hello chatchannel/hello-openai; do
  kubectl patch -n "$tenant" "$o" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null
done
kubectl delete agentdeployment/hello chatchannel/hello-openai -n "$tenant" --wait --timeout=60s >/dev/null
psql "$SWITCHBOARD_DATABASE_ADMIN_URL" -qc "drop database \"$db_name\" with (force)" -c "drop role \"$db_role\""
[[ -z "$(psql "$SWITCHBOARD_DATABASE_ADMIN_URL" -Atc "select 1 from pg_database where datname = '$db_name'")" ]] \
  || die "database $db_name still there"
echo "agent, channel and database $db_name removed"

echo
echo "charts/e2e.sh: passed ($($real_node && echo "real node, images $SWITCHBOARD_OPERATOR_IMAGE $SWITCHBOARD_AGENT_RUNTIME_IMAGE" || echo "kwok nodes, pods as local processes"))"
echo "  helm install --wait: $install_time; agent Ready after apply: $agent_time;" \
  "helm upgrade --wait + Lease moved: $upgrade_time; helm uninstall --wait: $uninstall_time"
