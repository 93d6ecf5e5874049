#!/usr/bin/env bash
# Installs Debian's `prometheus` package (prometheus and promtool) when promtool
# is missing; does nothing when it is already there. Used by monitoring/test.sh
# (promtool checks) and usable by the demo (a local Prometheus process). The
# package's own service is never started (apt_install blocks service starts).
# Prints the path of promtool.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_PREFIX=prometheus
# shellcheck source=cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

if ! command -v promtool >/dev/null 2>&1; then
  apt_install prometheus
fi
command -v promtool >/dev/null 2>&1 || die "the prometheus package is installed but promtool is not on PATH"
command -v promtool
