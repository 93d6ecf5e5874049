#!/usr/bin/env python3
"""Checks of the dashboards and alert rules that promtool does not make.

    check.py static                 dashboards are well formed (description, unit and
                                    data source on every panel, known variables),
                                    every query parses (through promtool), the
                                    PrometheusRule matches the rule file, every
                                    alert has a runbook section and a firing and a
                                    silent unit test
    check.py metrics [--without-operator] FILE...
                                    every metric and label the dashboards and rules
                                    name exists in these /metrics expositions
    check.py live [--without-operator] PROMETHEUS_URL
                                    every dashboard query (variables resolved
                                    through the data) returns at least one series
                                    from that Prometheus, and every rule evaluates
                                    without error

--without-operator leaves out the operator's dashboard and rules (for a run
without the operator). Python standard library only; promtool from PATH (or $PROMTOOL).
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent
REPO = ROOT.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RULES = ROOT / "alerts" / "switchboard.rules.yaml"
PROMETHEUS_RULE = ROOT / "alerts" / "prometheusrule.yaml"
RULE_TESTS = ROOT / "alerts" / "tests" / "switchboard.test.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"

# Labels Prometheus adds to every series of a target (not in the exposition).
TARGET_LABELS = {"namespace", "service", "pod", "job", "instance", "endpoint", "container"}
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__range": "1h", "__interval": "15s"}

failures = []
without_operator = False


def operator_part(text):
    return without_operator and ("switchboard_operator_" in text or "switchboard-operator" in text)


def fail(message):
    failures.append(message)
    print(f"FAIL {message}", file=sys.stderr)


def dashboards():
    for path in DASHBOARDS:
        if not operator_part(path.name):
            yield path.name, json.loads(path.read_text())


def panels(board):
    for panel in board["panels"]:
        if panel["type"] != "row":
            yield panel
        yield from (p for p in panel.get("panels", []) if p["type"] != "row")


def variables(board):
    return board.get("templating", {}).get("list", [])


def queries():
    """(dashboard, panel title, expr) for every panel target and query variable."""
    for name, board in dashboards():
        for panel in panels(board):
            for t in panel.get("targets", []):
                yield name, panel["title"], t.get("expr", "")
        for var in variables(board):
            if var["type"] == "query":
                yield name, f"variable {var['name']}", label_values_selector(var["definition"])


LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$", re.S)


def label_values_selector(definition):
    m = LABEL_VALUES.match(definition.strip())
    return m.group(1) if m else definition


def substitute(expr, values):
    def repl(m):
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


# ---------------------------------------------------------------------------
# static
# ---------------------------------------------------------------------------


def check_dashboards():
    uids = set()
    for name, board in dashboards():
        for key in ("uid", "title", "description", "schemaVersion", "panels", "templating"):
            if not board.get(key):
                fail(f"{name}: no {key}")
        if board.get("uid") in uids:
            fail(f"{name}: uid {board['uid']} used twice")
        uids.add(board.get("uid"))
        defined = {v["name"] for v in variables(board)}
        if "datasource" not in defined:
            fail(f"{name}: no datasource variable")
        ids = [p["id"] for p in board["panels"]]
        if len(ids) != len(set(ids)):
            fail(f"{name}: panel ids repeat")
        cells = set()
        for panel in board["panels"]:
            pos = panel.get("gridPos", {})
            if not all(k in pos for k in ("h", "w", "x", "y")) or pos["x"] + pos["w"] > 24:
                fail(f"{name}: panel {panel.get('title')!r} has a bad gridPos {pos}")
                continue
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    if (x, y) in cells:
                        fail(f"{name}: panel {panel.get('title')!r} overlaps another")
                        break
                    cells.add((x, y))
        for panel in panels(board):
            where = f"{name}: panel {panel.get('title')!r}"
            if not panel.get("title"):
                fail(f"{where}: no title")
            if not panel.get("description", "").strip():
                fail(f"{where}: no description")
            if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                fail(f"{where}: no unit")
            if not panel.get("datasource", {}).get("uid"):
                fail(f"{where}: no datasource")
            targets = panel.get("targets", [])
            if not targets:
                fail(f"{where}: no query")
            refs = [t.get("refId") for t in targets]
            if len(refs) != len(set(refs)) or None in refs:
                fail(f"{where}: refIds missing or repeated")
            for t in targets:
                if not t.get("datasource", {}).get("uid"):
                    fail(f"{where}: a query without datasource")
                if not t.get("expr", "").strip():
                    fail(f"{where}: an empty query")
                used = {a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", t.get("expr", ""))}
                for var in used - defined - set(BUILTIN_VARIABLES):
                    fail(f"{where}: uses undefined variable ${var}")
            for t in targets:
                lint_query(where, t.get("expr", ""))
        for var in variables(board):
            if var["type"] == "query" and not LABEL_VALUES.match(var.get("definition", "")):
                fail(f"{name}: variable {var['name']} is not a label_values() query")


def lint_query(where, expr):
    """Rules of grafana's dashboard-linter that apply here: rate() over
    $__rate_interval; counters and histogram buckets only inside rate()/increase()."""
    bare = strip_strings(expr)
    for window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", bare):
        if window != "$__rate_interval":
            fail(f"{where}: rate() over [{window}], not [$__rate_interval]")
    for window in re.findall(r"\bincrease\([^\[]*\[([^\]]+)\]", bare):
        if window not in ("$__rate_interval", "$__range") and not re.fullmatch(r"\d+[hd]", window):
            fail(f"{where}: increase() over [{window}]")
    counters = re.findall(r"\b(switchboard_\w+(?:_total|_bucket|_sum|_count))\b", bare)
    wrapped = re.findall(r"\b(?:rate|increase)\(\s*(switchboard_\w+(?:_total|_bucket|_sum|_count))\b", bare)
    for metric in sorted(set(counters)):
        if counters.count(metric) != wrapped.count(metric):
            fail(f"{where}: counter {metric} used outside rate()/increase()")


def check_queries_parse(promtool):
    """Every query, variables substituted, as a recording rule through promtool."""
    values = {"namespace": "tenant-a", "agent": "support", "channel": ".*", "model": ".*", **BUILTIN_VARIABLES}
    rules, origin = [], []
    for i, (name, title, expr) in enumerate(queries()):
        rules.append({"record": f"dashboard_query_{i}", "expr": substitute(expr, values)})
        origin.append(f"{name}: {title}")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f)
    result = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        for i in sorted({int(n) for n in re.findall(r"dashboard_query_(\d+)", output)}):
            fail(f"{origin[i]}: the query does not parse: {rules[i]['expr']}")
        fail(f"promtool refused dashboard queries:\n{output}")
    return len(rules)


def check_prometheus_rule():
    """The PrometheusRule's spec.groups is the rule file's groups, indented."""
    rule_lines = [l for l in RULES.read_text().split("\n") if l and not l.startswith("#")]
    cr = PROMETHEUS_RULE.read_text().split("\n")
    if "kind: \"PrometheusRule\"" not in cr and 'kind: "PrometheusRule"' not in "\n".join(cr):
        fail("prometheusrule.yaml is no PrometheusRule")
    try:
        start = cr.index("spec:") + 1
    except ValueError:
        fail("prometheusrule.yaml has no spec")
        return
    spec = [l[2:] if l.startswith("  ") else l for l in cr[start:] if l]
    if spec != rule_lines:
        fail("prometheusrule.yaml spec.groups differs from switchboard.rules.yaml (run monitoring/generate.py)")


def alert_rules():
    """(alert name, runbook url) in the rule file."""
    text = RULES.read_text()
    names = re.findall(r'^\s*- alert: "?(\w+)"?', text, re.M)
    urls = re.findall(r'runbook_url: "([^"]+)"', text)
    return names, urls


def check_runbooks_and_tests():
    names, urls = alert_rules()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", RUNBOOKS.read_text(), re.M)
    }
    for url in urls:
        anchor = url.split("#", 1)[1] if "#" in url else ""
        if not url.endswith(f"docs/runbooks.md#{anchor}") or anchor not in headings:
            fail(f"runbook_url {url} points to no section of docs/runbooks.md")
    for name in set(names):
        if name.lower() not in headings:
            fail(f"alert {name} has no section in docs/runbooks.md")
    # Every alert: one eval that expects it and one that expects silence.
    firing, silent = set(), set()
    blocks = re.split(r"\n\s*- eval_time:", RULE_TESTS.read_text())
    for block in blocks[1:]:
        m = re.search(r"alertname: (\w+)", block)
        if not m:
            continue
        (silent if re.search(r"exp_alerts: \[\]", block) else firing).add(m.group(1))
    for name in sorted(set(names)):
        if name not in firing:
            fail(f"alert {name} has no unit test in which it fires")
        if name not in silent:
            fail(f"alert {name} has no unit test in which it stays silent")
    return len(set(names)), len(names)


def static(promtool):
    check_dashboards()
    n_queries = check_queries_parse(promtool)
    check_prometheus_rule()
    n_alerts, n_rules = check_runbooks_and_tests()
    n_panels = sum(1 for _, b in dashboards() for _ in panels(b))
    print(f"static: {len(DASHBOARDS)} dashboards, {n_panels} panels, {n_queries} queries "
          f"(panel and variable) parse; {n_alerts} alerts in {n_rules} alerting rules, each with "
          f"a runbook section and a firing and a silent unit test")


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def exposition(paths):
    """{sample name: set of label names} from text expositions."""
    samples = {}
    for path in paths:
        for line in pathlib.Path(path).read_text().splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})?\s", line)
            if m:
                labels = set(re.findall(r'(\w+)="', m.group(3) or ""))
                samples.setdefault(m.group(1), set()).update(labels)
    return samples


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def used_metrics(expr):
    return set(re.findall(r"\b(switchboard_[a-z0-9_]+)\b", strip_strings(expr)))


def rule_exprs():
    """Alert and recording rule expressions of the rule file (block literals)."""
    exprs, current, indent = [], None, None
    for line in RULES.read_text().split("\n"):
        if current is not None:
            if line.strip() and (len(line) - len(line.lstrip())) >= indent:
                current.append(line.strip())
                continue
            exprs.append("\n".join(current))
            current = None
        m = re.match(r"(\s*)expr: (.*)$", line)
        if m:
            if m.group(2) == "|-":
                current, indent = [], len(m.group(1)) + 2
            else:
                exprs.append(json.loads(m.group(2)) if m.group(2).startswith('"') else m.group(2))
    if current:
        exprs.append("\n".join(current))
    return exprs


def check_metrics(paths):
    samples = exposition(paths)
    all_exprs = [(f"{d}: {t}", e) for d, t, e in queries()]
    all_exprs += [("rules", e) for e in rule_exprs() if not operator_part(e)]
    names = set()
    for where, expr in all_exprs:
        bare = strip_strings(expr)
        for metric in used_metrics(expr):
            names.add(metric)
            if metric not in samples:
                fail(f"{where}: metric {metric} is not in the scraped /metrics output")
        # Label matchers on a selector name labels of that metric.
        for metric, matchers in re.findall(r"\b(switchboard_[a-z0-9_]+)\{([^}]*)\}", expr):
            known = samples.get(metric, set()) | TARGET_LABELS
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", strip_strings(matchers)):
                if metric in samples and label not in known:
                    fail(f"{where}: {metric} has no label {label}")
        # Grouping labels exist on one of the metrics of the expression.
        known = set(TARGET_LABELS)
        for metric in used_metrics(expr):
            known |= samples.get(metric, set())
        for group in re.findall(r"\bby\s*\(([^)]*)\)", bare):
            for label in [l.strip() for l in group.split(",") if l.strip()]:
                if label not in known:
                    fail(f"{where}: groups by {label}, which none of its metrics has")
    print(f"metrics: checked the {len(names)} metric names used by {len(all_exprs)} queries and rules "
          f"against {len(paths)} scraped /metrics outputs ({len(samples)} sample names)")


# ---------------------------------------------------------------------------
# live
# ---------------------------------------------------------------------------


def api(base, path, params):
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def resolve_variables(base, board):
    values = dict(BUILTIN_VARIABLES)
    for var in variables(board):
        if var["type"] != "query":
            continue
        if var.get("includeAll"):
            values[var["name"]] = var.get("allValue", ".*")
            continue
        m = LABEL_VALUES.match(var["definition"])
        selector, label = substitute(m.group(1), values), m.group(2)
        found = sorted(api(base, f"/api/v1/label/{label}/values", {"match[]": selector}))
        if not found:
            fail(f"{board['title']}: variable {var['name']} has no value ({var['definition']})")
            values[var["name"]] = ""
        else:
            values[var["name"]] = found[0]
    return values


def live(base):
    total_queries = total_series = 0
    for name, board in dashboards():
        values = resolve_variables(base, board)
        shown = {k: v for k, v in values.items() if not k.startswith("__")}
        n_panels = n_queries = n_series = 0
        for panel in panels(board):
            n_panels += 1
            for t in panel["targets"]:
                expr = substitute(t["expr"], values)
                result = api(base, "/api/v1/query", {"query": expr})["result"]
                n_queries += 1
                n_series += len(result)
                if not result:
                    fail(f"{name}: panel {panel['title']!r} query {t['refId']} returns no series:\n{expr}")
        print(f"live: {name}: {n_panels} panels, {n_queries} queries, {n_series} series returned (variables {shown})")
        total_queries += n_queries
        total_series += n_series
    groups = api(base, "/api/v1/rules", {})["groups"]
    n_rules = 0
    for group in groups:
        for rule in group["rules"]:
            if operator_part(rule.get("query", "")):
                continue
            n_rules += 1
            if rule.get("health") != "ok":
                fail(f"rule {rule.get('name')} in {group['name']}: health {rule.get('health')}: {rule.get('lastError')}")
    if not n_rules:
        fail("Prometheus has loaded no rules")
    # Recording rules produce data (a wrong bucket boundary or label would not).
    records = sorted({r["name"] for g in groups for r in g["rules"] if r.get("type") == "recording"})
    # Rules are evaluated every second on what was scraped: on a loaded machine a
    # series born just before the check can need a few more evaluations (a rate
    # wants two samples), so each record is given until its deadline.
    deadline = time.time() + 30
    for record in records:
        while not api(base, "/api/v1/query", {"query": record})["result"]:
            if time.time() > deadline:
                fail(f"recording rule {record} has no series")
                break
            time.sleep(1)
    firing = sorted({a["labels"]["alertname"] for a in api(base, "/api/v1/alerts", {})["alerts"]})
    print(f"live: {total_queries} dashboard queries returned {total_series} series; {n_rules} rules loaded "
          f"and evaluated, {len(records)} recording rules with data; alerts pending or firing now: {', '.join(firing) or 'none'}")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    global without_operator
    command = argv[1]
    if "--without-operator" in argv:
        without_operator = True
        argv = [a for a in argv if a != "--without-operator"]
    if command == "static":
        static(os.environ.get("PROMTOOL", "promtool"))
    elif command == "metrics" and len(argv) > 2:
        check_metrics(argv[2:])
    elif command == "live" and len(argv) == 3:
        live(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
