#!/usr/bin/env bash
# A virtualenv at .switchboard/venv with the official OpenAI Python SDK (pinned in
# tests/python/requirements.txt), used by the tests as a real chat client.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.switchboard/venv
req=tests/python/requirements.txt
stamp=$venv/.requirements
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "installed $(tr '\n' ' ' < "$req")into $venv"
