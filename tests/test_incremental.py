"""--incremental: scheduled runs over a growing input add new shards and change nothing else."""

import json
import shutil

import pytest

import imagefactory as fac
from conftest import SAMPLE, load_manifest, run_cli
from imgrec import recordio

ARGS = ["--images-per-shard", "4"]


def snapshot(out):
    """{relative path: (bytes, mtime_ns)} of every file under ``out``."""
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}


def lst_entries(out, m, files=None):
    """{relpath: (split, id, label)} from every split's .lst (read from ``files``, a snapshot, if given)."""
    found = {}
    for split, doc in m["splits"].items():
        text = files[doc["lst"]][0].decode() if files else (out / doc["lst"]).read_text()
        for line in text.splitlines():
            rid, label, rel = line.split("\t")
            found[rel] = (split, int(rid), float(label))
    return found


def shard_of(out, m):
    """{record id per split: shard .rec} by reading every shard."""
    where = {}
    for split, doc in m["splits"].items():
        for shard in doc["shards"]:
            with open(out / shard["rec"], "rb") as f:
                for rec in recordio.read_records(f):
                    header, _ = recordio.unpack(rec.payload)
                    where[(split, header.id)] = shard["rec"]
    return where


@pytest.fixture
def grown(tmp_path):
    """An initial conversion, then +10% images (one of them broken) in existing classes."""
    root = tmp_path / "in"
    shutil.copytree(SAMPLE, root)
    out = tmp_path / "out"
    run_cli("--input", root, "--output", out, *ARGS)
    before = snapshot(out)
    m0 = load_manifest(out)
    (root / "cat" / "deeper").mkdir()
    (root / "cat" / "deeper" / "new_cat.jpg").write_bytes(fac.jpeg(90, 60, seed=101))
    (root / "rocket" / "new_rocket.png").write_bytes(fac.png(70, 50, seed=102))
    (root / "flower" / "new_flower.jpg").write_bytes(fac.jpeg(80, 60, seed=103))
    (root / "coffee" / "broken.jpg").write_bytes(b"")
    return root, out, before, m0


def test_increment_adds_new_shards_and_keeps_everything_else(grown):
    root, out, before, m0 = grown
    proc = run_cli("--input", root, "--output", out, *ARGS, "--incremental")
    m1 = load_manifest(out)
    after = snapshot(out)
    # every shard file of the first run is untouched (same bytes, not even rewritten)
    for rel, (data, mtime) in before.items():
        if rel.endswith((".rec", ".idx")) and not rel.endswith("-merged.idx"):
            assert after[rel] == (data, mtime), rel
    old, new = lst_entries(out, m0, before), lst_entries(out, m1)
    assert all(new[p] == v for p, v in old.items()), "existing images keep split, id and label"
    added = sorted(set(new) - set(old))
    assert added == ["cat/deeper/new_cat.jpg", "flower/new_flower.jpg", "rocket/new_rocket.png"]
    # new ids continue each split's ids; the existing records stay in their shards
    for rel in added:
        split, rid, label = new[rel]
        assert rid >= m0["splits"][split]["records"]
        assert label == m1["classes"].index(rel.split("/")[0])
    w0, w1 = shard_of(out, m0), shard_of(out, m1)  # the old shards are unchanged, so reading them now is fine
    assert all(w1[k] == v for k, v in w0.items())
    new_shards = [s["rec"] for d in m1["splits"].values() for s in d["shards"] if "-inc0001-" in s["rec"]]
    assert new_shards and all(rel not in before for rel in new_shards)
    assert m1["increments"] == 1 and m1["classes"] == m0["classes"]
    assert sum(d["records"] for d in m1["splits"].values()) == 33
    errors = [json.loads(l) for l in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["path"], e["reason"]) for e in errors] == [("coffee/broken.jpg", "empty_file")]
    assert "Converted" in proc.stdout
    ok = run_cli(out, module="pipeline.verify", check=False)
    assert ok.returncode == 0, ok.stderr

    # a second run with nothing new changes nothing at all
    again = run_cli("--input", root, "--output", out, *ARGS, "--incremental")
    assert "Nothing new" in again.stdout
    assert snapshot(out) == after


def test_new_class_needs_allow_new_classes_and_goes_last(grown):
    root, out, _, m0 = grown
    (root / "aardvark").mkdir()
    (root / "aardvark" / "a.jpg").write_bytes(fac.jpeg(seed=7))
    proc = run_cli("--input", root, "--output", out, *ARGS, "--incremental", check=False)
    assert proc.returncode == 2 and "aardvark" in proc.stderr and "--allow-new-classes" in proc.stderr
    assert load_manifest(out) == m0, "a refused increment leaves the dataset alone"
    run_cli("--input", root, "--output", out, *ARGS, "--incremental", "--allow-new-classes")
    m1 = load_manifest(out)
    assert m1["classes"] == m0["classes"] + ["aardvark"]
    assert json.loads((out / "classes.json").read_text())["aardvark"] == len(m0["classes"])
    entries = lst_entries(out, m1)
    assert entries["aardvark/a.jpg"][2] == len(m0["classes"])


def test_increment_with_other_options_is_refused(grown):
    root, out, _, m0 = grown
    proc = run_cli("--input", root, "--output", out, *ARGS, "--incremental", "--resize", "32", check=False)
    assert proc.returncode == 2
    assert "--incremental must use the input and options" in proc.stderr and "pass_through" in proc.stderr
    assert load_manifest(out) == m0


def test_first_incremental_run_converts_everything(tmp_path):
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out, *ARGS, "--incremental")
    ref = tmp_path / "ref"
    run_cli("--input", SAMPLE, "--output", ref, *ARGS)
    for p in ref.rglob("*"):
        if p.is_file() and p.name not in ("manifest.json", "summary.txt"):
            assert (out / p.relative_to(ref)).read_bytes() == p.read_bytes(), p
