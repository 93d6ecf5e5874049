#!/usr/bin/env bash
# Builds the project's OCI images offline with buildah, from scratch:
#   switchboard-operator       (images/operator/Containerfile)
#   switchboard-agent-runtime  (images/agent-runtime/Containerfile)
# Each holds one binary, exactly the shared libraries it links, the CA
# certificates and the non-root user 65532 (images/rootfs.sh); no shell, no
# package manager. The local build does not re-describe the image: it runs
# images/rootfs.sh on the locally built binary and hands buildah the stage after
# the last FROM of the Containerfile as written, with its one
# `COPY --from=build /rootfs/ /` pointed at that local rootfs. So the
# Containerfile (for Docker/Podman users) and `make images` cannot drift.
#
#   hack/images.sh build [--profile release|debug] [--import SOCKET]
#       release (default, `make images`): `cargo build --release` first.
#       debug (the test and demo path): the debug binaries `cargo build` already
#         made, so a cold `make test` does not pay for a release build; the tag
#         says `-debug`. Debug binaries are larger and slower, same image otherwise.
#       --import SOCKET: also import the images into that containerd (namespace
#         k8s.io, where the kubelet looks).
#   hack/images.sh env [--profile ...]  print `export SWITCHBOARD_..._IMAGE=...` lines
#       of the last build (from .switchboard/images-<profile>.env).
#
# Tags: localhost/<image>:<crate version>-<git commit>[-dirty][-debug].
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_PREFIX=images
# shellcheck source=cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

# name  binary  crate  Containerfile dir
IMAGES=(
  "switchboard-operator switchboard-operator operator operator"
  "switchboard-agent-runtime agent-runtime agent-runtime agent-runtime"
)

profile=release import_sock="" cmd=${1:-build}
[[ $# -eq 0 ]] || shift
while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --import) import_sock=$2; shift 2 ;;
    *) die "unknown argument $1 (usage: hack/images.sh build|env [--profile release|debug] [--import SOCKET])" ;;
  esac
done
[[ "$profile" == release || "$profile" == debug ]] || die "--profile is release or debug"
ENV_OUT="${STATE_ROOT}/images-${profile}.env"

if [[ "$cmd" == env ]]; then
  [[ -s "$ENV_OUT" ]] || die "no ${profile} images built yet: hack/images.sh build --profile ${profile}"
  cat "$ENV_OUT"
  exit 0
fi
[[ "$cmd" == build ]] || die "unknown command ${cmd} (build|env)"

ensure_node_packages
for dir in "$HOME/.cargo/bin"; do
  case ":$PATH:" in *":$dir:"*) ;; *) [[ -d "$dir" ]] && PATH="$dir:$PATH" ;; esac
done
cd "$REPO_ROOT"
target_dir="${CARGO_TARGET_DIR:-${REPO_ROOT}/target}"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo nogit)
tag="${version}-${commit}"
git diff --quiet HEAD -- 2>/dev/null || tag+="-dirty"
[[ "$profile" == release ]] || tag+="-${profile}"

if [[ "$profile" == release ]]; then
  log "cargo build --release (first time: ~15 min on 2 cores)"
  cargo build --release --locked -p operator -p agent-runtime --bin switchboard-operator --bin agent-runtime
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: >"${ENV_OUT}.tmp"

# final_stage CONTAINERFILE OUT: the instructions after the last FROM, with the
# rootfs copied from the build context instead of the build stage.
final_stage() {
  local from_line
  from_line=$(grep -n '^FROM ' "$1" | tail -n1 | cut -d: -f1)
  [[ "$(sed -n "${from_line}p" "$1")" == "FROM scratch" ]] || die "$1: the last stage must be FROM scratch"
  grep -c '^COPY --from=build /rootfs/ /$' "$1" >/dev/null || die "$1: expected 'COPY --from=build /rootfs/ /'"
  tail -n "+${from_line}" "$1" | sed 's#^COPY --from=build /rootfs/ /$#COPY rootfs/ /#' >"$2"
  if grep -q -- '--from=' "$2"; then die "$1: the final stage may copy only the rootfs"; fi
}

for spec in "${IMAGES[@]}"; do
  read -r image bin _crate dir <<<"$spec"
  binary="${target_dir}/${profile}/${bin}"
  [[ -x "$binary" ]] || die "${binary} missing: cargo build ${profile/debug/} -p ${_crate} first"
  ctx="${work}/${image}"
  mkdir -p "$ctx"
  images/rootfs.sh "$binary" "$bin" "${ctx}/rootfs"
  final_stage "images/${dir}/Containerfile" "${ctx}/Containerfile"
  ref="localhost/${image}:${tag}"
  log "building ${ref} from images/${dir}/Containerfile (final stage) with ${profile} ${bin}"
  buildah bud --quiet --layers=false --format oci --pull-never \
    --label "org.opencontainers.image.version=${tag}" \
    --label "org.opencontainers.image.revision=${commit}" \
    -f "${ctx}/Containerfile" -t "$ref" "$ctx" >/dev/null
  size=$(buildah images --format '{{.Size}}' "$ref" | head -n1)
  log "${ref}: ${size}"
  echo "${image}: ${ref} ${size}"
  var=$(echo "${image#switchboard-}" | tr 'a-z-' 'A-Z_')
  echo "export SWITCHBOARD_${var}_IMAGE=${ref}" >>"${ENV_OUT}.tmp"
  if [[ -n "$import_sock" ]]; then
    buildah push --quiet "$ref" "docker-archive:${ctx}/image.tar:${ref}" >/dev/null
    ctr --address "$import_sock" --namespace k8s.io images import --no-unpack=false "${ctx}/image.tar" >/dev/null
    log "imported ${ref} into ${import_sock}"
  fi
  rm -rf "${ctx}/rootfs"
done
mv -f "${ENV_OUT}.tmp" "$ENV_OUT"
