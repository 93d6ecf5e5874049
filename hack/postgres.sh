#!/usr/bin/env bash
# Throwaway PostgreSQL server for Switchboard's local test harness, started and
# stopped by hack/cluster.sh (usable on its own too):
#   hack/postgres.sh up      install Postgres from Debian's packages if missing,
#                            initdb a fresh data dir under the state dir and start
#                            it on a free 127.0.0.1 port with a password superuser
#   hack/postgres.sh down    stop exactly that server (by pid) and delete its data
#   hack/postgres.sh restart crash it (SIGQUIT, immediate shutdown) and start it
#                            again on the same data and port
#   hack/postgres.sh url     print the superuser URL (postgres://...@127.0.0.1:port/postgres)
#   hack/postgres.sh status  print up/down; exit 0 if up
# State: ${SWITCHBOARD_STATE:-<repo>/.switchboard}/cluster/postgres. The server
# runs as the unprivileged `postgres` OS user when invoked as root (Postgres
# refuses to run as root), otherwise as the invoking user. fsync is off (the
# data only has to survive the process, not the machine); synchronous_commit is
# off unless SWITCHBOARD_PG_SYNCHRONOUS_COMMIT=on (a commit then survives a
# crash of the server, as in production).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_PREFIX=postgres
# shellcheck source=cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

PG_STATE="${STATE}/postgres"
PG_SUPERUSER=switchboard
PG_OS_USER=postgres

# The directory holding data/ and run/ (normally $PG_STATE; see pick_pg_home).
pg_home() { cat "${PG_STATE}/home" 2>/dev/null || echo "$PG_STATE"; }

pg_bin_dir() {
  local d
  for d in $(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V -r); do
    [[ -x "$d/postgres" && -x "$d/initdb" ]] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_postgres() {
  pg_bin_dir >/dev/null && return 0
  apt_install postgresql
  pg_bin_dir >/dev/null || die "postgresql installed but no server binaries in /usr/lib/postgresql/*/bin"
}

# as_pg CMD...: run CMD as the OS user that owns the server.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- env HOME=/tmp "$@"
  else
    "$@"
  fi
}

# The server's user must be able to reach its data dir; when a parent of the
# state dir is closed to it (e.g. a repo under /root), use a private temp dir.
pick_pg_home() {
  local home=$PG_STATE
  mkdir -p "$home"
  if [[ $EUID -eq 0 ]]; then
    id "$PG_OS_USER" >/dev/null 2>&1 || die "OS user '$PG_OS_USER' missing (it comes with Debian's postgresql package)"
    chown "$PG_OS_USER:" "$home"
    if ! as_pg test -w "$home" 2>/dev/null; then
      home=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-pg.XXXXXX")
      chown "$PG_OS_USER:" "$home"
      log "note: ${PG_STATE} is not reachable by user ${PG_OS_USER}; using ${home}"
    fi
  fi
  # Unix socket paths are limited to ~107 bytes.
  if [[ ${#home} -gt 80 ]]; then
    local short
    short=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-pg.XXXXXX")
    [[ $EUID -ne 0 ]] || chown "$PG_OS_USER:" "$short"
    log "note: state path too long for a unix socket; using ${short}"
    home=$short
  fi
  echo "$home" >"${PG_STATE}/home"
}

pg_up() {
  if running postgres; then
    log "already up on port $(cat "${PG_STATE}/port")"
    return 0
  fi
  [[ ! -e "${PG_STATE}" ]] || pg_down quiet
  ensure_postgres
  local bin home port password
  bin=$(pg_bin_dir)
  mkdir -p "$PG_STATE"
  chmod 755 "$PG_STATE"
  pick_pg_home
  home=$(pg_home)
  pick_port port
  password=$(openssl rand -hex 24 2>/dev/null || od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf '%s\n' "$password" >"${PG_STATE}/password")
  echo "$port" >"${PG_STATE}/port"

  mkdir -p "${home}/run" "$LOG_DIR"
  [[ $EUID -ne 0 ]] || chown "$PG_OS_USER:" "${home}/run"
  # initdb reads the password from a file the server's user can read.
  local pwfile="${home}/.pwfile"
  (umask 077 && printf '%s\n' "$password" >"$pwfile")
  [[ $EUID -ne 0 ]] || chown "$PG_OS_USER:" "$pwfile"
  log "initdb ($(basename "$(dirname "$bin")")) in ${home}/data"
  if ! as_pg "${bin}/initdb" -D "${home}/data" -U "$PG_SUPERUSER" --pwfile="$pwfile" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync \
    >"${LOG_DIR}/postgres-initdb.log" 2>&1; then
    rm -f "$pwfile"
    tail -n 20 "${LOG_DIR}/postgres-initdb.log" >&2
    die "initdb failed (log: ${LOG_DIR}/postgres-initdb.log)"
  fi
  rm -f "$pwfile"

  echo "${SWITCHBOARD_PG_SYNCHRONOUS_COMMIT:-off}" >"${PG_STATE}/synchronous_commit"
  pg_start
}

# Starts the server on the data dir and port recorded in the state dir.
pg_start() {
  local bin home port password sync
  bin=$(pg_bin_dir)
  home=$(pg_home)
  port=$(cat "${PG_STATE}/port")
  password=$(cat "${PG_STATE}/password")
  sync=$(cat "${PG_STATE}/synchronous_commit" 2>/dev/null || echo off)
  local server=("${bin}/postgres" -D "${home}/data"
    -c listen_addresses=127.0.0.1 -c port="$port" -c unix_socket_directories="${home}/run"
    -c fsync=off -c synchronous_commit="$sync" -c full_page_writes=off -c max_connections=200
    -c logging_collector=off)
  mkdir -p "$LOG_DIR"
  if [[ $EUID -eq 0 ]]; then
    start_bg postgres "${home}/data" setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- "${server[@]}"
  else
    start_bg postgres "${home}/data" "${server[@]}"
  fi
  wait_for 60 "postgres to accept connections on 127.0.0.1:${port}" postgres \
    env PGPASSWORD="$password" PGCONNECT_TIMEOUT=2 "${bin}/psql" -h 127.0.0.1 -p "$port" -U "$PG_SUPERUSER" -d postgres -Atqc 'select 1'
  log "up on 127.0.0.1:${port} (superuser ${PG_SUPERUSER}, synchronous_commit=${sync})"
}

# Kills the server the way a crash would (SIGQUIT: immediate shutdown, no
# checkpoint, clients cut off) and starts it again on the same data and port;
# it replays its WAL on the way up.
pg_restart() {
  running postgres || die "postgres is not running"
  local pid i
  pid=$(pid_of postgres)
  kill -QUIT "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && die "postgres (pid ${pid}) did not stop"
  # The postmaster has waited for its backends and exited; stay down a while.
  sleep "${SWITCHBOARD_PG_DOWN_SECONDS:-0}"
  pg_start
}

pg_down() {
  local quiet=${1:-}
  [[ -e "$PG_STATE" ]] || { [[ -n "$quiet" ]] || log "already down"; return 0; }
  local home
  home=$(pg_home)
  # postgres handles SIGTERM as a "smart" shutdown that waits for clients;
  # SIGINT is the fast one (disconnect clients, stop).
  local pid
  pid=$(pid_of postgres)
  if [[ -n "$pid" ]] && ours "$pid" "$(marker_of postgres)"; then
    kill -INT "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  fi
  stop_procs postgres
  rm -rf "$PG_STATE"
  [[ "$home" == "$PG_STATE" ]] || rm -rf "$home"
  [[ -n "$quiet" ]] || log "down"
}

pg_url() {
  running postgres || { log "postgres is not running"; return 1; }
  echo "postgres://${PG_SUPERUSER}:$(cat "${PG_STATE}/password")@127.0.0.1:$(cat "${PG_STATE}/port")/postgres"
}

case "${1:-}" in
  up) pg_up ;;
  down) pg_down ;;
  restart) pg_restart ;;
  url) pg_url ;;
  status) if running postgres; then echo up; else echo down; exit 1; fi ;;
  *) echo "usage: $0 up|down|restart|url|status" >&2; exit 2 ;;
esac
