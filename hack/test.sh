#!/usr/bin/env bash
# `make test`: the whole check a submission must pass, on a fresh machine too.
# The cheap checks first (fmt, then clippy, which compiles), so a formatting slip or
# a lint fails in seconds or minutes, before anything slow. Then the build, the local
# control plane and Postgres (started when not running, and stopped again afterwards),
# the Python client used by the SDK tests, and every unit and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source hack/lib/env.sh

step() { printf '\n==> %s\n' "$*"; }

step "Toolchains"
hack/ensure-rust.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Building the workspace (tests included)"
cargo build --workspace --all-targets --locked

step "Generated CRDs match the types"
cargo run -q -p crds --bin crdgen -- --check

started_cluster=0
cluster_in_use=0
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ "$cluster_in_use" = 1 ]; then
    step "Failed (exit ${rc}): the local cluster as the failure left it"
    hack/cluster.sh diagnose || true
  fi
  if [ "$started_cluster" = 1 ]; then
    step "Stopping the local cluster this run started"
    hack/cluster.sh down || true
  fi
}
trap cleanup EXIT

if hack/cluster.sh status >/dev/null 2>&1; then
  step "Using the local cluster that is already up; importing the project's images (debug build)"
  hack/cluster.sh images
else
  step "Starting the local cluster (first run builds it: see README)"
  started_cluster=1
  hack/cluster.sh up
fi
cluster_in_use=1
eval "$(hack/cluster.sh env)"

step "Python client for the SDK tests"
hack/python-env.sh
export SWITCHBOARD_PYTHON="$root/.switchboard/venv/bin/python"

step "Unit and end-to-end tests"
# Every test binary, side by side, TEST_JOBS at a time (default: one per core; they
# mostly wait on sockets, timers and the cluster). Those that use the local cluster
# run one after another (one counts the cluster's writes over an idle minute).
# Durations are kept in the target directory so the longest start first next time.
tests_rc=0
cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
  python3 hack/lib/run-tests.py --verbose --jobs "${TEST_JOBS:-$(nproc)}" \
    --times "${CARGO_TARGET_DIR:-$root/target}/switchboard-test-times.tsv" \
    --group 'cluster=operator:*,tests:*,agent-runtime:*_cluster' || tests_rc=$?
cargo test --workspace --locked --doc || tests_rc=$?
[ "$tests_rc" = 0 ]

step "Web chat: built assets match the sources, type check, unit and browser tests against the runtime"
web/setup.sh
AGENT_RUNTIME_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/agent-runtime" \
  MOCK_LLM_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/mock-llm" web/test.sh

step "OpenAI Node SDK against the runtime (tools, structured output, refused fields)"
AGENT_RUNTIME_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/agent-runtime" \
  MOCK_LLM_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/mock-llm" tests/node/test.sh

step "Monitoring: generated files, promtool rules and tests, dashboards, the binaries under Prometheus"
monitoring/test.sh

step "Helm chart: lint, schema, drift, Kustomize agreement, server dry-runs, install/upgrade/uninstall"
charts/test.sh --e2e
