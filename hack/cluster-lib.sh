# Shared helpers for hack/cluster.sh and hack/postgres.sh (sourced, not run):
# state-dir layout, logging, free loopback ports, starting background processes
# with a pid file and stopping exactly those processes again.
# shellcheck shell=bash source-path=SCRIPTDIR

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${HACK_DIR}/.." && pwd)"
# shellcheck source=versions.env
source "${HACK_DIR}/versions.env"

# Everything the harness creates at run time lives under STATE (absolute path).
STATE_ROOT="${SWITCHBOARD_STATE:-${REPO_ROOT}/.switchboard}"
mkdir -p "$STATE_ROOT"
STATE_ROOT="$(cd "$STATE_ROOT" && pwd)"
STATE="${STATE_ROOT}/cluster"
PID_DIR="${STATE}/pids"
LOG_DIR="${STATE}/logs"

log() { echo "${LOG_PREFIX:-harness}: $*" >&2; }
die() { log "error: $*"; exit 1; }

# alive PID: the process exists and is not a zombie (PID 1 may not reap them).
alive() {
  local pid=$1 stat
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/${pid}/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ "${stat%% *}" != Z ]]
}

# ours PID MARKER: the process is alive and its command line contains MARKER
# (a path inside our state), so a recycled pid is never mistaken for ours.
ours() {
  local pid=$1 marker=$2
  alive "$pid" || return 1
  tr '\0' '\n' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# pid_of NAME: the pid recorded for NAME (empty if none).
pid_of() { cat "${PID_DIR}/$1.pid" 2>/dev/null || true; }
marker_of() { cat "${PID_DIR}/$1.marker" 2>/dev/null || echo "$STATE"; }

# running NAME: the recorded process of NAME is still ours and alive.
running() {
  local pid
  pid=$(pid_of "$1")
  [[ -n "$pid" ]] && ours "$pid" "$(marker_of "$1")"
}

# start_bg NAME MARKER CMD...: run CMD in its own session, detached from the
# terminal, output appended to $LOG_DIR/NAME.log, pid in $PID_DIR/NAME.pid.
# setsid/nohup/env exec in place, so $! is the pid of CMD itself.
start_bg() {
  local name=$1 marker=$2
  shift 2
  mkdir -p "$PID_DIR" "$LOG_DIR"
  # fds 8/9 carry the flock of cluster.sh/build-binaries.sh: never hand them down.
  setsid nohup "$@" >>"${LOG_DIR}/${name}.log" 2>&1 </dev/null 8>&- 9>&- &
  local pid=$!
  echo "$pid" >"${PID_DIR}/${name}.pid"
  echo "$marker" >"${PID_DIR}/${name}.marker"
}

# stop_procs NAME...: TERM the recorded processes, wait up to 15s, then KILL.
# Only pids whose command line still contains their marker are signalled.
stop_procs() {
  local name pid pids=() names=() i
  for name in "$@"; do
    pid=$(pid_of "$name")
    if [[ -n "$pid" ]] && ours "$pid" "$(marker_of "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$name")
    fi
    rm -f "${PID_DIR}/${name}.pid" "${PID_DIR}/${name}.marker"
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  for ((i = 0; i < 150; i++)); do
    local left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    [[ $left -eq 1 ]] || return 0
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if alive "${pids[$i]}"; then
      log "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM; killing it"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
  for ((i = 0; i < 50; i++)); do
    local left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    [[ $left -eq 1 ]] || return 0
    sleep 0.1
  done
  log "warning: some processes did not exit: ${pids[*]}"
}

# Ports in use in this network namespace (any state), from /proc/net/tcp*.
used_ports() {
  local f
  for f in /proc/net/tcp /proc/net/tcp6; do
    [[ -r "$f" ]] || continue
    while read -r _ local _; do
      [[ "$local" == *:* ]] || continue
      echo $((16#${local##*:}))
    done <"$f"
  done
}

# pick_port VAR: a free loopback TCP port, outside the ephemeral range, not
# handed out before by this shell; stored in VAR.
PICKED_PORTS=" "
pick_port() {
  local -n _out=$1
  local used p i
  used=" $(used_ports | sort -u | tr '\n' ' ') "
  for ((i = 0; i < 500; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    [[ "$used" == *" $p "* || "$PICKED_PORTS" == *" $p "* ]] && continue
    # Nothing must answer there either (e.g. a listener in another namespace view).
    if (exec 3<>"/dev/tcp/127.0.0.1/${p}") 2>/dev/null; then continue; fi
    PICKED_PORTS+="$p "
    _out=$p
    return 0
  done
  die "could not find a free TCP port on 127.0.0.1"
}

# wait_for SECONDS WHAT PROCNAME CMD...: poll CMD every 0.5s until it succeeds;
# fail early if the process PROCNAME (if given) died, showing its log.
wait_for() {
  local secs=$1 what=$2 proc=$3 i
  shift 3
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ -n "$proc" ]] && ! running "$proc"; then
      log "${proc} exited while waiting for ${what}; last lines of ${LOG_DIR}/${proc}.log:"
      tail -n 30 "${LOG_DIR}/${proc}.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  log "timed out after ${secs}s waiting for ${what}"
  [[ -z "$proc" ]] || { log "last lines of ${LOG_DIR}/${proc}.log:"; tail -n 30 "${LOG_DIR}/${proc}.log" >&2 || true; }
  return 1
}

# as_root CMD...: run CMD as root (directly, or through sudo when not root).
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo -n "$@" || die "need root for: $* (run it yourself, or allow passwordless sudo)"
  else
    die "need root for: $*"
  fi
}

# apt_install PKG...: install Debian packages non-interactively without
# starting any service they ship (the harness runs its own throwaway servers).
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* yourself"
  log "installing $* with apt-get (one time)"
  local policy=/usr/sbin/policy-rc.d added=0
  if [[ ! -e "$policy" ]]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy"
    added=1
  fi
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 >&2 || rc=$?
  [[ $rc -ne 0 ]] || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "$@" >&2 || rc=$?
  [[ $added -eq 0 ]] || as_root rm -f "$policy"
  [[ $rc -eq 0 ]] || die "apt-get install $* failed"
}

# Debian packages behind the real node and the image builds: containerd and
# runc run the containers, the CNI plugins (bridge, host-local, loopback,
# portmap) give pods their network, iptables carries kube-proxy's and our own
# forwarding rules, buildah builds the images from scratch without a daemon.
CNI_BIN_DIR=/usr/lib/cni
NODE_PACKAGES=(containerd runc buildah containernetworking-plugins iptables)

# ensure_node_packages: install what is missing, once (idempotent: a second
# call only checks that the commands are there).
ensure_node_packages() {
  local missing=() c
  for c in containerd runc buildah iptables; do command -v "$c" >/dev/null || missing=1; done
  [[ -x "${CNI_BIN_DIR}/bridge" && -x "${CNI_BIN_DIR}/host-local" && -x "${CNI_BIN_DIR}/loopback" ]] || missing=1
  [[ ${#missing[@]} -eq 0 ]] || apt_install "${NODE_PACKAGES[@]}"
}
