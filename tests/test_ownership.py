"""--overwrite and re-runs remove only what this tool wrote (issue 15, item 3)."""

import json
import shutil
import signal

import pytest

from conftest import SAMPLE, load_manifest, run_cli
from imgrec import crashpoints
from imgrec.ownership import OWNER_MARK, Ownership, in_work, untemp


@pytest.mark.parametrize(
    "rel,ours",
    [
        ("train/data-00000-of-00004.rec", True),
        ("train/data-inc0002-00003-of-00010.rec", True),
        ("idx/validation/data-00000-of-00001.idx", True),
        ("test/data-00000-of-00001.idx", True),  # --idx-beside-rec
        ("idx/train-merged.idx", True),
        ("idx/train-merged-inc0003.idx", True),
        ("lists/validation.lst", True),
        ("lists/train-inc0001.lst", True),
        ("single/train/data.rec", True),
        ("single/idx/train/data.idx", True),
        ("train/.data-00001-of-00004.rec.tmp-0123456789ab", True),
        ("lists/.train.lst.tmp-abcdefabcdef", True),
        ("train/mymodel.rec", False),
        ("train/other-00000-of-00004.rec", False),  # another --name
        ("train/data-00000-of-00004.rec.bak", False),
        ("lists/mine.lst", False),
        ("single/train/mine.rec", False),
        ("notes/data-00000-of-00004.rec", False),
        ("train/.mymodel.rec.tmp-0123456789ab", False),
        ("train/.data-00000-of-00004.rec.tmp-zz", False),
    ],
)
def test_data_files_of_this_tool_by_name(rel, ours):
    assert Ownership("data").data_file(rel) is ours


def test_foreign_and_replaced_files():
    owner = Ownership("data", foreign=frozenset({"train/data-00000-of-00009.rec"}), replaced=frozenset({"train/x.rec"}))
    assert not owner.data_file("train/data-00000-of-00009.rec")  # was there before this tool wrote here
    assert owner.data_file("train/x.rec")  # named by the manifest of the dataset being replaced
    assert owner.owns("manifest.json") and owner.owns(".errors.jsonl.tmp-0123456789ab")
    assert in_work("_work/shards/train-data-00000-of-00001.json") and in_work("_work/plan.json")
    assert in_work("_work/.plan.json.tmp-0123456789ab") and in_work("_work/uploads/ab.json")
    assert not in_work("_work/mine.txt") and not owner.owns("_work/mine.txt") and not owner.owns("notes.txt")
    assert untemp("a/.b.rec.tmp-0123456789ab") == "a/b.rec" and untemp(".m.json.tmp-0123456789ab") == "m.json"


USER_FILES = {
    "train/mymodel.rec": b"my model",
    "idx/train/mymodel.idx": b"0\t0\n",
    "lists/extra.lst": b"0\t1\tx.jpg\n",
    "_work/mine.txt": b"notes",
    "notes.txt": b"hello",
}


def test_overwrite_removes_the_old_dataset_and_keeps_the_users_files(tmp_path):
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "4")
    old = load_manifest(out)
    for rel, data in USER_FILES.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    proc = run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "3", "--name", "other", "--overwrite")
    assert "3 file(s) in the data folders" in proc.stderr and "were not written by this tool" in proc.stderr
    for rel, data in USER_FILES.items():
        assert (out / rel).read_bytes() == data, rel
    new = load_manifest(out)
    for doc in old["splits"].values():  # every file of the replaced dataset is gone, even under another --name
        for rel in [s[k] for s in doc["shards"] for k in ("rec", "idx")]:
            assert not (out / rel).exists(), rel
    for doc in new["splits"].values():
        assert all((out / s["rec"]).exists() for s in doc["shards"])
    assert not (out / "_work" / "replaced.json").exists()
    # verify names the user's shard-like files: a reader of the train/ folder would take them
    report = run_cli(out, module="pipeline.verify", check=False)
    assert report.returncode != 0 and "train/mymodel.rec" in report.stdout + report.stderr


def test_overwrite_into_a_folder_of_someone_elses_files_never_removes_them(tmp_path):
    out = tmp_path / "out"
    theirs = {**USER_FILES, "train/data-00000-of-00009.rec": b"their shard, named like ours"}
    for rel, data in theirs.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    refused = run_cli("--input", SAMPLE, "--output", out, check=False)
    assert refused.returncode == 2 and "not written by this tool" in refused.stderr
    run_cli("--input", SAMPLE, "--output", out, "--overwrite")
    # and again, replacing the dataset: what was there first is still not this tool's
    run_cli("--input", SAMPLE, "--output", out, "--overwrite", "--images-per-shard", "2")
    for rel, data in theirs.items():
        assert (out / rel).read_bytes() == data, rel
    assert "train/data-00000-of-00009.rec" in json.loads((out / OWNER_MARK).read_text())["foreign"]


def test_a_crashed_runs_shards_are_still_cleaned_up(tmp_path):
    """The files a run killed before its manifest left, under another shard count, go with the next run."""
    out = tmp_path / "out"
    killed = run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "4",
                     env={crashpoints.ENV: "before-manifest"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    (out / "_work" / "mine.txt").write_bytes(b"notes")
    left = sorted(str(p.relative_to(out)) for p in (out / "train").glob("*.rec"))
    assert left
    run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "3")
    assert not any((out / rel).exists() for rel in left)
    assert (out / "_work" / "mine.txt").read_bytes() == b"notes"
    ok = run_cli(out, module="pipeline.verify", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_incremental_keeps_the_users_files(tmp_path):
    root = tmp_path / "in"
    shutil.copytree(SAMPLE, root)
    out = tmp_path / "out"
    run_cli("--input", root, "--output", out, "--images-per-shard", "4")
    for rel, data in USER_FILES.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    shutil.copy(root / "cat" / "cat_00.jpg", root / "cat" / "copy.jpg")
    run_cli("--input", root, "--output", out, "--images-per-shard", "4", "--incremental")
    assert load_manifest(out)["increments"] == 1
    for rel, data in USER_FILES.items():
        assert (out / rel).read_bytes() == data, rel
