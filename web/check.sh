#!/usr/bin/env bash
# Fails when the committed web/dist differs from what the sources build to
# (as the CRD YAML is checked). Run after `npm ci` in web/.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node build.mjs --out "$tmp/dist" --quiet
if ! diff -r "$tmp/dist" dist >/dev/null; then
  echo "web/dist is out of date with web/src: run 'npm run build' in web/ and commit web/dist" >&2
  diff -rq "$tmp/dist" dist >&2 || true
  exit 1
fi
echo "web/dist matches web/src ($(node -e 'const m=require("./dist/manifest.json");console.log(m.total.gzip+" bytes gzipped")'))"
