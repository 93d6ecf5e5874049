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

# The load generator, mock-llm and the Postgres server run on the CPUs the runtime
# is not pinned to (the runtime: --runtime-cpus, CPU 0 by default), for the run:
# the issue's setup, "the mock, the load generator and Postgres share the other
# core". BENCH_PIN_OTHERS=CPUS names other CPUs for them (with --runtime-cpus);
# BENCH_PIN_OTHERS=none pins only the runtime and lets the scheduler put the rest
# where it likes, the runtime's CPU included (docs/performance.md, round
# twenty-six, has both). Postgres's affinity is put back when the bench ends.
cpus=$(nproc --all)
case $cpus in
  1) others=none ;;
  2) others=1 ;;
  *) others="1-$((cpus - 1))" ;;
esac
pin_others=${BENCH_PIN_OTHERS:-$others}
if [ "$pin_others" = none ]; then pin_others=; fi
for arg in "$@"; do
  case $arg in
    --runtime-cpus*)
      [ -n "${BENCH_PIN_OTHERS:-}" ] ||
        die "with --runtime-cpus, set BENCH_PIN_OTHERS to the CPUs for the load generator, mock-llm and Postgres (or none), so they do not share the runtime's"
      ;;
  esac
done

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
postmaster=
postmaster_mask=
pin_server() { # MASK-OR-LIST [-c]: the postmaster and every process it forked
  local pid
  for pid in "$postmaster" $(pgrep -P "$postmaster"); do
    taskset -p $2 "$1" "$pid" >/dev/null 2>&1 || true
  done
}
cleanup() {
  psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  if [ -n "$postmaster_mask" ]; then pin_server "$postmaster_mask" ""; fi
  if [ "$started" = 1 ]; then hack/postgres.sh down; fi
}
trap cleanup EXIT
# The test servers (hack/postgres.sh, the cluster's) run with synchronous_commit
# off; the bench's database has it on, as Postgres ships: a commit returns once
# its WAL is written, so an answered chat survives Postgres crashing. fsync
# stays as the server has it (off on the test servers: nothing is forced to the
# disk, so a crash of the machine may lose the last commits; the disk's flush
# time is the disk's, not the runtime's). SQLite's WAL with synchronous=NORMAL
# gives the same: it survives the process, not the machine.
psql -q "$admin_url" -c "CREATE DATABASE $db" -c "ALTER DATABASE $db SET synchronous_commit = on"
db_url=$(printf '%s' "$admin_url" | sed -E "s#/[^/?]*(\?|$)#/$db\1#")
read -r version sync fsync < <(psql -AtF' ' -c "SELECT split_part(current_setting('server_version'), ' ', 1), \
  current_setting('synchronous_commit'), current_setting('fsync')" "$db_url")
case $fsync in
  off) fsync_note="not forced to the disk: a crash of the machine may lose the last commits" ;;
  *) fsync_note="forced to the disk at each commit" ;;
esac
echo "Postgres $version: synchronous_commit=$sync (an answered chat's commit is in the WAL: it survives Postgres crashing), fsync=$fsync ($fsync_note). SQLite: WAL, synchronous=NORMAL (it survives the runtime crashing)."

bench=("$release/bench")
if [ -n "$pin_others" ]; then
  # The checkpointer lives as long as the server; its parent is the postmaster.
  checkpointer=$(psql -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'" "$db_url")
  postmaster=$(ps -o ppid= -p "${checkpointer:-0}" | tr -d ' ') ||
    die "cannot find the Postgres server's processes to pin (no checkpointer in pg_stat_activity); BENCH_PIN_OTHERS=none runs the bench without pinning them"
  postmaster_mask=$(taskset -p "$postmaster" | sed 's/.*: //')
  pin_server "$pin_others" -c
  bench=(taskset -c "$pin_others" "$release/bench")
  echo "The load generator, mock-llm and Postgres (postmaster $postmaster and its processes) pinned to CPU(s) $pin_others."
fi

# Idle streams need up to 2 sockets each on the runtime side (1 over HTTP/2).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"${bench[@]}" \
  --runtime "$release/agent-runtime" \
  --mock "$release/mock-llm" \
  --database-url "$db_url" \
  --profile-dir "${CARGO_TARGET_DIR:-target}/bench" \
  "$@"
