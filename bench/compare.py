#!/usr/bin/env python3
"""Benchmark: our pipeline against MXNet's im2rec.py on the same data and worker count.

    .venv/bin/python bench/compare.py                      # full size (about 20 minutes on 2 cores)
    .venv/bin/python bench/compare.py --scale 0.01         # smoke size (seconds)
    .venv/bin/python bench/compare.py --modes resize,large --repeats 5

Data sets are generated once (real photographs, cropped and re-encoded, see
``bench/datasets.py``) and cached under ``.bench/`` (git-ignored). For every
mode the raw-read or plain-OpenCV limit, our pipeline and im2rec.py run
alternately ``--repeats`` times on the same data and the median is reported.
Times are whole-process wall times, interpreter and runner start-up included.

Modes (image counts are multiplied by ``--scale``):

    pass      pass-through, 20,000 photos of 500x375; limit = ``cat`` of every file into one file
    resize    --resize 256 --quality 95, 10,000 photos of 500x375; limit = plain OpenCV loop, same interpolation
    large     --resize 256, 300 photos of 4000x3000; limit = plain OpenCV loop with the same reduced
              decode + area resize as ours; also reports PSNR of reduced decode against full decode
    memory    pass-through on 5,000 and on 50,000 photos: peak summed RSS of each tool's process tree
    startup   pass-through of 10 photos (never scaled): the fixed cost of a run

im2rec.py runs as two commands, ``--list --recursive`` (makes the .lst) and the
record pass. ``ratio`` compares our whole run with im2rec.py's record pass alone
(the conservative figure, as im2rec.py is given its list for free);
``ratio incl. list`` adds its list pass, which our run also does.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(1, REPO)

import datasets  # noqa: E402
import measure  # noqa: E402

SIZES = {  # mode -> (images at scale 1, width, height)
    "pass": (20_000, 500, 375),
    "resize": (10_000, 500, 375),
    "large": (300, 4000, 3000),
    "memory-small": (5_000, 500, 375),
    "memory-large": (50_000, 500, 375),
    "startup": (10, 500, 375),
}
MODES = ("pass", "resize", "large", "memory", "startup")
RESIZE = 256
QUALITY = 95
PSNR_SAMPLE = 30  # large images decoded twice for the PSNR figure


@dataclass
class Row:
    mode: str
    images: int
    ours: list = field(default_factory=list)  # Measurement dicts
    im2rec: list = field(default_factory=list)
    im2rec_list: list = field(default_factory=list)
    limit: list = field(default_factory=list)
    limit_name: str = ""
    notes: list = field(default_factory=list)

    failures: list = field(default_factory=list)

    @staticmethod
    def _median(runs, key="wall"):
        return statistics.median(r[key] for r in runs) if runs else float("nan")

    @staticmethod
    def _peak_mb(runs):
        return max(r["peak_rss"] for r in runs) / 2**20 if runs else float("nan")

    def summary(self) -> dict:
        ours = self._median(self.ours)
        rec = self._median(self.im2rec)
        lst = self._median(self.im2rec_list)
        limit = self._median(self.limit)
        n = self.images
        return {
            "mode": self.mode,
            "images": n,
            "our_s": ours,
            "our_ips": n / ours,
            "im2rec_s": rec,
            "im2rec_ips": n / rec,
            "ratio": rec / ours,
            "ratio_incl_list": (rec + lst) / ours,
            "im2rec_list_s": lst,
            "limit_ips": n / limit if self.limit else float("nan"),
            "fraction_of_limit": (limit / ours) if self.limit else float("nan"),
            "our_peak_mb": self._peak_mb(self.ours),
            "im2rec_peak_mb": self._peak_mb(self.im2rec),
            "our_cpu_pct": self._median(self.ours, "cpu_percent"),
            "im2rec_cpu_pct": self._median(self.im2rec, "cpu_percent"),
            "other_cpu_pct": statistics.mean(
                [r["other_cpu_percent"] for r in self.ours + self.im2rec + self.im2rec_list + self.limit] or [float("nan")]
            ),
        }


def _record(m: measure.Measurement) -> dict:
    d = asdict(m)
    d["cpu_percent"] = m.cpu_percent
    d["sys_percent"] = m.sys_percent
    d["other_cpu_percent"] = m.other_cpu_percent
    return d


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = os.path.abspath(args.bench_dir)
        self.runs = os.path.join(self.root, "runs")
        self.workers = args.workers
        self.ours_python = args.python
        self.mx_python = args.mxnet_python
        self.im2rec = args.im2rec or _find_im2rec(self.mx_python)
        self.code = snapshot(args.code, self.root) if args.code.startswith("git:") else os.path.abspath(args.code)

    # ------------------------------------------------------------ data

    def count(self, key: str) -> int:
        n, _, _ = SIZES[key]
        if key == "startup":
            return n
        floor = 2 if key == "large" else datasets.CLASSES
        return max(floor, int(round(n * self.args.scale)))

    def data(self, key: str) -> tuple[str, int]:
        n = self.count(key)
        _, w, h = SIZES[key]
        return datasets.make_dataset(self.root, REPO, n, w, h, processes=self.workers), n

    # ------------------------------------------------------------ one run of each tool

    def _fresh(self, name: str) -> str:
        path = os.path.join(self.runs, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def ours_parallelism(self) -> list[str]:
        """Our flags for the same worker count as im2rec.py's --num-thread.

        Our default runs the job in one process that uses every core (encoding
        threads, a writer thread); with as many workers as cores nothing is
        passed. For another count: that many encoding threads.
        """
        if self.workers == (os.cpu_count() or 1):
            return []
        return ["--threads", str(self.workers)]

    def run_ours(self, data: str, n: int, flags: list[str], tag: str) -> dict:
        work = self._fresh("ours-" + tag)
        out = os.path.join(work, "out")
        cmd = [self.ours_python, "-m", "pipeline.run", "--input", data, "--output", out, "--log-level", "WARNING",
               ] + self.ours_parallelism() + flags + self.args.ours_flag
        # The code under test comes first on the path of the job and of its Beam workers.
        env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=self.code)
        m = measure.run_checked(cmd, os.path.join(self.runs, "ours-%s.log" % tag), cwd=self.code, env=env)
        with open(os.path.join(out, "manifest.json")) as f:
            manifest = json.load(f)
        got = sum(s["records"] for s in manifest["splits"].values())
        if got != n:
            raise measure.RunFailed("our pipeline wrote %d records for %d images (%s)" % (got, n, out))
        shutil.rmtree(work, ignore_errors=True)
        return _record(m)

    def run_im2rec(self, data: str, n: int, flags: list[str], tag: str) -> tuple[dict, dict]:
        work = self._fresh("im2rec-" + tag)
        prefix = os.path.join(work, "data")
        listing = measure.run_checked(
            [self.mx_python, self.im2rec, prefix, data, "--list", "--recursive"],
            os.path.join(self.runs, "im2rec-%s-list.log" % tag))
        m = measure.run_checked(
            [self.mx_python, self.im2rec, prefix, data, "--num-thread", str(self.workers)] + flags,
            os.path.join(self.runs, "im2rec-%s.log" % tag))
        with open(prefix + ".idx") as f:
            got = sum(1 for line in f if line.strip())
        if got != n:
            raise measure.RunFailed("im2rec.py wrote %d records for %d images (%s)" % (got, n, work))
        shutil.rmtree(work, ignore_errors=True)
        return _record(listing), _record(m)

    def file_list(self, data: str) -> str:
        path = os.path.join(self.runs, "files-%s.txt" % os.path.basename(data))
        with open(path, "w") as f:
            f.writelines(p + "\n" for p in datasets.image_files(data))
        return path

    def run_cat(self, data: str, tag: str) -> dict:
        work = self._fresh("cat-" + tag)
        listing = self.file_list(data)
        cmd = ["sh", "-c", 'tr "\\n" "\\0" < "$1" | xargs -0 cat > "$2"', "sh", listing, os.path.join(work, "all.bin")]
        m = measure.run_checked(cmd, os.path.join(self.runs, "cat-%s.log" % tag))
        shutil.rmtree(work, ignore_errors=True)
        return _record(m)

    def run_cv_loop(self, data: str, tag: str, reduce: int, interpolation: str, malloc: str = "keep") -> dict:
        work = self._fresh("cv-" + tag)
        cmd = [self.ours_python, os.path.join(BENCH, "cv_loop.py"), "--list", self.file_list(data), "--out", work,
               "--workers", str(self.workers), "--resize", str(RESIZE), "--quality", str(QUALITY),
               "--reduce", str(reduce), "--interpolation", interpolation, "--malloc", malloc]
        m = measure.run_checked(cmd, os.path.join(self.runs, "cv-%s.log" % tag))
        shutil.rmtree(work, ignore_errors=True)
        return _record(m)

    # ------------------------------------------------------------ modes

    def quiet(self) -> None:
        """Before a measured run: wait (up to --quiet-wait seconds) for other users of the machine to pause."""
        if self.args.quiet_wait > 0:
            used = measure.wait_for_quiet(self.args.quiet_wait)
            if used >= 25.0:
                self.log("  machine still busy (%.0f%% of a core used by others); measuring anyway" % used)

    def compare(self, mode: str, key: str, our_flags, im2rec_flags, limit=None, limit_name="") -> Row:
        data, n = self.data(key)
        row = Row(mode, n, limit_name=limit_name)
        self.log("%s: %d images, %d workers, %d repeats" % (mode, n, self.workers, self.args.repeats))
        if limit is None:
            self.run_cat(data, key)  # not recorded: the page cache is warm for both tools, as in the other modes
        for r in range(self.args.repeats):
            if limit is not None:
                self.quiet()
                try:
                    row.limit.append(limit(data, key))  # first: also warms the page cache for both tools
                except measure.RunFailed as exc:
                    row.failures.append("%s, limit run %d failed: %s" % (mode, r + 1, exc))
            steps = ["ours", "im2rec"] if r % 2 == 0 else ["im2rec", "ours"]
            for step in steps:
                self.quiet()
                try:
                    if step == "ours":
                        row.ours.append(self.run_ours(data, n, our_flags, key))
                    else:
                        lst, rec = self.run_im2rec(data, n, im2rec_flags, key)
                        row.im2rec_list.append(lst)
                        row.im2rec.append(rec)
                except measure.RunFailed as exc:
                    # recorded and reported; the other runs still count
                    row.failures.append("%s, %s run %d failed: %s" % (mode, step, r + 1, exc))
                    self.log("  " + row.failures[-1])
            self.log("  run %d: ours %s, im2rec %s (+%s list)%s" % (
                r + 1, _last_wall(row.ours), _last_wall(row.im2rec), _last_wall(row.im2rec_list),
                ", limit %.2fs" % row.limit[-1]["wall"] if row.limit else ""))
        return row

    def mode_pass(self) -> list[Row]:
        return [self.compare("pass-through", "pass", [], ["--pass-through"],
                             limit=lambda d, k: self.run_cat(d, k), limit_name="cat")]

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
                           limit=lambda d, k: self.run_cv_loop(d, k, 1, "linear"), limit_name="OpenCV loop")
        self.plain_malloc_note(row, "resize", 1, "linear")
        return [row]

    def mode_large(self) -> list[Row]:
        # the source is 4000x3000: the largest DCT scale keeping the shorter edge >= 256 is 1/8
        reduce = max(f for f in (1, 2, 4, 8) if SIZES["large"][2] // f >= RESIZE)
        row = self.compare("resize 256, 4000x3000", "large", ["--resize", str(RESIZE)], ["--resize", str(RESIZE)],
                           limit=lambda d, k: self.run_cv_loop(d, k, reduce, "area"), limit_name="OpenCV loop 1/%d" % reduce)
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

    def mode_memory(self) -> list[Row]:
        return [self.compare("memory, pass-through", key, [], ["--pass-through"]) for key in ("memory-small", "memory-large")]

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
    if v != v:  # NaN: no such measurement in this mode
        return "n/a"
    if spec == "rate":  # images/s: three significant figures, so small runs do not show 0
        return "%.0f" % v if v >= 100 else "%.3g" % v
    return format(v, spec)


def table(rows: list[Row]) -> str:
    head = ["mode", "images", "ours s", "ours img/s", "im2rec s", "im2rec img/s", "ratio", "ratio incl. list",
            "limit", "limit img/s", "fraction of limit", "ours peak RSS MB", "im2rec peak RSS MB",
            "ours CPU %", "im2rec CPU %", "others' CPU %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        s = row.summary()
        cells = [row.mode, str(s["images"]), _fmt(s["our_s"], ".2f"), _fmt(s["our_ips"], "rate"),
                 _fmt(s["im2rec_s"], ".2f"), _fmt(s["im2rec_ips"], "rate"), _fmt(s["ratio"], ".2f"),
                 _fmt(s["ratio_incl_list"], ".2f"), row.limit_name or "-", _fmt(s["limit_ips"], "rate"),
                 _fmt(s["fraction_of_limit"], ".2f"), _fmt(s["our_peak_mb"], ".0f"), _fmt(s["im2rec_peak_mb"], ".0f"),
                 _fmt(s["our_cpu_pct"], ".0f"), _fmt(s["im2rec_cpu_pct"], ".0f"), _fmt(s["other_cpu_pct"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def targets(rows: list[Row]) -> list[str]:
    """The issue-6 targets, each with its figure and met / NOT met."""
    by = {}
    for row in rows:
        by.setdefault(row.mode, []).append(row.summary())
    out = []

    def verdict(ok, *values):
        if any(v != v for v in values):  # NaN: a tool failed every run of the mode
            return "not measured"
        return "met" if ok else "NOT met"

    if "pass-through" in by:
        s = by["pass-through"][0]
        out.append("pass-through >= 1.0x im2rec.py: %.2fx (%.2fx incl. its list pass) -- %s; %.0f%% of the cat limit"
                   % (s["ratio"], s["ratio_incl_list"], verdict(s["ratio"] >= 1.0, s["ratio"]), 100 * s["fraction_of_limit"]))
    if "resize 256 q95" in by:
        s = by["resize 256 q95"][0]
        out.append("resize 256 q95 >= 2.0x im2rec.py: %.2fx -- %s; %.0f%% of the OpenCV limit"
                   % (s["ratio"], verdict(s["ratio"] >= 2.0, s["ratio"]), 100 * s["fraction_of_limit"]))
    if "resize 256, 4000x3000" in by:
        s = by["resize 256, 4000x3000"][0]
        out.append("4000x3000 resize 256 >= 6x im2rec.py: %.2fx -- %s; %.0f%% of the OpenCV limit"
                   % (s["ratio"], verdict(s["ratio"] >= 6.0, s["ratio"]), 100 * s["fraction_of_limit"]))
    if len(by.get("memory, pass-through", [])) == 2:
        small, large = by["memory, pass-through"]
        growth = large["our_peak_mb"] / small["our_peak_mb"] - 1
        out.append("flat memory (%d vs %d images within 20%%): %.0f MB vs %.0f MB, %+.0f%% -- %s"
                   % (small["images"], large["images"], small["our_peak_mb"], large["our_peak_mb"], 100 * growth,
                      verdict(growth <= 0.20, growth)))
    if "start-up" in by:
        s = by["start-up"][0]
        out.append("start-up on %d images < 5 s: %.2f s -- %s (im2rec.py: %.2f s + %.2f s list)"
                   % (s["images"], s["our_s"], verdict(s["our_s"] < 5.0, s["our_s"]), s["im2rec_s"], s["im2rec_list_s"]))
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every image count (not start-up's) by this")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="im2rec.py --num-thread; ours: its default when this is the core count, else --threads N "
                         "(default: cores)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating runs per mode (default 3; 1 below scale 0.1)")
    ap.add_argument("--bench-dir", default=os.path.join(REPO, ".bench"), help="data and scratch folder")
    ap.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"), help="our environment's python")
    ap.add_argument("--mxnet-python", default=os.path.join(REPO, ".venv-mxnet", "bin", "python"))
    ap.add_argument("--im2rec", default=None, help="path of im2rec.py (default: the one in the mxnet environment)")
    ap.add_argument("--code", default=REPO,
                    help="folder whose pipeline is measured (default: this checkout, edits included), or git:REV "
                         "for the committed tree of a revision (git:HEAD leaves uncommitted edits out)")
    ap.add_argument("--ours-flag", action="append", default=[], help="extra flag for our pipeline (repeatable)")
    ap.add_argument("--markdown", default=None, help="also write the table and notes to this file")
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
    if args.repeats is None:
        args.repeats = 3 if args.scale >= 0.1 else 1
    for exe in (args.python, args.mxnet_python):
        if not os.path.exists(exe):
            raise SystemExit("bench: %s not found (run make install envs)" % exe)

    bench = Bench(args)
    started = time.time()
    load_before = os.getloadavg()
    rows: list[Row] = []
    for mode in modes:
        rows.extend(getattr(bench, "mode_" + mode)())
    load_after = os.getloadavg()

    _, source = datasets.source_photo_paths(REPO)
    header = [
        "machine: " + measure.machine_description(),
        "workers: %d (im2rec.py --num-thread %d, ours %s); scale %g; median of %d alternating runs"
        % (args.workers, args.workers, " ".join(bench.ours_parallelism()) or "default: one process, all cores",
           args.scale, args.repeats),
        "images: %s; load average before %.2f, after %.2f; total %.0f s"
        % (source, load_before[0], load_after[0], time.time() - started),
        "code: " + code_description(bench.code),
    ]
    notes = [n for row in rows for n in row.notes + row.failures]
    text = "\n".join(header) + "\n\n" + table(rows) + "\n" + "".join("- %s\n" % n for n in notes + targets(rows))
    print(text, end="")
    results = os.path.join(bench.root, "results.json")
    with open(results, "w") as f:
        json.dump({"header": header, "rows": [asdict(r) | {"summary": r.summary()} for r in rows]}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 1 if any(row.failures for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
