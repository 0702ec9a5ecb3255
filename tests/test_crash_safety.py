"""Killed at any point, a run loses nothing: the --incremental commit and --resume (issue 15, items 1 and 4).

The job is killed with SIGKILL at named points (``IMGREC_CRASH_AT``, imgrec/crashpoints.py): no timing, no
races. After each crash the same command is run again, and the dataset must then hold every image exactly
once, pass ``pipeline.verify``, and be byte for byte the dataset that a run without the crash made.
"""

import json
import shutil
import signal

import pytest

import imagefactory as fac
from conftest import SAMPLE, load_manifest, run_cli
from imgrec import crashpoints, recordio

ARGS = ["--images-per-shard", "4"]
INCREMENT = [*ARGS, "--incremental", "--allow-new-classes"]
# Points of the --incremental commit, in the order a run reaches them; the manifest is replaced between the
# third and the fourth.
BEFORE_COMMIT = ["writing-lists", "lists-written", "before-manifest"]
AFTER_COMMIT = ["manifest-written", "stale-removed"]


def tree_bytes(out):
    """{relative path: bytes} of the dataset, without what describes the run (wall time, output path)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", "summary.txt")
    }


def lst_paths(out):
    m = load_manifest(out)
    return [line.split("\t")[-1] for doc in m["splits"].values() for line in (out / doc["lst"]).read_text().splitlines()]


def records_in_shards(out):
    m = load_manifest(out)
    n = 0
    for doc in m["splits"].values():
        for shard in doc["shards"]:
            with open(out / shard["rec"], "rb") as f:
                n += sum(1 for _ in recordio.read_records(f))
    return n


def check_dataset(out, images):
    """Every image of ``images`` once in the lists and once in the shards, and verify passes."""
    paths = lst_paths(out)
    assert sorted(paths) == sorted(images), "images lost or repeated"
    assert records_in_shards(out) == len(images)
    ok = run_cli(out, module="pipeline.verify", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def crash(*args, point):
    proc = run_cli(*args, env={crashpoints.ENV: point}, check=False)
    assert proc.returncode == -signal.SIGKILL, "the run was not killed at %s:\n%s" % (point, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A converted sample; the input grown by new images (one of a new class, one broken); the grown dataset."""
    base = tmp_path_factory.mktemp("grown")
    root = base / "in"
    shutil.copytree(SAMPLE, root)
    first = base / "first"
    run_cli("--input", root, "--output", first, *ARGS)
    for i, cls in enumerate(("cat", "flower", "rocket", "coffee", "zebra")):
        (root / cls).mkdir(exist_ok=True)
        (root / cls / ("new_%d.jpg" % i)).write_bytes(fac.jpeg(60 + i, 50, seed=200 + i))
    (root / "coffee" / "broken.jpg").write_bytes(b"")
    images = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "broken.jpg")
    reference = base / "reference"
    shutil.copytree(first, reference)
    run_cli("--input", root, "--output", reference, *INCREMENT)
    check_dataset(reference, images)
    assert "zebra" in load_manifest(reference)["classes"]
    return root, first, reference, images


@pytest.mark.parametrize("point", BEFORE_COMMIT + AFTER_COMMIT)
def test_increment_killed_at_any_point_then_rerun_gives_the_grown_dataset(grown, tmp_path, point):
    root, first, reference, images = grown
    out = tmp_path / "out"
    shutil.copytree(first, out)
    old = load_manifest(out)
    crash("--input", root, "--output", out, *INCREMENT, point=point)

    m = load_manifest(out)
    if point in BEFORE_COMMIT:
        # not committed: the old manifest, and every file it names exactly as it was
        assert m == old
        for doc in old["splits"].values():
            for rel in [doc["lst"], doc["merged_idx"]] + [s[k] for s in doc["shards"] for k in ("rec", "idx")]:
                assert (out / rel).read_bytes() == (first / rel).read_bytes(), rel
        assert sorted(lst_paths(out)) == sorted(lst_paths(first))
    else:
        # committed: the new manifest names the new state's files, which are all there
        assert m["increments"] == 1 and "zebra" in m["classes"]
        assert sorted(lst_paths(out)) == sorted(images)

    run_cli("--input", root, "--output", out, *INCREMENT)
    check_dataset(out, images)
    assert tree_bytes(out) == tree_bytes(reference)
    assert not (out / "_work").exists()


def test_uncommitted_class_files_are_put_back_before_the_next_run(grown, tmp_path):
    """A crash after classes.json gained the new class: the next run reads the committed class map, so the new
    class again needs --allow-new-classes."""
    root, first, _, _ = grown
    out = tmp_path / "out"
    shutil.copytree(first, out)
    crash("--input", root, "--output", out, *INCREMENT, point="before-manifest")
    assert "zebra" in json.loads((out / "classes.json").read_text())
    refused = run_cli("--input", root, "--output", out, *ARGS, "--incremental", check=False)
    assert refused.returncode == 2 and "zebra" in refused.stderr and "--allow-new-classes" in refused.stderr
    assert (out / "classes.json").read_bytes() == (first / "classes.json").read_bytes()
    assert (out / "sagemaker.json").read_bytes() == (first / "sagemaker.json").read_bytes()


def test_increment_killed_before_commit_resumes_with_its_finished_shards(grown, tmp_path):
    root, first, reference, images = grown
    out = tmp_path / "out"
    shutil.copytree(first, out)
    crash("--input", root, "--output", out, *INCREMENT, point="before-manifest")
    new_shards = {p: p.stat().st_ino for p in out.rglob("*-inc0001-*.rec")}
    assert new_shards
    run_cli("--input", root, "--output", out, *INCREMENT, "--resume")
    assert {p: p.stat().st_ino for p in new_shards} == new_shards, "finished shards were written again"
    check_dataset(out, images)
    assert tree_bytes(out) == tree_bytes(reference)


def test_resume_redoes_a_shard_whose_input_changed_in_place(tmp_path):
    """Same path, same size, other bytes, a new modification time: the shard holding it is written again."""
    root = tmp_path / "in"
    shutil.copytree(SAMPLE, root)
    out = tmp_path / "out"
    crash("--input", root, "--output", out, *ARGS, point="before-manifest")
    records = {json.loads(p.read_text())["rec"]: json.loads(p.read_text()) for p in (out / "_work" / "shards").glob("*.json")}
    victim_rel = "cat/cat_00.jpg"
    victim_shard = next(rel for rel, r in records.items() if ("\t" + victim_rel + "\n") in (out / r["lst_file"]).read_text())
    inodes = {rel: (out / rel).stat().st_ino for rel in records}

    victim = root / victim_rel
    original = victim.read_bytes()
    changed = bytearray(original)
    middle = next(i for i in range(len(changed) // 2, len(changed)) if 0xFF not in changed[i - 1:i + 1])
    changed[middle] ^= 0x01  # one bit of the entropy-coded data: the same size, still a whole JPEG
    victim.write_bytes(bytes(changed))

    run_cli("--input", root, "--output", out, *ARGS, "--resume")
    kept = {rel for rel in records if (out / rel).stat().st_ino == inodes[rel]}
    assert victim_shard not in kept, "the shard of the changed image was kept with its old bytes"
    assert kept == set(records) - {victim_shard}, "shards whose inputs did not change are kept"
    with open(out / victim_shard, "rb") as f:
        payloads = [recordio.unpack(r.payload)[1] for r in recordio.read_records(f)]
    assert bytes(changed) in payloads and original not in payloads
    clean = tmp_path / "clean"
    run_cli("--input", root, "--output", clean, *ARGS)
    assert tree_bytes(out) == tree_bytes(clean)


def test_resume_writes_again_a_shard_whose_lst_lines_are_gone_or_changed(tmp_path):
    """A shard's .lst lines wait beside its record until the split's list is written: --resume keeps a shard
    only with its lines as they were written; the dataset is the clean run's either way."""
    out = tmp_path / "out"
    crash("--input", SAMPLE, "--output", out, *ARGS, point="before-manifest")
    records = {json.loads(p.read_text())["rec"]: json.loads(p.read_text()) for p in (out / "_work" / "shards").glob("*.json")}
    assert len(records) >= 3
    inodes = {rel: (out / rel).stat().st_ino for rel in records}
    gone, changed = sorted(records)[:2]
    (out / records[gone]["lst_file"]).unlink()
    lst = out / records[changed]["lst_file"]
    lst.write_bytes(lst.read_bytes()[:-1])

    run_cli("--input", SAMPLE, "--output", out, *ARGS, "--resume")
    kept = {rel for rel in records if (out / rel).stat().st_ino == inodes[rel]}
    assert kept == set(records) - {gone, changed}
    clean = tmp_path / "clean"
    run_cli("--input", SAMPLE, "--output", clean, *ARGS)
    assert tree_bytes(out) == tree_bytes(clean)


def test_resume_with_check_duplicates_keeps_each_finished_shards_report_items(tmp_path):
    """What a shard's writer found (identical files) waits beside its record: a kept shard keeps it; a shard
    whose file of found items is gone is written again; the report is the clean run's either way."""
    root = tmp_path / "in"
    shutil.copytree(SAMPLE, root)
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        first = sorted(cls.iterdir())[0]
        shutil.copy(first, cls / ("copy-" + first.name))  # identical files, same label
    shutil.copy(root / "cat" / "cat_00.jpg", root / "rocket" / "not-a-rocket.jpg")  # identical, other label
    args = [*ARGS, "--check-duplicates"]
    out = tmp_path / "out"
    crash("--input", root, "--output", out, *args, point="before-manifest")
    found = sorted((out / "_work" / "shards").glob("*.found.jsonl"))
    assert len(found) >= 2, "the identical files should be found in several shards"
    records = {json.loads(p.read_text())["rec"]: json.loads(p.read_text()) for p in (out / "_work" / "shards").glob("*.json")}
    inodes = {rel: (out / rel).stat().st_ino for rel in records}
    lost = found[0]
    lost_rec = next(rel for rel, r in records.items() if r["found_file"] and (out / r["found_file"]) == lost)
    lost.unlink()

    run_cli("--input", root, "--output", out, *args, "--resume")
    kept = {rel for rel in records if (out / rel).stat().st_ino == inodes[rel]}
    assert kept == set(records) - {lost_rec}, "every shard but the one whose found items were lost is kept"
    clean = tmp_path / "clean"
    run_cli("--input", root, "--output", clean, *args)
    assert tree_bytes(out) == tree_bytes(clean)
    report = (clean / "report.jsonl").read_text().splitlines()
    kinds = sorted({json.loads(line)["kind"] for line in report})
    assert kinds == ["duplicate", "label_conflict"], kinds
