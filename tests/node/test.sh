#!/usr/bin/env bash
# The official OpenAI Node SDK against the agent runtime: installs the pinned
# SDK from the lockfile (npm ci, when missing), then runs the tests. Needs the
# agent-runtime and mock-llm debug binaries ($AGENT_RUNTIME_BIN and
# $MOCK_LLM_BIN, else $CARGO_TARGET_DIR/debug, else target/debug), built by
# `cargo build -p agent-runtime -p mock-llm --bins`.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/openai ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
node --test --test-concurrency=1 --test-timeout=300000 .
