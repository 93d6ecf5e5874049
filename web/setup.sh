#!/usr/bin/env bash
# Installs what the web chat's build and browser tests need: the npm packages
# from the lockfile and Debian's chromium (Playwright drives it; it downloads
# no browser of its own).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq chromium fonts-noto-core >/dev/null
  else
    echo "install Debian's chromium (sudo apt-get install chromium fonts-noto-core)" >&2
    exit 1
  fi
fi
