#!/usr/bin/env python3
"""Benchmark: our pipeline against MXNet's im2rec.py on the same data and worker count.

    .venv/bin/python bench/compare.py                      # full size (about 30 minutes on 2 cores)
    .venv/bin/python bench/compare.py --scale 0.01         # smoke size (a minute)
    .venv/bin/python bench/compare.py --modes resize,large --repeats 5
    .venv/bin/python bench/compare.py --code git:HEAD --modes tiny,memory --scale 0.1

Data sets are generated once (real photographs, cropped and re-encoded, see
``bench/datasets.py``) and cached under ``.bench/`` (git-ignored). For every
mode the raw-read or plain-OpenCV limit, our pipeline and im2rec.py run
alternately ``--repeats`` times on the same data and the median is reported.
Times are whole-process wall times, interpreter and runner start-up included.

Modes (image counts are multiplied by ``--scale``):

    pass      pass-through, 20,000 photos of 500x375 (~52 KB); limit = ``cat`` of every file into one file
    resize    --resize 256 --quality 95, 10,000 photos of 500x375; limit = plain OpenCV loop, same interpolation
    large     --resize 256, 300 photos of 4000x3000; limit = plain OpenCV loop with the same reduced
              decode + area resize as ours; also reports PSNR of reduced decode against full decode
    tiny      pass-through, 400,000 tiny JPEGs of 40x30 (~940 bytes); limit = ``cat``
    memory    pass-through of 20,000 and of 400,000 tiny JPEGs: peak memory of each tool's process tree;
              then ours alone with --check-duplicates and with --direct_num_workers 2
              (one run each unless --memory-repeats; the times of this data are the tiny mode's)
    scaling   --resize 256 --quality 95 on 4,000 photos under ``taskset`` on k = 1, 2, 4, ... and all usable
              cores: ours with its default command (it must find its cores itself), im2rec.py --num-thread k,
              the OpenCV loop with k processes; images/s per k and the speed-up over k = 1
    startup   pass-through of 10 photos (never scaled): the fixed cost of a run

im2rec.py runs as two commands, ``--list --recursive`` (makes the .lst) and the
record pass. ``ratio`` compares our whole run with im2rec.py's record pass alone
(the conservative figure, as im2rec.py is given its list for free);
``ratio incl. list`` adds its list pass, which our run also does.

Peak memory is the largest sum over the process tree, of PSS where Linux gives
it (forked workers' shared pages split between them, see ``bench/measure.py``),
else of RSS; the column header says which. Reading PSS walks a process's page
tables (4-6 ms of CPU for one of our job's processes), so outside the memory
mode the reads are spaced to take at most 2% of a core: the sampler no longer
takes a share of a 2-core run's cores that a 1-core run's free core paid for.

GIL and core ceiling (pass, resize, large, tiny, and the all-cores scaling run):
after the timed runs, our job runs once more under ``py-spy record --gil
--threads --subprocesses`` (``bench/gil.py``, ``bench/gil_clock.py``), and
on the first 10 images of the same data set, timed and profiled. Per image =
(run of N - run of 10) / (N - 10), so start-up is left out. ``GIL us/image``:
the time the GIL was held by a thread that was on a CPU, at most (a thread
preempted while it holds the GIL is sampled as holding it; on a machine with
fewer free cores than threads that is most of the sampled time), in the
process holding its GIL longest; the notes also give the raw sampled figure. ``GIL ceiling img/s`` = 1 / that, the rate at which that GIL
would be busy all the time; ``ceiling cores`` = that rate / the measured
per-core rate (1 / CPU seconds per image, all threads): beyond that many
cores this process layout gains nothing. The ImageNet-1k/21k projection built
from these figures is ``bench/estimate.py``.

Everything printed is Markdown (paste into docs/benchmark.md); it is also
saved as ``results.md`` and ``results.json`` in the bench folder.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(1, REPO)

import datasets  # noqa: E402
import estimate  # noqa: E402
import gil  # noqa: E402
import measure  # noqa: E402

PHOTO = (500, 375)
LARGE = (4000, 3000)
TINY = "tiny"
SIZES = {  # key -> (images at scale 1, kind: (width, height) of photos, or TINY)
    "pass": (20_000, PHOTO),
    "resize": (10_000, PHOTO),
    "large": (300, LARGE),
    "tiny": (400_000, TINY),
    "memory-small": (20_000, TINY),
    "memory-large": (400_000, TINY),
    "scaling": (4_000, PHOTO),
    "startup": (10, PHOTO),
}
MODES = ("pass", "resize", "large", "tiny", "memory", "scaling", "startup")
MEMORY_CONFIGS = (  # (name, our flags, im2rec.py's flags or None: ours alone)
    ("pass-through", [], ["--pass-through"]),
    ("--check-duplicates", ["--check-duplicates"], None),
    ("--direct_num_workers 2", ["--direct_num_workers", "2"], None),
)
RESIZE = 256
QUALITY = 95
PSNR_SAMPLE = 30  # large images decoded twice for the PSNR figure
BASELINE = 10  # images of the short run whose costs are subtracted to leave per-image costs
NOISY = 0.25  # per-image GIL figures where the images hold less of a run's GIL time than this are flagged
MEMORY_LIMIT = 1.5  # issue 17: peak at 400k tiny images within 1.5x of the peak at 20k
NAN = float("nan")


def core_steps(usable: int) -> list[int]:
    """1, 2, 4, 8, ... below ``usable``, then ``usable`` itself."""
    steps, k = [], 1
    while k < usable:
        steps.append(k)
        k *= 2
    return steps + [usable]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and v == v


@dataclass
class Row:
    mode: str
    images: int
    cores: int = 0  # cores the tools could use (taskset in the scaling mode)
    mean_bytes: float = NAN  # mean file size of the data set
    ours: list = field(default_factory=list)  # Measurement dicts
    im2rec: list = field(default_factory=list)
    im2rec_list: list = field(default_factory=list)
    limit: list = field(default_factory=list)
    limit_name: str = ""
    base: list = field(default_factory=list)  # our runs on the first BASELINE images (start-up cost)
    gil: list = field(default_factory=list)  # GilProfiles (asdict) of our runs on every image, --repeats
    gil_base: list = field(default_factory=list)  # ... and on BASELINE images
    gil_note: str = ""  # why the GIL was not measured
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    @staticmethod
    def _median(runs, key="wall"):
        return statistics.median(r[key] for r in runs) if runs else NAN

    @staticmethod
    def _peak_mb(runs):
        """Largest peak of the runs in MB: PSS where measured, else RSS."""
        if not runs:
            return NAN
        return max(r["peak_pss"] or r["peak_rss"] for r in runs) / 2**20

    def per_image(self) -> dict:
        """Marginal costs per image (run of N minus run of BASELINE), NaN where not measured or not positive.

        cpu_s: CPU seconds, all threads and processes. gil_s: GIL-held seconds on a CPU, at most, in the
        process holding its GIL longest (``GilProfile.held_running``); gil_wall_s: as py-spy sees it
        (``held``, preemption included); gil_all_s: gil_s summed over every process.
        """
        out = {"cpu_s": NAN, "gil_s": NAN, "gil_wall_s": NAN, "gil_all_s": NAN,
               "gil_processes": 0, "gil_added": NAN}
        extra = self.images - BASELINE
        if extra <= 0:
            return out

        def per(full: float, base: float) -> float:
            v = (full - base) / extra
            return v if v > 0 else NAN  # noise larger than the images' share: no figure

        if self.base and self.ours:
            out["cpu_s"] = per(self._median(self.ours, "cpu"), self._median(self.base, "cpu"))
        if self.gil and self.gil_base:
            fulls, bases = [gil.GilProfile(**g) for g in self.gil], [gil.GilProfile(**b) for b in self.gil_base]

            def median(profiles, fn):
                return statistics.median(fn(p) for p in profiles)

            for how, key in (("running", "gil_s"), ("wall", "gil_wall_s")):
                out[key] = per(median(fulls, lambda p: p.busiest(how)), median(bases, lambda p: p.busiest(how)))
            out["gil_all_s"] = per(median(fulls, gil.GilProfile.total), median(bases, gil.GilProfile.total))
            out["gil_processes"] = max(len(p.samples) for p in fulls)
            # the share of the full run's GIL time that is the images' (the rest is start-up): small means noisy
            full = median(fulls, gil.GilProfile.busiest)
            if full > 0:
                out["gil_added"] = 1 - median(bases, gil.GilProfile.busiest) / full
        return out

    def summary(self) -> dict:
        ours = self._median(self.ours)
        rec = self._median(self.im2rec)
        lst = self._median(self.im2rec_list)
        limit = self._median(self.limit)
        n = self.images
        per = self.per_image()
        ceiling = 1 / per["gil_s"] if per["gil_s"] > 0 else NAN
        return {
            "mode": self.mode,
            "images": n,
            "cores": self.cores,
            "mean_bytes": self.mean_bytes,
            "our_s": ours,
            "our_ips": n / ours,
            "im2rec_s": rec,
            "im2rec_ips": n / rec,
            "ratio": rec / ours,
            "ratio_incl_list": (rec + lst) / ours,
            "im2rec_list_s": lst,
            "limit_s": limit,
            "limit_ips": n / limit if self.limit else NAN,
            "fraction_of_limit": (limit / ours) if self.limit else NAN,
            "our_peak_mb": self._peak_mb(self.ours),
            "im2rec_peak_mb": self._peak_mb(self.im2rec),
            "our_peak_rss_mb": max(r["peak_rss"] for r in self.ours) / 2**20 if self.ours else NAN,
            "our_cpu_pct": self._median(self.ours, "cpu_percent"),
            "im2rec_cpu_pct": self._median(self.im2rec, "cpu_percent"),
            "other_cpu_pct": statistics.mean(
                [r["other_cpu_percent"] for r in self.ours + self.im2rec + self.im2rec_list + self.limit] or [NAN]
            ),
            "cpu_us_per_image": 1e6 * per["cpu_s"],
            "per_core_ips": 1 / per["cpu_s"] if per["cpu_s"] > 0 else NAN,
            "gil_us_per_image": 1e6 * per["gil_s"],
            "gil_wall_us_per_image": 1e6 * per["gil_wall_s"],
            "gil_all_us_per_image": 1e6 * per["gil_all_s"],
            "gil_processes": per["gil_processes"],
            "gil_added": per["gil_added"],
            "ceiling_ips": ceiling,
            "ceiling_cores": per["cpu_s"] * ceiling if ceiling == ceiling else NAN,
        }

    def cost(self) -> estimate.Cost:
        per = self.per_image()
        return estimate.Cost(self.mean_bytes, per["cpu_s"], per["gil_s"])


def _record(m: measure.Measurement) -> dict:
    d = asdict(m)
    d["cpu_percent"] = m.cpu_percent
    d["sys_percent"] = m.sys_percent
    d["other_cpu_percent"] = m.other_cpu_percent
    return d


def taskset(cpus: list[int]) -> list[str]:
    return ["taskset", "-c", ",".join(str(c) for c in cpus)]


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = os.path.abspath(args.bench_dir)
        # where every run writes its output: a tmpfs (--runs-dir /dev/shm/...) keeps a slow or discarding
        # disk (freed blocks trimmed as the next run writes) out of the comparison
        self.runs = os.path.abspath(args.runs_dir) if args.runs_dir else os.path.join(self.root, "runs")
        self.workers = args.workers
        self.ours_python = args.python
        self.mx_python = args.mxnet_python
        self.im2rec = args.im2rec or _find_im2rec(self.mx_python)
        self.code = snapshot(args.code, self.root) if args.code.startswith("git:") else os.path.abspath(args.code)
        # Byte-compiled as an installed package is (pip compiles on install); under PYTHONDONTWRITEBYTECODE a
        # source tree would otherwise be compiled again on every run (80 ms here, most of a small run's own work).
        subprocess.run([self.ours_python, "-m", "compileall", "-q", "imgrec", "pipeline", "transforms"],
                       cwd=self.code, stdout=subprocess.DEVNULL, check=False)
        self.cpus = sorted(os.sched_getaffinity(0))
        self.warm: set[str] = set()  # data sets whose files are in the page cache
        # PSS reads spaced to cost at most 2% of a core in the timed modes; at every sample in the memory mode
        self.pss_budget: float | None = measure.PSS_BUDGET
        self.py_spy = None
        self.gil_note = "GIL not measured (--no-gil)"
        if args.gil:
            spy = args.py_spy or gil.find_py_spy(self.ours_python)
            why = gil.unavailable(spy, self.ours_python)
            if why:
                self.gil_note = "GIL not measured: " + why
            else:
                self.py_spy, self.gil_note = spy, ""

    # ------------------------------------------------------------ data

    def count(self, key: str) -> int:
        n, kind = SIZES[key]
        if key == "startup":
            return n
        if key == "scaling" and self.args.scaling_images:
            return self.args.scaling_images
        floor = 2 if kind == LARGE else datasets.CLASSES
        return max(floor, int(round(n * self.args.scale)))

    def dataset(self, kind, n: int) -> str:
        if kind == TINY:
            return datasets.make_tiny_dataset(self.root, REPO, n, processes=self.workers)
        w, h = kind
        return datasets.make_dataset(self.root, REPO, n, w, h, processes=self.workers)

    def data(self, key: str) -> tuple[str, int]:
        n = self.count(key)
        return self.dataset(SIZES[key][1], n), n

    # ------------------------------------------------------------ one run of each tool

    def _fresh(self, name: str) -> str:
        path = os.path.join(self.runs, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def ours_parallelism(self) -> list[str]:
        """Our flags for the same worker count as im2rec.py's --num-thread.

        With as many workers as cores nothing is passed: our default is meant
        to use every core. For another count: that many encoding threads.
        """
        if self.workers == (os.cpu_count() or 1):
            return []
        return ["--threads", str(self.workers)]

    def run_ours(self, data: str, n: int, flags: list[str], tag: str, prefix=(), parallel=None,
                 spy: bool = False) -> tuple[dict, gil.GilProfile | None]:
        """One run of our job; with ``spy``, under py-spy (its GIL profile is returned too)."""
        work = self._fresh("ours-" + tag)
        out = os.path.join(work, "out")
        par = self.ours_parallelism() if parallel is None else list(parallel)
        job = [self.ours_python, "-m", "pipeline.run", "--input", data, "--output", out, "--log-level", "WARNING",
               ] + par + flags + self.args.ours_flag
        # The code under test comes first on the path of the job and of its Beam workers.
        env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=self.code)
        log = os.path.join(self.runs, "ours-%s.log" % tag)
        profile = None
        if spy:
            # taskset outside py-spy: py-spy then starts the interpreter itself, and both stay on those cores
            profile, m = gil.record(self.py_spy, job, os.path.join(self.runs, "ours-%s.raw" % tag), log,
                                    prefix=prefix, cwd=self.code, env=env)
        else:
            m = measure.run_checked(list(prefix) + job, log, cwd=self.code, env=env, pss_budget=self.pss_budget)
        with open(os.path.join(out, "manifest.json")) as f:
            manifest = json.load(f)
        got = sum(s["records"] for s in manifest["splits"].values())
        if got != n:
            raise measure.RunFailed("our pipeline wrote %d records for %d images (%s)" % (got, n, out))
        shutil.rmtree(work, ignore_errors=True)
        return _record(m), profile

    def run_im2rec(self, data: str, n: int, flags: list[str], tag: str, threads: int | None = None,
                   prefix=()) -> tuple[dict, dict]:
        work = self._fresh("im2rec-" + tag)
        out = os.path.join(work, "data")
        listing = measure.run_checked(
            list(prefix) + [self.mx_python, self.im2rec, out, data, "--list", "--recursive"],
            os.path.join(self.runs, "im2rec-%s-list.log" % tag), pss_budget=self.pss_budget)
        m = measure.run_checked(
            list(prefix) + [self.mx_python, self.im2rec, out, data, "--num-thread", str(threads or self.workers)]
            + flags, os.path.join(self.runs, "im2rec-%s.log" % tag), pss_budget=self.pss_budget)
        with open(out + ".idx") as f:
            got = sum(1 for line in f if line.strip())
        if got != n:
            raise measure.RunFailed("im2rec.py wrote %d records for %d images (%s)" % (got, n, work))
        shutil.rmtree(work, ignore_errors=True)
        return _record(listing), _record(m)

    def file_list(self, data: str) -> str:
        path = os.path.join(self.runs, "files-%s.txt" % os.path.basename(data))
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.writelines(p + "\n" for p in datasets.image_files(data))
        return path

    def run_cat(self, data: str, tag: str) -> dict:
        work = self._fresh("cat-" + tag)
        listing = self.file_list(data)
        cmd = ["sh", "-c", 'tr "\\n" "\\0" < "$1" | xargs -0 cat > "$2"', "sh", listing, os.path.join(work, "all.bin")]
        m = measure.run_checked(cmd, os.path.join(self.runs, "cat-%s.log" % tag), pss_budget=self.pss_budget)
        shutil.rmtree(work, ignore_errors=True)
        self.warm.add(data)
        return _record(m)

    def run_cv_loop(self, data: str, tag: str, reduce: int, interpolation: str, malloc: str = "keep",
                    workers: int | None = None, prefix=()) -> dict:
        work = self._fresh("cv-" + tag)
        cmd = list(prefix) + [
            self.ours_python, os.path.join(BENCH, "cv_loop.py"), "--list", self.file_list(data), "--out", work,
            "--workers", str(workers or self.workers), "--resize", str(RESIZE), "--quality", str(QUALITY),
            "--reduce", str(reduce), "--interpolation", interpolation, "--malloc", malloc]
        m = measure.run_checked(cmd, os.path.join(self.runs, "cv-%s.log" % tag), pss_budget=self.pss_budget)
        shutil.rmtree(work, ignore_errors=True)
        return _record(m)

    # ------------------------------------------------------------ modes

    def quiet(self) -> None:
        """Before a measured run: wait (up to --quiet-wait seconds) for other users of the machine to pause."""
        if self.args.quiet_wait > 0:
            used = measure.wait_for_quiet(self.args.quiet_wait)
            if used >= 25.0:
                self.log("  machine still busy (%.0f%% of a core used by others); measuring anyway" % used)

    def compare(self, mode: str, key: str, our_flags, im2rec_flags, limit=None, limit_name="", *, cores=None,
                prefix=(), parallel=None, repeats=None, profile=False) -> Row:
        """Alternating runs of the limit (if any), ours and im2rec.py (unless ``im2rec_flags`` is None).

        ``cores``/``prefix``: the scaling mode's core count and taskset; ``parallel``: our parallelism
        flags instead of ``ours_parallelism()``; ``profile``: also measure the GIL and per-image costs.
        """
        data, n = self.data(key)
        repeats = repeats or self.args.repeats
        cores = cores or self.workers
        row = Row(mode, n, cores=cores, limit_name=limit_name, mean_bytes=datasets.mean_bytes(data))
        tag = "%s-%d" % (key, cores)
        self.log("%s: %d images, %d cores, %d repeats" % (mode, n, cores, repeats))
        if limit is None and data not in self.warm:
            self.run_cat(data, key)  # not recorded: the page cache is warm for both tools, as in the other modes
        for r in range(repeats):
            if limit is not None:
                self.quiet()
                try:
                    row.limit.append(limit(data, tag))  # first: also warms the page cache for both tools
                except measure.RunFailed as exc:
                    row.failures.append("%s, limit run %d failed: %s" % (mode, r + 1, exc))
            steps = ["ours"] + (["im2rec"] if im2rec_flags is not None else [])
            if r % 2:
                steps.reverse()
            for step in steps:
                self.quiet()
                try:
                    if step == "ours":
                        row.ours.append(self.run_ours(data, n, our_flags, tag, prefix, parallel)[0])
                    else:
                        lst, rec = self.run_im2rec(data, n, im2rec_flags, tag, cores, prefix)
                        row.im2rec_list.append(lst)
                        row.im2rec.append(rec)
                except measure.RunFailed as exc:
                    # recorded and reported; the other runs still count
                    row.failures.append("%s, %s run %d failed: %s" % (mode, step, r + 1, exc))
                    self.log("  " + row.failures[-1])
            self.log("  run %d: ours %s%s%s" % (
                r + 1, _last_wall(row.ours),
                ", im2rec %s (+%s list)" % (_last_wall(row.im2rec), _last_wall(row.im2rec_list))
                if im2rec_flags is not None else "",
                ", limit %.2fs" % row.limit[-1]["wall"] if row.limit else ""))
        if profile:
            self.profile(row, key, data, our_flags, prefix, parallel)
        return row

    def profile(self, row: Row, key: str, data: str, flags, prefix, parallel) -> None:
        """Per-image CPU and GIL: timed runs on BASELINE images, then both sizes under py-spy."""
        if row.images < 2 * BASELINE:
            row.gil_note = "too few images (%d) for per-image figures; at least %d" % (row.images, 2 * BASELINE)
            return
        base = self.dataset(SIZES[key][1], BASELINE)  # the first BASELINE images of the same data
        tag = "%s-%d" % (key, row.cores)
        try:
            for _ in range(self.args.repeats):
                self.quiet()
                row.base.append(self.run_ours(base, BASELINE, flags, tag + "-base", prefix, parallel)[0])
            if self.py_spy is None:
                row.gil_note = self.gil_note
                return
            self.log("  GIL: %d and %d images, %d times each, under py-spy" % (row.images, BASELINE, self.args.repeats))
            for _ in range(self.args.repeats):
                self.quiet()
                row.gil.append(asdict(self.run_ours(data, row.images, flags, tag + "-gil", prefix, parallel,
                                                    spy=True)[1]))
                row.gil_base.append(asdict(self.run_ours(base, BASELINE, flags, tag + "-gilbase", prefix, parallel,
                                                         spy=True)[1]))
        except measure.RunFailed as exc:
            row.failures.append("%s, per-image run failed: %s" % (row.mode, exc))

    def mode_pass(self) -> list[Row]:
        return [self.compare("pass-through", "pass", [], ["--pass-through"],
                             limit=lambda d, k: self.run_cat(d, k), limit_name="cat", profile=True)]

    def plain_malloc_note(self, row: Row, key: str, reduce: int, interpolation: str) -> None:
        data, n = self.data(key)
        try:
            m = self.run_cv_loop(data, key, reduce, interpolation, malloc="plain")
        except measure.RunFailed as exc:
            row.failures.append("%s, plain OpenCV loop failed: %s" % (row.mode, exc))
            return
        row.notes.append("%s: the OpenCV loop without the allocator setting (glibc maps and unmaps every decoded "
                         "image): %.0f images/s, %.0f%% system CPU time" % (row.mode, n / m["wall"], m["sys_percent"]))

    def mode_resize(self) -> list[Row]:
        row = self.compare("resize 256 q95", "resize", ["--resize", str(RESIZE), "--quality", str(QUALITY)],
                           ["--resize", str(RESIZE), "--quality", str(QUALITY)],
                           limit=lambda d, k: self.run_cv_loop(d, k, 1, "linear"), limit_name="OpenCV loop",
                           profile=True)
        self.plain_malloc_note(row, "resize", 1, "linear")
        return [row]

    def mode_large(self) -> list[Row]:
        # the source is 4000x3000: the largest DCT scale keeping the shorter edge >= 256 is 1/8
        reduce = max(f for f in (1, 2, 4, 8) if LARGE[1] // f >= RESIZE)
        row = self.compare("resize 256, 4000x3000", "large", ["--resize", str(RESIZE)], ["--resize", str(RESIZE)],
                           limit=lambda d, k: self.run_cv_loop(d, k, reduce, "area"),
                           limit_name="OpenCV loop 1/%d" % reduce, profile=True)
        self.plain_malloc_note(row, "large", reduce, "area")
        import quality

        data, _ = self.data("large")
        files = datasets.image_files(data)[:PSNR_SAMPLE]
        mean, low = quality.reduced_decode_psnr(files, RESIZE)
        row.notes.append("PSNR of reduced decode + INTER_AREA against full decode + INTER_AREA (%d images): "
                         "mean %.1f dB, min %.1f dB" % (len(files), mean, low))
        paths, _ = datasets.source_photo_paths(REPO)
        for factor, (m, lo, k) in quality.native_photo_psnr(paths).items():
            row.notes.append("same check on the %d unscaled source photographs at 1/%d: mean %.1f dB, min %.1f dB"
                             % (k, factor, m, lo))
        return [row]

    def mode_tiny(self) -> list[Row]:
        return [self.compare("tiny pass-through", "tiny", [], ["--pass-through"],
                             limit=lambda d, k: self.run_cat(d, k), limit_name="cat", profile=True)]

    def mode_memory(self) -> list[Row]:
        rows = []
        self.pss_budget = None  # the peak is this mode's figure: PSS at every sample
        try:
            for name, flags, im2rec_flags in MEMORY_CONFIGS:
                for key in ("memory-small", "memory-large"):
                    rows.append(self.compare("memory, " + name, key, flags, im2rec_flags,
                                             repeats=self.args.memory_repeats))
        finally:
            self.pss_budget = measure.PSS_BUDGET
        return rows

    def mode_scaling(self) -> list[Row]:
        flags = ["--resize", str(RESIZE), "--quality", str(QUALITY)]
        rows = []
        steps = core_steps(len(self.cpus))
        for k in steps:
            prefix = taskset(self.cpus[:k])
            rows.append(self.compare(
                "scaling, resize 256 q95", "scaling", flags, flags,
                limit=lambda d, t, k=k, prefix=prefix: self.run_cv_loop(d, t, 1, "linear", workers=k, prefix=prefix),
                limit_name="OpenCV loop", cores=k, prefix=prefix, parallel=[], profile=k == steps[-1]))
        return rows

    def mode_startup(self) -> list[Row]:
        return [self.compare("start-up", "startup", [], ["--pass-through"])]

    def log(self, text: str) -> None:
        print("bench: " + text, file=sys.stderr, flush=True)


def _last_wall(runs) -> str:
    return "%.2fs" % runs[-1]["wall"] if runs else "failed"


def _find_im2rec(mx_python: str) -> str:
    venv = os.path.dirname(os.path.dirname(mx_python))
    found = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "mxnet", "tools", "im2rec.py"))
    if not found:
        raise SystemExit("bench: im2rec.py not found under %s (make .venv-mxnet/.installed, or pass --im2rec)" % venv)
    return found[0]


def _fmt(v, spec):
    if not _finite(v):  # NaN: no such measurement in this mode
        return "n/a"
    if spec == "rate":  # images/s: three significant figures, so small runs do not show 0
        return "%.0f" % v if v >= 100 else "%.3g" % v
    return format(v, spec)


def table(rows: list[Row], memory_kind: str) -> str:
    head = ["mode", "images", "cores", "ours s", "ours img/s", "im2rec s", "im2rec img/s", "ratio", "ratio incl. list",
            "limit", "limit img/s", "fraction of limit", "ours peak %s MB" % memory_kind,
            "im2rec peak %s MB" % memory_kind, "GIL us/image", "GIL ceiling img/s", "ceiling cores",
            "ours CPU %", "im2rec CPU %", "others' CPU %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        s = row.summary()
        cells = [row.mode, str(s["images"]), str(s["cores"]), _fmt(s["our_s"], ".2f"), _fmt(s["our_ips"], "rate"),
                 _fmt(s["im2rec_s"], ".2f"), _fmt(s["im2rec_ips"], "rate"), _fmt(s["ratio"], ".2f"),
                 _fmt(s["ratio_incl_list"], ".2f"), row.limit_name or "-", _fmt(s["limit_ips"], "rate"),
                 _fmt(s["fraction_of_limit"], ".2f"), _fmt(s["our_peak_mb"], ".0f"), _fmt(s["im2rec_peak_mb"], ".0f"),
                 _fmt(s["gil_us_per_image"], ".1f"), _fmt(s["ceiling_ips"], "rate"), _fmt(s["ceiling_cores"], ".1f"),
                 _fmt(s["our_cpu_pct"], ".0f"), _fmt(s["im2rec_cpu_pct"], ".0f"), _fmt(s["other_cpu_pct"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def scaling(rows: list[Row]) -> list[dict]:
    """Per core count of the scaling mode: images/s of each tool and its speed-up over 1 core."""
    runs = [r.summary() for r in rows if r.mode.startswith("scaling")]
    one = next((s for s in runs if s["cores"] == 1), None)
    out = []
    for s in runs:
        entry = {"cores": s["cores"], "images": s["images"]}
        for tool, key in (("ours", "our_ips"), ("im2rec", "im2rec_ips"), ("limit", "limit_ips")):
            entry[tool + "_ips"] = s[key]
            entry[tool + "_speedup"] = s[key] / one[key] if one else NAN
        out.append(entry)
    return out


def scaling_table(entries: list[dict]) -> str:
    head = ["cores", "ours img/s", "ours speed-up", "im2rec img/s", "im2rec speed-up", "OpenCV loop img/s",
            "loop speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        lines.append("| %d | %s | %s | %s | %s | %s | %s |" % (
            e["cores"], _fmt(e["ours_ips"], "rate"), _fmt(e["ours_speedup"], ".2f"), _fmt(e["im2rec_ips"], "rate"),
            _fmt(e["im2rec_speedup"], ".2f"), _fmt(e["limit_ips"], "rate"), _fmt(e["limit_speedup"], ".2f")))
    return "\n".join(lines) + "\n"


def gil_notes(rows: list[Row]) -> list[str]:
    """One line per profiled mode: the GIL figures behind the table's columns, or why there are none."""
    out = []
    for row in rows:
        if not (row.gil or row.gil_note or row.base):
            continue
        s = row.summary()
        what = "%s (%d cores)" % (row.mode, row.cores)
        if _finite(s["gil_us_per_image"]):
            out.append("GIL, %s: held on a CPU at most %.1f us/image (%s as sampled, preemption included) in "
                       "the busiest of %d processes (%s over all); %s us CPU/image = %s images/s per core; that "
                       "GIL is busy all the time at %s images/s, reached at %s cores" % (
                           what, s["gil_us_per_image"], _fmt(s["gil_wall_us_per_image"], ".1f"), s["gil_processes"],
                           _fmt(s["gil_all_us_per_image"], ".1f"), _fmt(s["cpu_us_per_image"], ".0f"),
                           _fmt(s["per_core_ips"], "rate"), _fmt(s["ceiling_ips"], "rate"),
                           _fmt(s["ceiling_cores"], ".1f"))
                       + ("" if not s["gil_added"] < NOISY else "; noisy: the images account for only %.0f%% of the "
                          "run's GIL time, start-up for the rest (use a larger --scale)" % (100 * s["gil_added"])))
        else:
            why = row.gil_note or "GIL-held time did not grow with the images (noise at this scale)"
            out.append("GIL, %s: not measured -- %s; %s us CPU/image" % (what, why, _fmt(s["cpu_us_per_image"], ".0f")))
    return out


def imagenet(rows: list[Row]) -> tuple[list[estimate.Projection], list[str]]:
    """The ImageNet projection from this run's per-image costs, and what it was built from."""
    by = {r.mode: r for r in rows}
    pass_row, tiny_row = by.get("pass-through"), by.get("tiny pass-through")
    resize_row = by.get("resize 256 q95") or next(
        (r for r in reversed(rows) if r.mode.startswith("scaling") and r.gil), None)
    costs = {name: r.cost() if r is not None else None
             for name, r in (("pass", pass_row), ("tiny", tiny_row), ("resize", resize_row))}
    projections = estimate.imagenet_estimate(costs["pass"], costs["resize"], costs["tiny"])
    used = []
    for name, row in (("pass-through", pass_row), ("tiny", tiny_row), ("resize 256", resize_row)):
        c = costs["pass" if name == "pass-through" else "tiny" if name == "tiny" else "resize"]
        if c is not None and c.usable():
            used.append("%s: measured %.0f us CPU and %s us GIL per image on %s images of %.0f bytes (%s)" % (
                name, 1e6 * c.cpu_s, _fmt(1e6 * c.gil_s, ".1f"), row.images, c.mean_bytes, row.mode))
    return projections, used


def targets(rows: list[Row]) -> list[str]:
    """The issue-17 targets, each with its figure and met / NOT met."""
    by = {}
    for row in rows:
        by.setdefault(row.mode, []).append(row.summary())
    out = []

    def verdict(ok, *values):
        if not all(_finite(v) for v in values):  # a tool failed every run of the mode
            return "not measured"
        return "met" if ok else "NOT met"

    if "pass-through" in by:
        s = by["pass-through"][0]
        out.append("pass-through >= 1.5x im2rec.py: %.2fx (%.2fx incl. its list pass) -- %s; %.0f%% of the cat limit"
                   % (s["ratio"], s["ratio_incl_list"], verdict(s["ratio"] >= 1.5, s["ratio"]), 100 * s["fraction_of_limit"]))
    if "tiny pass-through" in by:
        s = by["tiny pass-through"][0]
        times_cat = s["our_s"] / s["limit_s"]
        out.append("tiny pass-through within 3x of cat: %.2fx cat's time -- %s; %.2fx im2rec.py"
                   % (times_cat, verdict(times_cat <= 3.0, times_cat), s["ratio"]))
    if "resize 256 q95" in by:
        s = by["resize 256 q95"][0]
        out.append("resize 256 q95 >= 2.5x im2rec.py: %.2fx -- %s; %.0f%% of the OpenCV limit"
                   % (s["ratio"], verdict(s["ratio"] >= 2.5, s["ratio"]), 100 * s["fraction_of_limit"]))
    if "resize 256, 4000x3000" in by:
        s = by["resize 256, 4000x3000"][0]
        out.append("4000x3000 resize 256 >= 4.5x im2rec.py: %.2fx -- %s; %.0f%% of the OpenCV limit"
                   % (s["ratio"], verdict(s["ratio"] >= 4.5, s["ratio"]), 100 * s["fraction_of_limit"]))
    for name, _, _ in MEMORY_CONFIGS:
        pair = by.get("memory, " + name, [])
        if len(pair) == 2:
            small, large = pair
            growth = large["our_peak_mb"] / small["our_peak_mb"]
            out.append("memory, %s: %d vs %d images within %.1fx: %.0f MB vs %.0f MB, %.2fx -- %s" % (
                name, large["images"], small["images"], MEMORY_LIMIT, large["our_peak_mb"], small["our_peak_mb"],
                growth, verdict(growth <= MEMORY_LIMIT, growth)))
    entries = scaling(rows)
    two = next((e for e in entries if e["cores"] == 2), None)
    if two is not None:
        out.append("resize 256 on 2 cores vs 1 >= 1.8x: %.2fx -- %s (im2rec.py %.2fx, OpenCV loop %.2fx)" % (
            two["ours_speedup"], verdict(two["ours_speedup"] >= 1.8, two["ours_speedup"]), two["im2rec_speedup"],
            two["limit_speedup"]))
    if len(entries) > 2:
        last = entries[-1]
        out.append("resize 256 on %d cores vs 1: ours %.2fx, im2rec.py %.2fx, OpenCV loop %.2fx" % (
            last["cores"], last["ours_speedup"], last["im2rec_speedup"], last["limit_speedup"]))
    if "start-up" in by:
        s = by["start-up"][0]
        out.append("start-up on %d images < 1 s: %.2f s -- %s (im2rec.py: %.2f s + %.2f s list)"
                   % (s["images"], s["our_s"], verdict(s["our_s"] < 1.0, s["our_s"]), s["im2rec_s"], s["im2rec_list_s"]))
    return out


def snapshot(spec: str, bench_root: str) -> str:
    """``git:REV``: the committed tree of REV, extracted under the bench folder (others' edits left out)."""
    import subprocess

    rev = spec[len("git:"):] or "HEAD"
    try:
        sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", rev], capture_output=True, text=True,
                             check=True).stdout.strip()
    except subprocess.CalledProcessError:
        raise SystemExit("bench: --code %s: no such git revision" % spec) from None
    folder = os.path.join(bench_root, "code-" + sha)
    if not os.path.exists(os.path.join(folder, "COMMIT")):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        archive = subprocess.Popen(["git", "-C", REPO, "archive", sha], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", folder], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit("bench: git archive %s failed" % sha)
        with open(os.path.join(folder, "COMMIT"), "w") as f:
            f.write(sha + "\n")
    return folder


def code_description(code: str) -> str:
    """Which code was measured: the folder, and its git commit and changed files when it is a checkout."""
    import subprocess

    if os.path.exists(os.path.join(code, "COMMIT")):
        with open(os.path.join(code, "COMMIT")) as f:
            return "%s (git archive of commit %s)" % (code, f.read().strip())
    try:
        top = subprocess.run(["git", "-C", code, "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             check=True).stdout.strip()
        if os.path.realpath(top) != os.path.realpath(code):
            return code  # a copy inside some checkout: its commit says nothing about it
        sha = subprocess.run(["git", "-C", code, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", code, "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return code
    return "%s (git %s%s)" % (code, sha, ", %d files changed since" % len(changed) if changed else "")




def render(header: list[str], rows: list[Row], memory_kind: str) -> str:
    """The whole report as Markdown: header, main table, scaling, GIL, ImageNet projection, notes, targets."""
    parts = ["".join("- %s\n" % h for h in header), table(rows, memory_kind)]
    entries = scaling(rows)
    if entries:
        first = next(r for r in rows if r.mode.startswith("scaling"))
        parts.append("Scaling, resize 256 q95 on %d photos (`taskset -c` the first k usable cores; ours: its default "
                     "command; im2rec.py `--num-thread k`; OpenCV loop: k processes):\n\n%s"
                     % (first.images, scaling_table(entries)))
    projections, used = imagenet(rows)
    if not projections:
        parts.append("ImageNet estimate: not projected -- it needs the per-image costs of the pass or resize mode "
                     "(at least %d images; py-spy for the GIL ceiling).\n" % (2 * BASELINE))
    else:
        parts.append("ImageNet estimate, compute time only (`bench/estimate.py`). Measured here: %s. Projected: "
                     "rate on N cores = min(N / CPU s per image, 1 / GIL s per image); pass-through cost linear in "
                     "file size through the tiny and photo points, read at ImageNet-1k's %.0f KB and ImageNet-21k's "
                     "%.0f KB mean file; resize cost per 500x375 photo as measured; \"(GIL)\": the core ceiling of "
                     "the process layout measured here sets the time.\n\n%s"
                     % ("; ".join(used), estimate.IMAGENET_1K.mean_bytes / 1e3, estimate.IMAGENET_21K.mean_bytes / 1e3,
                        estimate.markdown(projections)))
    notes = gil_notes(rows) + [n for row in rows for n in row.notes + row.failures] + targets(rows)
    parts.append("".join("- %s\n" % n for n in notes))
    return "\n".join(p for p in parts if p)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every image count (not start-up's) by this")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="im2rec.py --num-thread; ours: its default when this is the core count, else --threads N "
                         "(default: cores; the scaling mode sets its own)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating runs per mode (default 3; 1 below scale 0.1)")
    ap.add_argument("--memory-repeats", type=int, default=1, help="runs per configuration in the memory mode")
    ap.add_argument("--scaling-images", type=int, default=None,
                    help="images of the scaling mode, instead of 4,000 x --scale (on many cores: enough for the "
                         "all-cores run to last well beyond its start-up)")
    ap.add_argument("--no-gil", dest="gil", action="store_false",
                    help="skip the py-spy runs (GIL us/image and core ceiling then read n/a)")
    ap.add_argument("--py-spy", default=None, help="py-spy executable (default: beside --python, else on PATH)")
    ap.add_argument("--bench-dir", default=os.path.join(REPO, ".bench"), help="data and scratch folder")
    ap.add_argument("--runs-dir", default="", help="where the runs write their output (default: BENCH_DIR/runs; "
                    "a tmpfs such as /dev/shm/imgrec-runs measures the tools, not the disk)")
    ap.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"), help="our environment's python")
    ap.add_argument("--mxnet-python", default=os.path.join(REPO, ".venv-mxnet", "bin", "python"))
    ap.add_argument("--im2rec", default=None, help="path of im2rec.py (default: the one in the mxnet environment)")
    ap.add_argument("--code", default=REPO,
                    help="folder whose pipeline is measured (default: this checkout, edits included), or git:REV "
                         "for the committed tree of a revision (git:HEAD leaves uncommitted edits out)")
    ap.add_argument("--ours-flag", action="append", default=[], help="extra flag for our pipeline (repeatable)")
    ap.add_argument("--markdown", default=None, help="also write the report to this file")
    ap.add_argument("--quiet-wait", type=float, default=0.0,
                    help="on a shared machine: before each run wait up to this many seconds for other CPU use "
                         "to drop under a quarter of a core (the table reports what others used anyway)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        ap.error("unknown mode(s) %s; choose from %s" % (", ".join(unknown), ", ".join(MODES)))
    if args.scale <= 0:
        ap.error("--scale must be positive")
    for name in ("repeats", "memory_repeats", "scaling_images"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error("--%s must be at least 1" % name.replace("_", "-"))
    if args.repeats is None:
        args.repeats = 3 if args.scale >= 0.1 else 1
    for exe in (args.python, args.mxnet_python):
        if not os.path.exists(exe):
            raise SystemExit("bench: %s not found (run make install envs)" % exe)
    if "scaling" in modes and shutil.which("taskset") is None:
        raise SystemExit("bench: the scaling mode needs taskset (util-linux)")

    bench = Bench(args)
    started = time.time()
    load_before = os.getloadavg()
    rows: list[Row] = []
    for mode in modes:
        rows.extend(getattr(bench, "mode_" + mode)())
    load_after = os.getloadavg()

    kind = measure.memory_kind()
    _, source = datasets.source_photo_paths(REPO)
    header = [
        "machine: " + measure.machine_description(),
        "workers: %d (im2rec.py --num-thread %d, ours %s); scale %g; median of %d alternating runs"
        % (args.workers, args.workers, " ".join(bench.ours_parallelism()) or "its default command",
           args.scale, args.repeats),
        "images: %s; load average before %.2f, after %.2f; total %.0f s; %s"
        % (source, load_before[0], load_after[0], time.time() - started, time.strftime("%Y-%m-%d")),
        "code: " + code_description(bench.code),
        "peak memory: %s summed over each tool's process tree, sampled every %.2f s%s"
        % (kind, measure.SAMPLE_SECONDS,
           " (shared pages split between the processes sharing them); outside the memory mode the PSS reads are "
           "spaced to take at most %.0f%% of a core (a read of one of our processes costs 4-6 ms), so those peaks "
           "may be missed by up to the growth between reads" % (100 * measure.PSS_BUDGET) if kind == "PSS"
           else " (PSS not readable here: shared pages counted once per process)"),
        "GIL: %s" % (bench.gil_note or (
            "py-spy record --gil --threads --subprocesses --rate %d, its samples counted against bench/gil_clock.py; "
            "GIL us/image = GIL held on a CPU at most (per thread the lesser of the time it held the GIL and the "
            "time it ran, from /proc schedstat: a thread preempted while holding it is not counted), in the "
            "process holding its GIL longest; per image = (run of N - run of %d) / (N - %d)"
            % (gil.RATE, BASELINE, BASELINE))),
    ]
    text = render(header, rows, kind)
    print(text, end="")
    results = {
        "header": header,
        "memory_kind": kind,
        "rows": [asdict(r) | {"summary": r.summary()} for r in rows],
        "scaling": scaling(rows),
        "imagenet": [asdict(p) for p in imagenet(rows)[0]],
        "targets": targets(rows),
    }
    os.makedirs(bench.root, exist_ok=True)
    with open(os.path.join(bench.root, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    for path in [os.path.join(bench.root, "results.md")] + ([args.markdown] if args.markdown else []):
        with open(path, "w") as f:
            f.write(text)
    return 1 if any(row.failures for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
