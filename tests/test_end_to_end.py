"""``python -m pipeline.run`` on the bundled real photos, read back with our own reader."""

import filecmp
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SAMPLE, load_manifest, run_cli
from imgrec import planning, recordio

PASS_THROUGH_ARGS = ["--images-per-shard", "4", "--test-ratio", "0.2", "--train-ratio", "0.6", "--val-ratio", "0.2"]


def read_split(out: Path, manifest: dict, split: str):
    """Every record of a split as (id, label, body, shard rec path, offset), checking .idx against the records."""
    rows = []
    for shard in manifest["splits"][split]["shards"]:
        rec_path = out / shard["rec"]
        with open(rec_path, "rb") as f:
            records = list(recordio.read_records(f, str(rec_path)))
        idx = recordio.parse_idx((out / shard["idx"]).read_text())
        assert len(records) == len(idx) == shard["records"]
        for (key, offset), rec in zip(idx, records):
            header, body = recordio.unpack(rec.payload)
            assert offset == rec.offset, "idx offset must point at the record's first byte"
            assert key == header.id, "idx key must equal the header id"
            rows.append((header.id, header.label, body, rec_path, rec.offset))
        import hashlib

        assert hashlib.sha256(rec_path.read_bytes()).hexdigest() == shard["sha256"]
        assert rec_path.stat().st_size == shard["bytes"]
    return rows


@pytest.fixture(scope="module")
def pass_through_run(tmp_path_factory):
    from conftest import SAMPLE

    out = tmp_path_factory.mktemp("pt") / "out"
    proc = run_cli("--input", SAMPLE, "--output", out, *PASS_THROUGH_ARGS)
    return out, load_manifest(out), proc


def test_pass_through_records_equal_source_files(pass_through_run):
    from conftest import SAMPLE

    out, manifest, proc = pass_through_run
    classes = sorted(os.listdir(SAMPLE))
    assert manifest["classes"] == classes
    seen = {}
    for split in manifest["splits"]:
        lst = (out / manifest["splits"][split]["lst"]).read_text().splitlines()
        by_id = {}
        for line in lst:
            idx, label, rel = line.split("\t")
            by_id[int(idx)] = (float(label), rel)
        rows = read_split(out, manifest, split)
        assert sorted(by_id) == sorted(r[0] for r in rows), "lst ids must match record ids"
        assert len({r[0] for r in rows}) == len(rows), "ids unique within a split"
        for rid, label, body, _, _ in rows:
            lst_label, rel = by_id[rid]
            assert label == lst_label == classes.index(rel.split("/")[0])
            assert body == (SAMPLE / rel).read_bytes()
            assert planning.assign_split(planning.image_key(rel, "0"), planning.SplitRatios(0.6, 0.2, 0.2)) == split
            seen[rel] = split
    all_images = sorted(str(p.relative_to(SAMPLE)) for p in SAMPLE.rglob("*") if p.is_file() and p.suffix in (".jpg", ".png"))
    assert sorted(seen) == all_images, "every image lands in exactly one split"
    assert manifest["errors"] == 0
    assert "Converted 30 images" in proc.stdout


def test_output_layout_and_manifest(pass_through_run):
    out, manifest, _ = pass_through_run
    for split, doc in manifest["splits"].items():
        assert sorted(os.listdir(out / split)) == sorted(Path(s["rec"]).name for s in doc["shards"])
        n = len(doc["shards"])
        assert [Path(s["rec"]).name for s in doc["shards"]] == ["data-%05d-of-%05d.rec" % (i, n) for i in range(n)]
        assert all(s["idx"].startswith("idx/%s/" % split) for s in doc["shards"])
        assert doc["records"] == sum(s["records"] for s in doc["shards"])
    assert set(manifest["splits"]) == {"train", "validation", "test"}
    assert json.loads((out / "classes.json").read_text()) == {c: i for i, c in enumerate(manifest["classes"])}
    assert (out / "labels.txt").read_text().splitlines() == manifest["classes"]
    assert manifest["options"]["pass_through"] is True
    assert not (out / "_work").exists()


def test_shards_mix_classes(pass_through_run):
    out, manifest, _ = pass_through_run
    labels = [r[1] for r in read_split(out, manifest, "train")]
    assert len(set(labels)) > 1
    assert labels != sorted(labels)


def test_merged_index_spans_concatenated_shards(pass_through_run):
    out, manifest, _ = pass_through_run
    doc = manifest["splits"]["train"]
    blob = b"".join((out / s["rec"]).read_bytes() for s in doc["shards"])
    merged = recordio.parse_idx((out / doc["merged_idx"]).read_text())
    assert len(merged) == doc["records"]
    import io

    for key, offset in merged:
        header, _ = recordio.unpack(recordio.read_record_at(io.BytesIO(blob), offset))
        assert header.id == key


def test_split_ratio_zero_is_absent(tmp_path):
    from conftest import SAMPLE

    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out, "--train-ratio", "1", "--val-ratio", "0")
    m = load_manifest(out)
    assert list(m["splits"]) == ["train"] and m["splits"]["train"]["records"] == 30
    assert not (out / "validation").exists()


def test_reencode_resizes_shorter_edge(tmp_path):
    from conftest import SAMPLE

    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out, "--resize", "48", "--center-crop", "--quality", "90")
    m = load_manifest(out)
    assert m["options"]["pass_through"] is False
    total = 0
    for split in m["splits"]:
        for _, _, body, _, _ in read_split(out, m, split):
            img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (48, 48, 3)
            total += 1
    assert total == 30


def test_png_encoding_and_grayscale(tmp_path):
    from conftest import SAMPLE

    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out, "--resize", "40", "--encoding", ".png", "--quality", "3", "--color", "0")
    m = load_manifest(out)
    _, _, body, _, _ = read_split(out, m, "train")[0]
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.ndim == 2 and min(img.shape) == 40


def test_same_output_with_one_and_two_workers(tmp_path):
    from conftest import SAMPLE

    outs = []
    for workers in (1, 2):
        out = tmp_path / ("w%d" % workers)
        run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "3", "--direct_num_workers", str(workers))
        outs.append(out)
    files = sorted(str(p.relative_to(outs[0])) for p in outs[0].rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(outs[1])) for p in outs[1].rglob("*") if p.is_file())
    for rel in files:
        if rel in ("manifest.json", "summary.txt"):
            continue
        assert filecmp.cmp(outs[0] / rel, outs[1] / rel, shallow=False), rel
    m0, m1 = load_manifest(outs[0]), load_manifest(outs[1])
    for m in (m0, m1):
        m.pop("wall_seconds")
        m.pop("output")
        m["options"].pop("output")
        m["identity"].pop("output", None)
    assert m0 == m1


def test_root_level_images_are_reported_not_labelled(sample_dir, tmp_path):
    (sample_dir / "stray.jpg").write_bytes((sample_dir / "cat" / "cat_00.jpg").read_bytes())
    out = tmp_path / "out"
    proc = run_cli("--input", sample_dir, "--output", out)
    m = load_manifest(out)
    assert m["errors"] == 1 and m["errors_by_reason"] == {"no_class": 1}
    lines = [json.loads(l) for l in (out / "errors.jsonl").read_text().splitlines()]
    assert lines == [{"path": "stray.jpg", "reason": "no_class", "stage": "list", "detail": lines[0]["detail"]}]
    assert sum(s["records"] for s in m["splits"].values()) == 30
    assert "no_class" in proc.stdout


def test_exts_option_filters_and_ignores_case(sample_dir, tmp_path):
    (sample_dir / "cat" / "UPPER.JPG").write_bytes((sample_dir / "cat" / "cat_00.jpg").read_bytes())
    out = tmp_path / "out"
    run_cli("--input", sample_dir, "--output", out, "--exts", "png")
    m = load_manifest(out)
    assert sum(s["records"] for s in m["splits"].values()) == 5
    out2 = tmp_path / "out2"
    run_cli("--input", sample_dir, "--output", out2)
    assert sum(s["records"] for s in load_manifest(out2)["splits"].values()) == 31


@pytest.mark.parametrize(
    "args,message",
    [
        (["--input", "/nonexistent/x", "--output", "{out}"], "does not exist"),
        (["--input", "{empty}", "--output", "{out}"], "has no class folders"),
        (["--input", "{sample}", "--output", "{out}", "--train-ratio", "0.9"], "sum to 1"),
        (["--input", "{sample}", "--output", "{out}", "--quality", "0"], "--quality"),
        (["--input", "{sample}", "--output", "{out}", "--pass-through", "--resize", "10"], "--pass-through"),
        (["--input", "{sample}"], "--output is required"),
        (["--input", "{sample}", "--output", "{out}", "--name", "../x"], "--name"),
        (["--input", "{emptyclass}", "--output", "{out}"], "no images found"),
    ],
)
def test_bad_invocations_fail_with_one_line(tmp_path, args, message):
    from conftest import SAMPLE

    (tmp_path / "empty").mkdir()
    (tmp_path / "emptyclass" / "cat").mkdir(parents=True)
    subs = {"{out}": str(tmp_path / "out"), "{empty}": str(tmp_path / "empty"), "{sample}": str(SAMPLE), "{emptyclass}": str(tmp_path / "emptyclass")}
    proc = run_cli(*[subs.get(a, a) for a in args], check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and message in lines[-1], proc.stderr
    # anything before the error line is ordinary log lines, not a dump
    assert all(" INFO " in l or " WARNING " in l for l in lines[:-1]), proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_output_holding_another_dataset_needs_overwrite(sample_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("--input", sample_dir, "--output", out)
    # same command again: allowed, same result
    run_cli("--input", sample_dir, "--output", out)
    proc = run_cli("--input", sample_dir, "--output", out, "--resize", "32", check=False)
    assert proc.returncode == 2 and "different dataset" in proc.stderr and "--overwrite" in proc.stderr
    assert load_manifest(out)["options"]["pass_through"] is True, "refused run must leave the old dataset alone"
    run_cli("--input", sample_dir, "--output", out, "--resize", "32", "--images-per-shard", "2", "--overwrite")
    m = load_manifest(out)
    assert m["options"]["pass_through"] is False
    listed = sorted(p.name for p in (out / "train").iterdir())
    assert listed == sorted(Path(s["rec"]).name for s in m["splits"]["train"]["shards"]), "stale shards removed"


def test_foreign_folder_is_not_written_into(sample_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    proc = run_cli("--input", sample_dir, "--output", out, check=False)
    assert proc.returncode == 2 and "not written by this tool" in proc.stderr
    assert (out / "precious.txt").read_text() == "keep me"


def test_fsync_only_with_the_flag(tmp_path, monkeypatch):
    """Local files are flushed to disk before their rename only with --fsync (in-process run)."""
    from imgrec.env import WorkerEnv
    from pipeline import run as run_module

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink("/proc/self/fd/%d" % fd)), real_fsync(fd))[1])
    try:
        assert run_module.run(["--input", str(SAMPLE), "--output", str(tmp_path / "plain"), "--quiet"]) == 0
        assert synced == []
        assert run_module.run(["--input", str(SAMPLE), "--output", str(tmp_path / "durable"), "--quiet", "--fsync"]) == 0
    finally:
        WorkerEnv().apply()  # this process's defaults again
    names = {os.path.basename(p).split(".tmp-")[0].lstrip(".") for p in synced}
    manifest = load_manifest(tmp_path / "durable")
    shard_files = {os.path.basename(s[k]) for split in manifest["splits"].values() for s in split["shards"] for k in ("rec", "idx")}
    assert shard_files and shard_files <= names
    assert "manifest.json" in names
