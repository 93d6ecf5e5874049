#!/usr/bin/env python3
"""Writes the values table of charts/switchboard/README.md from values.yaml.

A value is documented by a `# -- text` comment on the line(s) just above its key (the
helm-docs convention); its type and default come from the parsed YAML. The table sits
between the `<!-- values-table:start -->` and `<!-- values-table:end -->` markers.

  charts/values-table.py           rewrite the README's table
  charts/values-table.py --check   exit 1 when the README's table differs (drift check)
"""
import json
import pathlib
import re
import sys

import yaml

CHART = pathlib.Path(__file__).resolve().parent / "switchboard"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):")


def documented(values_text):
    """(dotted key, description) in file order, for every key with a `# --` comment."""
    rows, stack, doc = [], [], None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            doc = stripped[4:].strip()
            continue
        if stripped.startswith("#") and doc is not None:
            doc += " " + stripped.lstrip("#").strip()
            continue
        match = KEY.match(line)
        if not match:
            if not stripped:
                doc = None
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if doc is not None:
            rows.append((".".join(k for _, k in stack), doc))
        doc = None
    return rows


def lookup(values, dotted):
    for part in dotted.split("."):
        values = values[part]
    return values


def type_of(value):
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), "string"
    )


def table(values_text):
    values = yaml.safe_load(values_text)
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for key, doc in documented(values_text):
        value = lookup(values, key)
        default = json.dumps(value, separators=(", ", ": "))
        doc = doc.replace("|", "\\|")
        lines.append(f"| `{key}` | {type_of(value)} | `{default}` | {doc} |")
    return "\n".join(lines)


def main():
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{table((CHART / 'values.yaml').read_text())}\n{END}{tail}"
    if "--check" in sys.argv[1:]:
        if new != readme:
            print("values-table: charts/switchboard/README.md is stale; run charts/values-table.py", file=sys.stderr)
            sys.exit(1)
        return
    readme_path.write_text(new)


if __name__ == "__main__":
    main()
