#!/usr/bin/env bash
# A virtualenv with pinned Python tools, made once and remade when its requirements
# change. Without arguments: .switchboard/venv with what the tests drive (pinned in
# tests/python/requirements.txt): the official OpenAI SDK as a real chat client, and
# schemathesis, which checks the runtime against its OpenAPI document.
#   hack/python-env.sh [VENV REQUIREMENTS]
# `make bench-compare` passes .switchboard/litellm and tools/litellm-requirements.txt
# (the LiteLLM proxy the bench measures the runtime against).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.switchboard/venv}
req=${2:-tests/python/requirements.txt}
stamp=$venv/.requirements
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "installed $(tr '\n' ' ' < "$req")into $venv"
