#!/usr/bin/env python3
"""Runtime status reports for `make bench-operator`: what a running agent's pods write
into its status, for pods that run nothing (the bench's kwok pods).

A runtime looks at its health every 10 s and writes its report when ready or upstream
health changed, when only its counts changed and its last report is 30 s old, and
when nothing changed and its last report is 60 s old. So a busy pod (new message
counts at every look) reports every --interval seconds and an idle pod every
--refresh seconds. Reads "<agent> <pod>"
lines on stdin; the first --busy-percent of the pods are busy. Until killed or for
--seconds, sends each pod's report on its period, the pods spread evenly over it: a
server-side apply of the pod's own `status.runtime` entry under its own field
manager, with the report's time (and, for a busy pod, a growing message count).
Talks to the API server through `kubectl proxy` on 127.0.0.1:--port. On exit prints
`key=value` lines: reports sent, failed, per second, and the mean latency of one.
"""

import argparse
import heapq
import http.client
import json
import signal
import sys
import threading
import time
from datetime import datetime, timezone


def report(agent, pod, messages):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": agent},
        "status": {"runtime": [{
            "name": pod, "ready": True, "upstreamHealthy": True,
            "activeSessions": 1 if messages else 0, "messagesTotal": messages,
            "lastHeartbeat": now, "version": "bench",
        }]},
    })


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--interval", type=float, default=30.0, help="a busy pod's period")
    parser.add_argument("--refresh", type=float, default=60.0, help="an idle pod's period")
    parser.add_argument("--busy-percent", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=0.0, help="0: until killed")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    pods = [tuple(line.split()[:2]) for line in sys.stdin if len(line.split()) >= 2]
    if not pods:
        print("heartbeats: no pods on stdin", file=sys.stderr)
        sys.exit(2)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    lock = threading.Lock()
    totals = {"sent": 0, "failed": 0, "seconds": 0.0}
    start = time.monotonic()
    end = start + args.seconds if args.seconds > 0 else None
    # Rounded half up, as scale.sh counts the reports due.
    busy = int(len(pods) * args.busy_percent / 100 + 0.5)
    # Pod i reports at start + offset_i + k * period_i, k = 0, 1, 2, ..., the busy
    # pods spread over the interval and the idle ones over the refresh.
    def schedule(i):
        if i < busy:
            return args.interval, i * args.interval / busy
        return args.refresh, (i - busy) * args.refresh / (len(pods) - busy)

    def worker(index):
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        queue = []
        for i in range(index, len(pods), args.threads):
            period, offset = schedule(i)
            heapq.heappush(queue, (start + offset, i, period, 0))
        while queue and not stop.is_set():
            due, i, period, beat = heapq.heappop(queue)
            if end is not None and due >= end:
                break
            now = time.monotonic()
            if due > now and stop.wait(due - now):
                break
            agent, pod = pods[i]
            path = (f"/apis/switchboard.dev/v1alpha1/namespaces/{args.namespace}"
                    f"/agentdeployments/{agent}/status"
                    f"?fieldManager=switchboard-runtime-{pod}&force=true")
            messages = (beat + 1) * 5 if i < busy else 0
            sent = time.monotonic()
            ok = False
            try:
                conn.request("PATCH", path, body=report(agent, pod, messages),
                             headers={"Content-Type": "application/apply-patch+yaml"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
            with lock:
                totals["sent" if ok else "failed"] += 1
                totals["seconds"] += time.monotonic() - sent
            heapq.heappush(queue, (due + period, i, period, beat + 1))
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(args.threads)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.5)
    elapsed = time.monotonic() - start
    done = totals["sent"] + totals["failed"]
    print(f"heartbeats_sent={totals['sent']}")
    print(f"heartbeats_failed={totals['failed']}")
    print(f"heartbeats_per_s={totals['sent'] / elapsed:.1f}")
    print(f"heartbeat_mean_ms={(totals['seconds'] * 1000 / done) if done else 0:.1f}")


if __name__ == "__main__":
    main()
