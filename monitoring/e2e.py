#!/usr/bin/env python3
"""Runs the real binaries under a real Prometheus and checks the monitoring against them.

Starts mock-llm, the agent runtime (SQLite, a primary and a fallback model on the
mock, a tight per-user rate limit) and, when KUBECONFIG points at the local
cluster, the operator (watching a fresh namespace with a sample agent and
channel); starts Debian's Prometheus scraping them with the target labels the
operator's ServiceMonitor gives (namespace, service, pod) and loading the alert
rules; drives chats and faults (a failing primary model until its circuit
opens, a rate limit exceeded, the SQLite file locked by another writer, streamed
answers, a server-side tool call to a real MCP server (tests/mcp/server.py, the
official MCP Python SDK) and one that waits for an approval, then approved);
then:

  - `promtool check metrics` on each /metrics output (no complaints allowed),
  - check.py metrics: every metric and label the dashboards and rules use exists,
  - check.py live: every dashboard query returns a series, every rule evaluates.

Every process it starts is stopped by its pid at the end. Usage:
    e2e.py [--no-operator]      binaries from $SWITCHBOARD_BIN_DIR (default target/debug)
"""

import json
import os
import pathlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent
REPO = ROOT.parent
STATE = pathlib.Path(os.environ.get("SWITCHBOARD_STATE", REPO / ".switchboard")) / "monitoring"
BIN = pathlib.Path(os.environ.get("SWITCHBOARD_BIN_DIR", REPO / "target" / "debug"))
PROMTOOL = os.environ.get("PROMTOOL", "promtool")
PROMETHEUS = os.environ.get("PROMETHEUS", shutil.which("prometheus") or "/usr/bin/prometheus")
NAMESPACE = f"monitoring-e2e-{os.getpid()}"
AGENT = "support"

processes = []  # (name, Popen)


def log(message):
    print(f"e2e: {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, argv, **kwargs):
    out = open(STATE / f"{name}.log", "ab")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, **kwargs)
    processes.append((name, proc))
    log(f"started {name} (pid {proc.pid}), log {STATE / (name + '.log')}")
    return proc


def stop_all():
    for name, proc in reversed(processes):
        if proc.poll() is None:
            proc.terminate()
    for name, proc in reversed(processes):
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(what, predicate, timeout=60.0, interval=0.2):
    """Polls `predicate` until it returns a truthy value; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        for name, proc in processes:
            if proc.poll() is not None:
                raise SystemExit(f"e2e: {name} exited with {proc.returncode} while waiting for {what}; "
                                 f"see {STATE / (name + '.log')}")
        try:
            value = predicate()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError, KeyError) as err:
            last_error = err
        time.sleep(interval)
    raise SystemExit(f"e2e: timed out waiting for {what} (last error: {last_error})")


def http(method, url, body=None, headers=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def get(url):
    return http("GET", url)


def prom_query(prom, query):
    status, body = get(f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': query})}")
    data = json.loads(body)
    if status != 200 or data.get("status") != "success":
        raise ValueError(body)
    return data["data"]["result"]


# ---------------------------------------------------------------------------


def start_mcp_server():
    """The MCP test server of tests/mcp/ on a free port; its URL once it is ready."""
    python = os.environ.get("SWITCHBOARD_PYTHON")
    if not python:
        subprocess.run(["bash", str(REPO / "hack" / "python-env.sh")], check=True)
        python = str(REPO / ".switchboard" / "venv" / "bin" / "python")
    port = free_port()
    start("mcp-server", [python, str(REPO / "tests" / "mcp" / "server.py"), str(port)])
    url = f"http://127.0.0.1:{port}/mcp"
    wait_for("the MCP server", lambda: "mcp server ready on" in (STATE / "mcp-server.log").read_text(), timeout=120)
    return url


def start_runtime(mock_port, mcp_url):
    port = free_port()
    mock = f"http://127.0.0.1:{mock_port}/v1"
    config = {
        "agent": {"name": AGENT, "namespace": NAMESPACE},
        "model": {"provider": "openai", "name": "primary-model", "baseUrl": mock, "timeoutSeconds": 10,
                  "pricing": {"inputPerMillionTokens": "0.15", "outputPerMillionTokens": "0.6", "currency": "USD"}},
        "fallbacks": [{"provider": "openai", "name": "backup-model", "baseUrl": mock, "timeoutSeconds": 10,
                       "pricing": {"inputPerMillionTokens": "1", "outputPerMillionTokens": "5", "currency": "USD"}}],
        "budget": {"monthly": "1000", "whenSpent": "Fallback"},
        # The chats go to the default channel `api` (the root routes); a webhook channel
        # whose callback nobody serves: its outbox backlog is exported.
        "defaultChannel": "api",
        "channels": [{"name": "api", "type": "openai"},
                     {"name": "hooks", "type": "webhook", "webhook": {
                         "callbackUrl": f"http://127.0.0.1:{free_port()}/callback", "signingKeyEnv": "E2E_WEBHOOK_KEY"}}],
        "systemPrompt": "You are the monitoring test agent.",
        "database": {"sqlitePath": str(STATE / "runtime.db")},
        "rateLimit": {"requestsPerMinutePerUser": 5},
        "limits": {"retryBaseDelayMs": 10, "retryMaxDelayMs": 50, "circuitOpenSeconds": 600},
        # A real MCP server's tools; delete_file waits for a person's approval.
        "tools": {"sources": [{"name": "calc", "url": mcp_url, "timeoutSeconds": 10}],
                  "requireApproval": ["delete_file"], "maxSteps": 3},
    }
    (STATE / "runtime.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "OTEL_", "KUBECONFIG"))}
    env["RUST_LOG"] = "warn"
    env["E2E_WEBHOOK_KEY"] = "e2e-webhook-signing-key"
    start("agent-runtime", [str(BIN / "agent-runtime"), "--config", str(STATE / "runtime.yaml"),
                            "--listen", f"127.0.0.1:{port}"], cwd=STATE, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_for("the runtime to be ready", lambda: get(f"{base}/readyz")[0] == 200)
    return base


def chat(base, user, text, stream=False, expect=(200,)):
    status, body = http("POST", f"{base}/v1/chat/completions",
                        {"model": AGENT, "stream": stream, "messages": [{"role": "user", "content": text}]},
                        {"x-switchboard-user": user})
    if status not in expect:
        raise SystemExit(f"e2e: chat as {user} answered {status}, expected {expect}: {body[:300]}")
    return status


def drive_tools(base):
    """A tool call, and one that waits for an approval (given through the sessions API)."""
    chat(base, "tool-user", '[[mock: tools=add; args={"a":2,"b":3}]] add them')
    user = {"x-switchboard-user": "approver"}
    answered = []
    asking = threading.Thread(target=lambda: answered.append(http(
        "POST", f"{base}/v1/chat/completions",
        {"model": AGENT, "messages": [{"role": "user", "content":
                                       '[[mock: tools=delete_file; args={"path":"/tmp/x"}]] delete it'}]},
        user)))
    asking.start()

    def pending():
        status, body = http("GET", f"{base}/api/sessions", headers=user)
        for session in json.loads(body)["data"]:
            _, listed = http("GET", f"{base}/api/sessions/{session['id']}/approvals", headers=user)
            for approval in json.loads(listed)["data"]:
                if approval["state"] == "pending":
                    return session["id"], approval["id"]
        return None

    session, approval = wait_for("a tool call waiting for approval", pending, timeout=30)
    status, body = http("POST", f"{base}/api/sessions/{session}/approvals/{approval}", {"approve": True}, user)
    if status != 200:
        raise SystemExit(f"e2e: approving the tool call answered {status}: {body[:300]}")
    asking.join(timeout=60)
    if not answered or answered[0][0] != 200 or "deleted /tmp/x" not in answered[0][1]:
        raise SystemExit(f"e2e: the chat that waited for an approval did not succeed: {answered!r}")


def drive_runtime(base):
    drive_tools(base)
    for i in range(6):
        chat(base, f"user-{i % 3}", f"hello number {i}")
    for i in range(3):
        chat(base, f"streamer-{i}", f"stream please {i}", stream=True)
    # A rate limit exceeded: 5 a minute per user, the next ones are refused with 429.
    statuses = [chat(base, "flood", f"again {i}", expect=(200, 429)) for i in range(8)]
    if 429 not in statuses:
        raise SystemExit(f"e2e: the per-user rate limit refused nothing: {statuses}")
    # The SQLite file held by another writer: the runtime's writes wait, retry, then pass.
    db = sqlite3.connect(STATE / "runtime.db", isolation_level=None, timeout=10)
    db.execute("BEGIN IMMEDIATE")
    chatter = subprocess.Popen([sys.executable, "-c", (
        "import json,sys,urllib.request;"
        f"r=urllib.request.Request('{base}/v1/chat/completions',data=json.dumps({{'model':'{AGENT}',"
        "'messages':[{'role':'user','content':'while the database is locked'}]}).encode(),"
        "headers={'Content-Type':'application/json','x-switchboard-user':'locked'});"
        "print(urllib.request.urlopen(r,timeout=60).status)")], stdout=subprocess.PIPE, text=True)
    try:
        wait_for("a database retry in the runtime's metrics",
                 lambda: "switchboard_runtime_database_retries_total{" in get(f"{base}/metrics")[1],
                 timeout=40)
    finally:
        db.execute("ROLLBACK")
        db.close()
    out, _ = chatter.communicate(timeout=60)
    if chatter.returncode != 0 or out.strip() != "200":
        raise SystemExit(f"e2e: the chat sent while the database was locked did not succeed: {out!r}")
    # Every model fails: the turn ends in a 5xx.
    chat(base, "doomed", "[[mock: status=500]] nobody answers", expect=(500, 502, 503, 504))
    # The primary model fails every call: retries, fallbacks, then its circuit opens.
    for i in range(8):
        chat(base, f"unlucky-{i}", f"[[mock: status=500; model=primary-model]] try {i}")
    wait_for("the primary model's circuit to open",
             lambda: 'switchboard_runtime_upstream_circuit_state{model="primary-model"} 2'
             in get(f"{base}/metrics")[1])


def kubectl(*args, check=True, input=None):
    result = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise SystemExit(f"e2e: kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def start_operator():
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(REPO / "config" / "crd"))
    kubectl("wait", "--for", "condition=established", "--timeout=60s",
            "crd/agentdeployments.switchboard.dev", "crd/chatchannels.switchboard.dev")
    kubectl("create", "namespace", NAMESPACE)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POD_")}
    env["RUST_LOG"] = "warn"
    start("switchboard-operator", [str(BIN / "switchboard-operator"), "--namespace", NAMESPACE,
                                   "--metrics-addr", f"127.0.0.1:{port}", "--lease-namespace", NAMESPACE,
                                   "--identity", "monitoring-e2e"], env=env)
    base = f"http://127.0.0.1:{port}"
    wait_for("the operator to lead", lambda: "switchboard_operator_leader 1" in get(f"{base}/metrics")[1])
    # The sample agent and its channel reconcile; a second agent whose system prompt
    # ConfigMap does not exist fails with a missing dependency (an error category).
    for sample in ("agent-minimal.yaml", "channel-openai.yaml"):
        kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "config" / "samples" / sample))
    broken = {
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "broken", "namespace": NAMESPACE},
        "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"},
                 "systemPromptFrom": {"name": "no-such-prompt", "key": "prompt"}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(broken))
    wait_for("agent and channel reconciles and a failure in the operator's metrics",
             lambda: all(s in get(f"{base}/metrics")[1] for s in (
                 'switchboard_operator_reconciles_total{controller="agent"}',
                 'switchboard_operator_reconciles_total{controller="channel"}',
                 "switchboard_operator_reconcile_failures_total{",
                 "switchboard_operator_kube_writes_total{")), timeout=90)
    return base


def start_prometheus(runtime, operator):
    port = free_port()
    def target(url):
        return url.split("//", 1)[1]
    scrape = [{
        "job_name": AGENT,
        "scrape_interval": "1s",
        "static_configs": [{"targets": [target(runtime)],
                            "labels": {"namespace": NAMESPACE, "service": AGENT, "pod": f"{AGENT}-0"}}],
    }]
    if operator:
        scrape.append({
            "job_name": "switchboard-operator",
            "scrape_interval": "1s",
            "static_configs": [{"targets": [target(operator)],
                                "labels": {"namespace": "switchboard-system", "pod": "switchboard-operator-0"}}],
        })
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "alerts" / "switchboard.rules.yaml")],
        "scrape_configs": scrape,
    }
    (STATE / "prometheus.yml").write_text(json.dumps(config, indent=2))
    start("prometheus", [PROMETHEUS, f"--config.file={STATE / 'prometheus.yml'}",
                         f"--storage.tsdb.path={STATE / 'prometheus-data'}",
                         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
    base = f"http://127.0.0.1:{port}"
    wait_for("Prometheus to be ready", lambda: get(f"{base}/-/ready")[0] == 200)
    return base


def scraped_after(prom, job, moment):
    """Prometheus has scraped `job` at least twice since `moment` (unix seconds)."""
    result = prom_query(prom, f'timestamp(up{{job="{job}"}} == 1) - {moment}')
    return result and float(result[0]["value"][1]) >= 2.0


def main(argv):
    with_operator = "--no-operator" not in argv[1:]
    if with_operator and not os.environ.get("KUBECONFIG"):
        raise SystemExit("e2e: KUBECONFIG is not set: start the local cluster "
                         "(make cluster-up; eval \"$(make -s cluster-env)\") or pass --no-operator")
    for binary in ("agent-runtime", "mock-llm", *(["switchboard-operator"] if with_operator else [])):
        if not (BIN / binary).is_file():
            raise SystemExit(f"e2e: {BIN / binary} is missing: cargo build -p agent-runtime -p operator "
                             "-p tests --bin agent-runtime --bin switchboard-operator --bin mock-llm")
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    failed = False
    try:
        mock_port = free_port()
        start("mock-llm", [str(BIN / "mock-llm"), "--listen", f"127.0.0.1:{mock_port}"])
        wait_for("mock-llm", lambda: get(f"http://127.0.0.1:{mock_port}/healthz")[0] == 200)
        runtime = start_runtime(mock_port, start_mcp_server())
        operator = start_operator() if with_operator else None
        prom = start_prometheus(runtime, operator)
        wait_for("Prometheus' first scrape", lambda: scraped_after(prom, AGENT, 0))
        drive_runtime(runtime)
        done = time.time()
        wait_for("two scrapes after the load", lambda: scraped_after(prom, AGENT, done) and (
            not operator or scraped_after(prom, "switchboard-operator", done)))

        outputs = {"runtime": runtime, **({"operator": operator} if operator else {})}
        files = []
        for name, base in outputs.items():
            path = STATE / f"{name}.metrics.txt"
            path.write_text(get(f"{base}/metrics")[1])
            files.append(str(path))
            result = subprocess.run([PROMTOOL, "check", "metrics"], stdin=open(path), capture_output=True, text=True)
            complaints = (result.stdout + result.stderr).strip()
            series = sum(1 for l in path.read_text().splitlines() if l and not l.startswith("#"))
            if result.returncode != 0 or complaints:
                failed = True
                print(f"FAIL promtool check metrics on the {name}'s /metrics:\n{complaints}", file=sys.stderr)
            else:
                log(f"promtool check metrics: the {name}'s /metrics ({series} samples) has no complaints")
        scope = [] if operator else ["--without-operator"]
        for command in (["metrics", *scope, *files], ["live", *scope, prom]):
            if subprocess.run([sys.executable, str(ROOT / "check.py"), *command]).returncode != 0:
                failed = True
    finally:
        stop_all()
        if with_operator:
            kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
