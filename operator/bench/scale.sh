#!/usr/bin/env bash
# `make bench-operator`: scale figures for the operator (reported, not asserted; not
# part of `make test`). Runs the operator's release build against the local cluster,
# its kwok nodes and its Postgres, and prints `key=value` lines as it goes, then one
# table with the aims of issue 18:
#   available_cold_s       agents applied first, operator started after: from its
#                          start until every agent is Available
#   available_warm_s       operator running, agents applied at once: from the apply
#                          until every agent is Available (a fresh set of names)
#   databases_all_s        Managed: from the operator's start until every agent of the
#                          cold round has its database (and the rate, databases/s)
#   cpu_<round>_<process>_pct  CPU of each process the cluster's tooling started (with
#                          its children) and of the operator, in % of one core, over
#                          the time to Available; cpu_<round>_machine_pct: the whole
#                          machine (200 = both cores busy on a 2-core machine)
#   cpu_<round>_machine_ms_per_agent  the machine's busy CPU time per agent
#   <round>_reconciles_per_agent, <round>_requests_per_agent, <round>_watch_restarts
#                          the agent controller's reconciles and the client's requests
#                          per agent, and the watches that listed again, over the round
#   rss_peak_kib           the operator's peak RSS (VmHWM) over the whole run
#   rss_steady_kib         its RSS once converged and idle
#   writes_idle_per_min    POST/PUT/PATCH/DELETE requests its client sent during the
#                          idle window, per minute (counted under the client itself:
#                          switchboard_operator_kube_requests_total; expect 0)
#   heartbeat_*            with pods (REPLICAS >= 1), after the idle window: each pod's
#                          runtime report (its status entry, as a running runtime sends
#                          it: every BENCH_BUSY_SECONDS (30) for the BENCH_BUSY_PERCENT
#                          (0) of the pods whose counts change, every 60 s for the
#                          idle rest;
#                          operator/bench/heartbeats.py sends them for the kwok pods,
#                          which run nothing) for BENCH_HEARTBEAT_SECONDS (60) after a
#                          75 s warm-up: reports due and sent per second, the agent and
#                          channel controllers' reconciles, the operator's requests and
#                          writes per minute, its CPU (% of one core)
#   delete_all_s           deleting every agent until the operator's own finalizer has
#                          dropped each database and role
#   databases_after        the run's tenant databases and roles left (must be 0)
#
#   operator/bench/scale.sh [N [REPLICAS [MODE]]]    # defaults: 100 1 Managed
#   make bench-operator N=2000                       # the same through make
#
# The runtime pods are scheduled onto the cluster's kwok nodes (nodeSelector
# type=kwok, tolerating switchboard.dev/kwok), where they become Running and Ready
# without running anything; the real node is left alone. The kwok nodes hold 1,000
# pods each: N x REPLICAS beyond their free room is refused (REPLICAS=0 measures the
# operator without pods). Managed databases are made on the cluster's Postgres; a run
# whose databases would not fit on its disk is refused (MODE=External skips them).
#
# Environment: BENCH_ROUNDS ("cold warm", or one of them), BENCH_TIMEOUT_SECONDS
# (every wait, default 600), BENCH_IDLE_SECONDS (60), OPERATOR_BIN (a built binary;
# default: cargo build --release), OPERATOR_ARGS (extra flags for the operator).
# Needs the cluster up (make cluster-up, or its exports from make -s cluster-env in
# the environment); never starts or stops it.
#
# Every wait is bounded. Cleanup (on exit, error, Ctrl-C or TERM) deletes the agents
# while an operator runs (it restarts one if needed), so it is the operator's finalizer
# that drops their databases (finalizers are never stripped), then the namespace, and
# checks Postgres for leftovers. A run that cannot clean up says what it left and fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
source hack/lib/env.sh

N="${1:-100}"; REPLICAS="${2:-1}"; MODE="${3:-Managed}"
TIMEOUT="${BENCH_TIMEOUT_SECONDS:-600}"
IDLE="${BENCH_IDLE_SECONDS:-60}"
ROUNDS="${BENCH_ROUNDS:-cold warm}"
case "$MODE" in Managed | External) ;; *) echo "MODE must be Managed or External, not $MODE" >&2; exit 2 ;; esac
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 ]] || { echo "N must be a positive number, not $N" >&2; exit 2; }
[[ "$REPLICAS" =~ ^[0-9]+$ ]] || { echo "REPLICAS must be a number, not $REPLICAS" >&2; exit 2; }
for r in $ROUNDS; do
  case "$r" in cold | warm) ;; *) echo "BENCH_ROUNDS holds cold and/or warm, not $r" >&2; exit 2 ;; esac
done

log() { printf '==> %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
seconds_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
result() { echo "$1=$2"; RESULTS+=("$1=$2"); }
RESULTS=()

# The cluster of this checkout, or the one the environment already names (the
# exports of `make -s cluster-env` from another checkout).
if [[ -z "${KUBECONFIG:-}" || -z "${SWITCHBOARD_DATABASE_ADMIN_URL:-}" ]]; then
  if ! hack/cluster.sh status >/dev/null 2>&1; then
    echo "the local cluster is down: make cluster-up first" >&2
    exit 2
  fi
  eval "$(hack/cluster.sh env)"
fi

if [[ -z "${OPERATOR_BIN:-}" ]]; then
  log "building the operator (release)"
  cargo build --release --locked -q --bin switchboard-operator
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/switchboard-operator"
else
  BIN=$OPERATOR_BIN
fi

# Room for the pods on the kwok nodes (1,000 pods each, less what already runs there).
kwok_free() {
  local capacity used
  capacity=$(kubectl get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.allocatable.pods}{"\n"}{end}' |
    awk '/k$/ { $1 = $1 * 1000 } /M$/ { $1 = $1 * 1000000 } { s += $1 } END { print s + 0 }')
  used=$(kubectl get pods -A --field-selector=status.phase!=Succeeded,status.phase!=Failed \
    -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -c '^kwok-' || true)
  echo $((capacity - used))
}
pods_needed=$((N * REPLICAS))
free_pods=$(kwok_free)
if ((pods_needed > free_pods)); then
  echo "the kwok nodes have room for $free_pods pods; $N agents x $REPLICAS replicas need $pods_needed (try REPLICAS=0)" >&2
  exit 2
fi

# Each managed database is a copy of template1 on the Postgres disk: refuse a run that
# would leave less than 4 GiB free there (when the data directory is on this machine).
if [[ "$MODE" == Managed ]]; then
  read -r template_bytes data_dir < <(psql -qtA -F ' ' "$SWITCHBOARD_DATABASE_ADMIN_URL" \
    -c "SELECT pg_database_size('template1'), current_setting('data_directory')")
  if [[ -d "$data_dir" ]]; then
    free_bytes=$(($(df --output=avail -k "$data_dir" | tail -1) * 1024))
    need_bytes=$((N * template_bytes))
    result database_bytes_each "$template_bytes"
    if ((need_bytes + 4 * 1024 * 1024 * 1024 > free_bytes)); then
      echo "$N databases need ~$((need_bytes / 1048576)) MiB on the Postgres disk, which has $((free_bytes / 1048576)) MiB free (4 GiB kept); use MODE=External or a smaller N" >&2
      exit 2
    fi
  fi
fi

NS="bench-$N-$RANDOM"
PREFIX="sb_${NS//-/_}_" # the operator's database and role prefix for this namespace
LOG="$(mktemp -t operator-bench.XXXX.log)"
WORK="$(mktemp -d -t operator-bench.XXXX)"
PID=""
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
SAMPLER=""
WATCHER=""
BEATS=""
PROXY=""

# Tenant databases (or roles) of this run in the harness's Postgres.
count_like() {
  local table=$1 column=$2
  psql -qtA "$SWITCHBOARD_DATABASE_ADMIN_URL" \
    -c "SELECT count(*) FROM $table WHERE starts_with($column, '$PREFIX')"
}

agents_left() { kubectl get agd -n "$NS" -o name 2>/dev/null | wc -l; }

# Waits up to TIMEOUT seconds for `$@` to succeed (exit 0), every 2 s; exit 1 means
# "not yet", anything else gives up at once.
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
    sleep 2
  done
}

no_agents_left() { [[ "$(agents_left)" -eq 0 ]]; }
no_pods_left() { [[ "$(kubectl get pods -n "$NS" -o name 2>/dev/null | wc -l)" -eq 0 ]]; }
namespace_gone() { ! kubectl get namespace "$NS" >/dev/null 2>&1; }

# Follows round $1's agents with one watch: each change is a line "name status" of
# the Available condition in $WORK/$1.available. (Listing all N agents every 2 s had
# the API server encode and kubectl decode 2,000 objects ~140 times a run, on the
# cores the bench measures.)
follow_available() {
  : >"$WORK/$1.available" # there before the first count reads it
  kubectl get agd -n "$NS" -l "bench-round=$1" --watch \
    -o jsonpath='{.metadata.name} {.status.conditions[?(@.type=="Available")].status}{"\n"}' \
    >"$WORK/$1.available" 2>/dev/null &
  WATCHER=$!
}

# How many agents of round $1 are Available, listed from the API server.
available_listed() {
  kubectl get agd -n "$NS" -l "bench-round=$1" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Available")].status}{"\n"}{end}' | grep -c True || true
}

# Every agent of round $1 Available (the last line of each agent counts); prints
# progress now and then. Lists them when the watch has ended, and to confirm the end.
all_available() {
  local available
  if [[ -n "$WATCHER" ]] && kill -0 "$WATCHER" 2>/dev/null; then
    available=$(awk '{ s[$1] = $2 } END { for (k in s) if (s[k] == "True") n++; print n + 0 }' \
      "$WORK/$1.available")
  fi
  if [[ -z "${available:-}" ]] || [[ "$available" -ge "$N" ]]; then
    available=$(available_listed "$1")
  fi
  if ((SECONDS % 20 < 2)); then log "$available/$N Available"; fi
  [[ "$available" -ge "$N" ]]
}

operator_running() { [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; }

start_operator() {
  log "starting the operator (log: $LOG)"
  # A session of its own: a Ctrl-C on the terminal stops this script, whose cleanup
  # still needs the operator to run the finalizers.
  # shellcheck disable=SC2086 # OPERATOR_ARGS is a list of flags
  setsid "$BIN" --namespace "$NS" --metrics-addr "127.0.0.1:$PORT" --leader-elect=false \
    --runtime-image registry.local/agent-runtime:bench ${OPERATOR_ARGS:-} >>"$LOG" 2>&1 &
  PID=$!
  healthy() {
    operator_running || { log "the operator exited (log: $LOG)"; return 2; }
    curl -fs --max-time 2 -o /dev/null "127.0.0.1:$PORT/healthz" || return 1
  }
  wait_for "the operator's /healthz" healthy
}

stop_operator() {
  if operator_running; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  PID=""
}

metrics() { curl -fsS --max-time 5 "127.0.0.1:$PORT/metrics"; }

# Write requests (POST, PUT, PATCH, DELETE) the operator's client has sent; fails
# (never reads 0) when /metrics is unreachable or lacks the counter.
writes_total() {
  local body
  body=$(metrics) || { log "the operator's /metrics is unreachable"; return 2; }
  awk '/^switchboard_operator_kube_requests_total/ {
         found = 1
         if ($1 ~ /method="(POST|PUT|PATCH|DELETE)"/) s += $2
       }
       /^switchboard_operator_kube_writes_total/ { own += $2; has_own = 1 }
       END {
         if (found) print s + 0
         else if (has_own) print own + 0  # an older build: its own count of the writes it labels
         else exit 1
       }' <<<"$body" \
    || { log "no switchboard_operator_kube_requests_total in /metrics"; return 2; }
}

kib() { awk -v k="$1" '/^'"$1"':/ { print $2 }' "/proc/$PID/status"; }

# Databases of this run over time: "<ms since $1> <count>" once a second into $2.
sample_databases() {
  local start=$1 out=$2
  while :; do
    echo "$(($(now_ms) - start)) $(count_like pg_database datname 2>/dev/null || echo -1)" >>"$out"
    sleep 1
  done
}

# Where the machine's CPU goes during a round: the CPU time of each process the
# cluster's tooling started (its pid files; each with its children, as Postgres's
# backends) and of the operator, and the machine's busy time from /proc/stat. The
# cluster, the operator, Postgres and this script share the cores, so the time to
# Available is read against what each of them spent.
PIDS_DIR="$(dirname "$KUBECONFIG")/pids"
ticks_tree() {
  local t c
  t=$(awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0)
  for c in $(cat "/proc/$1"/task/*/children 2>/dev/null); do t=$((t + $(ticks_tree "$c"))); done
  echo "$t"
}
cpu_snapshot() {
  local f
  if [[ -d "$PIDS_DIR" ]]; then
    for f in "$PIDS_DIR"/*.pid; do echo "$(basename "$f" .pid) $(ticks_tree "$(cat "$f")")"; done
  fi
  if operator_running; then echo "operator $(ticks_tree "$PID")"; else echo "operator 0"; fi
  # user nice system irq softirq steal: everything but idle and iowait
  awk '/^cpu / { print "machine", $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}
# Results cpu_<round>_<process>_pct (of one core) and cpu_<round>_machine_ms_per_agent.
cpu_figures() {
  local round=$1 seconds=$2 key value
  while read -r key value; do result "$key" "$value"; done < <(awk -v s="$seconds" -v hz="$(getconf CLK_TCK)" -v n="$N" -v r="$round" '
    NR == FNR { before[$1] = $2; next }
    { d = ($2 - before[$1]) / hz
      if ($1 == "machine") printf "cpu_%s_machine_ms_per_agent %.0f\n", r, d * 1000 / n
      printf "cpu_%s_%s_pct %.0f\n", r, $1, d * 100 / s }' "$WORK/$round.cpu0" "$WORK/$round.cpu1")
}

# How the operator's counters grew from one /metrics text (file $1; empty: none yet) to
# another ($2), as "key value" lines: agent_reconciles and channel_reconciles (each
# controller's), requests and writes (POST/PUT/PATCH/DELETE) its client sent, and the
# watches that listed again (watch_restarts).
metric_deltas() {
  awk '
    function add(sign) {
      if ($1 ~ /^switchboard_operator_reconciles_total\{controller="agent"\}/) a += sign * $2
      if ($1 ~ /^switchboard_operator_reconciles_total\{controller="channel"\}/) c += sign * $2
      if ($1 ~ /^switchboard_operator_kube_requests_total/) {
        q += sign * $2
        if ($1 ~ /method="(POST|PUT|PATCH|DELETE)"/) w += sign * $2
      }
      if ($1 ~ /^switchboard_operator_watch_restarts_total/) r += sign * $2
    }
    FILENAME == ARGV[1] { add(-1); next }
    { add(1) }
    END { printf "agent_reconciles %.0f\nchannel_reconciles %.0f\nrequests %.0f\nwrites %.0f\nwatch_restarts %.0f\n", a, c, q, w, r }' "$1" "$2"
}

# Results <round>_reconciles_per_agent (the agent controller's), <round>_requests_per_agent
# (every request the operator's client sent) and <round>_watch_restarts (watches that
# listed again), over the round: the work behind its CPU. $2 and $3 hold /metrics
# before (empty: none yet) and at Available.
work_figures() {
  local round=$1 key value
  per_agent() { awk -v v="$1" -v n="$N" 'BEGIN { printf "%.1f", v / n }'; }
  while read -r key value; do
    case "$key" in
      agent_reconciles) result "${round}_reconciles_per_agent" "$(per_agent "$value")" ;;
      requests) result "${round}_requests_per_agent" "$(per_agent "$value")" ;;
      watch_restarts) result "${round}_watch_restarts" "$value" ;;
    esac
  done < <(metric_deltas "$2" "$3")
}

# Stops the background job whose pid the variable named $1 holds (SAMPLER, WATCHER).
stop_job() {
  local -n job=$1
  if [[ -n "$job" ]]; then
    kill "$job" 2>/dev/null || true
    wait "$job" 2>/dev/null || true
    job=""
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_job SAMPLER
  stop_job WATCHER
  stop_job BEATS
  stop_job PROXY
  if kubectl get namespace "$NS" >/dev/null 2>&1; then
    if [[ "$(agents_left)" -gt 0 ]]; then
      log "deleting the remaining agents (the operator drops their databases)"
      kubectl delete agd --all -n "$NS" --wait=false >/dev/null 2>&1 || true
      operator_running || start_operator || true
      if operator_running; then wait_for "the agents' finalizers" no_agents_left || status=1; fi
    fi
    if [[ "$(agents_left)" -eq 0 ]]; then
      stop_operator # its work is done: the namespace's pods go by the cluster's hands
      kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
      log "waiting for namespace $NS to go"
      wait_for "namespace $NS to go" namespace_gone || {
        log "namespace $NS is still terminating (its pods are being deleted); it goes by itself"
      }
    else
      log "namespace $NS kept: $(agents_left) agents still hold finalizers; with an operator running, kubectl delete namespace $NS"
      status=1
    fi
  fi
  stop_operator
  local left_databases left_roles
  left_databases=$(count_like pg_database datname 2>/dev/null || echo "?")
  left_roles=$(count_like pg_roles rolname 2>/dev/null || echo "?")
  echo "databases_after=$left_databases roles_after=$left_roles"
  if [[ "$left_databases" != 0 || "$left_roles" != 0 ]]; then
    log "left behind in Postgres: databases and roles named ${PREFIX}*"
    status=1
  fi
  rm -rf "$WORK"
  if [[ "$status" == 0 ]]; then rm -f "$LOG"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "CRDs and namespace $NS"
kubectl apply --server-side --force-conflicts --field-manager=switchboard-bench -k config/crd >/dev/null
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

# The manifests of round $1: agents named <round letter><number>, in $APPLIERS files
# that are sent at once (one kubectl each: a single client creating 10,000 objects
# one after the other would time the client, not the operator).
APPLIERS=4
manifests() {
  local round=$1 letter=${1:0:1} i
  rm -f "$WORK/$round".*.yaml
  for i in $(seq -w 1 "$N"); do
    cat >>"$WORK/$round.$((10#$i % APPLIERS)).yaml" <<YAML
---
apiVersion: switchboard.dev/v1alpha1
kind: AgentDeployment
metadata: {name: $letter$i, labels: {bench-round: $round}}
spec:
  model: {provider: openai, name: m, baseUrl: "http://mock:8080/v1"}
  replicas: $REPLICAS
  database: $DB
  scheduling:
    nodeSelector: {type: kwok}
    tolerations: [{key: switchboard.dev/kwok, operator: Exists, effect: NoSchedule}]
YAML
  done
}

apply_round() {
  local part pids=() failed=0
  for part in "$WORK/$1".*.yaml; do
    kubectl create -n "$NS" -f "$part" >/dev/null &
    pids+=($!)
  done
  for part in "${pids[@]}"; do wait "$part" || failed=1; done
  return "$failed"
}

# From the sampler's file: seconds until all N databases existed, and databases/s.
database_figures() {
  local file=$1 prefix=$2 all rate
  read -r all rate < <(awk -v n="$N" '$2 >= n && !t { t = $1 } $2 > 0 && !f { f = $1 }
       END { if (t) printf "%.1f %.1f\n", t / 1000, (t > f ? n * 1000 / (t - f) : n); else print "— —" }' "$file")
  result "${prefix}databases_all_s" "$all"
  result "${prefix}databases_per_s" "$rate"
}

idle_window() {
  settled() {
    local a b
    a=$(writes_total) || return 2
    sleep 5
    b=$(writes_total) || return 2
    [[ "$a" == "$b" ]]
  }
  wait_for "the operator's writes to settle" settled
  local w0 w1 before after
  before=$(metrics)
  w0=$(writes_total)
  log "idle for ${IDLE}s"
  sleep "$IDLE"
  operator_running || { log "the operator died while idle (log: $LOG)"; exit 1; }
  w1=$(writes_total)
  after=$(metrics)
  result writes_idle "$((w1 - w0))"
  result writes_idle_per_min "$(awk -v w=$((w1 - w0)) -v s="$IDLE" 'BEGIN { printf "%.1f", w * 60 / s }')"
  # Which requests, when there were any (by method; the operator's own label by kind).
  if ((w1 != w0)); then
    diff <(grep -E '^switchboard_operator_kube_(requests|writes)_total' <<<"$before") \
      <(grep -E '^switchboard_operator_kube_(requests|writes)_total' <<<"$after") | grep '^>' >&2 || true
  fi
  result rss_steady_kib "$(kib VmRSS)"
}

# A running agent's pods each report into its status: every 30 s while their counts
# change (busy), every 60 s while nothing does (idle). The kwok pods run nothing, so
# heartbeats.py sends those reports for them, through kubectl proxy; results
# heartbeat_* over BENCH_HEARTBEAT_SECONDS after a warm-up of one idle period and
# 15 s (the first reports turn RuntimeReady True, which the operator writes).
heartbeat_window() {
  local seconds="${BENCH_HEARTBEAT_SECONDS:-60}" busy="${BENCH_BUSY_PERCENT:-0}" every="${BENCH_BUSY_SECONDS:-30}"
  local port before after c0 c1 key value
  kubectl get pods -n "$NS" -o json |
    jq -r '.items[] | "\(.metadata.labels["app.kubernetes.io/instance"]) \(.metadata.name)"' >"$WORK/pods"
  port=$(free_port)
  kubectl proxy --address=127.0.0.1 --port="$port" >"$WORK/proxy.log" 2>&1 &
  PROXY=$!
  proxy_up() { curl -fs --max-time 2 -o /dev/null "127.0.0.1:$port/version" || return 1; }
  wait_for "kubectl proxy" proxy_up
  python3 operator/bench/heartbeats.py --port "$port" --namespace "$NS" --busy-percent "$busy" --interval "$every" \
    <"$WORK/pods" >"$WORK/heartbeats.out" 2>&1 &
  BEATS=$!
  result heartbeat_busy_percent "$busy"
  result heartbeat_busy_seconds "$every"
  result heartbeats_due_per_s "$(awk -v p="$busy" -v e="$every" 'END { b = int(NR * p / 100 + 0.5); printf "%.1f", b / e + (NR - b) / 60 }' "$WORK/pods")"
  log "runtime reports of $(wc -l <"$WORK/pods") pods (${busy} % busy: every ${every} s; the rest every 60 s): 75 s warm-up, then ${seconds}s measured"
  sleep 75
  before=$(metrics)
  c0=$(ticks_tree "$PID")
  sleep "$seconds"
  operator_running || { log "the operator died during the heartbeats (log: $LOG)"; exit 1; }
  after=$(metrics)
  c1=$(ticks_tree "$PID")
  stop_job BEATS
  stop_job PROXY
  while IFS='=' read -r key value; do
    if [[ "$key" == heartbeat* && -n "$value" ]]; then result "$key" "$value"; fi
  done <"$WORK/heartbeats.out"
  result heartbeat_operator_cpu_pct "$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v s="$seconds" \
    'BEGIN { printf "%.1f", t * 100 / hz / s }')"
  per_minute() { awk -v v="$1" -v s="$seconds" 'BEGIN { printf "%.1f", v * 60 / s }'; }
  while read -r key value; do
    case "$key" in
      agent_reconciles | channel_reconciles) result "heartbeat_${key}_per_min" "$(per_minute "$value")" ;;
      requests | writes) result "heartbeat_operator_${key}_per_min" "$(per_minute "$value")" ;;
    esac
  done < <(metric_deltas <(echo "$before") <(echo "$after"))
}

# When the pieces of round $1 came to be, in seconds after $2 (epoch ms): the
# operator's Deployments, kube-controller-manager's ReplicaSets and Pods, and the
# agents' Available transitions (first, last). Shows which stage the time went to.
timeline() {
  local round=$1 start_s=$(($2 / 1000)) kind
  for kind in deployments replicasets pods; do
    kubectl get "$kind" -n "$NS" -o json |
      jq -r --argjson s "$start_s" '[.items[].metadata.creationTimestamp | fromdateiso8601 - $s] |
        if length == 0 then "— —" else "\(min) \(max)" end' |
      { read -r first last; result "${round}_${kind}_created_s" "$first..$last"; }
  done
  kubectl get agd -n "$NS" -l "bench-round=$round" -o json |
    jq -r --argjson s "$start_s" '[.items[].status.conditions[]? | select(.type == "Available" and .status == "True")
        | .lastTransitionTime | fromdateiso8601 - $s] | if length == 0 then "— —" else "\(min) \(max)" end' |
    { read -r first last; result "${round}_available_transitions_s" "$first..$last"; }
}

delete_round() {
  log "deleting every agent of round $1"
  local start
  start=$(now_ms)
  kubectl delete agd -n "$NS" -l "bench-round=$1" --wait=false >/dev/null
  wait_for "every agent's finalizer" no_agents_left
  result "${1}_delete_all_s" "$(seconds_since "$start")"
  if [[ "$MODE" == Managed ]]; then result "${1}_databases_left" "$(count_like pg_database datname)"; fi
}

result agents "$N"
result replicas "$REPLICAS"
result db "$MODE"
result operator "$BIN"
# The API server's request counters and latency sums (every client's, not only the
# operator's).
api_metrics() {
  kubectl get --raw /metrics | grep -E '^apiserver_request_(total|duration_seconds_(sum|count))\{' || true
}

# Results <round>_cluster_requests_per_agent (every request the API server served, by
# every client) and <round>_service_create_mean_ms / <round>_ipaddress_create_mean_ms:
# the mean latency of creating (or applying) a Service, and of the IPAddress object the
# API server creates for its ClusterIP while holding its allocator's lock. $2 and $3
# hold the API server's metrics before and at Available.
cluster_figures() {
  local round=$1 key value
  while read -r key value; do result "${round}_$key" "$value"; done < <(awk -v n="$N" '
    function add(sign,   name, verb, resource, subr) {
      name = $1; sub(/\{.*/, "", name)
      verb = $1; resource = $1; subr = ""
      if (!match(verb, /verb="[^"]*"/)) return
      verb = substr(verb, RSTART + 6, RLENGTH - 7)
      if (match(resource, /resource="[^"]*"/)) resource = substr(resource, RSTART + 10, RLENGTH - 11); else resource = ""
      if (match($1, /subresource="[^"]*"/)) subr = substr($1, RSTART + 13, RLENGTH - 14)
      if (name == "apiserver_request_total") total += sign * $2
      if (subr != "" || (verb != "APPLY" && verb != "POST")) return
      if (resource == "services" && name ~ /_sum$/) ss += sign * $2
      if (resource == "services" && name ~ /_count$/) sc += sign * $2
      if (resource == "ipaddresses" && name ~ /_sum$/) is += sign * $2
      if (resource == "ipaddresses" && name ~ /_count$/) ic += sign * $2
    }
    FILENAME == ARGV[1] { add(-1); next }
    { add(1) }
    END {
      printf "cluster_requests_per_agent %.1f\n", total / n
      printf "service_create_mean_ms %s\n", (sc > 0 ? sprintf("%.0f", ss * 1000 / sc) : "—")
      printf "ipaddress_create_mean_ms %s\n", (ic > 0 ? sprintf("%.0f", is * 1000 / ic) : "—")
    }' "$2" "$3")
}

if [[ "$MODE" == Managed ]]; then result databases_before "$(count_like pg_database datname)"; fi
first=1
for round in $ROUNDS; do
  manifests "$round"
  if ((first == 0)); then
    # The pods of the round before must be gone first (the kwok nodes' room).
    log "waiting for the pods of the previous round to go"
    wait_for "the previous round's pods to go" no_pods_left
  fi
  first=0
  if [[ "$round" == cold ]]; then
    stop_operator
    log "applying $N agents ($REPLICAS replicas each, database $MODE) with no operator running"
    apply_round cold
    cpu_snapshot >"$WORK/cold.cpu0"
    api_metrics >"$WORK/cold.api0"
    : >"$WORK/cold.metrics0"
    start=$(now_ms)
    sample_databases "$start" "$WORK/cold.databases" &
    SAMPLER=$!
    start_operator
  else
    operator_running || start_operator
    log "applying $N agents ($REPLICAS replicas each, database $MODE) to the running operator"
    cpu_snapshot >"$WORK/warm.cpu0"
    api_metrics >"$WORK/warm.api0"
    metrics >"$WORK/warm.metrics0" || : >"$WORK/warm.metrics0"
    start=$(now_ms)
    sample_databases "$start" "$WORK/warm.databases" &
    SAMPLER=$!
    apply_round warm
  fi
  follow_available "$round"
  if wait_for "$N agents Available" all_available "$round"; then
    elapsed=$(seconds_since "$start")
    cpu_snapshot >"$WORK/$round.cpu1"
    result "available_${round}_s" "$elapsed"
    cpu_figures "$round" "$elapsed"
    api_metrics >"$WORK/$round.api1"
    cluster_figures "$round" "$WORK/$round.api0" "$WORK/$round.api1"
    if metrics >"$WORK/$round.metrics1"; then
      work_figures "$round" "$WORK/$round.metrics0" "$WORK/$round.metrics1"
    fi
  else
    # Timed out: say how far it got, and measure the rest all the same.
    result "available_${round}_s" "over-${TIMEOUT}"
    result "available_${round}_at_timeout" "$(available_listed "$round")/$N"
  fi
  stop_job SAMPLER
  stop_job WATCHER
  timeline "$round" "$start"
  if [[ "$MODE" == Managed ]]; then database_figures "$WORK/$round.databases" "${round}_"; fi
  result "rss_${round}_available_kib" "$(kib VmRSS)"
  if [[ "$round" == "${ROUNDS%% *}" ]]; then
    idle_window
    if ((REPLICAS > 0)); then heartbeat_window; fi
  fi
  result rss_peak_kib "$(kib VmHWM)"
  delete_round "$round"
done

# The table: each figure with its aim (issue 18).
get() {
  local k v=""
  for k in "${RESULTS[@]}"; do [[ "${k%%=*}" == "$1" ]] && v="${k#*=}"; done
  echo "${v:-—}"
}
mib() { awk -v k="$1" 'BEGIN { if (k == "—") print k; else printf "%.1f MiB", k / 1024 }'; }
met() { awk -v v="$1" -v a="$2" 'BEGIN { if (v == "—") print v; else if (v !~ /^[0-9.]+$/) print "no"; else print (v + 0 <= a + 0) ? "yes" : "no" }'; }
build_of() { case "$1" in */release/*) echo release ;; */debug/*) echo debug ;; *) echo "$1" ;; esac; }
peak=$(get rss_peak_kib); steady=$(get rss_steady_kib)
echo
echo "| operator, $N agents x $REPLICAS replicas, database $MODE, $(build_of "$BIN") build | value | aim | met |"
echo "|---|---|---|---|"
for round in $ROUNDS; do
  what="operator started after the agents were applied"
  [[ "$round" == warm ]] && what="agents applied to the running operator"
  echo "| all Available, $what | $(get "available_${round}_s") s | ≤ 180 s | $(met "$(get "available_${round}_s")" 180) |"
  if [[ "$MODE" == Managed ]]; then
    echo "| every database created ($round) | $(get "${round}_databases_all_s") s ($(get "${round}_databases_per_s") databases/s) | — | — |"
  fi
  echo "| CPU of the whole machine per agent ($round; kube-apiserver, operator in % of a core) | $(get "cpu_${round}_machine_ms_per_agent") ms ($(get "cpu_${round}_kube-apiserver_pct") %, $(get "cpu_${round}_operator_pct") %) | — | — |"
  echo "| requests the API server served per agent, every client's (the operator's) ($round) | $(get "${round}_cluster_requests_per_agent") ($(get "${round}_requests_per_agent")) | — | — |"
  echo "| mean latency of a Service's creation (of its ClusterIP's IPAddress, made under the allocator's lock) ($round) | $(get "${round}_service_create_mean_ms") ms ($(get "${round}_ipaddress_create_mean_ms") ms) | — | — |"
  echo "| every agent deleted, databases dropped ($round) | $(get "${round}_delete_all_s") s | — | — |"
done
echo "| peak RSS | $(mib "$peak") | ≤ 100 MiB | $(met "$peak" 102400) |"
echo "| steady RSS (converged, idle) | $(mib "$steady") | ≤ 100 MiB | $(met "$steady" 102400) |"
echo "| API writes per idle minute (POST/PUT/PATCH/DELETE) | $(get writes_idle_per_min) | 0 | $(met "$(get writes_idle_per_min)" 0) |"
if ((REPLICAS > 0)); then
  echo "| with every pod's runtime reports ($(get heartbeat_busy_percent) % of the pods busy, reporting every $(get heartbeat_busy_seconds) s, the rest every 60 s; $(get heartbeats_per_s) of $(get heartbeats_due_per_s) reports/s sent, $(get heartbeats_failed) failed; fewer sent than due means late reports, some stale): the agent's (channels') reconciles per minute | $(get heartbeat_agent_reconciles_per_min) ($(get heartbeat_channel_reconciles_per_min)) | — | — |"
  echo "| with the reports: the operator's requests (writes) per minute, its CPU | $(get heartbeat_operator_requests_per_min) ($(get heartbeat_operator_writes_per_min)), $(get heartbeat_operator_cpu_pct) % | — | — |"
fi
