#!/usr/bin/env bash
# Quick scale measurements for the operator (not part of CI): time for N agents to
# reach Available from cold, the operator's RSS, and its writes per idle minute.
#   eval "$(hack/cluster.sh env)"; cargo build -p operator
#   operator/bench/scale.sh 100 1 Managed    # N, replicas per agent, database mode
set -euo pipefail
N="${1:-100}"; REPLICAS="${2:-1}"; MODE="${3:-Managed}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${OPERATOR_BIN:-$ROOT/target/debug/switchboard-operator}"
NS="bench-$N-$RANDOM"
PORT=$((20000 + RANDOM % 20000))
LOG="$(mktemp -t operator-bench.XXXX.log)"
kubectl apply --server-side --field-manager=switchboard-bench -f "$ROOT/config/crd" >/dev/null
kubectl wait --for=condition=Established crd/agentdeployments.switchboard.dev crd/chatchannels.switchboard.dev >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl label namespace "$NS" switchboard.dev/e2e=true >/dev/null
cleanup() {
  kill "$PID" 2>/dev/null || true
  kubectl get agd -n "$NS" -o name | xargs -r -n 50 kubectl -n "$NS" patch --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
if [[ "$MODE" == External ]]; then
  kubectl -n "$NS" create secret generic ext-db --from-literal=uri="$SWITCHBOARD_DATABASE_ADMIN_URL" >/dev/null
  DB='{"mode":"External","externalSecretRef":{"name":"ext-db"}}'
else
  DB='{"mode":"Managed","reclaimPolicy":"Delete"}'
fi
{
  for i in $(seq -w 1 "$N"); do
    cat <<YAML
---
apiVersion: switchboard.dev/v1alpha1
kind: AgentDeployment
metadata: {name: a$i}
spec:
  model: {provider: openai, name: m, baseUrl: "http://mock:8080/v1"}
  replicas: $REPLICAS
  database: $DB
YAML
  done
} > "$LOG.yaml"
"$BIN" --namespace "$NS" --metrics-addr "127.0.0.1:$PORT" --leader-elect=false \
  --runtime-image registry.local/agent-runtime:bench >"$LOG" 2>&1 &
PID=$!
sleep 2
start=$(date +%s.%N)
kubectl apply -n "$NS" -f "$LOG.yaml" >/dev/null
while :; do
  avail=$(kubectl get agd -n "$NS" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Available")].status}{"\n"}{end}' | grep -c True || true)
  [[ "$avail" -ge "$N" ]] && break
  sleep 1
done
end=$(date +%s.%N)
echo "agents=$N replicas=$REPLICAS db=$MODE available_after_s=$(echo "$end - $start" | bc)"
sleep 10
echo "rss_kib_converged=$(awk '/VmRSS/{print $2}' /proc/$PID/status)"
w0=$(curl -s "127.0.0.1:$PORT/metrics" | awk '/^switchboard_operator_kube_writes_total/{s+=$2} END{print s+0}')
sleep 60
w1=$(curl -s "127.0.0.1:$PORT/metrics" | awk '/^switchboard_operator_kube_writes_total/{s+=$2} END{print s+0}')
echo "writes_total=$w1 writes_idle_minute=$((w1 - w0))"
echo "rss_kib_after_idle_minute=$(awk '/VmRSS/{print $2}' /proc/$PID/status)"
if [[ "$MODE" == Managed ]]; then
  start=$(date +%s.%N)
  kubectl delete agd -n "$NS" --all --wait=true >/dev/null
  echo "delete_all_s=$(echo "$(date +%s.%N) - $start" | bc)"
fi
