#!/usr/bin/env bash
# A virtualenv at .switchboard/venv with the Python tools the tests drive (pinned in
# tests/python/requirements.txt): the official OpenAI SDK as a real chat client, and
# schemathesis, which checks the runtime against its OpenAPI document.
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
