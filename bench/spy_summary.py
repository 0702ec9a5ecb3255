#!/usr/bin/env python3
"""Summarise a ``py-spy record --format raw`` profile: where the samples went, by function.

    py-spy record --subprocesses --rate 100 --format raw -o run.raw -- \\
        .venv/bin/python -m pipeline.run --input D --output O --overwrite
    .venv/bin/python bench/spy_summary.py run.raw --top 25
    .venv/bin/python bench/spy_summary.py run.raw --under write_shard   # only stacks through a function

Prints samples per process, then the functions with the most samples on the
stack (inclusive) and at the top of the stack (self). Idle waits (``wait``,
``select``, ``acquire``...) show up as self time of those functions, which is
how waiting threads look to a sampler; with ``--idle`` off (py-spy's default)
only running threads are sampled.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

_PROCESS = re.compile(r'^process (\d+):"(.*)"$')


def parse(path: str):
    """(process label, [frames], samples) per stack line."""
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            procs = []
            while frames and _PROCESS.match(frames[0]):
                procs.append(frames.pop(0))
            label = "main"
            if procs:
                m = _PROCESS.match(procs[-1])
                cmd = m.group(2)
                label = "worker %s" % m.group(1) if "sdk_worker_main" in cmd else "main %s" % m.group(1)
            yield label, frames, int(count)


def short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"; lines differ per sample, functions do not
    m = re.match(r"^(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    name, path = m.groups()
    return "%s (%s)" % (name, "/".join(path.split("/")[-2:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raw")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--under", default=None, help="only stacks that pass through a frame containing this text")
    ap.add_argument("--process", default=None, help="only processes whose label contains this text (main/worker)")
    args = ap.parse_args()
    per_process: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    self_: collections.Counter = collections.Counter()
    total = 0
    for label, frames, count in parse(args.raw):
        if args.process and args.process not in label:
            continue
        names = [short(f) for f in frames]
        if args.under:
            idx = next((i for i, n in enumerate(names) if args.under in n), None)
            if idx is None:
                continue
        total += count
        per_process[label] += count
        for name in set(names):
            inclusive[name] += count
        if names:
            self_[names[-1]] += count
    if not total:
        print("no samples matched")
        return 1
    print("%d samples" % total)
    for label, n in per_process.most_common():
        print("  %5.1f%%  %s" % (100 * n / total, label))
    for title, counter in (("inclusive", inclusive), ("self", self_)):
        print("\ntop %d by %s samples:" % (args.top, title))
        for name, n in counter.most_common(args.top):
            print("  %5.1f%%  %s" % (100 * n / total, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
