#!/usr/bin/env bash
# `make bench`: the agent runtime against mock-llm, compared with calling mock-llm
# directly, in one run (see tests/src/bin/bench.rs). Uses the harness's Postgres
# (starting the local cluster when it is not up), release builds, and raises the
# open-file limit for the idle-stream figures. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in "$HOME/.cargo/bin" /usr/local/go/bin; do
  case ":$PATH:" in *":$dir:"*) ;; *) [ -d "$dir" ] && PATH="$dir:$PATH" ;; esac
done
export PATH

echo "==> building release binaries"
cargo build --release --locked -p agent-runtime -p mock-llm -p tests --bin agent-runtime --bin mock-llm --bin bench

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

target/release/bench \
  --runtime target/release/agent-runtime \
  --mock target/release/mock-llm \
  --database-url "$db_url" \
  "$@"
