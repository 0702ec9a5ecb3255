"""Progress lines, metrics counters, the summary and --quiet."""

import os
import fcntl
import pty
import re
import struct
import subprocess
import sys
import termios

from conftest import REPO, SAMPLE, load_manifest, run_cli
from imgrec.progress import format_eta, progress_line


def test_progress_line_shows_counts_rate_bytes_errors_and_eta():
    line = progress_line(50, 200, 3 * 1024 * 1024, 2, 10.0)
    assert line == "[ 26%] 50/200 images | 5 img/s | 3.0 MiB written | 2 skipped | ETA 0:00:29"
    assert progress_line(10, None, 0, 0, 1.0).startswith("[ listing ] 10 images")
    # no estimate from the start-up's rate: none before 1% is done
    assert progress_line(0, 20000, 0, 0, 0.5).endswith("ETA ?")
    assert progress_line(1, 20000, 100, 0, 0.5).endswith("ETA ?")
    assert progress_line(200, 20000, 100, 0, 2.0).endswith("ETA 0:03:18")
    assert format_eta(3725) == "1:02:05"


def test_progress_line_fits_the_width_dropping_the_least_useful_fields_first():
    full = progress_line(50, 200, 3 * 1024 * 1024, 2, 10.0)
    assert progress_line(50, 200, 3 * 1024 * 1024, 2, 10.0, width=len(full)) == full
    for width in range(1, len(full)):
        line = progress_line(50, 200, 3 * 1024 * 1024, 2, 10.0, width=width)
        assert len(line) <= width, (width, line)
    # bytes written go first, then skipped, then the rate; the ETA stays beside the count longest
    assert progress_line(50, 200, 3 * 1024 * 1024, 2, 10.0, width=60) == "[ 26%] 50/200 images | 5 img/s | 2 skipped | ETA 0:00:29"
    assert progress_line(50, 200, 3 * 1024 * 1024, 2, 10.0, width=40) == "[ 26%] 50/200 images | ETA 0:00:29"
    assert progress_line(50, 200, 3 * 1024 * 1024, 2, 10.0, width=10) == "[ 26%] 50/"


def test_progress_reaches_100_percent_and_metrics_match_manifest(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "2")
    m = load_manifest(out)
    total = sum(s["records"] for s in m["splits"].values())
    assert re.search(r"\[100%%\] %d/%d images \| \d+ img/s \| [\d.]+ KiB written \| 0 skipped \| ETA 0:00:00" % (total, total), proc.stderr), proc.stderr
    shards = sum(len(s["shards"]) for s in m["splits"].values())
    metrics = m["metrics"]
    assert metrics["images_written"] == total == 30
    assert metrics["bytes_written"] == sum(s["bytes"] for s in m["splits"].values())
    assert metrics["shards_written"] == shards
    assert metrics["images_skipped"] == m["errors"] == 0
    assert metrics["images_listed"] == 30


def _run_on_a_terminal(out, columns=None):
    master, slave = pty.openpty()
    if columns is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.run", "--input", str(SAMPLE), "--output", str(out), "--images-per-shard", "2"],
        cwd=REPO, stdin=slave, stdout=subprocess.DEVNULL, stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_progress_redraws_one_line_on_a_terminal(tmp_path):
    rc, text = _run_on_a_terminal(tmp_path / "out")
    assert rc == 0
    assert "\r[100%] 30/30 images" in text
    # a shard's log line never lands on the bar's row: the bar is erased first
    shard_lines = [m.start() for m in re.finditer(r"\d{4}-\d\d-\d\d [\d:,]+ INFO transforms.write_recordio: shard ", text)]
    assert shard_lines, text
    for start in shard_lines:
        before = text[:start]
        assert before.endswith("\r\x1b[K") or before.endswith("\n"), repr(before[-80:])


def test_quiet_prints_nothing_but_writes_the_summary(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE, "--output", out, "--quiet")
    assert proc.stdout == "" and proc.stderr == ""
    summary = (out / "summary.txt").read_text()
    assert "Converted 30 images" in summary and "python -m pipeline.verify" in summary


def test_summary_has_splits_classes_skips_and_next_steps(sample_dir, tmp_path):
    (sample_dir / "cat" / "broken.jpg").write_bytes(b"")
    out = tmp_path / "out"
    proc = run_cli("--input", sample_dir, "--output", out)
    summary = (out / "summary.txt").read_text()
    assert proc.stdout.endswith(summary), "the summary is printed last"
    m = load_manifest(out)
    for split, doc in m["splits"].items():
        assert re.search(r"%s\s+%d\s+%d\s" % (split, doc["records"], len(doc["shards"])), summary)
    assert "smallest:" in summary and "largest:" in summary
    assert re.search(r"empty_file\s+1", summary)
    assert re.search(r"in [\d.]+ s \(\d+ images/s\)", summary)
    assert "SageMaker channel 'train': %s/train/" % out in summary


def test_workers_log_a_line_per_finished_shard(tmp_path):
    # In-process worker: its log lines reach the terminal (worker processes send theirs to the runner's log).
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "3", "--direct_num_workers", "1")
    m = load_manifest(out)
    lines = re.findall(r"shard (train|validation) (\d+)/(\d+) written: (\d+) images", proc.stderr)
    assert len(lines) == sum(len(s["shards"]) for s in m["splits"].values())
    assert sum(int(n) for *_, n in lines) == 30


def test_progress_bar_never_wraps_on_a_narrow_terminal(tmp_path):
    rc, text = _run_on_a_terminal(tmp_path / "out", columns=40)
    assert rc == 0
    bars = [b.split("\x1b[K")[0] for b in text.split("\r") if b.startswith("[")]
    assert bars, repr(text[-500:])
    assert all(len(b) <= 39 for b in bars), [b for b in bars if len(b) > 39]
    assert "[100%] 30/30 images | ETA 0:00:00" in bars
