#!/usr/bin/env python3
"""Generates Switchboard's Grafana dashboards and Prometheus alert rules.

One source for three renderings that must agree: the dashboards
(dashboards/*.json), the Prometheus rule file (alerts/switchboard.rules.yaml,
loaded by Prometheus and promtool) and the same rules as a Prometheus Operator
PrometheusRule (alerts/prometheusrule.yaml). Python standard library only.

    monitoring/generate.py          rewrite the generated files
    monitoring/generate.py --check  exit 1 if a committed file differs (drift)

Label contract (what the queries assume of the scrape): every runtime series
carries the target labels `namespace` (the tenant: the AgentDeployment's
namespace) and `service` (the agent: the Service the operator makes, named after
the AgentDeployment), as the ServiceMonitor the operator creates gives them.
Operator series need no target label.
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent
RUNBOOK_BASE = "https://github.com/switchboard-dev/switchboard/blob/main/docs/runbooks.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# ---------------------------------------------------------------------------
# Service level objectives (see docs/runbooks.md and monitoring/README.md)
# ---------------------------------------------------------------------------

# Availability: share of API requests answered without a 5xx.
ERROR_SLO = 0.995
# Latency: share of turns whose first token arrives within LATENCY_SLO_SECONDS
# (a bucket boundary of switchboard_runtime_time_to_first_token_seconds).
LATENCY_SLO = 0.99
LATENCY_SLO_SECONDS = "5"
# Requests that are not chat traffic: probes, scrapes, the OpenAPI document and
# unmatched paths (404s of scanners) stay out of the SLIs.
API_ROUTES = 'route!~"/healthz|/readyz|/metrics|/api/openapi.json|unmatched"'
# Multi-window, multi-burn-rate (Google SRE workbook, chapter 5): a long window
# that proves the burn is significant and a short one that proves it is still
# going on. 14.4x for 1h spends 2% of a 30-day budget; 6x for 6h spends 5%;
# 3x for 1d spends 10%; 1x for 3d spends 10%.
BURN_TIERS = [
    # (severity, long, short, factor, for)
    ("critical", "1h", "5m", 14.4, "2m"),
    ("critical", "6h", "30m", 6, "15m"),
    ("warning", "1d", "2h", 3, "1h"),
    ("warning", "3d", "6h", 1, "3h"),
]
WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
# An undelivered webhook answer older than this means its callback is failing.
WEBHOOK_BACKLOG_SECONDS = 300
# Share of the monthly budget at which the tenant is warned.
BUDGET_WARN_RATIO = 0.9
AGENT = "namespace, service"


def error_ratio(window):
    return (
        f"sum by ({AGENT}) (rate(switchboard_runtime_http_requests_total{{{API_ROUTES}, status=~\"5..\"}}[{window}]))\n"
        f"/\nsum by ({AGENT}) (rate(switchboard_runtime_http_requests_total{{{API_ROUTES}}}[{window}]))"
    )


def slow_ratio(window):
    return (
        f"1 - (\n  sum by ({AGENT}) (rate(switchboard_runtime_time_to_first_token_seconds_bucket{{le=\"{LATENCY_SLO_SECONDS}\"}}[{window}]))\n"
        f"  /\n  sum by ({AGENT}) (rate(switchboard_runtime_time_to_first_token_seconds_count[{window}]))\n)"
    )


def recording_rules():
    rules = []
    for window in WINDOWS:
        rules.append({"record": f"switchboard:runtime_request_errors:ratio_rate{window}", "expr": error_ratio(window)})
    for window in WINDOWS:
        rules.append({"record": f"switchboard:runtime_first_token_slow:ratio_rate{window}", "expr": slow_ratio(window)})
    return rules


def burn_expr(record, slo, tiers):
    budget = round(1 - slo, 6)
    parts = []
    for _, long, short, factor, _ in tiers:
        parts.append(
            f"(\n  {record}:ratio_rate{long} > ({factor} * {budget})\n"
            f"  and\n  {record}:ratio_rate{short} > ({factor} * {budget})\n)"
        )
    return "\nor\n".join(parts)


def burn_alerts(name, record, slo, what, runbook):
    alerts = []
    for severity in ("critical", "warning"):
        tiers = [t for t in BURN_TIERS if t[0] == severity]
        windows = " or ".join(f"{t[3]}x over {t[1]} and {t[2]}" for t in tiers)
        alerts.append(
            alert(
                name,
                burn_expr(record, slo, tiers),
                tiers[0][4],
                severity,
                f"Agent {{{{ $labels.namespace }}}}/{{{{ $labels.service }}}} is burning its {what} error budget "
                + ("fast." if severity == "critical" else "steadily."),
                f"The {what} SLO ({slo * 100:g}%) of agent {{{{ $labels.service }}}} in namespace "
                f"{{{{ $labels.namespace }}}} is burning its 30-day error budget at {windows} "
                f"(now {{{{ $value | humanizePercentage }}}} bad over the long window).",
                runbook,
            )
        )
    return alerts


def alert(name, expr, for_, severity, summary, description, runbook=None):
    rule = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{RUNBOOK_BASE}#{(runbook or name).lower()}",
    }
    return rule


# Runtime pods seen in the last 6 hours (any always-present runtime gauge).
RUNTIME_SEEN = "group by (namespace, service) (max_over_time(switchboard_runtime_upstream_queue_depth[6h]))"
RUNTIME_NOW = "group by (namespace, service) (switchboard_runtime_upstream_queue_depth)"


def runtime_alerts():
    return [
        alert(
            "SwitchboardAgentNoReadyRuntime",
            f"{RUNTIME_SEEN}\nunless\n{RUNTIME_NOW}",
            "5m",
            "critical",
            "Agent {{ $labels.namespace }}/{{ $labels.service }} has no runtime pod serving.",
            "No runtime pod of agent {{ $labels.service }} in namespace {{ $labels.namespace }} has been "
            "scraped for 5 minutes, though one was in the last 6 hours: its pods are gone, crash-looping, "
            "not ready or unreachable, and its chat channels are not answering.",
        ),
        alert(
            "SwitchboardRuntimeHeartbeatStale",
            "(up == 0)\nand on (namespace, service, pod)\n"
            "group by (namespace, service, pod) (max_over_time(switchboard_runtime_upstream_queue_depth[1h]))",
            "2m",
            "warning",
            "Runtime pod {{ $labels.namespace }}/{{ $labels.pod }} stopped answering.",
            "Runtime pod {{ $labels.pod }} of agent {{ $labels.service }} in namespace {{ $labels.namespace }} "
            "has failed its scrapes for 2 minutes: the process hangs or is unreachable, and once its readiness "
            "probe fails too the operator no longer counts its report in the AgentDeployment's status.runtime.",
        ),
        alert(
            "SwitchboardAllModelsFailing",
            "(\n  sum by (namespace, service) (rate(switchboard_runtime_upstream_requests_total{outcome!=\"ok\"}[5m])) > 0\n"
            "  unless on (namespace, service)\n"
            "  sum by (namespace, service) (rate(switchboard_runtime_upstream_requests_total{outcome=\"ok\"}[5m])) > 0\n"
            ")\nor\n"
            "min by (namespace, service) (switchboard_runtime_upstream_circuit_state) == 2",
            "5m",
            "critical",
            "Every model of agent {{ $labels.namespace }}/{{ $labels.service }} is failing.",
            "For 5 minutes no turn of agent {{ $labels.service }} in namespace {{ $labels.namespace }} got an "
            "answer from any of its models (or every model's circuit is open): users get the fallback response "
            "or errors.",
        ),
        alert(
            "SwitchboardFallbackRateHigh",
            "sum by (namespace, service) (rate(switchboard_runtime_upstream_fallbacks_total[15m]))\n/\n"
            "sum by (namespace, service) (rate(switchboard_runtime_upstream_requests_total[15m]))\n> 0.1",
            "15m",
            "warning",
            "Agent {{ $labels.namespace }}/{{ $labels.service }} falls back to its next model often.",
            "Agent {{ $labels.service }} in namespace {{ $labels.namespace }} moved on to a fallback model "
            "{{ $value | printf \"%.2f\" }} times per turn over 15 minutes (threshold 0.1): the primary model is "
            "failing or slow, and answers come from a model the tenant did not choose first.",
        ),
        *burn_alerts(
            "SwitchboardErrorBudgetBurn",
            "switchboard:runtime_request_errors",
            ERROR_SLO,
            "availability",
            "SwitchboardErrorBudgetBurn",
        ),
        *burn_alerts(
            "SwitchboardLatencyBudgetBurn",
            "switchboard:runtime_first_token_slow",
            LATENCY_SLO,
            f"time-to-first-token (<= {LATENCY_SLO_SECONDS}s)",
            "SwitchboardLatencyBudgetBurn",
        ),
        alert(
            "SwitchboardUpstreamQueueSaturated",
            "rate(switchboard_runtime_upstream_queue_rejected_total[5m]) > 0\nor\n"
            "min_over_time(switchboard_runtime_upstream_queue_depth[10m]) > 0",
            "5m",
            "warning",
            "Runtime pod {{ $labels.namespace }}/{{ $labels.pod }} has more turns than upstream slots.",
            "Runtime pod {{ $labels.pod }} of agent {{ $labels.service }} in namespace {{ $labels.namespace }} "
            "refuses turns with 503 because its upstream queue is full, or its queue has not been empty for "
            "10 minutes: every upstream call slot stays busy.",
        ),
        alert(
            "SwitchboardRateLimitRejectionsSpiking",
            "(\n  sum by (namespace, service) (rate(switchboard_runtime_rate_limited_requests_total[10m]))\n  /\n"
            f"  sum by (namespace, service) (rate(switchboard_runtime_http_requests_total{{{API_ROUTES}}}[10m]))\n"
            ") > 0.1\nand\n"
            "sum by (namespace, service) (rate(switchboard_runtime_rate_limited_requests_total[10m])) > 0.05",
            "10m",
            "warning",
            "Agent {{ $labels.namespace }}/{{ $labels.service }} refuses many requests with 429.",
            "{{ $value | humanizePercentage }} of the API requests of agent {{ $labels.service }} in namespace "
            "{{ $labels.namespace }} were refused by a rate limit over 10 minutes (threshold 10% and more "
            "than 3 a minute): a client loops, or the limits are too tight for real traffic.",
        ),
        alert(
            "SwitchboardDatabaseRetries",
            "sum by (namespace, service, operation) (rate(switchboard_runtime_database_retries_total[5m])) > 0",
            "10m",
            "warning",
            "Agent {{ $labels.namespace }}/{{ $labels.service }} keeps retrying database {{ $labels.operation }}.",
            "The runtime of agent {{ $labels.service }} in namespace {{ $labels.namespace }} has retried "
            "database operation {{ $labels.operation }} for 10 minutes because the database was "
            "unreachable, restarting or busy: turns are slow or fail.",
        ),
        alert(
            "SwitchboardWebhookDeliveriesBackingUp",
            f"max by (namespace, service, channel) (switchboard_runtime_webhook_outbox_oldest_age_seconds) > {WEBHOOK_BACKLOG_SECONDS}",
            "10m",
            "warning",
            "Webhook answers of {{ $labels.namespace }}/{{ $labels.service }} are not being delivered.",
            "The oldest undelivered answer of webhook channel {{ $labels.channel }} of agent {{ $labels.service }} "
            "in namespace {{ $labels.namespace }} is {{ $value | humanizeDuration }} old (threshold "
            f"{WEBHOOK_BACKLOG_SECONDS // 60} minutes) and has been for 10 minutes: the callback refuses or cannot be "
            "reached, and answers pile up in the outbox (they are kept and retried).",
        ),
        alert(
            "SwitchboardTenantBudgetNearlySpent",
            "max by (namespace, service, currency) (switchboard_runtime_budget_window_cost)\n/\n"
            f"max by (namespace, service, currency) (switchboard_runtime_budget_limit)\n> {BUDGET_WARN_RATIO}",
            "5m",
            "warning",
            "Agent {{ $labels.namespace }}/{{ $labels.service }} has spent most of its monthly budget.",
            "Agent {{ $labels.service }} in namespace {{ $labels.namespace }} has spent "
            "{{ $value | humanizePercentage }} of this month's budget (threshold "
            f"{BUDGET_WARN_RATIO * 100:g}%, currency {{{{ $labels.currency }}}}): once it is spent its turns get "
            "the fallback response or 429 until the month ends.",
        ),
        alert(
            "SwitchboardToolSourceDown",
            "max by (namespace, service, source) (switchboard_runtime_tool_source_up) == 0",
            "10m",
            "warning",
            "Tool source {{ $labels.source }} of agent {{ $labels.namespace }}/{{ $labels.service }} is down.",
            "No runtime pod of agent {{ $labels.service }} in namespace {{ $labels.namespace }} has listed any "
            "tools from source {{ $labels.source }} (a ToolServer or another agent) for 10 minutes: the server "
            "cannot be reached, refuses the runtime, or lists no tools. Turns go on without its tools, so answers "
            "that need them are worse or wrong; the AgentDeployment's ToolsAvailable condition names the error.",
        ),
        alert(
            "SwitchboardDatabaseSlow",
            "histogram_quantile(0.99,\n  sum by (namespace, service, le) "
            "(rate(switchboard_runtime_database_duration_seconds_bucket[5m]))\n) > 0.5",
            "10m",
            "warning",
            "Database of agent {{ $labels.namespace }}/{{ $labels.service }} is slow.",
            "The 99th percentile of database operations of agent {{ $labels.service }} in namespace "
            "{{ $labels.namespace }} is {{ $value | humanizeDuration }} (threshold 500ms) for 10 minutes; "
            "every turn does several of them.",
        ),
    ]


def operator_alerts():
    return [
        alert(
            "SwitchboardOperatorAbsent",
            "absent(switchboard_operator_leader)",
            "5m",
            "critical",
            "No Switchboard operator is being scraped.",
            "Prometheus has scraped no switchboard-operator process for 5 minutes: AgentDeployments and "
            "ChatChannels are not reconciled (running agents keep serving, changes are not applied).",
        ),
        alert(
            "SwitchboardOperatorNoLeader",
            "max(switchboard_operator_leader) == 0",
            "5m",
            "critical",
            "No Switchboard operator replica holds the leader Lease.",
            "Operator replicas are running but none has held the leader Lease for 5 minutes: nothing is "
            "reconciled.",
        ),
        alert(
            "SwitchboardOperatorReconcileErrors",
            "sum by (controller) (rate(switchboard_operator_reconcile_failures_total{category!~\"invalid_spec|missing_dependency|conflict\"}[15m]))\n"
            "/\nsum by (controller) (rate(switchboard_operator_reconciles_total[15m]))\n> 0.1",
            "15m",
            "warning",
            "The operator's {{ $labels.controller }} reconciles fail.",
            "{{ $value | humanizePercentage }} of the {{ $labels.controller }} reconciles failed over 15 "
            "minutes (threshold 10%) with a platform error (Kubernetes API, database, configuration or "
            "internal; a tenant's invalid spec, missing Secret or name taken by another object is not counted here, it shows in that "
            "resource's conditions).",
        ),
        alert(
            "SwitchboardOperatorWatchErrors",
            "sum by (kind) (rate(switchboard_operator_watch_errors_total[10m])) > 0",
            "15m",
            "warning",
            "The operator's watch of {{ $labels.kind }} keeps failing.",
            "The operator's watches of {{ $labels.kind }} have failed {{ $value | printf \"%.3f\" }} times a "
            "second for 15 minutes (each failure is retried with backoff): its caches go stale and changes are "
            "reconciled late or not at all. RBAC, a removed CRD or an unreachable API server are the usual causes.",
        ),
        alert(
            "SwitchboardOperatorKubeApiErrors",
            "sum by (controller) (rate(switchboard_operator_reconcile_failures_total{category=\"kube_api\"}[10m])) > 0.05",
            "15m",
            "warning",
            "The operator's {{ $labels.controller }} controller keeps failing on the Kubernetes API.",
            "Reconciles of the {{ $labels.controller }} controller failed on Kubernetes API requests "
            "{{ $value | printf \"%.2f\" }} times a second for 15 minutes: RBAC, API server load or "
            "admission webhooks refuse the operator's reads, watches or writes.",
        ),
    ]


def rule_groups():
    return [
        {"name": "switchboard-runtime-slo.recording", "rules": recording_rules()},
        {"name": "switchboard-runtime.alerts", "rules": runtime_alerts()},
        {"name": "switchboard-operator.alerts", "rules": operator_alerts()},
    ]


# ---------------------------------------------------------------------------
# A small YAML emitter (block style; strings JSON-quoted, multi-line literal)
# ---------------------------------------------------------------------------


def _scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def to_yaml(value, indent=0):
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 1))
            elif isinstance(item, str) and "\n" in item:
                lines.append(f"{pad}{key}: |-")
                lines.extend(f"{pad}  {line}" if line else "" for line in item.split("\n"))
            else:
                lines.append(f"{pad}{key}: {_scalar(item) if not isinstance(item, (dict, list)) else json.dumps(item)}")
    elif isinstance(value, list):
        for item in value:
            rendered = to_yaml(item, indent + 1)
            first = rendered.lstrip(" ")
            lines.append(f"{pad}- {first}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines)


def rules_file():
    header = (
        "# Generated by monitoring/generate.py: edit that file, then run it (the test fails on drift).\n"
        "# Prometheus rule file: load it with rule_files, check it with promtool.\n"
    )
    return header + to_yaml({"groups": rule_groups()}) + "\n"


def prometheus_rule():
    header = (
        "# Generated by monitoring/generate.py: edit that file, then run it (the test fails on drift).\n"
        "# The rules of switchboard.rules.yaml as a Prometheus Operator PrometheusRule.\n"
    )
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "switchboard",
            "labels": {"app.kubernetes.io/name": "switchboard", "app.kubernetes.io/part-of": "switchboard"},
        },
        "spec": {"groups": rule_groups()},
    }
    return header + to_yaml(doc) + "\n"


# ---------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------


def target(expr, legend):
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend}


def panel(title, description, unit, targets, kind="timeseries", width=8, height=8, **extra):
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "unit": unit,
        "targets": targets,
        "width": width,
        "height": height,
        **extra,
    }


def row(title):
    return {"type": "row", "title": title}


def error_share(errors, total):
    """errors / total, 0 (not "no data") where total has series but errors none."""
    return f"(\n  {errors}\n  or\n  0 * {total}\n)\n/\n{total}"


def quantiles(metric, selector, by, legend_prefix):
    by_le = ", ".join([*by, "le"]) if by else "le"
    return [
        target(
            f"histogram_quantile({q}, sum by ({by_le}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{legend_prefix}p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def overview_panels():
    sel = 'namespace=~"$namespace"'
    api = f"{sel}, {API_ROUTES}"
    tokens_unit = "suffix: tokens"
    return [
        row("Agents"),
        panel("Agents serving", "Agents with at least one runtime pod being scraped now.", "none",
              [target(f"count(group by (namespace, service) (switchboard_runtime_upstream_queue_depth{{{sel}}}))", "agents")],
              kind="stat", width=6, height=4),
        panel("Agents degraded", "Agents with at least one model whose circuit breaker is not closed (half-open or open).", "none",
              [target(f"count(group by (namespace, service) (switchboard_runtime_upstream_circuit_state{{{sel}}} > 0)) or vector(0)", "degraded")],
              kind="stat", width=6, height=4),
        panel("Runtime pods serving", "Runtime pods being scraped now, all agents together.", "none",
              [target(f"count(switchboard_runtime_upstream_queue_depth{{{sel}}})", "pods")],
              kind="stat", width=6, height=4),
        panel("Active streams", "Streamed answers in progress, all runtime pods together.", "none",
              [target(f"sum(switchboard_runtime_active_streams{{{sel}}})", "streams")],
              kind="stat", width=6, height=4),
        row("Traffic"),
        panel("Requests by tenant", "API requests per second by tenant (namespace); probes and scrapes excluded.", "reqps",
              [target(f"sum by (namespace) (rate(switchboard_runtime_http_requests_total{{{api}}}[$__rate_interval]))", "{{namespace}}")]),
        panel("Errors by tenant", "Share of API requests answered with a 5xx, by tenant.", "percentunit",
              [target(error_share(
                  f"sum by (namespace) (rate(switchboard_runtime_http_requests_total{{{api}, status=~\"5..\"}}[$__rate_interval]))",
                  f"sum by (namespace) (rate(switchboard_runtime_http_requests_total{{{api}}}[$__rate_interval]))"), "{{namespace}}")]),
        panel("Request latency", "Time until the response headers (streams: until the stream started), all agents: 50th, 95th and 99th percentile.", "s",
              quantiles("switchboard_runtime_http_request_duration_seconds", api, [], "")),
        panel("Time to first token", "Time from the request to the first generated token, all agents: 50th, 95th and 99th percentile.", "s",
              quantiles("switchboard_runtime_time_to_first_token_seconds", sel, [], "")),
        panel("Tokens per tenant", "Tokens per second by tenant and direction (in = prompt, out = generated).", "suffix: tokens/s",
              [target(f"sum by (namespace, direction) (rate(switchboard_runtime_tokens_total{{{sel}}}[$__rate_interval]))", "{{namespace}} {{direction}}")]),
        panel("Tokens per tenant, last 24 hours", "Tokens used over the last 24 hours by tenant, prompt and generated together.", tokens_unit,
              [target(f"sum by (namespace) (increase(switchboard_runtime_tokens_total{{{sel}}}[24h]))", "{{namespace}}")],
              kind="bargauge"),
        row("Cost"),
        panel("Cost per tenant", "Spend per hour by tenant, in each agent's pricing currency (models priced with spec.model.pricing; unpriced models cost nothing).", "suffix: /h",
              [target(f"sum by (namespace, currency) (rate(switchboard_runtime_cost_total{{{sel}}}[$__rate_interval])) * 3600", "{{namespace}} {{currency}}")]),
        panel("Cost per model", "Spend per hour by model, all tenants, in the pricing currency.", "suffix: /h",
              [target(f"sum by (model, currency) (rate(switchboard_runtime_cost_total{{{sel}}}[$__rate_interval])) * 3600", "{{model}} {{currency}}")]),
        panel("Monthly budget used", "Share of each agent's monthly budget spent in the current calendar month (UTC); at 100% its turns get the fallback response or 429, as spec.budget.whenSpent says.", "percentunit",
              [target(f"max by (namespace, service) (switchboard_runtime_budget_window_cost{{{sel}}})\n/\nmax by (namespace, service) (switchboard_runtime_budget_limit{{{sel}}})", "{{namespace}}/{{service}}")],
              kind="bargauge"),
        row("Models"),
        panel("Model calls by outcome", "Turns per second by the outcome of their model chain: ok, or the error of the last model tried (a turn rescued by a fallback model counts as ok for that model).", "ops",
              [target(f"sum by (outcome) (rate(switchboard_runtime_upstream_requests_total{{{sel}}}[$__rate_interval]))", "{{outcome}}")]),
        panel("Fallbacks", "Turns moved on to the next model of the chain, per second, by agent.", "ops",
              [target(f"sum by (namespace, service) (rate(switchboard_runtime_upstream_fallbacks_total{{{sel}}}[$__rate_interval]))", "{{namespace}}/{{service}}")]),
        panel("Open circuits", "Models whose circuit breaker is open (calls skipped), by agent.", "none",
              [target(f"count by (namespace, service) (switchboard_runtime_upstream_circuit_state{{{sel}}} == 2)", "{{namespace}}/{{service}}")]),
        row("Capacity and limits"),
        panel("Rate-limit rejections", "Requests refused with 429 by a rate limit, per second, by scope (user, channel, tokens).", "reqps",
              [target(f"sum by (scope) (rate(switchboard_runtime_rate_limited_requests_total{{{sel}}}[$__rate_interval]))", "{{scope}}")]),
        panel("Upstream queue", "Turns waiting for an upstream call slot and turns holding one, all runtime pods together.", "none",
              [target(f"sum(switchboard_runtime_upstream_queue_depth{{{sel}}})", "waiting"),
               target(f"sum(switchboard_runtime_upstream_in_flight{{{sel}}})", "in flight")]),
        panel("Queue rejections", "Turns refused with 503 because the upstream queue was full, per second, by agent.", "reqps",
              [target(f"sum by (namespace, service) (rate(switchboard_runtime_upstream_queue_rejected_total{{{sel}}}[$__rate_interval]))", "{{namespace}}/{{service}}")]),
        row("Database"),
        panel("Database latency", "Database operation latency, all agents: 50th, 95th and 99th percentile.", "s",
              quantiles("switchboard_runtime_database_duration_seconds", sel, [], "")),
        panel("Database retries", "Database operations retried because the database was unreachable, restarting or busy, per second, by operation.", "ops",
              [target(f"sum by (operation) (rate(switchboard_runtime_database_retries_total{{{sel}}}[$__rate_interval]))", "{{operation}}")]),
        panel("Messages stored", "Messages stored per second by role (user and assistant).", "ops",
              [target(f"sum by (role) (rate(switchboard_runtime_messages_total{{{sel}}}[$__rate_interval]))", "{{role}}")]),
        row("Webhook delivery"),
        panel("Webhook delivery backlog", "Webhook answers accepted but not yet delivered to the channel's callback, by agent and channel (the agent's whole outbox; pods count it every 10 s).", "none",
              [target(f"max by (namespace, service, channel) (switchboard_runtime_webhook_outbox_pending{{{sel}}})", "{{namespace}}/{{service}} {{channel}}")],
              width=12),
        panel("Oldest undelivered webhook answer", "Age of the oldest webhook answer still waiting for its callback, by agent and channel (0 when none waits).", "s",
              [target(f"max by (namespace, service, channel) (switchboard_runtime_webhook_outbox_oldest_age_seconds{{{sel}}})", "{{namespace}}/{{service}} {{channel}}")],
              width=12),
    ]


def agent_panels():
    agent = 'namespace="$namespace", service="$agent"'
    api = f"{agent}, {API_ROUTES}"
    model = f'{agent}, model=~"$model"'
    return [
        row("Traffic"),
        panel("Runtime pods serving", "Runtime pods of this agent being scraped now.", "none",
              [target(f"count(switchboard_runtime_upstream_queue_depth{{{agent}}})", "pods")],
              kind="stat", width=6, height=4),
        panel("Active streams", "Streamed answers in progress on this agent.", "none",
              [target(f"sum(switchboard_runtime_active_streams{{{agent}}})", "streams")],
              kind="stat", width=6, height=4),
        panel("Upstream queue", "Turns waiting for an upstream call slot, and turns holding one.", "none",
              [target(f"sum(switchboard_runtime_upstream_queue_depth{{{agent}}})", "waiting"),
               target(f"sum(switchboard_runtime_upstream_in_flight{{{agent}}})", "in flight")],
              kind="stat", width=6, height=4),
        panel("Error ratio", "Share of this agent's API requests answered with a 5xx over the dashboard's range.", "percentunit",
              [target(error_share(
                  f"sum(increase(switchboard_runtime_http_requests_total{{{api}, status=~\"5..\"}}[$__range]))",
                  f"sum(increase(switchboard_runtime_http_requests_total{{{api}}}[$__range]))"), "errors")],
              kind="stat", width=6, height=4),
        panel("Requests by route and status", "API requests per second by route and HTTP status.", "reqps",
              [target(f"sum by (route, status) (rate(switchboard_runtime_http_requests_total{{{api}}}[$__rate_interval]))", "{{route}} {{status}}")],
              width=12),
        panel("Request latency", "Time until the response headers (streams: until the stream started): 50th, 95th and 99th percentile.", "s",
              quantiles("switchboard_runtime_http_request_duration_seconds", api, [], ""), width=12),
        row("Models"),
        panel("Time to first token by model", "95th percentile of the time from the request to the first generated token, by model.", "s",
              [target(f"histogram_quantile(0.95, sum by (model, le) (rate(switchboard_runtime_time_to_first_token_seconds_bucket{{{model}}}[$__rate_interval])))", "{{model}}")]),
        panel("Model calls by outcome", "Turns per second by the model that answered (ok) or the last model tried and its error.", "ops",
              [target(f"sum by (model, outcome) (rate(switchboard_runtime_upstream_requests_total{{{model}}}[$__rate_interval]))", "{{model}} {{outcome}}")]),
        panel("Model call duration", "95th percentile of the duration of whole model calls, by model.", "s",
              [target(f"histogram_quantile(0.95, sum by (model, le) (rate(switchboard_runtime_upstream_duration_seconds_bucket{{{model}}}[$__rate_interval])))", "{{model}}")]),
        panel("Retries", "Model calls retried per second, by model and the error retried.", "ops",
              [target(f"sum by (model, reason) (rate(switchboard_runtime_upstream_retries_total{{{model}}}[$__rate_interval]))", "{{model}} {{reason}}")]),
        panel("Fallbacks", "Turns moved on from one model to the next, per second.", "ops",
              [target(f'sum by (from_model, to_model) (rate(switchboard_runtime_upstream_fallbacks_total{{{agent}, from_model=~"$model"}}[$__rate_interval]))', "{{from_model}} -> {{to_model}}")]),
        panel("Circuit state", "Circuit breaker state per model and pod: 0 closed, 1 half-open, 2 open.", "none",
              [target(f"max by (model) (switchboard_runtime_upstream_circuit_state{{{model}}})", "{{model}}")]),
        row("Tools"),
        panel("Tool calls by tool and outcome", "Server-side tool calls per second by tool and outcome (ok, error, timeout, invalid_arguments, unavailable, rejected).", "ops",
              [target(f"sum by (tool, outcome) (rate(switchboard_runtime_tool_calls_total{{{agent}}}[$__rate_interval]))", "{{tool}} {{outcome}}")],
              width=12),
        panel("Tool call duration", "95th percentile of the duration of server-side tool calls, by tool (the wait for an approval left out).", "s",
              [target(f"histogram_quantile(0.95, sum by (tool, le) (rate(switchboard_runtime_tool_call_duration_seconds_bucket{{{agent}}}[$__rate_interval])))", "{{tool}}")],
              width=12),
        panel("Tool sources up", "Whether each tool source (ToolServer or agent) answered its last listing with tools: 1 up, 0 down (turns then go on without its tools). The lowest value across the agent's pods.", "none",
              [target(f"min by (source) (switchboard_runtime_tool_source_up{{{agent}}})", "{{source}}")],
              kind="stat", width=12),
        panel("Approvals by outcome", "Tool calls that waited for a person's approval over the dashboard's range, by outcome (approved, rejected, expired).", "none",
              [target(f"sum by (outcome) (increase(switchboard_runtime_tool_approvals_total{{{agent}}}[$__range]))", "{{outcome}}")],
              kind="bargauge", width=12),
        row("Tokens"),
        panel("Tokens by channel", "Tokens per second by channel and direction (in = prompt, out = generated).", "suffix: tokens/s",
              [target(f'sum by (channel, direction) (rate(switchboard_runtime_tokens_total{{{agent}, channel=~"$channel", model=~"$model"}}[$__rate_interval]))', "{{channel}} {{direction}}")],
              width=12),
        panel("Tokens by model", "Tokens per second by model and direction.", "suffix: tokens/s",
              [target(f'sum by (model, direction) (rate(switchboard_runtime_tokens_total{{{agent}, channel=~"$channel", model=~"$model"}}[$__rate_interval]))', "{{model}} {{direction}}")],
              width=12),
        row("Cost"),
        panel("Cost by model", "Spend per hour by model, in the pricing currency.", "suffix: /h",
              [target(f'sum by (model, currency) (rate(switchboard_runtime_cost_total{{{agent}, channel=~"$channel", model=~"$model"}}[$__rate_interval])) * 3600', "{{model}} {{currency}}")]),
        panel("Cost by channel", "Spend per hour by channel, in the pricing currency.", "suffix: /h",
              [target(f'sum by (channel, currency) (rate(switchboard_runtime_cost_total{{{agent}, channel=~"$channel", model=~"$model"}}[$__rate_interval])) * 3600', "{{channel}} {{currency}}")]),
        panel("This month's spend", "The agent's spend in the current calendar month (UTC), all pods together, and its monthly budget (status.usage shows the same figures exactly).", "none",
              [target(f"max by (currency) (switchboard_runtime_budget_window_cost{{{agent}}})", "spent {{currency}}"),
               target(f"max by (currency) (switchboard_runtime_budget_limit{{{agent}}})", "budget {{currency}}")],
              kind="stat"),
        row("Limits and storage"),
        panel("Rate-limit rejections", "Requests refused with 429 by a rate limit, per second, by scope.", "reqps",
              [target(f"sum by (scope) (rate(switchboard_runtime_rate_limited_requests_total{{{agent}}}[$__rate_interval]))", "{{scope}}")]),
        panel("Queue rejections", "Turns refused with 503 because the upstream queue was full, per second.", "reqps",
              [target(f"sum(rate(switchboard_runtime_upstream_queue_rejected_total{{{agent}}}[$__rate_interval]))", "rejected")]),
        panel("Messages stored", "Messages stored per second by role.", "ops",
              [target(f"sum by (role) (rate(switchboard_runtime_messages_total{{{agent}}}[$__rate_interval]))", "{{role}}")]),
        panel("Database latency", "95th percentile of database operation latency, by operation.", "s",
              [target(f"histogram_quantile(0.95, sum by (operation, le) (rate(switchboard_runtime_database_duration_seconds_bucket{{{agent}}}[$__rate_interval])))", "{{operation}}")],
              width=12),
        panel("Database retries", "Database operations retried per second, by operation.", "ops",
              [target(f"sum by (operation) (rate(switchboard_runtime_database_retries_total{{{agent}}}[$__rate_interval]))", "{{operation}}")],
              width=12),
        panel("Webhook delivery backlog", "Webhook answers of this agent not yet delivered to their callback, by channel.", "none",
              [target(f'max by (channel) (switchboard_runtime_webhook_outbox_pending{{{agent}, channel=~"$channel"}})', "{{channel}}")],
              width=12),
        panel("Oldest undelivered webhook answer", "Age of the oldest webhook answer still waiting for its callback, by channel.", "s",
              [target(f'max by (channel) (switchboard_runtime_webhook_outbox_oldest_age_seconds{{{agent}, channel=~"$channel"}})', "{{channel}}")],
              width=12),
    ]


def operator_panels():
    return [
        row("Leadership"),
        panel("Leader", "Operator replicas holding the leader Lease now (1 is healthy; 0 means nothing is reconciled).", "none",
              [target("sum(switchboard_operator_leader)", "leaders")], kind="stat", width=8, height=4),
        panel("Replicas scraped", "Operator processes being scraped now.", "none",
              [target("count(switchboard_operator_leader)", "replicas")], kind="stat", width=8, height=4),
        panel("Failure ratio", "Share of reconciles that failed over the dashboard's range, all controllers.", "percentunit",
              [target(error_share("sum(increase(switchboard_operator_reconcile_failures_total[$__range]))",
                                  "sum(increase(switchboard_operator_reconciles_total[$__range]))"), "failed")],
              kind="stat", width=8, height=4),
        row("Reconciles"),
        panel("Reconciles", "Reconciles started per second, by controller.", "ops",
              [target("sum by (controller) (rate(switchboard_operator_reconciles_total[$__rate_interval]))", "{{controller}}")]),
        panel("Reconcile duration", "Reconcile duration by controller: 50th, 95th and 99th percentile.", "s",
              [target(f"histogram_quantile({q}, sum by (controller, le) (rate(switchboard_operator_reconcile_duration_seconds_bucket[$__rate_interval])))", f"{{{{controller}}}} p{int(q * 100)}")
               for q in (0.5, 0.95, 0.99)]),
        panel("Errors by category", "Failed reconciles per second by controller and error category (kube_api, database, config, invalid_spec, missing_dependency, conflict, internal).", "ops",
              [target("sum by (controller, category) (rate(switchboard_operator_reconcile_failures_total[$__rate_interval]))", "{{controller}} {{category}}")]),
        panel("Reconciles in flight", "Reconciles running now, by controller: the work the controllers' queues hand out (at most the configured concurrency each).", "none",
              [target("sum by (controller) (switchboard_operator_reconciles_in_flight)", "{{controller}}")]),
        row("Kubernetes API"),
        panel("Writes", "Write requests sent to the Kubernetes API per second, by kind and verb. An idle operator writes nothing.", "reqps",
              [target("sum by (kind, verb) (rate(switchboard_operator_kube_writes_total[$__rate_interval]))", "{{kind}} {{verb}}")],
              width=12),
        panel("Watch errors", "Errors of the operator's watches per second, by kind (each is retried with backoff).", "ops",
              [target("sum by (kind) (rate(switchboard_operator_watch_errors_total[$__rate_interval]))", "{{kind}}")],
              width=6),
        panel("Watch restarts", "Watches that started over with a fresh list, by kind, over the dashboard's range.", "none",
              [target("sum by (kind) (increase(switchboard_operator_watch_restarts_total[$__range]))", "{{kind}}")],
              kind="stat", width=6),
    ]


def variable_query(name, label, query, multi=False, depends_on=""):
    var = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-query"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "includeAll": multi,
        "multi": multi,
        "current": {},
        "hide": 0,
    }
    if multi:
        var["allValue"] = ".*"
    return var


def datasource_variable():
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
    }


def layout(panels):
    """Grafana panels with ids and grid positions, rows full width."""
    out, x, y, row_height, next_id = [], 0, 0, 0, 1
    for spec in panels:
        if spec["type"] == "row":
            if x:
                y, x = y + row_height, 0
            out.append({"id": next_id, "type": "row", "title": spec["title"], "collapsed": False,
                        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            y, row_height, next_id = y + 1, 0, next_id + 1
            continue
        w, h = spec["width"], spec["height"]
        if x + w > 24:
            y, x, row_height = y + row_height, 0, 0
        targets = [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(spec["targets"])]
        if spec["type"] in ("stat", "bargauge"):
            # One value per series: ask for the latest only.
            targets = [dict(t, instant=True, range=False) for t in targets]
        p = {
            "id": next_id,
            "type": spec["type"],
            "title": spec["title"],
            "description": spec["description"],
            "datasource": spec["datasource"],
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": spec["unit"]}, "overrides": []},
            "targets": targets,
        }
        if spec["type"] == "timeseries":
            p["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
        out.append(p)
        x, row_height, next_id = x + w, max(row_height, h), next_id + 1
    return out


def dashboard(uid, title, description, panels, variables):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["switchboard"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [datasource_variable(), *variables]},
        "annotations": {"list": []},
        "links": [],
        "panels": layout(panels),
    }


def dashboards():
    namespaces = "label_values(switchboard_runtime_http_requests_total, namespace)"
    return {
        "switchboard-overview.json": dashboard(
            "switchboard-overview",
            "Switchboard overview",
            "Every agent of every tenant: health, traffic, tokens, cost, models, limits, storage and webhook delivery.",
            overview_panels(),
            [variable_query("namespace", "Tenant", namespaces, multi=True)],
        ),
        "switchboard-agent.json": dashboard(
            "switchboard-agent",
            "Switchboard agent detail",
            "One agent: traffic, models, tokens and cost by channel and model, limits, storage and webhook delivery.",
            agent_panels(),
            [
                variable_query("namespace", "Namespace", namespaces),
                variable_query("agent", "Agent",
                               'label_values(switchboard_runtime_http_requests_total{namespace="$namespace"}, service)'),
                variable_query("channel", "Channel",
                               'label_values(switchboard_runtime_tokens_total{namespace="$namespace", service="$agent"}, channel)',
                               multi=True),
                variable_query("model", "Model",
                               'label_values(switchboard_runtime_upstream_requests_total{namespace="$namespace", service="$agent"}, model)',
                               multi=True),
            ],
        ),
        "switchboard-operator.json": dashboard(
            "switchboard-operator",
            "Switchboard operator",
            "The operator: leadership, reconciles, errors by category, work in flight, writes and watches.",
            operator_panels(),
            [],
        ),
    }


# ---------------------------------------------------------------------------


def outputs():
    files = {
        "alerts/switchboard.rules.yaml": rules_file(),
        "alerts/prometheusrule.yaml": prometheus_rule(),
    }
    for name, board in dashboards().items():
        files[f"dashboards/{name}"] = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
    return files


def main(argv):
    check = "--check" in argv[1:]
    drift = []
    for rel, text in outputs().items():
        path = ROOT / rel
        if check:
            if not path.exists() or path.read_text() != text:
                drift.append(rel)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if drift:
        print("generated files differ from monitoring/generate.py (run it): " + ", ".join(drift), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
