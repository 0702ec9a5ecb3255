"""The label files of the workflows SageMaker users run, written the way their own tools write them.

Each "What we saw" of issue 14 is a test here, on the real command line:

* the multi-label notebook's ``.lst`` (``index<TAB>0/1 per class...<TAB>path``, integers or ``%f`` floats)
  and a one-hot ``.lst``;
* our own ``lists/*.lst`` (single-label, multi-hot, class-ids) fed back as ``--labels``: the same shards;
* CSV files with a typo among class ids, and Excel's ``sep=,`` first line;
* the developer guide's augmented manifests (``image-ref``), a Ground Truth job's ``output.manifest`` with
  its ``class_labels.json`` (a class without images), manifest refs mapped onto a local copy (``--refs-root``);
* the SageMaker hand-off: ``image_shape`` against the smallest image, the held-out test split.

Records are read back with our RecordIO reader here; ``tests/compat/test_multilabel_mxnet.py`` reads the
same kinds of output with mxnet 1.9.1.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import SAMPLE, load_manifest, run_cli
from imagefactory import jpeg
from imgrec import recordio
from labelfiles import (
    CLASSES,
    NUM_HOT,
    folder_class,
    ground_truth_job,
    guide_manifest,
    hot_vector,
    notebook_lst,
    one_hot_lst,
    sample_paths,
)

def records_by_path(out: Path, manifest: dict) -> dict[str, tuple]:
    """{relpath: label vector (a 1-tuple for scalar labels)} of every record, paths from the .lst by id."""
    got = {}
    for split, doc in manifest["splits"].items():
        paths = {int(l.split("\t")[0]): l.split("\t")[-1] for l in (out / doc["lst"]).read_text().splitlines()}
        for shard in doc["shards"]:
            with open(out / shard["rec"], "rb") as f:
                for rec in recordio.read_records(f, shard["rec"]):
                    header, _ = recordio.unpack(rec.payload)
                    got[paths[header.id]] = tuple(header.label) if header.flag else (header.label,)
    return got


def shard_digests(out: Path, manifest: dict) -> dict[str, list[str]]:
    return {split: [hashlib.sha256((out / s["rec"]).read_bytes()).hexdigest() for s in doc["shards"]]
            for split, doc in manifest["splits"].items()}


def refused(proc) -> list[str]:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return [l for l in proc.stderr.splitlines() if l.startswith("error: ")]


# ---------------------------------------------------------------- the multi-label notebook's .lst


@pytest.mark.parametrize("style", ["int", "float"])
def test_notebook_multi_hot_lst_gives_its_ten_classes(tmp_path, style):
    (tmp_path / "train.lst").write_text(notebook_lst(style))
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--labels", tmp_path / "train.lst", "--output", out, "--label-format", "multi-hot")
    m = load_manifest(out)
    assert m["num_classes"] == NUM_HOT and m["labels"]["width"] == NUM_HOT
    assert json.loads((out / "sagemaker.json").read_text())["num_classes"] == NUM_HOT
    expected = {rel: tuple(float(v) for v in hot_vector(i)) for i, rel in enumerate(sample_paths())}
    assert records_by_path(out, m) == expected


def test_notebook_multi_hot_lst_without_label_format_is_refused_naming_its_columns(tmp_path):
    (tmp_path / "train.lst").write_text(notebook_lst("int"))
    proc = run_cli("--input", SAMPLE, "--labels", tmp_path / "train.lst", "--output", tmp_path / "out", check=False)
    first = refused(proc)[0]
    assert first.startswith("error: %s line 1: 10 label columns" % (tmp_path / "train.lst")), first
    assert "multi-hot vector over 10 classes" in first and "3 labels" in first
    assert "--label-format multi-hot" in first and "--labels-as class-ids" in first
    assert not (tmp_path / "out").exists()


def test_one_hot_lst_gives_scalar_class_ids(tmp_path):
    (tmp_path / "onehot.lst").write_text(one_hot_lst())
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--labels", tmp_path / "onehot.lst", "--output", out)
    m = load_manifest(out)
    assert m["num_classes"] == 5 and m["labels"]["format"] == "single"
    assert records_by_path(out, m) == {rel: (float(folder_class(rel)),) for rel in sample_paths()}


def test_lst_columns_that_are_not_all_0_1_stay_class_ids(tmp_path):
    # a class-ids list padded with -1 (as --label-format class-ids writes): not multi-hot
    rows = ["0\t1\t3\t%s\n" % "cat/cat_00.jpg", "1\t2\t-1\t%s\n" % "cat/cat_01.jpg"]
    (tmp_path / "ids.lst").write_text("".join(rows))
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--labels", tmp_path / "ids.lst", "--output", out, "--label-format", "class-ids")
    m = load_manifest(out)
    assert m["num_classes"] == 4 and m["labels"]["width"] == 2
    assert records_by_path(out, m) == {"cat/cat_00.jpg": (1.0, 3.0), "cat/cat_01.jpg": (2.0, -1.0)}


# ---------------------------------------------------------------- our own .lst, read back


@pytest.fixture(scope="module")
def tags(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tags")
    lines = [json.dumps({"path": rel, "labels": [rel.split("/")[0]] + (["space"] if i % 3 == 0 else [])})
             for i, rel in enumerate(sample_paths())]
    (tmp / "tags.jsonl").write_text("\n".join(lines) + "\n")
    return tmp / "tags.jsonl"


@pytest.mark.parametrize("label_format", ["", "multi-hot", "class-ids"])
def test_our_own_lst_read_back_gives_the_same_records(tmp_path, tags, label_format):
    fmt = ["--label-format", label_format] if label_format else []
    first = tmp_path / "first"
    source = ["--labels", tags] if label_format else []
    run_cli("--input", SAMPLE, *source, "--output", first, *fmt, "--train-ratio", "1", "--val-ratio", "0")
    a = load_manifest(first)
    again = tmp_path / "again"
    run_cli("--input", SAMPLE, "--labels", first / "lists" / "train.lst", "--output", again, *fmt,
            "--class-map", first / "classes.json", "--train-ratio", "1", "--val-ratio", "0")
    b = load_manifest(again)
    assert b["classes"] == a["classes"] and b["labels"] == {**a["labels"], "source": b["labels"]["source"]}
    assert records_by_path(again, b) == records_by_path(first, a)
    assert shard_digests(again, b) == shard_digests(first, a)


# ---------------------------------------------------------------- CSV: a typo among ids, Excel's sep= line


def test_csv_of_class_ids_with_one_typo_is_refused_not_read_as_names(tmp_path):
    paths = sample_paths()
    rows = ["%s,%d\n" % (rel, folder_class(rel)) for rel in paths]
    rows[6] = "%s,2.5\n" % paths[6]
    (tmp_path / "ids.csv").write_text("".join(rows))
    proc = run_cli("--input", SAMPLE, "--labels", tmp_path / "ids.csv", "--output", tmp_path / "out", check=False)
    lines = refused(proc)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: %s line 7: the label '2.5' is a number that is not a class id" % (tmp_path / "ids.csv"))
    assert "line 1 has class ids ('0')" in lines[0]
    assert "--labels-as names" in lines[0] and "--labels-as class-ids" in lines[0]


def test_csv_mixing_names_and_ids_is_refused_at_the_first_line_that_breaks_the_pattern(tmp_path):
    (tmp_path / "mix.csv").write_text("cat/cat_00.jpg,cat\ncat/cat_01.jpg,cat\ncat/cat_02.jpg,7\ncat/cat_03.jpg,3\n")
    lines = refused(run_cli("--input", SAMPLE, "--labels", tmp_path / "mix.csv", "--output", tmp_path / "o", check=False))
    assert len(lines) == 1 and "line 3: the label '7' is a class id" in lines[0]
    assert "line 1 has class names ('cat')" in lines[0] and "--labels-as names" in lines[0], lines
    # --labels-as names decides: "7" and "3" are class names
    run_cli("--input", SAMPLE, "--labels", tmp_path / "mix.csv", "--output", tmp_path / "o", "--labels-as", "names")
    assert load_manifest(tmp_path / "o")["classes"] == ["3", "7", "cat"]


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_excel_sep_line_and_header_are_understood(tmp_path, delimiter):
    paths = sample_paths()
    text = "\ufeffsep=%s\r\npath%slabel\r\n" % (delimiter, delimiter)
    text += "".join("%s%s%s\r\n" % (rel, delimiter, rel.split("/")[0]) for rel in paths)
    (tmp_path / "excel.csv").write_bytes(text.encode("utf-8"))
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--labels", tmp_path / "excel.csv", "--output", out)
    m = load_manifest(out)
    assert m["classes"] == CLASSES and m["images_listed"] == len(paths) and m["errors"] == 0
    assert records_by_path(out, m) == {rel: (folder_class(rel),) for rel in paths}


# ---------------------------------------------------------------- manifests: image-ref, Ground Truth, --refs-root


def test_guide_augmented_manifests_with_image_ref(tmp_path):
    paths = sample_paths()
    (tmp_path / "train.manifest").write_text(guide_manifest("s3://bkt/images/", multi=False))
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--labels", tmp_path / "train.manifest", "--refs-root", "s3://bkt/images/", "--output", out)
    m = load_manifest(out)
    assert records_by_path(out, m) == {rel: (folder_class(rel),) for rel in paths}
    # the guide's multi-label example: the class attribute is a 0/1 list written as a string
    (tmp_path / "multi.manifest").write_text(guide_manifest("s3://bkt/images/", multi=True))
    out = tmp_path / "multi"
    run_cli("--input", SAMPLE, "--labels", tmp_path / "multi.manifest", "--refs-root", "s3://bkt/images/",
            "--output", out, "--label-format", "multi-hot")
    m = load_manifest(out)
    assert m["num_classes"] == NUM_HOT
    assert records_by_path(out, m) == {rel: tuple(float(v) for v in hot_vector(i)) for i, rel in enumerate(paths)}


def test_ground_truth_job_with_its_class_list_keeps_classes_without_images(tmp_path):
    job = ["astronaut", "cat", "dog", "coffee", "flower", "rocket", "zebra"]  # dog and zebra have no image yet
    ground_truth_job(tmp_path, job)
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE, "--labels", tmp_path / "output.manifest", "--refs-root", "s3://gt-bucket/photos",
                   "--class-map", tmp_path / "class_labels.json", "--output", out)
    m = load_manifest(out)
    assert m["classes"] == job and m["num_classes"] == 7
    assert json.loads((out / "sagemaker.json").read_text())["num_classes"] == 7
    assert records_by_path(out, m) == {rel: (job.index(rel.split("/")[0]),) for rel in sample_paths()}
    warning = "2 classes have no images: 'dog', 'zebra'"
    assert any(w.startswith(warning) for w in m["warnings"]), m["warnings"]
    summary = proc.stdout.split("Warnings:")[1]
    assert warning in summary.splitlines()[1]


def test_empty_class_folders_are_named_in_the_summary_and_manifest(sample_dir, tmp_path):
    (sample_dir / "bicycle").mkdir()
    out = tmp_path / "out"
    proc = run_cli("--input", sample_dir, "--output", out)
    m = load_manifest(out)
    assert m["num_classes"] == 6 and "bicycle" in m["classes"]
    assert [w for w in m["warnings"] if "no images" in w][0].startswith("1 class has no images: 'bicycle'")
    assert "Warnings:" in proc.stdout and "1 class has no images: 'bicycle'" in proc.stdout
    # --quiet leaves the terminal warnings and errors only: the warning is one of them
    quiet = run_cli("--input", sample_dir, "--output", out, "--quiet")
    assert quiet.stdout == "" and "warning: 1 class has no images: 'bicycle'" in quiet.stderr
    dry = run_cli("--input", sample_dir, "--dry-run")
    assert "Warnings:\n  - 1 class has no images: 'bicycle'" in dry.stdout


def test_manifest_refs_onto_a_local_copy_need_refs_root_and_keep_path_safety(tmp_path):
    ground_truth_job(tmp_path, CLASSES)
    lines = refused(run_cli("--input", SAMPLE, "--labels", tmp_path / "output.manifest", "--output", tmp_path / "o",
                            check=False))
    assert "s3://gt-bucket/photos/astronaut/astronaut_00.jpg is an s3:// reference, but --input" in lines[0]
    assert "--refs-root" in lines[0]
    # a ref that climbs out of the mapped prefix, and one outside it
    text = (tmp_path / "output.manifest").read_text().splitlines()
    text[1] = text[1].replace("s3://gt-bucket/photos/astronaut/", "s3://gt-bucket/photos/../secret/")
    text[2] = text[2].replace("s3://gt-bucket/photos/", "s3://other-bucket/")
    (tmp_path / "bad.manifest").write_text("\n".join(text) + "\n")
    lines = refused(run_cli("--input", SAMPLE, "--labels", tmp_path / "bad.manifest", "--refs-root",
                            "s3://gt-bucket/photos/", "--output", tmp_path / "o", check=False))
    assert len(lines) == 2, lines
    assert "line 2: s3://gt-bucket/photos/../secret/" in lines[0] and "climbs out" in lines[0]
    assert "line 3: s3://other-bucket/" in lines[1] and "--refs-root s3://gt-bucket/photos/" in lines[1]


# ---------------------------------------------------------------- the SageMaker hand-off


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory):
    """Mostly 300x260 photos, and one 120x100 photo: the smallest shorter edge is 100."""
    root = tmp_path_factory.mktemp("sizes") / "in"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(12):
            (root / c / ("%02d.jpg" % i)).write_bytes(jpeg(300, 260, seed=i + (50 if c == "b" else 0)))
    (root / "a" / "small.jpg").write_bytes(jpeg(120, 100, seed=99))
    return root


def test_image_shape_is_safe_for_the_smallest_image(mixed_sizes, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", mixed_sizes, "--output", out, "--train-ratio", "1", "--val-ratio", "0")
    doc = json.loads((out / "sagemaker.json").read_text())
    assert doc["image_sizes"]["min_shorter_edge"] == 100
    side = int(doc["image_shape"].split(",")[1])
    assert side <= 100 or (doc["resize"] is not None and doc["resize"] > side), doc
    assert doc["image_shape"] == "3,224,224" and doc["resize"] == 256 and doc["small_images"] == 1
    assert "resize=256," in proc.stdout
    assert "1 of 25 train and validation images has a shorter side below 224 pixels" in proc.stdout


def test_image_shape_without_small_images_sets_no_resize(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE, "--output", out)
    doc = json.loads((out / "sagemaker.json").read_text())
    assert doc["image_shape"] == "3,150,150" and doc["resize"] is None and doc["small_images"] == 0
    assert "resize=" not in proc.stdout
    assert "no train or validation image is smaller than image_shape" in proc.stdout


def test_test_split_is_held_out_not_a_channel(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE, "--output", out, "--train-ratio", "0.6", "--val-ratio", "0.2", "--test-ratio", "0.2")
    assert "SageMaker channel 'test'" not in proc.stdout
    assert "Held-out test split (not a SageMaker channel): %s/test/" % out in proc.stdout
    doc = json.loads((out / "sagemaker.json").read_text())
    assert set(doc["channels"]) == {"train", "validation"}
    assert doc["held_out"] == {"test": {"prefix": "test/", "records": load_manifest(out)["splits"]["test"]["records"]}}
