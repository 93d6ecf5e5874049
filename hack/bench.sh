#!/usr/bin/env bash
# `make bench`: the agent runtime against mock-llm, compared with calling mock-llm
# directly, in one run (see tools/src/bin/bench/). Uses the local cluster's Postgres
# when the cluster is up, otherwise a throwaway Postgres of its own (hack/postgres.sh,
# the same settings) and nothing else: an idle control plane, kubelet and containerd
# would share the core the runtime is not pinned to with Postgres, mock-llm and the
# load generator, and a cluster just started is not idle. Release builds, valgrind's
# callgrind for the instruction counts (installed with apt-get when missing), and
# raises the open-file limit for the idle-stream figures. Prints a Markdown table;
# arguments go to the bench (`hack/bench.sh --instructions-only` for the
# instruction counts alone: `make bench-instructions`; `hack/bench.sh
# --throughput-only postgres` or `... sqlite` for the throughput rows of one backend;
# `hack/bench.sh --latency-only` for the one-at-a-time latency rows).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/env.sh
# shellcheck source=hack/cluster-lib.sh
source hack/cluster-lib.sh

command -v valgrind >/dev/null || apt_install valgrind

echo "==> building release binaries"
cargo build --release --locked --bin agent-runtime --bin mock-llm --bin bench
release="${CARGO_TARGET_DIR:-target}/release"

started=0
if hack/cluster.sh status >/dev/null 2>&1; then
  eval "$(hack/cluster.sh env)"
  admin_url=$SWITCHBOARD_DATABASE_ADMIN_URL
else
  hack/postgres.sh status >/dev/null 2>&1 || { started=1; hack/postgres.sh up; }
  admin_url=$(hack/postgres.sh url)
fi
db=sbbench_$$
cleanup() {
  psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  if [ "$started" = 1 ]; then hack/postgres.sh down; fi
}
trap cleanup EXIT
psql -q "$admin_url" -c "CREATE DATABASE $db"
db_url=$(printf '%s' "$admin_url" | sed -E "s#/[^/?]*(\?|$)#/$db\1#")

# Idle streams need up to 2 sockets each on the runtime side (1 over HTTP/2).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$release/bench" \
  --runtime "$release/agent-runtime" \
  --mock "$release/mock-llm" \
  --database-url "$db_url" \
  --profile-dir "${CARGO_TARGET_DIR:-target}/bench" \
  "$@"
