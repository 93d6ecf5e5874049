#!/usr/bin/env bash
# `make test`: the whole check a submission must pass, on a fresh machine too.
# Brings up the local control plane and Postgres when they are not running (and
# stops them again afterwards), prepares the Python client used by the SDK tests,
# then runs fmt, clippy, the CRD drift check, and every unit and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

step "Toolchains"
# Rust from rustup and Go from its usual place, even when the caller's PATH lacks them.
for dir in "$HOME/.cargo/bin" /usr/local/go/bin; do
  case ":$PATH:" in *":$dir:"*) ;; *) [ -d "$dir" ] && PATH="$dir:$PATH" ;; esac
done
export PATH
hack/ensure-rust.sh

started_cluster=0
cleanup() {
  if [ "$started_cluster" = 1 ]; then
    step "Stopping the local cluster this run started"
    hack/cluster.sh down || true
  fi
}
trap cleanup EXIT

# Compile while the control plane builds or starts: the two are independent.
step "Building the workspace (tests included)"
cargo build --workspace --all-targets --locked

if hack/cluster.sh status >/dev/null 2>&1; then
  step "Using the local cluster that is already up; importing the project's images (debug build)"
  hack/cluster.sh images
else
  step "Starting the local cluster (first run builds it: see README)"
  started_cluster=1
  hack/cluster.sh up
fi
eval "$(hack/cluster.sh env)"

step "Python client for the SDK tests"
hack/python-env.sh
export SWITCHBOARD_PYTHON="$root/.switchboard/venv/bin/python"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Generated CRDs match the types"
cargo run -q -p crds --bin crdgen -- --check

step "Unit and end-to-end tests"
cargo test --workspace --locked --no-fail-fast
