#!/usr/bin/env bash
# `make unit`: the tests that need neither the local cluster nor Postgres: every
# crate's unit tests (libraries and binaries), the CRD validation tests (the schema's
# CEL rules, evaluated in-process), and the runtime's tests on SQLite with the mock
# LLM in-process. Built in one cargo run, then the test binaries run side by side
# (they mostly wait on sockets and timers), so it takes well under a minute warm.
# `make test` runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/env.sh

# Runtime test files that need the cluster, Postgres or the Python client.
needs_more=" channels_cluster chat_apps_cluster cost_cluster postgres_restart python_sdk api_conformance limits_across_pods live_sync_replicas "
# Three builds: `--test NAME` picks that name in every package given, and other
# packages have cluster tests of the same names (operator/tests/telemetry.rs,
# tests/tests/images.rs), so the runtime's files are named for its package only.
crates=(--workspace --locked --lib --bins)
runtime=(-p agent-runtime --locked)
for file in agent-runtime/tests/*.rs; do
  name=$(basename "$file" .rs)
  case "$needs_more" in *" $name "*) continue ;; esac
  runtime+=(--test "$name")
done
validation=(-p crds --locked --test validation)
# Nothing points at a cluster or a Postgres server: a test here that needs one fails
# saying so, instead of quietly using whichever happens to be up.
unset SWITCHBOARD_DATABASE_ADMIN_URL SWITCHBOARD_HARNESS_KUBECONFIG KUBECONFIG SWITCHBOARD_PYTHON
cargo test "${crates[@]}" --no-run
cargo test "${runtime[@]}" --no-run
cargo test "${validation[@]}" --no-run
# Side by side, UNIT_JOBS at a time (default: one per core); more only slows the
# timing-sensitive ones. The runtime's on-both-databases tests run their SQLite half
# (`sqlite::`) only.
{
  cargo test "${crates[@]}" --no-run --message-format=json
  cargo test "${runtime[@]}" --no-run --message-format=json
  cargo test "${validation[@]}" --no-run --message-format=json
} 2>/dev/null | python3 hack/lib/run-tests.py --jobs "${UNIT_JOBS:-$(nproc)}" \
  --times "${CARGO_TARGET_DIR:-$PWD/target}/switchboard-unit-times.tsv" -- --skip postgres::
