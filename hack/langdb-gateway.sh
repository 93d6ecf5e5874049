#!/usr/bin/env bash
# LangDB's AI Gateway, a Rust LLM gateway published on crates.io, built once per
# version into the cache outside the repo (~25 minutes of compiling on two cores;
# its Cargo.lock is used as published). Prints the path of its executable.
#   hack/langdb-gateway.sh
# `make bench-compare` measures the runtime side by side with it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/versions.env
source hack/versions.env
cache=${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/langdb-ai-gateway-${LANGDB_GATEWAY_VERSION}
bin=$cache/bin/ai-gateway
if [ ! -x "$bin" ]; then
  echo "building LangDB's AI Gateway ${LANGDB_GATEWAY_VERSION} from crates.io into $cache" >&2
  # The flags its README gives for `cargo install`.
  RUSTFLAGS="--cfg tracing_unstable --cfg aws_sdk_unstable" CARGO_TARGET_DIR="$cache/target" \
    nice cargo install --quiet --locked --root "$cache" "ai-gateway@${LANGDB_GATEWAY_VERSION}" >&2
  rm -rf "$cache/target"
fi
echo "$bin"
