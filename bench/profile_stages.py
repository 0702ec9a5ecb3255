#!/usr/bin/env python3
"""Profile each stage's own code with cProfile, outside Beam, on one thread.

    .venv/bin/python bench/profile_stages.py --input .bench/data/500x375-q90-s0-n5000
    .venv/bin/python bench/profile_stages.py --input ... --flags "--resize 256 --quality 95" --top 15

Stages: listing (``list_class`` on every class folder), the elements that
cross the shuffles (size of one ImageRef and of one WriteShards element with
Beam's default coder), writing (``write_shard`` on one shard holding every
image, ``--threads 1`` so cProfile sees all the work). Prints microseconds per
image and the functions with the most own time. Beam's own overhead (start-up,
shuffles, gRPC) is not here: see ``py-spy`` in docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shlex
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def profiled(fn, top: int, label: str, images: int):
    prof = cProfile.Profile(time.process_time)  # CPU time: robust to other load on the machine
    t0, c0 = time.perf_counter(), time.process_time()
    prof.enable()
    result = fn()
    prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print("\n== %s: %d images, %.2f s wall, %.2f s CPU, %.1f us CPU per image (under cProfile)"
          % (label, images, wall, cpu, 1e6 * cpu / max(images, 1)))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    print("\n".join(lines[start:]))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--flags", default="", help="our pipeline's encoding flags, e.g. '--resize 256 --quality 95'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    sys.path.insert(0, REPO)

    from apache_beam.coders import registry

    from imgrec.finalize import layout_for
    from pipeline.cli import parse
    from pipeline.run import discover_classes
    from transforms.list_images import list_class
    from transforms.write_shards import write_shard

    out = tempfile.mkdtemp(prefix="bench-profile-")
    try:
        options, _, _ = parse(["--input", args.input, "--output", out] + shlex.split(args.flags))
        classes, _ = discover_classes(options)

        def listing():
            refs = []
            for index, name in enumerate(classes):
                refs.extend(list_class(options.input, index, name, options.exts, options.ratios, options.split_seed)[0])
            return refs

        refs = listing()  # once unprofiled: warm the directory cache
        refs = profiled(listing, args.top, "listing", len(refs))

        coder = registry.get_coder(object)
        one = len(coder.encode(refs[0]))
        element = (("train", 0, 1), 0, refs)
        print("\n== shuffled elements: one ImageRef = %d bytes with Beam's default coder; "
              "a WriteShards element of %d refs = %.1f MB"
              % (one, len(refs), len(coder.encode(element)) / 1e6))

        layout = layout_for(options)
        record = profiled(lambda: write_shard("train", 0, 1, refs, 0, options, layout, args.threads),
                          args.top, "write_shard (threads=%d, %s)" % (args.threads, args.flags or "pass-through"),
                          len(refs))
        print("\nwrote %d records, %.1f MB" % (record["records"], record["bytes"] / 1e6))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
