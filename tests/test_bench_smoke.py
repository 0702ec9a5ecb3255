"""Smoke test of the benchmark: bench/compare.py still runs end to end at a tiny scale.

No timing is asserted (the machine is shared and CI machines differ); the test
checks that both tools converted every image of every mode and that the
table carries a number in every ratio cell. The measurement helper is checked
on a process tree whose memory is known.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
MX_PYTHON = REPO / ".venv-mxnet" / "bin" / "python"

sys.path.insert(0, str(BENCH))


def _table_rows(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not MX_PYTHON.exists():
        pytest.fail("%s not found: the benchmark runs im2rec.py there (make envs)" % MX_PYTHON, pytrace=False)
    work = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "compare.py"), "--scale", "0.0005", "--bench-dir", str(work),
         "--python", sys.executable, "--markdown", str(work / "table.md")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, "compare.py failed:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout, work


def test_table_has_every_mode_with_numeric_ratios(smoke):
    stdout, _ = smoke
    rows = _table_rows(stdout)
    assert [r["mode"] for r in rows] == [
        "pass-through", "resize 256 q95", "resize 256, 4000x3000", "memory, pass-through", "memory, pass-through",
        "start-up",
    ]
    # --scale 0.0005 of 20,000 / 10,000 / 300 / 5,000 / 50,000, with the floors; start-up is never scaled
    assert [int(r["images"]) for r in rows] == [10, 10, 2, 10, 25, 10]
    for row in rows:
        for cell in ("ours img/s", "im2rec img/s", "ratio", "ratio incl. list", "ours peak RSS MB"):
            assert float(row[cell]) > 0, (row["mode"], cell, row[cell])
    for row in rows[:3]:  # the modes with a limit
        assert float(row["limit img/s"]) > 0 and float(row["fraction of limit"]) > 0


def test_targets_psnr_and_files_are_reported(smoke):
    stdout, work = smoke
    assert "PSNR of reduced decode" in stdout
    for target in ("pass-through >= 1.0x", "resize 256 q95 >= 2.0x", "4000x3000 resize 256 >= 6x", "flat memory",
                   "start-up on 10 images"):
        assert target in stdout
    assert (work / "table.md").read_text() == stdout
    results = json.loads((work / "results.json").read_text())
    assert len(results["rows"]) == 6 and all(r["ours"] and r["im2rec"] for r in results["rows"])


def test_unknown_mode_is_one_line_error():
    proc = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--modes", "pass,bogus"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown mode(s) bogus" in proc.stderr and "Traceback" not in proc.stderr


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
