#!/usr/bin/env bash
# Tests of monitoring/: the generated files have not drifted, promtool accepts and
# unit-tests the alert rules, the dashboards are well formed and their queries
# parse, and, against the real binaries under a real Prometheus (monitoring/e2e.py),
# `promtool check metrics` has no complaints and every dashboard query returns data.
#
#   monitoring/test.sh            everything; the operator part needs the local
#                                 cluster (started here when it is not up, and
#                                 stopped again afterwards)
#   monitoring/test.sh --static   only what needs no binaries and no cluster
#
# Binaries come from $SWITCHBOARD_BIN_DIR (default target/debug, built here when
# missing). Installs Debian's prometheus package (promtool) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

static_only=0
[[ "${1:-}" == "--static" ]] && static_only=1

step "promtool (Debian's prometheus package)"
promtool=$(hack/install-prometheus.sh)
export PROMTOOL="$promtool"
"$promtool" --version 2>&1 | head -1

step "Generated dashboards and rules match monitoring/generate.py"
python3 monitoring/generate.py --check

step "promtool check rules"
"$promtool" check rules monitoring/alerts/switchboard.rules.yaml

step "promtool test rules (every alert fires on a synthetic series and stays silent on a healthy one)"
"$promtool" test rules monitoring/alerts/tests/*.yaml

step "Dashboards: structure, variables, queries parse; PrometheusRule, runbooks and test coverage"
python3 monitoring/check.py static

[[ $static_only == 1 ]] && exit 0

bin_dir="${SWITCHBOARD_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"
export SWITCHBOARD_BIN_DIR="$bin_dir"
if [[ ! -x "$bin_dir/agent-runtime" || ! -x "$bin_dir/switchboard-operator" || ! -x "$bin_dir/mock-llm" ]]; then
  step "Building the runtime, the operator and mock-llm"
  for dir in "$HOME/.cargo/bin" /usr/local/go/bin; do
    case ":$PATH:" in *":$dir:"*) ;; *) [[ -d "$dir" ]] && PATH="$dir:$PATH" ;; esac
  done
  cargo build --locked -p agent-runtime -p operator -p mock-llm \
    --bin agent-runtime --bin switchboard-operator --bin mock-llm
fi

started_cluster=0
external_cluster=0
cleanup() {
  if [[ $started_cluster == 1 ]]; then
    step "Stopping the local cluster this run started"
    hack/cluster.sh down || true
  fi
}
trap cleanup EXIT
if [[ -n "${KUBECONFIG:-}" ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
  # A cluster started from another checkout (eval "$(make -s cluster-env)" there):
  # use it as it is; never start a second one beside it.
  step "Using the local cluster of \$KUBECONFIG"
  external_cluster=1
elif hack/cluster.sh status >/dev/null 2>&1; then
  step "Using the local cluster that is already up"
else
  step "Starting the local cluster (for the operator)"
  # Another run may bring the same cluster up meanwhile: then this run started
  # nothing and must not stop it.
  up_log=$(hack/cluster.sh up 2>&1) || { printf '%s\n' "$up_log" >&2; exit 1; }
  printf '%s\n' "$up_log"
  grep -q "nothing started" <<<"$up_log" || started_cluster=1
fi
[[ $external_cluster == 1 ]] || eval "$(hack/cluster.sh env)"

step "Real binaries under a real Prometheus: promtool check metrics, metric names, every dashboard query returns data"
python3 monitoring/e2e.py
