#!/usr/bin/env bash
# Builds (or reuses from the cache) the binaries of the local test harness:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kubelet, kube-proxy, kwok, helm and CoreDNS, at the versions pinned in hack/versions.env, from source through the
# Go module proxy and the wrapper modules in hack/gomod/ (no prebuilt downloads).
#
# Binaries are cached outside the repo as
#   ${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}/bin/<name>-<version>
# with a convenience symlink <name> -> <name>-<version> next to them, so a
# second run only checks that the files exist. Builds are atomic (temp file +
# mv) and serialised with a lock, so concurrent runs are safe.
#
# Usage: hack/build-binaries.sh [--print-bin-dir] [name...]
#   no names: build everything; --print-bin-dir: print the bin dir and exit.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HACK_DIR}/versions.env"
GOMOD_DIR="${HACK_DIR}/gomod"
CACHE_DIR="${SWITCHBOARD_CACHE:-${HOME}/.cache/switchboard}"
BIN_DIR="${CACHE_DIR}/bin"

log() { echo "build-binaries: $*" >&2; }
die() { log "error: $*"; exit 1; }

ALL=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy kwok helm coredns)

version_of() {
  case "$1" in
    etcd) echo "$ETCD_VERSION" ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy) echo "$KUBERNETES_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    *) return 1 ;;
  esac
}

# Rough first-build times on 2 cores (measured), for the progress lines. Later
# Kubernetes binaries reuse the packages compiled for the earlier ones.
estimate_of() {
  case "$1" in
    etcd) echo "~2 min" ;;
    kube-apiserver) echo "~10 min" ;;
    kube-controller-manager) echo "~4 min" ;;
    kube-scheduler) echo "~1 min" ;;
    kubectl) echo "~1 min" ;;
    kubelet) echo "~7 min" ;;
    kube-proxy) echo "~2 min" ;;
    kwok) echo "~4 min" ;;
    helm) echo "~4 min" ;;
    coredns) echo "~3 min" ;;
  esac
}

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
for n in "${names[@]}"; do version_of "$n" >/dev/null || die "unknown binary '$n' (one of: ${ALL[*]})"; done

mkdir -p "$BIN_DIR"

# link NAME VERSION: point the unversioned symlink at the pinned version.
link() {
  local name=$1 version=$2 tmp
  if [[ "$(readlink "${BIN_DIR}/${name}" 2>/dev/null || true)" != "${name}-${version}" ]]; then
    tmp="${BIN_DIR}/.${name}.link.$$"
    ln -sfn "${name}-${version}" "$tmp"
    mv -Tf "$tmp" "${BIN_DIR}/${name}"
  fi
}

# kwok's default Stages (node init + heartbeat with lease, pod ready/complete/
# delete: what kwokctl enables when no stages are configured), copied from the
# kwok module so they always match the kwok binary.
kwok_stages_file() { echo "${BIN_DIR}/kwok-stages-${KWOK_VERSION}.yaml"; }

missing=()
for n in "${names[@]}"; do
  v=$(version_of "$n")
  if [[ -x "${BIN_DIR}/${n}-${v}" ]] && { [[ "$n" != kwok ]] || [[ -s "$(kwok_stages_file)" ]]; }; then
    link "$n" "$v"
  else
    missing+=("$n")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "all binaries cached in ${BIN_DIR}"
  exit 0
fi

# ---- from here on we compile -------------------------------------------------
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then PATH="/usr/local/go/bin:${PATH}"; fi
command -v go >/dev/null || die "go not found in PATH (install Go >= ${GO_MIN_VERSION}, e.g. /usr/local/go/bin)"
gov=$(go env GOVERSION) # e.g. go1.26.8
if [[ "$(printf '%s\n%s\n' "go${GO_MIN_VERSION}" "$gov" | sort -V | head -n1)" != "go${GO_MIN_VERSION}" ]]; then
  die "$gov is too old; the pinned modules need go ${GO_MIN_VERSION} or newer"
fi

log "to build: ${missing[*]} (compiling all nine from source takes ~35 min on 2 cores; cached in ${BIN_DIR} afterwards)"

# One build at a time per cache (two `make cluster-up` in parallel must not
# compile the same thing twice or race on the files).
if command -v flock >/dev/null; then
  exec 9>"${CACHE_DIR}/.build.lock"
  if ! flock -n 9; then
    log "another build is running in ${CACHE_DIR}; waiting for it"
    flock 9
  fi
fi

# The wrapper modules must match versions.env (regenerate with hack/build-gomod.sh).
check_wrapper() {
  local dir=$1 module=$2 version=$3
  grep -qE "^(require)?[[:space:]]*${module//./\\.} ${version//./\\.}([[:space:]]|$)" "${GOMOD_DIR}/${dir}/go.mod" ||
    die "hack/gomod/${dir}/go.mod does not require ${module} ${version}; run hack/build-gomod.sh ${dir}"
}

# module_info WRAPPER_DIR MODULE VERSION: `go mod download -json` of a release
# (its .info carries the release time and, usually, the upstream commit).
module_info() {
  (cd "${GOMOD_DIR}/$1" && go mod download -json "$2@$3" 2>/dev/null) || true
}
# origin_hash WRAPPER_DIR MODULE VERSION: the upstream commit, if the proxy knows it.
origin_hash() {
  module_info "$@" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]\{40\}\)".*/\1/p' | head -n1
}
# release_date WRAPPER_DIR MODULE VERSION: when the release was tagged (from its .info).
release_date() {
  local info
  info=$(module_info "$@" | sed -n 's/^[[:space:]]*"Info": "\([^"]*\)".*/\1/p' | head -n1)
  [[ -f "$info" ]] && sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info"
  return 0
}

k8s_ldflags() {
  local v=$KUBERNETES_VERSION major minor commit date pkg flags=""
  major=${v#v}; major=${major%%.*}
  minor=${v#v"${major}".}; minor=${minor%%.*}
  commit=$(origin_hash kubernetes k8s.io/kubernetes "$v")
  date=$(release_date kubernetes k8s.io/kubernetes "$v")
  [[ -n "$date" ]] || date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${date}"
    [[ -z "$commit" ]] || flags+=" -X ${pkg}.gitCommit=${commit}"
  done
  echo "$flags"
}

# build NAME VERSION WRAPPER_DIR PACKAGE EXTRA_LDFLAGS
build() {
  local name=$1 version=$2 dir=$3 pkg=$4 extra=$5 out tmp start secs
  out="${BIN_DIR}/${name}-${version}"
  tmp="${BIN_DIR}/.${name}-${version}.tmp.$$"
  if [[ -x "$out" ]]; then link "$name" "$version"; return 0; fi # built by a concurrent run
  log "building ${name} ${version} (first time: $(estimate_of "$name"), 2 cores)"
  start=$(date +%s)
  trap 'rm -f "$tmp"' EXIT
  (cd "${GOMOD_DIR}/${dir}" && go build -trimpath -ldflags "-s -w ${extra}" -o "$tmp" "$pkg") ||
    die "building ${name} ${version} failed"
  mv -f "$tmp" "$out"
  trap - EXIT
  link "$name" "$version"
  secs=$(($(date +%s) - start))
  log "built ${name} ${version} in $((secs / 60))m$((secs % 60))s -> ${out}"
}

write_kwok_stages() {
  local out dir tmp f
  out=$(kwok_stages_file)
  [[ -s "$out" ]] && return 0
  dir=$(module_info kwok "$KWOK_MODULE" "$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
  [[ -d "${dir}/kustomize/stage" ]] || die "source of ${KWOK_MODULE}@${KWOK_VERSION} not found in the module cache"
  tmp="${out}.tmp.$$"
  {
    echo "# kwok ${KWOK_VERSION} default stages, from ${KWOK_MODULE}@${KWOK_VERSION}/kustomize/stage"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"
      cat "${dir}/kustomize/stage/${f}"
    done
  } >"$tmp"
  mv -f "$tmp" "$out"
}

for n in "${missing[@]}"; do
  case "$n" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
      check_wrapper kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION"
      build "$n" "$KUBERNETES_VERSION" kubernetes "k8s.io/kubernetes/cmd/${n}" "$(k8s_ldflags)"
      ;;
    etcd)
      check_wrapper etcd "$ETCD_MODULE" "$ETCD_VERSION"
      c=$(origin_hash etcd "$ETCD_MODULE" "$ETCD_VERSION")
      build etcd "$ETCD_VERSION" etcd "$ETCD_MODULE" \
        "-X go.etcd.io/etcd/api/v3/version.GitSHA=${c:-${ETCD_VERSION}}"
      ;;
    kwok)
      check_wrapper kwok "$KWOK_MODULE" "$KWOK_VERSION"
      # KubeVersion is what fake nodes report as their kubelet version.
      build kwok "$KWOK_VERSION" kwok "${KWOK_MODULE}/cmd/kwok" \
        "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}"
      write_kwok_stages
      ;;
    coredns)
      check_wrapper coredns "$COREDNS_MODULE" "$COREDNS_VERSION"
      c=$(origin_hash coredns "$COREDNS_MODULE" "$COREDNS_VERSION")
      build coredns "$COREDNS_VERSION" coredns . "${c:+-X ${COREDNS_MODULE}/coremain.GitCommit=${c:0:7}}"
      ;;
    helm)
      check_wrapper helm "$HELM_MODULE" "$HELM_VERSION"
      c=$(origin_hash helm "$HELM_MODULE" "$HELM_VERSION")
      build helm "$HELM_VERSION" helm "${HELM_MODULE}/cmd/helm" \
        "-X ${HELM_MODULE}/internal/version.version=${HELM_VERSION} -X ${HELM_MODULE}/internal/version.gitTreeState=clean${c:+ -X ${HELM_MODULE}/internal/version.gitCommit=${c}}"
      ;;
  esac
done
log "all binaries ready in ${BIN_DIR}"
