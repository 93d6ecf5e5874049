#!/usr/bin/env bash
# Tests of the Helm chart charts/switchboard.
#
#   charts/test.sh          the static checks, then (when the local cluster is up, e.g.
#                           `make cluster-up && eval "$(make -s cluster-env)"`) every
#                           render applied with `kubectl apply --dry-run=server` and the
#                           bad values refused by `helm install`
#   charts/test.sh --e2e    also charts/e2e.sh: install, upgrade and uninstall on the cluster
#
# Static: chart version = crate version; crds/, the operator's rules, the dashboards and
# the PrometheusRule identical to config/crd/, config/rbac/cluster_role.yaml and
# monitoring/ (drift); the values table of the README up
# to date; `helm lint --strict` with every ci/*-values.yaml; the chart-testing
# conventions `ct lint` checks (by hand: Chart.yaml fields, YAML without duplicate keys,
# tabs or trailing spaces); the bad values files in charts/tests/bad-values refused with
# the message their `# expect:` line names; the ServiceMonitor and PrometheusRule refused
# without the Prometheus Operator's CRDs (the other renders pass --api-versions for them);
# the Kustomize bases and the chart give the same operator objects
# (charts/tests/same-objects.py).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
chart=charts/switchboard
export PATH="$HOME/.cache/switchboard/bin:$PATH"
tmp="$(mktemp -d)"
created=() # objects this script created in the cluster, deleted at the end
cleanup() {
  if ((${#created[@]})); then kubectl delete --wait=false --ignore-not-found "${created[@]}" >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*" >&2; }

for tool in helm kubectl python3; do
  command -v "$tool" >/dev/null || { echo "charts/test.sh: $tool not found (make binaries)" >&2; exit 1; }
done

# --- versions -------------------------------------------------------------------
crate_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
chart_version="$(sed -n 's/^version: //p' "$chart/Chart.yaml")"
app_version="$(sed -n 's/^appVersion: "\(.*\)"/\1/p' "$chart/Chart.yaml")"
if [[ "$chart_version" == "$crate_version" && "$app_version" == "$crate_version" ]]; then
  pass "version: chart ${chart_version}, appVersion ${app_version} = crate ${crate_version}"
else
  fail "version: chart ${chart_version}, appVersion ${app_version}, crate ${crate_version} (Chart.yaml must follow Cargo.toml)"
fi
image="$(helm template switchboard "$chart" | sed -n 's/^ *image: //p' | head -1)"
if [[ "$image" == *":${app_version}" ]]; then
  pass "version: image tag defaults to appVersion (${image})"
else
  fail "version: default image ${image} is not tagged ${app_version}"
fi

# --- drift ----------------------------------------------------------------------
drift() { # drift SOURCE COPY
  if cmp -s "$1" "$2"; then pass "drift: $2 = $1"; else fail "drift: $2 differs from $1 (cp $1 $2)"; fi
}
for f in config/crd/*.yaml; do
  [[ "$(basename "$f")" == kustomization.yaml ]] && continue
  drift "$f" "$chart/crds/$(basename "$f")"
done
for f in "$chart"/crds/*.yaml; do
  [[ -e "config/crd/$(basename "$f")" ]] || fail "drift: $f has no source in config/crd/"
done
for f in monitoring/dashboards/*.json; do drift "$f" "$chart/files/dashboards/$(basename "$f")"; done
for f in "$chart"/files/dashboards/*.json; do
  [[ -e "monitoring/dashboards/$(basename "$f")" ]] || fail "drift: $f has no source in monitoring/dashboards/"
done
drift monitoring/alerts/prometheusrule.yaml "$chart/files/prometheusrule.yaml"
drift config/rbac/cluster_role.yaml "$chart/files/cluster_role.yaml"
if python3 charts/values-table.py --check; then pass "drift: README values table"; else fail "drift: README values table"; fi

# --- chart-testing conventions and lint ------------------------------------------
if python3 - "$chart" <<'PY'
import pathlib, re, sys, yaml

chart = pathlib.Path(sys.argv[1])
errors = []

class Strict(yaml.SafeLoader):
    pass

def no_duplicates(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    for k in set(keys):
        if keys.count(k) > 1:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {k!r}", node.start_mark)
    return loader.construct_mapping(node, deep)

Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, no_duplicates)
files = [chart / "Chart.yaml", chart / "values.yaml", *sorted((chart / "ci").glob("*"))]
for f in files:
    text = f.read_text()
    try:
        yaml.load(text, Loader=Strict)
    except yaml.YAMLError as e:
        errors.append(f"{f}: {e}")
    for n, line in enumerate(text.splitlines(), 1):
        if "\t" in line:
            errors.append(f"{f}:{n}: tab")
        if line != line.rstrip():
            errors.append(f"{f}:{n}: trailing space")
    if not text.endswith("\n"):
        errors.append(f"{f}: no newline at the end")
    if f.parent.name == "ci" and not f.name.endswith("-values.yaml"):
        errors.append(f"{f}: chart-testing reads only ci/*-values.yaml")
meta = yaml.safe_load((chart / "Chart.yaml").read_text())
for key in ("apiVersion", "name", "version", "appVersion", "description", "type"):
    if not meta.get(key):
        errors.append(f"Chart.yaml: {key} missing")
if meta.get("apiVersion") != "v2":
    errors.append("Chart.yaml: apiVersion must be v2")
if meta.get("name") != chart.name:
    errors.append(f"Chart.yaml: name {meta.get('name')!r} differs from the directory {chart.name!r}")
if not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", str(meta.get("version"))):
    errors.append(f"Chart.yaml: version {meta.get('version')!r} is not SemVer 2")
if not (chart / "README.md").exists() or not (chart / "templates" / "NOTES.txt").exists():
    errors.append("README.md and templates/NOTES.txt are expected")
for e in errors:
    print(f"ct conventions: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
then pass "chart-testing conventions (Chart.yaml, YAML lint, ci/*-values.yaml)"; else fail "chart-testing conventions"; fi

ci_values=("$chart"/ci/*-values.yaml)
for values in "${ci_values[@]}"; do
  if out="$(helm lint --strict "$chart" -f "$values" 2>&1)"; then
    pass "helm lint --strict -f ${values#"$chart/"}"
  else
    fail "helm lint --strict -f ${values#"$chart/"}"; echo "$out" >&2
  fi
done

# --- the Prometheus Operator's kinds -----------------------------------------------
# The chart refuses a ServiceMonitor or PrometheusRule the cluster does not serve; the
# renders below stand for a cluster with those CRDs (as the dry-runs install them).
prometheus_apis=(--api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PrometheusRule)
for value in metrics.serviceMonitor.enabled prometheusRule.enabled; do
  if out="$(helm template switchboard "$chart" --set "$value=true" 2>&1)"; then
    fail "prometheus: --set ${value}=true renders without the Prometheus Operator's CRDs"
  elif [[ "$out" != *"${value} needs the Prometheus Operator's CRDs"* ]]; then
    fail "prometheus: --set ${value}=true refused, but not for the missing CRDs:"; echo "$out" >&2
  elif ! helm template switchboard "$chart" --set "$value=true" "${prometheus_apis[@]}" >/dev/null; then
    fail "prometheus: --set ${value}=true refused although the cluster serves the CRDs"
  else
    pass "prometheus: ${value} refused without the Prometheus Operator's CRDs, rendered with them"
  fi
done

# --- values that become operator flags --------------------------------------------
# Each such value renders into the operator container's args, and only when set away
# from its default (so the default render stays equal to the Kustomize base).
operator_args() { # operator_args HELM_ARGS...: the operator container's args, one a line
  helm template switchboard "$chart" -n switchboard-system "${prometheus_apis[@]}" "$@" | python3 -c '
import sys, yaml
for doc in yaml.safe_load_all(sys.stdin):
    if doc and doc.get("kind") == "Deployment":
        for c in doc["spec"]["template"]["spec"]["containers"]:
            if c["name"] == "operator":
                print("\n".join(c.get("args", [])))'
}
default_args="$(operator_args)"
for flag in --log-format --otlp-endpoint --runtime-image-pull-policy --runtime-image-pull-secrets; do
  if grep -q -- "^${flag}=" <<<"$default_args"; then
    fail "flags: the default render passes ${flag} (defaults stay implicit)"
  else
    pass "flags: the default render leaves ${flag} at the operator's default"
  fi
done
flag_cases=(
  "logFormat=text|--log-format=text"
  "tracing.otlpEndpoint=http://otel-collector.monitoring:4318|--otlp-endpoint=http://otel-collector.monitoring:4318"
  "runtime.image.pullPolicy=Always|--runtime-image-pull-policy=Always"
  "runtime.image.pullPolicy=Never|--runtime-image-pull-policy=Never"
  "runtime.imagePullSecrets={regcred,mirror}|--runtime-image-pull-secrets=regcred,mirror"
)
for case in "${flag_cases[@]}"; do
  value="${case%%|*}" flag="${case#*|}"
  if grep -qxF -- "$flag" <<<"$(operator_args --set "$value")"; then
    pass "flags: --set ${value} renders ${flag}"
  else
    fail "flags: --set ${value} does not render ${flag} into the operator's args"
  fi
done
# Every flag the chart can render is one the operator knows (when it is built).
operator_bin="${CARGO_TARGET_DIR:-$root/target}/debug/switchboard-operator"
if [[ -x "$operator_bin" ]]; then
  help="$("$operator_bin" --help)"
  unknown=()
  while read -r flag; do
    [[ -z "$flag" ]] && continue
    grep -qF -- "${flag} " <<<"$help" || grep -qF -- "${flag}=" <<<"$help" \
      || grep -qE -- "${flag}( |$)" <<<"$help" || unknown+=("$flag")
  done <<<"$(operator_args -f "$chart/ci/all-options-values.yaml" | sed 's/=.*//' | sort -u)"
  if ((${#unknown[@]})); then
    fail "flags: the chart renders flags ${operator_bin##*/} does not know: ${unknown[*]}"
  else
    pass "flags: every flag of the all-options render is in ${operator_bin##*/} --help"
  fi
else
  echo "skip the flag check against the operator binary: ${operator_bin} not built" >&2
fi

# --- Kustomize and the chart agree -------------------------------------------------
kubectl kustomize config/default >"$tmp/kustomize.yaml"
# The images as the Kustomize base pins them (a static tag there, appVersion in the chart).
k_image="$(sed -n 's/^ *image: //p' "$tmp/kustomize.yaml" | head -1)"
k_runtime="$(sed -n 's/^ *- --runtime-image=//p' "$tmp/kustomize.yaml" | head -1)"
helm template switchboard "$chart" -n switchboard-system \
  --set "image.repository=${k_image%:*}" --set "image.tag=${k_image##*:}" \
  --set "runtime.image.repository=${k_runtime%:*}" --set "runtime.image.tag=${k_runtime##*:}" \
  >"$tmp/helm-kustomize.yaml"
if out="$(python3 charts/tests/same-objects.py "$tmp/kustomize.yaml" "$tmp/helm-kustomize.yaml" 2>&1)"; then
  pass "$out"
else
  fail "Kustomize and chart differ"; echo "$out" >&2
fi

# --- the cluster --------------------------------------------------------------------
cluster=false
if [[ -n "${KUBECONFIG:-}" ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
  cluster=true
else
  echo "skip the server dry-runs and helm install checks: no cluster (make cluster-up; eval \"\$(make -s cluster-env)\")" >&2
fi

# --- bad values refused, naming the value -------------------------------------------
bad_files=(charts/tests/bad-values/*.yaml)
for values in "${bad_files[@]}"; do
  expect="$(sed -n 's/^# expect: //p' "$values")"
  name="$(basename "$values" .yaml)"
  if $cluster; then
    cmd=(helm install "chart-test-bad" "$chart" -n chart-test-bad --dry-run=server -f "$values")
  else
    cmd=(helm template "chart-test-bad" "$chart" -f "$values")
  fi
  if out="$("${cmd[@]}" 2>&1)"; then
    fail "bad values ${name}: accepted by ${cmd[*]:0:2}"
  elif [[ "$out" != *"$expect"* ]]; then
    fail "bad values ${name}: refused, but the message does not name ${expect}:"; echo "$out" >&2
  else
    pass "bad values ${name}: refused by ${cmd[*]:0:2}: $(grep -F -- "$expect" <<<"$out" | head -1 | sed 's/^ *//')"
  fi
done

# --- every render applied with --dry-run=server ---------------------------------------
if $cluster; then
  export GOTOOLCHAIN=local PATH="$PATH:/usr/local/go/bin"
  # The Prometheus Operator's CRDs, for the ServiceMonitor and PrometheusRule renders.
  for crd in servicemonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com; do
    kubectl get crd "$crd" >/dev/null 2>&1 || created+=("crd/$crd")
  done
  kubectl apply --server-side -f "$(hack/servicemonitor-crd.sh --path)" >/dev/null
  prom_dir="$(dirname "$(hack/servicemonitor-crd.sh --path)")"
  prometheusrule_crd="$(cd "$prom_dir" && GOFLAGS=-mod=mod go mod download -json \
    github.com/prometheus-operator/prometheus-operator@v0.85.0 | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"
  kubectl apply --server-side -f "$prometheusrule_crd" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s \
    crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com >/dev/null
  # The namespaces the renders name; the operator's is restricted, as config/ makes it.
  for ns in switchboard-system sb-team-a sb-team-b sb-monitoring; do
    if ! kubectl get namespace "$ns" >/dev/null 2>&1; then
      kubectl create namespace "$ns" >/dev/null
      created+=("namespace/$ns")
    fi
  done
  kubectl label namespace switchboard-system --overwrite pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted >/dev/null
  # --force-conflicts, as the Rust tests' install_crds does: on a shared cluster another
  # branch's tests may have applied their own version of the CRDs last.
  if out="$(kubectl apply --server-side --force-conflicts --dry-run=server -f "$chart/crds/" 2>&1)"; then
    pass "dry-run=server: crds/ ($(grep -c serverside-applied <<<"$out") CRDs)"
  else
    fail "dry-run=server: crds/"; echo "$out" >&2
  fi
  kubectl apply --server-side --force-conflicts -f "$chart/crds/" >/dev/null
  dry_run() { # dry_run LABEL FILE
    local out
    if ! out="$(kubectl apply --dry-run=server -f "$2" 2>&1)"; then
      fail "dry-run=server: $1"; echo "$out" >&2
    elif grep -i "warning" <<<"$out" | grep -qv "last-applied-configuration"; then
      # PodSecurity (the namespace warns at restricted), deprecations, unknown fields
      fail "dry-run=server: $1 applied with warnings"; echo "$out" >&2
    else
      pass "dry-run=server: $1 ($(grep -c 'server dry run' <<<"$out") objects: $(grep 'server dry run' <<<"$out" | awk '{print $1}' | cut -d/ -f1 | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//'))"
    fi
  }
  for values in "${ci_values[@]}"; do
    helm template switchboard "$chart" -n switchboard-system "${prometheus_apis[@]}" -f "$values" >"$tmp/render.yaml"
    dry_run "helm template -f ${values#"$chart/"}" "$tmp/render.yaml"
  done
  dry_run "kubectl kustomize config/default" "$tmp/kustomize.yaml"
fi

if [[ "${1:-}" == "--e2e" ]]; then
  if charts/e2e.sh; then pass "charts/e2e.sh"; else fail "charts/e2e.sh"; fi
fi

echo "charts/test.sh: ${passed} passed, ${failed} failed"
[[ "$failed" == 0 ]]
