"""Smoke test of the benchmark: bench/compare.py still runs end to end at a tiny scale.

No timing is asserted (the machine is shared and CI machines differ); the test
checks that both tools converted every image of every mode, that the table
carries a number in every ratio cell, that the scaling, GIL and ImageNet
sections are there, and that the results are saved. The measuring helpers are
checked on their own: peak memory on a process tree whose memory is known (RSS
and PSS), py-spy's GIL figures on threads whose CPU time is known, the tiny
data set's reuse of a larger one, the ImageNet projection on fixed costs.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
MX_PYTHON = REPO / ".venv-mxnet" / "bin" / "python"

sys.path.insert(0, str(BENCH))


def _table_rows(stdout: str) -> list[dict]:
    """Rows of the first Markdown table of the report."""
    lines = []
    for line in stdout.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def _py_spy_missing() -> str | None:
    import gil

    return gil.unavailable(gil.find_py_spy(sys.executable), sys.executable)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not MX_PYTHON.exists():
        pytest.fail("%s not found: the benchmark runs im2rec.py there (make envs)" % MX_PYTHON, pytrace=False)
    work = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "compare.py"), "--scale", "0.0005", "--bench-dir", str(work),
         "--python", sys.executable, "--markdown", str(work / "table.md")],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, "compare.py failed:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout, work


def test_table_has_every_mode_with_numeric_ratios(smoke):
    import compare

    stdout, _ = smoke
    rows = _table_rows(stdout)
    steps = compare.core_steps(len(os.sched_getaffinity(0)))
    assert [r["mode"] for r in rows] == [
        "pass-through", "resize 256 q95", "resize 256, 4000x3000", "tiny pass-through",
        "memory, pass-through", "memory, pass-through", "memory, --check-duplicates", "memory, --check-duplicates",
        "memory, --direct_num_workers 2", "memory, --direct_num_workers 2",
    ] + ["scaling, resize 256 q95"] * len(steps) + ["start-up"]
    # --scale 0.0005 of 20,000 / 10,000 / 300 / 400,000 / 20,000 / 400,000 / 4,000, with the floors;
    # start-up is never scaled
    assert [int(r["images"]) for r in rows] == [10, 10, 2, 200] + [10, 200] * 3 + [10] * len(steps) + [10]
    assert [int(r["cores"]) for r in rows if r["mode"].startswith("scaling")] == steps
    memory = [k for k in rows[0] if k.startswith("ours peak ")]
    assert memory in (["ours peak PSS MB"], ["ours peak RSS MB"])
    for row in rows:
        assert float(row["ours img/s"]) > 0 and float(row[memory[0]]) > 0, row
        if row["mode"] in ("memory, --check-duplicates", "memory, --direct_num_workers 2"):
            assert row["im2rec s"] == "n/a"  # ours alone
            continue
        for cell in ("im2rec img/s", "ratio", "ratio incl. list"):
            assert float(row[cell]) > 0, (row["mode"], cell, row[cell])
    for row in rows[:4] + [r for r in rows if r["mode"].startswith("scaling")]:  # the modes with a limit
        assert float(row["limit img/s"]) > 0 and float(row["fraction of limit"]) > 0


def test_gil_scaling_targets_and_results_are_reported(smoke):
    stdout, work = smoke
    why = _py_spy_missing()
    rows = {r["mode"]: r for r in _table_rows(stdout)}
    cores = os.cpu_count()
    # 200 tiny images are enough for per-image figures (a number, or n/a where noise leaves no growth over
    # the 10-image run); the 10-image modes say why they have none
    cell = rows["tiny pass-through"]["GIL us/image"]
    assert cell == "n/a" or float(cell) > 0
    if why is None:
        assert ("GIL, tiny pass-through (%d cores): held on a CPU at most" % cores in stdout
                or "GIL, tiny pass-through (%d cores): not measured -- GIL-held time did not grow" % cores in stdout)
    else:
        assert cell == "n/a" and "GIL not measured: " + why in stdout
    assert "GIL, pass-through (%d cores): not measured -- too few images (10)" % cores in stdout
    assert "| cores | ours img/s | ours speed-up |" in stdout
    assert "ImageNet estimate" in stdout
    assert "PSNR of reduced decode" in stdout
    for target in ("pass-through >= 1.5x", "tiny pass-through within 3x of cat", "resize 256 q95 >= 2.5x",
                   "4000x3000 resize 256 >= 4.5x", "memory, pass-through: 200 vs 10 images within 1.5x",
                   "memory, --check-duplicates: 200 vs 10", "memory, --direct_num_workers 2: 200 vs 10",
                   "start-up on 10 images < 1 s"):
        assert target in stdout
    if len(os.sched_getaffinity(0)) >= 2:
        assert "resize 256 on 2 cores vs 1 >= 1.8x" in stdout
    assert (work / "table.md").read_text() == stdout
    assert (work / "results.md").read_text() == stdout
    results = json.loads((work / "results.json").read_text())
    assert len(results["rows"]) == len(_table_rows(stdout)) and all(r["ours"] for r in results["rows"])
    assert [e["cores"] for e in results["scaling"]] == [int(r["cores"]) for r in _table_rows(stdout)
                                                       if r["mode"].startswith("scaling")]
    tiny = next(r for r in results["rows"] if r["mode"] == "tiny pass-through")
    assert len(tiny["base"]) == 1  # the 10-image run whose costs are subtracted
    if why is None:
        assert len(tiny["gil"]) == len(tiny["gil_base"]) == 1 and tiny["gil"][0]["samples"]


def test_unknown_mode_is_one_line_error():
    proc = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--modes", "pass,bogus"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown mode(s) bogus" in proc.stderr and "Traceback" not in proc.stderr


def test_core_steps_double_up_to_every_usable_core():
    import compare

    assert compare.core_steps(1) == [1]
    assert compare.core_steps(2) == [1, 2]
    assert compare.core_steps(6) == [1, 2, 4, 6]
    assert compare.core_steps(64) == [1, 2, 4, 8, 16, 32, 64]
    assert compare.taskset([0, 1, 5]) == ["taskset", "-c", "0,1,5"]


def test_peak_memory_is_summed_over_the_process_tree(tmp_path):
    import measure

    # a parent holding 150 MiB starts a child holding 100 MiB; both stay alive together for a while
    child = "import time; b = bytearray(100 << 20); time.sleep(1.5)"
    parent = ("import subprocess, sys, time; b = bytearray(150 << 20); "
              "p = subprocess.Popen([sys.executable, '-c', %r]); p.wait()" % child)
    m = measure.run([sys.executable, "-c", parent], str(tmp_path / "log"))
    assert m.returncode == 0
    assert m.peak_rss >= 250 << 20
    assert m.peak_rss < 600 << 20
    assert m.wall >= 1.5


@pytest.mark.skipif(sys.platform != "linux", reason="PSS comes from Linux's /proc/PID/smaps_rollup")
def test_pss_counts_pages_shared_by_forked_processes_once(tmp_path):
    import measure

    assert measure.memory_kind() == "PSS"
    # 200 MiB written by the parent, then shared copy-on-write with a forked child that only sleeps
    script = ("import os, time; b = bytearray(os.urandom(1 << 20)) * 200\n"
              "pid = os.fork()\n"
              "if pid == 0:\n    time.sleep(1.5)\n    os._exit(0)\n"
              "os.waitpid(pid, 0)\n")
    m = measure.run([sys.executable, "-c", script], str(tmp_path / "log"))
    assert m.returncode == 0
    assert m.peak_rss >= 400 << 20  # the shared 200 MiB once per process
    assert 200 << 20 <= m.peak_pss < 300 << 20  # ... and once in all


RAW = """\
process 10:"python -m pipeline.run --input x";thread (10): MainThread;<module> (run.py:1);main (run.py:5) 7
process 10:"python -m pipeline.run --input x";thread (12): Thread-1;work (w.py:3) 2
process 10:"python -m pipeline.run --input x";process 11:"python -c import a; b";thread (11): MainThread;f (a.py:1) 3
process 10:"python -m pipeline.run --input x";process 13:"python -c import time
while 1: pass";thread (13): MainThread;<module> (<string>:2) 5
"""


def test_gil_raw_samples_by_process_and_thread(tmp_path):
    import gil

    raw = tmp_path / "run.raw"
    raw.write_text(RAW)
    p = gil.parse_raw(str(raw), rate=100)
    assert p.root == "10"
    assert p.samples == {"10": 9, "11": 3, "13": 5}  # a ";" or a newline in a command line does not split it
    assert p.threads == {"10/10": 7, "10/12": 2, "11/11": 3, "13/13": 5}
    assert p.commands["13"] == "python -c import time while 1: pass"
    assert p.held("10") == pytest.approx(0.09)
    # thread 10 ran 0.03 s of the 0.07 s it held the GIL, and waited 0.04 s for a CPU; thread 12's figures unseen
    p.sched = {"10/10": [30_000_000, 40_000_000]}
    assert p.held_running("10") == pytest.approx(0.03 + 0.02)
    assert p.busiest("wall") == pytest.approx(0.09) and p.busiest() == pytest.approx(0.05)
    p.achieved_rate = 50.0  # py-spy took half the samples asked for: each stands for twice the time
    assert p.held("11") == pytest.approx(0.06)


def test_gil_time_of_spinning_threads_matches_their_cpu_time(tmp_path):
    """Two threads that only run Python code for 0.6 s of CPU each hold the GIL for about 1.2 s in all."""
    import gil

    why = _py_spy_missing()
    if why is not None:
        pytest.skip(why)
    script = tmp_path / "spin.py"
    script.write_text("import threading, time\n"
                      "def spin():\n    t = time.thread_time()\n    while time.thread_time() - t < 0.6: pass\n"
                      "ts = [threading.Thread(target=spin) for _ in range(2)]\n"
                      "[t.start() for t in ts]; [t.join() for t in ts]\n")
    profile, m = gil.record(gil.find_py_spy(sys.executable), [sys.executable, str(script)],
                            str(tmp_path / "spin.raw"), str(tmp_path / "spin.log"))
    assert m.returncode == 0
    assert profile.root and profile.root not in profile.samples  # the clock process is left out
    assert profile.achieved_rate > 0
    (pid,) = profile.samples
    assert 0.6 < profile.held_running(pid) < 1.8  # 1.2 s of CPU, start-up added; wide: sampling is random


def test_tiny_images_are_the_same_whatever_the_set_size(tmp_path):
    import datasets

    small = datasets.make_tiny_dataset(str(tmp_path / "a"), str(REPO), 30, processes=1)
    large = datasets.make_tiny_dataset(str(tmp_path / "b"), str(REPO), 50, processes=1)
    assert os.path.basename(small) == "tiny-40x30-n30"
    files = datasets.image_files(small)
    assert len(files) == 30 and len(datasets.image_files(large)) == 50
    for i in range(30):  # generated independently, the first 30 are the same files
        name = os.path.join("class_%03d" % (i % 10), "img_%06d.jpg" % i)
        assert filecmp.cmp(os.path.join(small, name), os.path.join(large, name), shallow=False)
    assert 300 < datasets.mean_bytes(large) < 3000
    # a smaller set next to a complete larger one is made of links to its files
    linked = datasets.make_tiny_dataset(str(tmp_path / "b"), str(REPO), 20, processes=1)
    one = os.path.join("class_003", "img_000013.jpg")
    assert os.stat(os.path.join(linked, one)).st_ino == os.stat(os.path.join(large, one)).st_ino


def test_imagenet_projection_from_fixed_costs():
    import estimate

    photo = estimate.Cost(50_000, 100e-6, 25e-6)
    tiny = estimate.Cost(1_000, 51e-6, 20e-6)
    # linear in bytes through the two points: 1 us per KB on top of 50 us; GIL 0.1 us per KB on top of 19.9 us
    at = estimate.at_size(100_000, photo, tiny)
    assert at.cpu_s == pytest.approx(150e-6) and at.gil_s == pytest.approx(30.1e-6, rel=1e-3)
    assert estimate.at_size(100_000, photo, None).cpu_s == pytest.approx(200e-6)  # scaled by bytes alone
    assert estimate.rate(photo, 1) == (pytest.approx(10_000), "cores")
    assert estimate.rate(photo, 8) == (pytest.approx(40_000), "GIL")  # 80k by cores, 40k by the GIL
    assert estimate.core_ceiling(photo) == pytest.approx(4.0)
    resize = estimate.Cost(50_000, 1e-3, float("nan"))  # GIL not measured: cores alone
    rows = estimate.imagenet_estimate(photo, resize, tiny, cores=(1, 32))
    one = {(r.collection, r.mode, r.cores): r for r in rows}
    r = one[("ImageNet-1k", "resize 256", 32)]
    assert r.seconds == pytest.approx(1_281_167 * 1e-3 / 32) and r.bound == "cores"
    p = one[("ImageNet-21k", "pass-through", 32)]
    assert p.bound == "GIL"
    text = estimate.markdown(rows)
    assert text.splitlines()[0] == ("| cores | ImageNet-1k pass-through | ImageNet-1k resize 256 | "
                                    "ImageNet-21k pass-through | ImageNet-21k resize 256 |")
    assert "(GIL)" in text and len(text.splitlines()) == 4


@pytest.mark.parametrize("flags", ["", "--resize 64 --quality 90"])
def test_stage_profiler_lists_and_writes_every_sample_photo(flags):
    """bench/profile_stages.py runs the job's own listing and part writing (it once lost track of them)."""
    photos = REPO / "sample" / "photos"
    expected = sum(1 for p in photos.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    proc = subprocess.run([sys.executable, str(BENCH / "profile_stages.py"), "--input", str(photos), "--flags", flags,
                           "--top", "3"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "== listing: %d images" % expected in proc.stdout
    assert "== write_part (%s): %d images" % (flags or "pass-through", expected) in proc.stdout
    assert "framed %d records" % expected in proc.stdout and "; 0 skipped" in proc.stdout
