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
# Build, and list each test binary with its package directory (cargo runs tests there).
list_binaries() {
  cargo test "$@" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(os.path.dirname(m["manifest_path"]) + "\t" + m["executable"])
'
}
cargo test "${crates[@]}" --no-run
cargo test "${runtime[@]}" --no-run
cargo test "${validation[@]}" --no-run
mapfile -t binaries < <({
  list_binaries "${crates[@]}"
  list_binaries "${runtime[@]}"
  list_binaries "${validation[@]}"
} | sort -u)

# Side by side, UNIT_JOBS at a time (default: one per core); more only slows the
# timing-sensitive ones.
jobs=${UNIT_JOBS:-$(nproc)}
out=$(mktemp -d -t switchboard-unit.XXXX)
trap 'rm -rf "$out"' EXIT
running=0
for i in "${!binaries[@]}"; do
  IFS=$'\t' read -r dir exe <<<"${binaries[$i]}"
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  # The runtime's on-both-databases tests run their SQLite half (`sqlite::`) only.
  (
    cd "$dir"
    rc=0
    "$exe" --skip postgres:: >"$out/$i.log" 2>&1 || rc=$?
    echo "$rc" >"$out/$i.rc"
  ) &
  running=$((running + 1))
done
wait

failed=0 passed=0
for i in "${!binaries[@]}"; do
  IFS=$'\t' read -r _ exe <<<"${binaries[$i]}"
  if [ "$(cat "$out/$i.rc")" = 0 ]; then
    grep -h '^test result:' "$out/$i.log" | sed "s|^|$(basename "$exe"): |"
  else
    failed=$((failed + 1))
    printf '\n==> FAILED: %s\n' "$exe"
    cat "$out/$i.log"
  fi
  passed=$((passed + $(grep -ho '[0-9]* passed' "$out/$i.log" | awk '{s += $1} END {print s + 0}')))
done
echo "$passed tests passed in ${#binaries[@]} test binaries; $failed binaries failed"
[ "$failed" -eq 0 ]
