#!/usr/bin/env python3
"""Checks that the Kustomize bases (config/default) and the chart, rendered with the
values that mirror them, give the same operator objects.

  same-objects.py KUSTOMIZE.yaml HELM.yaml

Every object of the Kustomize render must exist in the chart's render (same kind, name
and namespace; the Namespace and the CRDs excepted: the chart's release namespace and
crds/ stand for them) with the same content, where:
- labels, annotations and label selectors of Kustomize must be a subset of the chart's
  (the chart adds app.kubernetes.io/instance, version, managed-by and helm.sh/chart);
- the pod template's affinity is the chart's own addition (spreading the replicas).
The chart may render more objects (the PodDisruptionBudget, the metrics Service).
"""
import sys

import yaml

SKIP_KINDS = {"Namespace", "CustomResourceDefinition"}
MAP_SUBSET_KEYS = {"labels", "annotations", "matchLabels"}


def load(path):
    with open(path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    return {
        (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")): o
        for o in objects
        if o["kind"] not in SKIP_KINDS
    }


def compare(want, got, path, errors):
    if isinstance(want, dict) and isinstance(got, dict):
        subset = path.rsplit(".", 1)[-1] in MAP_SUBSET_KEYS
        for key, value in want.items():
            if key not in got:
                errors.append(f"{path}.{key}: in Kustomize, not in the chart")
            else:
                compare(value, got[key], f"{path}.{key}", errors)
        if not subset:
            for key in got.keys() - want.keys():
                if f"{path}.{key}" in CHART_ONLY:
                    continue
                errors.append(f"{path}.{key}: in the chart, not in Kustomize")
    elif isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            errors.append(f"{path}: {len(want)} items in Kustomize, {len(got)} in the chart")
        for i, (w, g) in enumerate(zip(want, got)):
            compare(w, g, f"{path}[{i}]", errors)
    elif want != got:
        errors.append(f"{path}: Kustomize {want!r}, chart {got!r}")


CHART_ONLY = {".spec.template.spec.affinity", ".spec.template.spec.containers[0].imagePullPolicy"}


def main():
    kustomize, helm = load(sys.argv[1]), load(sys.argv[2])
    errors = []
    for key, obj in sorted(kustomize.items()):
        if key not in helm:
            errors.append(f"{'/'.join(key)}: rendered by Kustomize, missing from the chart")
            continue
        object_errors = []
        compare(obj, helm[key], "", object_errors)
        errors += [f"{'/'.join(key)} {e}" for e in object_errors]
    for e in errors:
        print(f"same-objects: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"same-objects: {len(kustomize)} operator objects agree ({', '.join(k for k, _, _ in sorted(kustomize))})")


if __name__ == "__main__":
    main()
