#!/usr/bin/env bash
# A real Prometheus for the demo: Debian's `prometheus` package run as a local
# process on loopback, with its own config and data directory under the demo's
# state dir. It scrapes the operator (a loopback address) and every runtime pod
# of the agents in the given namespaces, discovered from the local apiserver
# with the cluster's kubeconfig (the agents' EndpointSlices, every 5 s; Debian
# builds Prometheus without Kubernetes service discovery, so a small refresher
# writes them for file-based discovery) and labelled by the contract of
# monitoring/README.md (namespace = tenant, service = agent, pod); it loads
# monitoring/alerts/switchboard.rules.yaml.
#
#   hack/demo-prometheus.sh up --state DIR --namespace NS [--namespace NS2 ...]
#                              [--operator HOST:PORT] [--port PORT]
#   hack/demo-prometheus.sh down --state DIR
#
# `up` needs KUBECONFIG (eval "$(make -s cluster-env)"); it waits until
# Prometheus is ready and has scraped a runtime pod, then prints its URL and a
# query to try. `down` stops exactly the process `up` started (by its pid file)
# and removes DIR/prometheus. Installs the prometheus package when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() { echo "usage: hack/demo-prometheus.sh up --state DIR --namespace NS [--operator HOST:PORT] [--port PORT] | down --state DIR" >&2; exit 2; }
die() { echo "demo-prometheus: $*" >&2; exit 1; }

command=${1:-}; [[ $# -gt 0 ]] && shift
state="" operator="" port="" namespaces=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --state) state=$2; shift 2 ;;
    --namespace) namespaces+=("$2"); shift 2 ;;
    --operator) operator=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) usage ;;
  esac
done
[[ -n "$state" ]] || usage
dir="$state/prometheus"
pidfile="$dir/prometheus.pid"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The value of one instant query's first sample, or nothing.
query() {
  curl -sf --get "http://127.0.0.1:$port/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' 2>/dev/null || true
}

stop_pid() {
  local pid
  if pid=$(cat "$1" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

down() {
  stop_pid "$dir/refresher.pid"
  stop_pid "$pidfile"
  rm -rf "$dir"
}

# The runtime pods' targets: Debian's Prometheus is built without Kubernetes
# service discovery, so a small refresher asks the local apiserver (kubectl, the
# cluster's credentials) for the EndpointSlices of the agents' Services (label
# app.kubernetes.io/name=switchboard-agent, port http) every 5 s and writes them
# for file-based discovery, already carrying the label contract of
# monitoring/README.md: namespace (tenant), service (agent), pod; job = service.
write_refresher() {
  cat >"$dir/refresh-targets.py" <<'PY'
import json, os, subprocess, sys, time
out, namespaces = sys.argv[1], sys.argv[2:]
last = None
while True:
    groups = []
    for ns in namespaces:
        try:
            listing = subprocess.run(
                ["kubectl", "get", "endpointslices", "-n", ns, "-l", "app.kubernetes.io/name=switchboard-agent", "-o", "json"],
                capture_output=True, text=True, timeout=20, check=True).stdout
            slices = json.loads(listing)["items"]
        except (subprocess.SubprocessError, ValueError, KeyError) as err:
            print(f"refresh-targets: {ns}: {err}", file=sys.stderr, flush=True)
            continue
        for s in slices:
            service = s["metadata"].get("labels", {}).get("kubernetes.io/service-name", "")
            port = next((p["port"] for p in s.get("ports") or [] if p.get("name") == "http"), None)
            if not service or port is None:
                continue
            for e in s.get("endpoints") or []:
                pod = (e.get("targetRef") or {}).get("name", "")
                for address in e.get("addresses") or []:
                    groups.append({"targets": [f"{address}:{port}"],
                                   "labels": {"namespace": ns, "service": service, "pod": pod, "job": service}})
    groups.sort(key=lambda g: g["targets"])
    if groups != last:
        with open(out + ".tmp", "w") as f:
            json.dump(groups, f, indent=1)
        os.replace(out + ".tmp", out)
        last = groups
    time.sleep(5)
PY
}

# The scrape configuration (JSON is YAML): the runtime pods from the refresher's
# file, the operator at its loopback address, the alert rules.
write_config() {
  python3 - "$dir/prometheus.yml" "$dir/runtime-targets.json" "$root/monitoring/alerts/switchboard.rules.yaml" "$operator" <<'PY'
import json, sys
out, targets, rules, operator = sys.argv[1:]
scrape = [{"job_name": "switchboard-runtime", "scrape_interval": "5s",
           "file_sd_configs": [{"files": [targets], "refresh_interval": "5s"}]}]
if operator:
    scrape.append({"job_name": "switchboard-operator", "scrape_interval": "5s",
                   "static_configs": [{"targets": [operator]}]})
config = {
    "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
    "rule_files": [rules],
    "scrape_configs": scrape,
}
with open(out, "w") as f:
    json.dump(config, f, indent=2)
PY
}

up() {
  [[ ${#namespaces[@]} -gt 0 ]] || usage
  [[ -n "${KUBECONFIG:-}" ]] || die "KUBECONFIG is not set (eval \"\$(make -s cluster-env)\")"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    die "already running (pid $(cat "$pidfile")); hack/demo-prometheus.sh down --state $state"
  fi
  hack/install-prometheus.sh >/dev/null
  local prometheus
  prometheus=$(command -v prometheus) || die "the prometheus package is installed but prometheus is not on PATH"
  mkdir -p "$dir/data"
  port=${port:-$(free_port)}
  write_refresher
  write_config
  echo '[]' >"$dir/runtime-targets.json"
  setsid nohup python3 "$dir/refresh-targets.py" "$dir/runtime-targets.json" "${namespaces[@]}" \
    >"$dir/refresh-targets.log" 2>&1 </dev/null &
  echo $! >"$dir/refresher.pid"
  promtool check config "$dir/prometheus.yml" >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; down; die "promtool refused the generated config"; }
  setsid nohup "$prometheus" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="127.0.0.1:$port" --storage.tsdb.retention.time=1d >"$dir/prometheus.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "$port" >"$dir/port"
  local ready=""
  for _ in $(seq 1 150); do
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$dir/prometheus.log" >&2; down; die "prometheus exited"; }
    if curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 &&
       [[ "$(query 'count(up{job!="switchboard-operator"} == 1)')" =~ ^[1-9] ]]; then
      ready=1; break
    fi
    sleep 0.2
  done
  [[ -n "$ready" ]] || { tail -20 "$dir/prometheus.log" "$dir/refresh-targets.log" >&2; down; die "no runtime pod scraped within 30s (is an agent Ready in ${namespaces[*]}?)"; }
  local pods rules
  pods=$(query 'count(up{job!="switchboard-operator"} == 1)')
  rules=$(curl -sf "http://127.0.0.1:$port/api/v1/rules" | python3 -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
  cat <<EOF
Prometheus: http://127.0.0.1:$port  (scraping $pods runtime pod(s)${operator:+ and the operator}; $rules alert and recording rules loaded)
  Try:  sum by (namespace, service, direction) (rate(switchboard_runtime_tokens_total[5m]))
        sum by (namespace, service, currency) (switchboard_runtime_cost_total)   (agents with priced models)
  Alerts: http://127.0.0.1:$port/alerts   Targets: http://127.0.0.1:$port/targets
  Config and data: $dir
EOF
}

case "$command" in
  up) up ;;
  down) down; echo "prometheus stopped" ;;
  *) usage ;;
esac
