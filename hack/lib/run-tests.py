#!/usr/bin/env python3
"""Runs test binaries side by side and reports like `cargo test --no-fail-fast`.

Used by `make unit` and `make test`. Reads the messages of
`cargo test --no-run --message-format=json` on stdin (one or more builds), and runs
every test binary they name in its package directory (where cargo runs it), JOBS at
a time. `--group NAME=PATTERN,...` makes the integration tests matching a pattern
(`package directory:target`, shell wildcards) one group, whose binaries run one after another:
`make test` groups every binary that uses the local cluster, because one of them
counts the cluster's write requests over an idle minute and must not see another's.

Each binary's output is printed when it ends, whole (`--verbose`) or its result
lines only, then a summary: the slowest binaries, the totals and every failure.
With `--times FILE`, each binary's duration is kept there and read back next time
so the longest start first (the group's first of all: they are one chain).
Arguments after `--` go to every binary.
"""

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def name_of(directory, exe):
    """A binary's stable name: package directory and file name without cargo's hash."""
    base = re.sub(r"-[0-9a-f]{16}$", "", os.path.basename(exe))
    return f"{os.path.basename(directory)}/{base}"


def read_times(path):
    times = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, _, seconds = line.rstrip("\n").partition("\t")
                try:
                    times[name] = float(seconds)
                except ValueError:
                    pass
    return times


def write_times(path, times):
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        for name in sorted(times):
            f.write(f"{name}\t{times[name]:.2f}\n")
    os.replace(tmp, path)


def counts(log):
    passed = failed = 0
    for m in re.finditer(r"^test result: \w+\. (\d+) passed; (\d+) failed", log, re.M):
        passed += int(m.group(1))
        failed += int(m.group(2))
    return passed, failed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--times", help="file of durations, read for order and updated")
    parser.add_argument("--verbose", action="store_true", help="print each binary's whole output")
    parser.add_argument("--group", action="append", default=[], metavar="NAME=PATTERN,...",
                        help="integration tests (directory:target) run one after another")
    parser.add_argument("args", nargs="*", help="arguments for every binary (after --)")
    opts = parser.parse_args()

    groups = []
    for spec in opts.group:
        name, _, patterns = spec.partition("=")
        groups += [(name, p) for p in patterns.split(",") if p]

    binaries, seen = [], set()
    for line in sys.stdin:
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
            continue
        if m["executable"] in seen:
            continue
        seen.add(m["executable"])
        directory = os.path.dirname(m["manifest_path"])
        target = m["target"]
        key = f"{os.path.basename(directory)}:{target['name']}"
        group = ""
        if target["kind"] == ["test"]:
            group = next((g for g, p in groups if fnmatch.fnmatchcase(key, p)), "")
        binaries.append({"dir": directory, "exe": m["executable"], "group": group,
                         "name": name_of(directory, m["executable"])})
    if not binaries:
        print("no test binaries given", file=sys.stderr)
        return 2

    known = read_times(opts.times)
    # Grouped binaries first (one chain, the longest path), then the longest known;
    # binaries never timed count as long, so a new slow one is not left for last.
    unknown = max(known.values(), default=0.0) + 1.0
    order = sorted(
        binaries,
        key=lambda b: (b["group"] == "", -known.get(b["name"], unknown)),
    )

    out = tempfile.mkdtemp(prefix="switchboard-tests.")
    pending = list(order)
    running = {}  # Popen -> binary
    busy_groups = set()
    results = []
    started_all = time.monotonic()
    try:
        while pending or running:
            while len(running) < max(1, opts.jobs):
                pick = next((b for b in pending if not b["group"] or b["group"] not in busy_groups), None)
                if pick is None:
                    break
                pending.remove(pick)
                pick["log"] = os.path.join(out, f"{len(results) + len(running)}.log")
                with open(pick["log"], "wb") as log:
                    proc = subprocess.Popen(
                        [pick["exe"], *opts.args],
                        cwd=pick["dir"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                pick["started"] = time.monotonic()
                running[proc] = pick
                if pick["group"]:
                    busy_groups.add(pick["group"])
            # Wait for any one to end.
            pid, status = os.wait()
            proc = next((p for p in running if p.pid == pid), None)
            if proc is None:
                continue
            proc.returncode = os.waitstatus_to_exitcode(status)
            b = running.pop(proc)
            busy_groups.discard(b["group"])
            b["seconds"] = time.monotonic() - b["started"]
            b["rc"] = proc.returncode
            with open(b["log"], errors="replace") as f:
                log = f.read()
            b["passed"], b["failed"] = counts(log)
            results.append(b)
            ok = b["rc"] == 0
            verdict = "ok" if ok else f"FAILED (exit {b['rc']})"
            print(f"\n==> {b['name']}: {verdict}, {b['passed']} passed, {b['failed']} failed, "
                  f"in {b['seconds']:.1f} s", flush=True)
            if opts.verbose or not ok:
                sys.stdout.write(log)
            else:
                for line in log.splitlines():
                    if line.startswith("test result:"):
                        print(line)
            sys.stdout.flush()
    finally:
        for proc in running:
            proc.kill()
        # The logs were printed as each binary ended.
        shutil.rmtree(out, ignore_errors=True)

    for b in results:
        known[b["name"]] = b["seconds"]
    write_times(opts.times, known)

    wall = time.monotonic() - started_all
    busy = sum(b["seconds"] for b in results)
    print(f"\n==> The {len(results)} test binaries, {opts.jobs} at a time: {wall:.0f} s "
          f"(one after another they took {busy:.0f} s); the slowest:")
    for b in sorted(results, key=lambda b: -b["seconds"])[:8]:
        print(f"    {b['seconds']:7.1f} s  {b['name']}")
    failed = [b for b in results if b["rc"] != 0]
    total = sum(b["passed"] for b in results)
    print(f"{total} tests passed in {len(results)} test binaries; {len(failed)} binaries failed")
    for b in failed:
        print(f"    FAILED: {b['name']} ({b['exe']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
