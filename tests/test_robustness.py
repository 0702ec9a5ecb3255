"""Nothing lost, nothing half-written: bad images, unusual images, crashes, re-runs, determinism."""

import filecmp
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import imagefactory as fac
from conftest import REPO, SAMPLE, load_manifest, run_cli
from imgrec import crashpoints, planning, recordio


def records_by_path(out: Path):
    """{relpath: (label, image bytes)} for every record of every split, via the .lst and our reader."""
    m = load_manifest(out)
    found = {}
    for split, doc in m["splits"].items():
        paths = {}
        for line in (out / doc["lst"]).read_text(encoding="utf-8").splitlines():
            rid, label, rel = line.split("\t")
            paths[int(rid)] = rel
        for shard in doc["shards"]:
            with open(out / shard["rec"], "rb") as f:
                for rec in recordio.read_records(f):
                    header, body = recordio.unpack(rec.payload)
                    found[paths[header.id]] = (header.label, body)
    return found


def errors_of(out: Path):
    return {e["path"]: e for e in map(json.loads, (out / "errors.jsonl").read_text(encoding="utf-8").splitlines())}


@pytest.fixture
def bad_tree(tmp_path):
    root = tmp_path / "in"
    shutil.copytree(SAMPLE, root)
    expected = fac.make_bad_tree(root)
    return root, expected


@pytest.mark.parametrize("mode", [[], ["--resize", "32"]], ids=["pass-through", "re-encode"])
def test_bad_inputs_are_skipped_recorded_and_counted(bad_tree, tmp_path, mode):
    root, expected = bad_tree
    out = tmp_path / "out"
    proc = run_cli("--input", root, "--output", out, *mode)
    errors = errors_of(out)
    got = {path: e["reason"] for path, e in errors.items()}
    want = {fac_path.encode("utf-8", "backslashreplace").decode() if _surrogates(fac_path) else fac_path: r for fac_path, r in expected.items()}
    assert got == want
    assert all(e["stage"] in ("list", "read", "validate", "encode") and e["detail"] for e in errors.values())
    m = load_manifest(out)
    assert m["errors"] == len(expected)
    assert sum(m["errors_by_reason"].values()) == len(expected)
    # every good photo is there, nothing else
    assert sorted(records_by_path(out)) == sorted(str(p.relative_to(SAMPLE)) for p in SAMPLE.rglob("*.*"))
    for reason in set(expected.values()):
        assert reason in proc.stdout, "summary lists skipped inputs by reason"
    assert "Traceback" not in proc.stderr


def _surrogates(s):
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def test_unreadable_file_is_recorded(sample_dir, tmp_path):
    victim = sample_dir / "cat" / "cat_01.jpg"
    victim.chmod(0)
    out = tmp_path / "out"
    prefix = []
    if os.geteuid() == 0:
        # root reads anything; drop the capabilities that let it, so permissions apply as for a user
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    proc = subprocess.run(
        prefix + [sys.executable, "-m", "pipeline.run", "--input", str(sample_dir), "--output", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert errors_of(out) == {
        "cat/cat_01.jpg": {"path": "cat/cat_01.jpg", "reason": "unreadable", "stage": "read", "detail": "permission denied"}
    }
    assert load_manifest(out)["errors"] == 1


def test_pass_through_header_check_vs_full_decode(sample_dir, tmp_path):
    # Header, pixel chunk and end marker all present, but the compressed pixels are garbage.
    ihdr = fac.struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    corrupt = b"\x89PNG\r\n\x1a\n" + fac.png_chunk(b"IHDR", ihdr) + fac.png_chunk(b"IDAT", b"\x01garbage!") + fac.png_chunk(b"IEND", b"")
    (sample_dir / "dog").mkdir(exist_ok=True)
    (sample_dir / "cat" / "corrupt.png").write_bytes(corrupt)
    cheap, full = tmp_path / "cheap", tmp_path / "full"
    run_cli("--input", sample_dir, "--output", cheap)
    assert "cat/corrupt.png" in records_by_path(cheap), "the cheap check keeps structurally complete files"
    run_cli("--input", sample_dir, "--output", full, "--validate", "decode")
    assert errors_of(full)["cat/corrupt.png"]["reason"] == "decode_failed"
    assert "cat/corrupt.png" not in records_by_path(full)


def test_unusual_good_inputs_pass_through_unchanged(tmp_path):
    root = tmp_path / "in"
    files = fac.make_good_tree(root)
    out = tmp_path / "out"
    run_cli("--input", root, "--output", out)
    found = records_by_path(out)
    assert sorted(found) == sorted(files)
    for rel, (label, body) in found.items():
        assert body == files[rel], rel
        assert label == ["cat", "dog"].index(rel.split("/")[0])
    assert load_manifest(out)["errors"] == 0


def test_unusual_good_inputs_reencode(tmp_path):
    root = tmp_path / "in"
    files = fac.make_good_tree(root)
    out = tmp_path / "out"
    run_cli("--input", root, "--output", out, "--resize", "16")
    found = records_by_path(out)
    assert load_manifest(out)["errors"] == 0
    assert sorted(found) == sorted(files)
    shapes = {rel: cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED).shape for rel, (_, body) in found.items()}
    # EXIF orientation 6: stored 80x40 (landscape), displayed portrait; re-encoding applies it,
    # with a plain decode and with the reduced-size (DCT) decode alike.
    assert shapes["cat/rotated.jpg"] == (32, 16, 3)
    assert shapes["cat/rotated-big.jpg"] == (32, 16, 3)
    assert shapes["dog/one.png"] == (16, 16, 3)
    assert shapes["dog/long.png"][:2] == (16, 3200)
    assert shapes["dog/deep16.png"][2] == 3 and shapes["cat/gray.jpg"][2] == 3  # --color 1 gives BGR
    for rel, shape in shapes.items():
        assert min(shape[:2]) == 16, rel


def test_alpha_kept_with_color_unchanged(tmp_path):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "a" / "alpha.png").write_bytes(fac.png(alpha=True))
    out = tmp_path / "out"
    run_cli("--input", root, "--output", out, "--color", "-1", "--encoding", ".png", "--quality", "3", "--train-ratio", "1", "--val-ratio", "0")
    (_, body), = records_by_path(out).values()
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED).shape[2] == 4


@pytest.mark.parametrize("limit,ok", [("2", False), ("0.05", False), ("50%", True), ("", True)])
def test_max_errors(bad_tree, tmp_path, limit, ok):
    root, expected = bad_tree
    out = tmp_path / "out"
    proc = run_cli("--input", root, "--output", out, "--max-errors", limit, check=False)
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert (out / "manifest.json").exists()
    else:
        assert proc.returncode == 1
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: %d of " % len(expected)) and "--max-errors" in last and "errors.jsonl" in last
        assert "Traceback" not in proc.stderr
        assert not (out / "manifest.json").exists()
        assert len(errors_of(out)) == len(expected), "the error report is still written"


def make_many(root: Path, n: int, size=(200, 150)):
    for i in range(n):
        d = root / ("class_%d" % (i % 4))
        d.mkdir(parents=True, exist_ok=True)
        (d / ("img_%04d.jpg" % i)).write_bytes(fac.jpeg(*size, seed=i))


def tree_bytes(out: Path, skip=("manifest.json", "summary.txt")):
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def live_group_members(pgid: int) -> list[int]:
    """Processes of the process group ``pgid`` that have not exited (zombies waiting to be reaped do not count)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'
                state, _, pgrp = f.read().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(pgrp) == pgid and state != "Z":
            alive.append(int(entry))
    return alive


def test_sigkill_leaves_nothing_final_looking_and_reruns_match(tmp_path):
    root = tmp_path / "in"
    make_many(root, 600, size=(320, 240))
    args = ["--input", str(root), "--resize", "100", "--images-per-shard", "25", "--threads", "1"]
    clean = tmp_path / "clean"
    run_cli(*args, "--output", clean)

    # The job is held, not raced: from the third shard completed on, each process of the job that
    # completes one waits there (imgrec/crashpoints.py), so the job cannot finish before it is killed.
    out = tmp_path / "out"
    tickets = tmp_path / "tickets"
    tickets.mkdir()
    hold = {crashpoints.HOLD_ENV: "shard-recorded:3", crashpoints.HOLD_DIR_ENV: str(tickets)}
    log = tmp_path / "held.log"  # a file, not a pipe: a pipe nobody reads could block the job
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.run", *args, "--output", str(out)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, env={**os.environ, **hold},
        )
    third = Path(crashpoints.ticket_path(str(tickets), "shard-recorded", 3))
    deadline = time.monotonic() + 600  # a bound for a broken job only: a working one holds within seconds
    while not third.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the held job exited: %s" % log.read_text(errors="replace")
    assert third.exists(), "no third shard was completed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # every process of the job is gone before the output is looked at (SIGKILL cannot be caught)
    while live_group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not live_group_members(proc.pid)
    shard_records = out / "_work" / "shards"

    assert not (out / "manifest.json").exists()
    done = {json.loads(p.read_text())["rec"]: json.loads(p.read_text()) for p in shard_records.glob("[!.]*.json")}
    final_recs = [p for p in out.rglob("*.rec") if not p.name.startswith(".")]
    for rec in final_recs:
        # a final-named shard is whole: it parses to the end
        with open(rec, "rb") as f:
            n = sum(1 for _ in recordio.read_records(f, str(rec)))
        rel = str(rec.relative_to(out))
        if rel in done:
            assert n == done[rel]["records"]
            assert hashlib.sha256(rec.read_bytes()).hexdigest() == done[rel]["sha256"]
    assert len(done) >= 3

    # --resume keeps the finished shards (same inode: not rewritten) and redoes the rest;
    # the result has the same bytes as a clean run
    inodes = {rel: (out / rel).stat().st_ino for rel in done if (out / rel).exists()}
    assert inodes
    run_cli(*args, "--output", out, "--resume")
    assert tree_bytes(out) == tree_bytes(clean)
    assert {rel: (out / rel).stat().st_ino for rel in inodes} == inodes

    # a plain re-run after a crash gives the same bytes too
    shutil.rmtree(out / "train")
    run_cli(*args, "--output", out)
    assert tree_bytes(out) == tree_bytes(clean)


def test_resume_reuses_verified_shards_only(tmp_path):
    root = tmp_path / "in"
    make_many(root, 60, size=(64, 48))
    args = ["--input", str(root), "--images-per-shard", "10"]
    out = tmp_path / "out"
    run_cli(*args, "--output", out)
    clean = tree_bytes(out)
    m = load_manifest(out)
    # Simulate a crash after all shards: put back completion records, drop the manifest,
    # and damage one shard so that its sha256 no longer matches.
    (out / "manifest.json").unlink()
    victim = out / m["splits"]["train"]["shards"][0]["rec"]
    original = victim.read_bytes()
    victim.write_bytes(original[:-4] + b"\0\0\0\0")
    run_cli(*args, "--output", out, "--resume")
    # no completion records survived the first (successful) run, so everything is redone
    assert tree_bytes(out) == clean
    assert victim.read_bytes() == original


def test_determinism_across_runs_and_worker_counts(tmp_path):
    root = tmp_path / "in"
    make_many(root, 80, size=(48, 36))
    results = []
    for workers in (1, 2, 4, 2):
        out = tmp_path / ("w%d-%d" % (workers, len(results)))
        run_cli("--input", root, "--output", out, "--images-per-shard", "7", "--direct_num_workers", str(workers))
        results.append(tree_bytes(out))
    assert all(r == results[0] for r in results[1:])


def test_adding_images_moves_none_to_another_split(tmp_path):
    root = tmp_path / "in"
    make_many(root, 200, size=(32, 24))
    out1, out2 = tmp_path / "before", tmp_path / "after"
    run_cli("--input", root, "--output", out1)
    for i in range(200, 220):  # +10%
        d = root / ("class_%d" % (i % 5))  # including a brand-new class
        d.mkdir(exist_ok=True)
        (d / ("new_%04d.jpg" % i)).write_bytes(fac.jpeg(32, 24, seed=i))
    run_cli("--input", root, "--output", out2, "--overwrite")

    def splits(out):
        m = load_manifest(out)
        return {
            line.split("\t")[2]: split
            for split, doc in m["splits"].items()
            for line in (out / doc["lst"]).read_text().splitlines()
        }

    before, after = splits(out1), splits(out2)
    assert len(before) == 200 and len(after) == 220
    assert all(after[p] == s for p, s in before.items())


def test_ctrl_c_stops_with_one_line_and_no_manifest(tmp_path):
    root = tmp_path / "in"
    make_many(root, 600, size=(320, 240))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.run", "--input", str(root), "--output", str(out), "--resize", "100",
         "--images-per-shard", "25", "--threads", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: an earlier test may have left SIGINT ignored in this process, and an ignored
        # signal stays ignored across exec (Python then installs no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    shard_records = out / "_work" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if shard_records.is_dir() and list(shard_records.glob("[!.]*.json")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be interrupted; make the input bigger"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "error: interrupted, no manifest written (rerun with --resume to keep the shards already finished)"
    )
    assert not (out / "manifest.json").exists()
