#!/usr/bin/env bash
# Everything the web chat is checked by, in the order make test should run it:
# the drift check, the type check, the unit tests and the browser tests.
# Needs ./setup.sh once, and the agent-runtime and mock-llm binaries for the
# browser tests (see README.md); WEB_SKIP_BROWSER=1 leaves those out.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules ] || npm ci --no-audit --no-fund
./check.sh
npx tsc --noEmit -p .
node build.mjs --tests --out "$(mktemp -d)/dist" --quiet
node --test .build/test/
if [ "${WEB_SKIP_BROWSER:-0}" != 1 ]; then
  node --test --test-concurrency=1 --test-timeout=900000 e2e/
fi
