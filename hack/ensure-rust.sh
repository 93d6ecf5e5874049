#!/usr/bin/env bash
# Makes sure the Rust toolchain named in rust-toolchain.toml, with rustfmt and
# clippy, is usable. rustup reads rust-toolchain.toml itself; this only reports
# clearly when something is missing instead of failing deep inside a build.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/env.sh
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
cargo --version
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
