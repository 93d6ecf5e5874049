#!/usr/bin/env bash
# Prints the Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com/v1), taken
# from the prometheus-operator Go module at a pinned version, and caches it under
# ${SWITCHBOARD_CACHE:-~/.cache/switchboard}/crds/. The operator's end-to-end tests
# install it to exercise the ServiceMonitor path against the real schema.
#
#   hack/servicemonitor-crd.sh            print the CRD YAML
#   hack/servicemonitor-crd.sh --path     print the cached file's path
set -euo pipefail

PROMETHEUS_OPERATOR_MODULE=github.com/prometheus-operator/prometheus-operator
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CRD_FILE=example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml

cache="${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}/crds"
out="${cache}/servicemonitors-${PROMETHEUS_OPERATOR_VERSION}.yaml"

if [[ ! -s "$out" ]]; then
  command -v go >/dev/null || { echo "servicemonitor-crd: go is required" >&2; exit 1; }
  mkdir -p "$cache"
  # `go mod download -json` prints the module's extracted directory as "Dir".
  json="$(cd "$cache" && GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    go mod download -json "${PROMETHEUS_OPERATOR_MODULE}@${PROMETHEUS_OPERATOR_VERSION}")"
  dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  if [[ -z "$dir" || ! -f "${dir}/${CRD_FILE}" ]]; then
    echo "servicemonitor-crd: ${CRD_FILE} not found in ${PROMETHEUS_OPERATOR_MODULE}@${PROMETHEUS_OPERATOR_VERSION}" >&2
    printf '%s\n' "$json" >&2
    exit 1
  fi
  tmp="$(mktemp "${out}.XXXXXX")"
  cp "${dir}/${CRD_FILE}" "$tmp"
  mv -f "$tmp" "$out"
fi

if [[ "${1:-}" == "--path" ]]; then
  echo "$out"
else
  cat "$out"
fi
