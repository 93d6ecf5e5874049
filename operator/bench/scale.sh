#!/usr/bin/env bash
# `make bench-operator`: scale figures for the operator (reported, not asserted; not
# part of `make test`). Runs the real operator binary against the local cluster and
# its Postgres and prints, one `key=value` per line:
#   available_after_s         N agents applied at once until all are Available
#   rss_kib_converged         the operator's memory once converged
#   writes_idle               write requests it sends while nothing changes (expect 0)
#   delete_all_s              Managed: deleting every agent until the operator's own
#                             finalizer has dropped each database and role
#   databases_before/after    the run's tenant databases in Postgres (after must be 0)
#
#   operator/bench/scale.sh [N [REPLICAS [MODE]]]    # defaults: 100 1 Managed
#   make bench-operator N=20                         # the same through make
#
# Starts the local cluster when it is not up (and stops it again), builds the operator
# (debug, like the tests; OPERATOR_BIN overrides). Every wait is bounded
# (BENCH_TIMEOUT_SECONDS, default 300); the idle window is BENCH_IDLE_SECONDS (60).
# Cleanup deletes the agents while the operator still runs, so it is the operator that
# drops their databases; finalizers are never stripped. A run that cannot clean up says
# what it left behind and fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
source hack/lib/env.sh

N="${1:-100}"; REPLICAS="${2:-1}"; MODE="${3:-Managed}"
TIMEOUT="${BENCH_TIMEOUT_SECONDS:-300}"
IDLE="${BENCH_IDLE_SECONDS:-60}"
case "$MODE" in Managed | External) ;; *) echo "MODE must be Managed or External, not $MODE" >&2; exit 2 ;; esac
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 ]] || { echo "N must be a positive number, not $N" >&2; exit 2; }

log() { printf '==> %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
seconds_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

if [[ -z "${OPERATOR_BIN:-}" ]]; then
  log "building the operator"
  cargo build --locked -q --bin switchboard-operator
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/switchboard-operator"
else
  BIN=$OPERATOR_BIN
fi

started_cluster=0
if ! hack/cluster.sh status >/dev/null 2>&1; then
  log "starting the local cluster"
  hack/cluster.sh up >&2
  started_cluster=1
fi
eval "$(hack/cluster.sh env)"

NS="bench-$N-$RANDOM"
PREFIX="sb_${NS//-/_}_" # the operator's database and role prefix for this namespace
LOG="$(mktemp -t operator-bench.XXXX.log)"
PID=""

# Tenant databases (or roles) of this run in the harness's Postgres.
count_like() {
  local table=$1 column=$2
  psql -qtA "$SWITCHBOARD_DATABASE_ADMIN_URL" \
    -c "SELECT count(*) FROM $table WHERE starts_with($column, '$PREFIX')"
}

# Agents left in the namespace (none once every finalizer has run).
agents_left() { kubectl get agd -n "$NS" -o name 2>/dev/null | wc -l; }

# Waits up to TIMEOUT seconds for `$@` to succeed (exit 0), once a second; exit 1
# means "not yet", anything else gives up at once.
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT)) rc
  while :; do
    rc=0
    "$@" || rc=$?
    if ((rc == 0)); then return 0; fi
    if ((rc != 1)); then
      log "gave up waiting for $what (operator log: $LOG)"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${TIMEOUT}s waiting for $what (operator log: $LOG)"
      return 1
    fi
    sleep 1
  done
}

no_agents_left() { [[ "$(agents_left)" -eq 0 ]]; }

all_available() {
  local available
  available=$(kubectl get agd -n "$NS" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Available")].status}{"\n"}{end}' | grep -c True || true)
  [[ "$available" -ge "$N" ]]
}

operator_running() { [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; }

# The operator's write counter; fails (never reads 0) when /metrics is unreachable.
writes_total() {
  local body
  body=$(curl -fsS --max-time 5 "127.0.0.1:$PORT/metrics") || { log "the operator's /metrics is unreachable"; return 1; }
  awk '/^switchboard_operator_kube_writes_total/ { s += $2; found = 1 } END { if (!found) exit 1; print s }' <<<"$body" \
    || { log "no switchboard_operator_kube_writes_total in /metrics"; return 1; }
}

cleanup() {
  local status=$?
  trap - EXIT
  if kubectl get namespace "$NS" >/dev/null 2>&1; then
    if [[ "$(agents_left)" -gt 0 ]]; then
      log "deleting the remaining agents (the operator drops their databases)"
      kubectl delete agd --all -n "$NS" --wait=false >/dev/null 2>&1 || true
      if operator_running; then wait_for "the agents' finalizers" no_agents_left || status=1; fi
    fi
    if [[ "$(agents_left)" -eq 0 ]]; then
      kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
    else
      log "namespace $NS kept: $(agents_left) agents still hold finalizers; with an operator running, kubectl delete namespace $NS"
      status=1
    fi
  fi
  if operator_running; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  local left_databases left_roles
  left_databases=$(count_like pg_database datname 2>/dev/null || echo "?")
  left_roles=$(count_like pg_roles rolname 2>/dev/null || echo "?")
  echo "databases_after=$left_databases roles_after=$left_roles"
  if [[ "$MODE" == Managed && ("$left_databases" != 0 || "$left_roles" != 0) ]]; then
    log "left behind in Postgres: databases and roles named ${PREFIX}*"
    status=1
  fi
  rm -f "$LOG.yaml"
  if [[ "$status" == 0 ]]; then rm -f "$LOG"; fi
  if [[ "$started_cluster" == 1 ]]; then hack/cluster.sh down >&2 || true; fi
  exit "$status"
}
trap cleanup EXIT

log "CRDs and namespace $NS"
kubectl apply --server-side --field-manager=switchboard-bench -k config/crd >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/agentdeployments.switchboard.dev crd/chatchannels.switchboard.dev >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl label namespace "$NS" switchboard.dev/e2e=true >/dev/null
if [[ "$MODE" == External ]]; then
  kubectl -n "$NS" create secret generic ext-db --from-literal=uri="$SWITCHBOARD_DATABASE_ADMIN_URL" >/dev/null
  DB='{"mode":"External","externalSecretRef":{"name":"ext-db"}}'
else
  DB='{"mode":"Managed","reclaimPolicy":"Delete"}'
fi
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
done >"$LOG.yaml"
echo "databases_before=$(count_like pg_database datname)"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log "starting the operator (log: $LOG)"
"$BIN" --namespace "$NS" --metrics-addr "127.0.0.1:$PORT" --leader-elect=false \
  --runtime-image registry.local/agent-runtime:bench >"$LOG" 2>&1 &
PID=$!
wait_for "the operator's /healthz" curl -fsS --max-time 2 -o /dev/null "127.0.0.1:$PORT/healthz"

log "applying $N agents ($REPLICAS replicas each, database $MODE)"
start=$(now_ms)
kubectl apply -n "$NS" -f "$LOG.yaml" >/dev/null
wait_for "$N agents Available" all_available
echo "agents=$N replicas=$REPLICAS db=$MODE available_after_s=$(seconds_since "$start")"

# Settled: the write counter stops moving for 5 s (bounded like every wait).
settled() {
  local a b
  a=$(writes_total) || return 2
  sleep 5
  b=$(writes_total) || return 2
  [[ "$a" == "$b" ]]
}
wait_for "the operator's writes to settle" settled
echo "rss_kib_converged=$(awk '/VmRSS/{print $2}' "/proc/$PID/status")"
w0=$(writes_total)
log "idle for ${IDLE}s"
sleep "$IDLE"
operator_running || { log "the operator died while idle (log: $LOG)"; exit 1; }
w1=$(writes_total)
echo "writes_total=$w1 writes_idle=$((w1 - w0)) idle_s=$IDLE"
echo "rss_kib_after_idle=$(awk '/VmRSS/{print $2}' "/proc/$PID/status")"

log "deleting every agent"
start=$(now_ms)
kubectl delete agd -n "$NS" --all --wait=false >/dev/null
wait_for "every agent's finalizer" no_agents_left
echo "delete_all_s=$(seconds_since "$start")"
