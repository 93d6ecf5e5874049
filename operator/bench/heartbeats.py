#!/usr/bin/env python3
"""Runtime heartbeats for `make bench-operator`: the reports a running agent's pods
write into its status every 10 s, for pods that run nothing (the bench's kwok pods).

Reads "<agent> <pod>" lines on stdin and, until killed or for --seconds, sends each
pod's report every --interval seconds, spread evenly over the interval, as the runtime
does: a server-side apply of the pod's own `status.runtime` entry under its own field
manager, with the report's time and a growing message count. Talks to the API server
through `kubectl proxy` on 127.0.0.1:--port. On exit prints `key=value` lines:
heartbeats sent, failed, per second, and the mean latency of one.
"""

import argparse
import http.client
import json
import signal
import sys
import threading
import time
from datetime import datetime, timezone


def report(agent, pod, beat):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": agent},
        "status": {"runtime": [{
            "name": pod, "ready": True, "upstreamHealthy": True,
            "activeSessions": 1, "messagesTotal": beat * 5,
            "lastHeartbeat": now, "version": "bench",
        }]},
    })


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--interval", type=float, default=10.0)
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
    # Pod i reports at start + i * spacing + k * interval, k = 0, 1, 2, ...
    spacing = args.interval / len(pods)

    def worker(index):
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        mine = list(range(index, len(pods), args.threads))
        if not mine:
            return
        beat = 0
        while not stop.is_set():
            for i in mine:
                due = start + i * spacing + beat * args.interval
                now = time.monotonic()
                if stop.is_set() or (end is not None and due >= end):
                    conn.close()
                    return
                if due > now:
                    stop.wait(due - now)
                    if stop.is_set():
                        break
                agent, pod = pods[i]
                path = (f"/apis/switchboard.dev/v1alpha1/namespaces/{args.namespace}"
                        f"/agentdeployments/{agent}/status"
                        f"?fieldManager=switchboard-runtime-{pod}&force=true")
                sent = time.monotonic()
                ok = False
                try:
                    conn.request("PATCH", path, body=report(agent, pod, beat + 1),
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
            beat += 1

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
