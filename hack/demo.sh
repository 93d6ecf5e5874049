#!/usr/bin/env bash
# `make demo` / `make demo-down`: the whole platform on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "make demo is not available yet: it lands with the demo issue." >&2
echo "Meanwhile: make cluster-up; eval \"\$(make -s cluster-env)\"; see README.md." >&2
exit 1
