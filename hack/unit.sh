#!/usr/bin/env bash
# `make unit`: the tests that need neither the local cluster nor Postgres, in one
# cargo run: every crate's unit tests (libraries and binaries), the CRD validation
# tests (the schema's CEL rules, evaluated in-process), and the runtime's tests on
# SQLite with the mock LLM in-process. Under a minute warm; `make test` runs all.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/env.sh

# Runtime test files that need the cluster, Postgres or the Python client.
needs_more=" channels_cluster postgres_restart python_sdk "

args=(--workspace --locked --lib --bins --test validation)
for file in agent-runtime/tests/*.rs; do
  name=$(basename "$file" .rs)
  case "$needs_more" in *" $name "*) continue ;; esac
  args+=(--test "$name")
done

# Nothing points at a cluster or a Postgres server: a test here that needs one fails
# saying so, instead of quietly using whichever happens to be up.
unset SWITCHBOARD_DATABASE_ADMIN_URL SWITCHBOARD_HARNESS_KUBECONFIG KUBECONFIG SWITCHBOARD_PYTHON

# The runtime's on-both-databases tests run their SQLite half (`sqlite::`) only.
cargo test "${args[@]}" -- --skip postgres::
