#!/usr/bin/env python3
"""CPU and memory of a command's process tree over time: where are the cores idle?

    .venv/bin/python bench/timeline.py -- .venv/bin/python -m pipeline.run --input D --output O --overwrite

Prints one line per interval: seconds since start, CPU % of the whole tree
(200% = both cores of a 2-core machine), summed RSS, and the busiest processes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil


def _label(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return "?"
    for marker in ("sdk_worker_main", "pipeline.run", "im2rec.py", "cv_loop.py"):
        if any(marker in c for c in cmd):
            return "%s:%d" % (marker.split(".")[0], p.pid)
    return "%s:%d" % (p.name(), p.pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("give the command to run after --")
    start = time.perf_counter()
    popen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(popen.pid)
    last: dict[int, float] = {}
    last_t = start
    total_cpu = 0.0
    while popen.poll() is None:
        time.sleep(args.interval)
        now = time.perf_counter()
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            break
        rss, rows = 0, []
        for p in procs:
            try:
                t = p.cpu_times()
                cpu = t.user + t.system
                rss += p.memory_info().rss
            except psutil.Error:
                continue
            delta = cpu - last.get(p.pid, 0.0)
            last[p.pid] = cpu
            rows.append((delta, _label(p)))
        dt = now - last_t
        last_t = now
        busy = sum(d for d, _ in rows)
        total_cpu += busy
        top = ", ".join("%s %.0f%%" % (name, 100 * d / dt) for d, name in sorted(rows, reverse=True)[:4] if d > 0.01 * dt)
        print("%6.2fs  cpu %4.0f%%  rss %5.0f MB  %s" % (now - start, 100 * busy / dt, rss / 2**20, top), flush=True)
    wall = time.perf_counter() - start
    print("exit %s after %.2f s; mean CPU %.0f%%" % (popen.wait(), wall, 100 * total_cpu / wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
