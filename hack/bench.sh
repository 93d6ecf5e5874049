#!/usr/bin/env bash
# `make bench`: the agent runtime against mock-llm, compared with calling mock-llm
# directly, in one run (see tools/src/bin/bench/). Uses the harness's Postgres
# (starting the local cluster when it is not up), release builds, valgrind's
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
if ! hack/cluster.sh status >/dev/null 2>&1; then
  started=1
  hack/cluster.sh up
fi
db=sbbench_$$
cleanup() {
  psql -q "$SWITCHBOARD_DATABASE_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  if [ "$started" = 1 ]; then hack/cluster.sh down; fi
}
trap cleanup EXIT
eval "$(hack/cluster.sh env)"
psql -q "$SWITCHBOARD_DATABASE_ADMIN_URL" -c "CREATE DATABASE $db"
db_url=$(printf '%s' "$SWITCHBOARD_DATABASE_ADMIN_URL" | sed -E "s#/[^/?]*(\?|$)#/$db\1#")

# Idle streams need up to 2 sockets each on the runtime side (1 over HTTP/2).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$release/bench" \
  --runtime "$release/agent-runtime" \
  --mock "$release/mock-llm" \
  --database-url "$db_url" \
  --profile-dir "${CARGO_TARGET_DIR:-target}/bench" \
  "$@"
