#!/usr/bin/env python3
"""Profile each stage's own code with cProfile, outside Beam, on one thread.

    .venv/bin/python bench/profile_stages.py --input .bench/data/500x375-q90-s0-n5000
    .venv/bin/python bench/profile_stages.py --input ... --flags "--resize 256 --quality 95" --top 15

Stages: listing (``spill.spill`` of every class folder: listed, keyed and
sorted into runs, as the job's listing tasks do) and writing
(``shardwriter.write_part`` on one part holding every image, its refs read
from those runs, on this thread, so cProfile sees all of a worker's work:
read, check, re-encode, frame).
Prints microseconds per image and the functions with the most own time. The
job's process (hashing and writing the parts, Beam, start-up) is not here:
see ``py-spy`` in docs/benchmark.md.
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
    ap.add_argument("--input", required=True, help="a folder of class folders")
    ap.add_argument("--flags", default="", help="our pipeline's encoding flags, e.g. '--resize 256 --quality 95'")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    sys.path.insert(0, REPO)

    from imgrec import folders, images, shardwriter, spill
    from imgrec.shardplan import KEY_SPACE
    from pipeline.cli import parse

    out = tempfile.mkdtemp(prefix="bench-profile-")
    try:
        options, _, _ = parse(["--input", args.input, "--output", out] + shlex.split(args.flags))
        found = folders.discover(options.input, options.exts, options.class_map)

        def listing():
            """The job's listing stage: every class folder listed and its refs written as sorted runs."""
            scratch = tempfile.mkdtemp(dir=out)
            summary = spill.RunSummary()
            for folder in found.listings(options.exts, options.max_file_bytes):
                job = spill.SpillJob(scratch, options.input, options.split_seed, max_file_bytes=options.max_file_bytes,
                                     listing=folder)
                summary.merge(spill.spill(job).meta)
            return summary

        warm = listing()  # once unprofiled: warm the directory cache
        summary = profiled(listing, args.top, "listing", warm.refs)

        images.tune_for_threads()  # what every worker process does first (OpenCV's threads, glibc's malloc)
        spec_path = os.path.join(out, "spec.pickle")
        shardwriter.save_spec(shardwriter.WriteSpec(options, found.classes), spec_path)
        # one part holding the whole key range, its refs read from the runs as a worker reads them
        job = shardwriter.PartJob(spec_path, "train", 0, 0, summary.refs, runs=tuple(summary.runs), lo=0, hi=KEY_SPACE)
        part = profiled(lambda: shardwriter.write_part(job), args.top,
                        "write_part (%s)" % (args.flags or "pass-through"), summary.refs)
        print("\nframed %d records, %.1f MB; %d skipped" % (len(part.meta.ids), part.size / 1e6, len(part.meta.errors)))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
