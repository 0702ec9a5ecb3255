"""Multi-label records, and the SageMaker hand-off (sagemaker.json, the Estimator snippet, --single-file).

Expected labels come from the label files the tests write, record contents
from our RecordIO reader; mxnet's own reader is in tests/compat.
"""

from __future__ import annotations

import ast
import json
import os

import cv2
import pytest

from conftest import SAMPLE, load_manifest, run_cli
from imgrec import recordio

CLASSES = sorted(os.listdir(SAMPLE))
EXTRA = {"astronaut": ["space", "person"], "rocket": ["space"], "cat": ["animal"]}


def records(out, manifest, split):
    """{relpath: (flag, labels)} of every record in a split, the path taken from the .lst by record id."""
    doc = manifest["splits"][split]
    lst = {}
    for line in (out / doc["lst"]).read_text().splitlines():
        fields = line.split("\t")
        lst[int(fields[0])] = (fields[-1], tuple(float(v) for v in fields[1:-1]), fields[1:-1])
    got = {}
    for shard in doc["shards"]:
        with open(out / shard["rec"], "rb") as f:
            for rec in recordio.read_records(f, shard["rec"]):
                header, _ = recordio.unpack(rec.payload)
                rel, lst_labels, texts = lst[header.id]
                label = tuple(header.label) if header.flag else (header.label,)
                assert label == lst_labels, "the .lst holds the record's label vector"
                assert all(t == "%f" % float(t) for t in texts), "labels written with %f, as im2rec does"
                got[rel] = (header.flag, label)
    return got


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """The sample photos in one folder, and their labels: the folder class plus EXTRA; one image has none."""
    root = tmp_path_factory.mktemp("ml") / "in"
    root.mkdir()
    labels = {}
    for cls in CLASSES:
        for f in sorted(os.listdir(SAMPLE / cls)):
            rel = "%s-%s" % (cls, f)
            (root / rel).write_bytes((SAMPLE / cls / f).read_bytes())
            labels[rel] = [cls] + EXTRA.get(cls, [])
    labels["coffee-coffee_00.jpg"] = []
    return root, labels


@pytest.fixture(scope="module")
def multi_hot(flat, tmp_path_factory):
    root, labels = flat
    tmp = tmp_path_factory.mktemp("mh")
    (tmp / "labels.jsonl").write_text("".join(json.dumps({"path": p, "labels": l}) + "\n" for p, l in labels.items()))
    out = tmp / "out"
    proc = run_cli("--input", root, "--labels", tmp / "labels.jsonl", "--output", out, "--label-format", "multi-hot",
                   "--images-per-shard", "4", "--single-file")
    return out, load_manifest(out), proc


def test_multi_hot_records_have_one_value_per_class(flat, multi_hot):
    _, labels = flat
    out, m, _ = multi_hot
    names = sorted({n for l in labels.values() for n in l})
    assert m["classes"] == names and m["labels"] == {"source": m["labels"]["source"], "format": "multi-hot", "width": len(names)}
    seen = {}
    for split in m["splits"]:
        seen.update(records(out, m, split))
    assert set(seen) == set(labels)
    for rel, (flag, vector) in seen.items():
        assert flag == len(names)
        assert vector == tuple(1.0 if n in labels[rel] else 0.0 for n in names), rel
    for split, counts in m["class_counts"].items():
        in_split = records(out, m, split)
        assert counts == {n: c for n in names if (c := sum(n in labels[r] for r in in_split))}


def test_sagemaker_json_and_the_estimator_snippet(flat, multi_hot):
    _, labels = flat
    out, m, proc = multi_hot
    doc = json.loads((out / "sagemaker.json").read_text())
    edges = sorted(min(cv2.imread(str(SAMPLE / c / f)).shape[:2]) for c in CLASSES for f in os.listdir(SAMPLE / c))
    side = min(224, edges[max(0, -(-len(edges) * 5 // 100) - 1)])
    assert doc["num_classes"] == len(m["classes"])
    assert doc["num_training_samples"] == m["splits"]["train"]["records"]
    assert doc["multi_label"] == 1 and doc["image_shape"] == "3,%d,%d" % (side, side)
    assert doc["channels"]["train"] == {
        "s3_uri": None, "prefix": "single/train/", "content_type": "application/x-recordio",
        "s3_data_type": "S3Prefix", "records": m["splits"]["train"]["records"]}
    assert set(doc["channels"]) == {"train", "validation"}
    # The snippet in the summary is valid Python with exactly these values.
    text = proc.stdout.split("Train on SageMaker")[1]
    code = "\n".join(l[4:] for l in text.splitlines()[1:] if l.startswith("    ") or not l.strip())
    tree = ast.parse(code)
    calls = {c.func.attr: c for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)}
    hyper = {k.arg: ast.literal_eval(k.value) for k in calls["set_hyperparameters"].keywords}
    assert {k: hyper[k] for k in ("num_classes", "num_training_samples", "multi_label", "image_shape")} == {
        k: doc[k] for k in ("num_classes", "num_training_samples", "multi_label", "image_shape")}
    fit = calls["fit"].args[0]
    channels = {ast.literal_eval(k): v for k, v in zip(fit.keys, fit.values)}
    assert set(channels) == {"train", "validation"}
    assert ast.literal_eval(channels["train"].args[0]) == "s3://YOUR-BUCKET/YOUR-PREFIX/single/train/"
    assert {k.arg: ast.literal_eval(k.value) for k in channels["train"].keywords}["content_type"] == "application/x-recordio"


def test_single_file_is_the_shards_concatenated(multi_hot):
    out, m, _ = multi_hot
    assert len(m["splits"]["train"]["shards"]) > 1
    for split, doc in m["splits"].items():
        single = doc["single_file"]
        blob = b"".join((out / s["rec"]).read_bytes() for s in doc["shards"])
        assert (out / single["rec"]).read_bytes() == blob
        assert (out / single["idx"]).read_text() == (out / doc["merged_idx"]).read_text()
        assert single["records"] == doc["records"] and single["bytes"] == len(blob)
        with open(out / single["rec"], "rb") as f:
            assert len(list(recordio.read_records(f, single["rec"]))) == doc["records"]
    # the single files are their own channel: the shard folders hold only shards
    assert sorted(os.listdir(out / "train")) == sorted(os.path.basename(s["rec"]) for s in m["splits"]["train"]["shards"])


def test_class_ids_from_a_multi_column_lst(flat, tmp_path):
    root, labels = flat
    names = sorted({n for l in labels.values() for n in l})
    rows = []
    for i, (rel, ls) in enumerate(sorted(labels.items())):
        rows.append("%d\t%s\t%s\n" % (i, "\t".join("%f" % names.index(n) for n in ls) or "-1", rel))
    (tmp_path / "in.lst").write_text("".join(rows))
    (tmp_path / "map.txt").write_text("".join(n + "\n" for n in names))
    out = tmp_path / "out"
    run_cli("--input", root, "--labels", tmp_path / "in.lst", "--output", out, "--label-format", "class-ids",
            "--class-map", tmp_path / "map.txt")
    m = load_manifest(out)
    width = max(len(l) for l in labels.values())
    assert m["classes"] == names and m["labels"]["width"] == width and m["labels"]["pad"] == -1.0
    seen = {}
    for split in m["splits"]:
        seen.update(records(out, m, split))
    assert set(seen) == set(labels)
    for rel, (flag, vector) in seen.items():
        ids = sorted(names.index(n) for n in labels[rel])
        assert flag == width and vector == tuple(float(i) for i in ids) + (-1.0,) * (width - len(ids)), rel
    doc = json.loads((out / "sagemaker.json").read_text())
    assert doc["channels"]["train"]["content_type"] == "application/x-recordio; label-format=class-id"


def test_folder_classes_as_one_hot_vectors(tmp_path):
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out, "--label-format", "multi-hot", "--train-ratio", "1", "--val-ratio", "0")
    m = load_manifest(out)
    for rel, (flag, vector) in records(out, m, "train").items():
        assert flag == len(CLASSES)
        assert vector == tuple(1.0 if c == rel.split("/")[0] else 0.0 for c in CLASSES)
    assert m["class_counts"]["train"] == {c: 6 for c in CLASSES}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--label-format", "multi-hot", "--label-width", "3"], "--label-width 3: multi-hot vectors have one value per class (5 classes)"),
        (["--label-width", "3"], "--label-width and --label-pad shape multi-label records: give --label-format too"),
        (["--label-format", "class-ids", "--label-pad", "2"], "--label-pad 2 could be read as a class id"),
        (["--labels-as", "names"], "--labels-as describes --labels FILE, which is not given"),
        (["--refs-root", "s3://b/img/"], "--refs-root describes --labels FILE, which is not given"),
        (["--labels", "x.csv", "--refs-root", "s3://"], "--refs-root 's3://': give the prefix the label file's paths "
                                                        "start with, e.g. --refs-root s3://bucket/images/"),
        (["--labels", "x.csv", "--refs-root", "https://host/img/"], "--refs-root 'https://host/img/': only s3:// "
                                                                    "prefixes and paths are understood"),
        (["--labels", "x.csv", "--refs-root", str(SAMPLE.parent)], "--refs-root %s and --input %s lie one inside the "
                                                                   "other, so a path under both could be read two ways"
                                                                   % (SAMPLE.parent, SAMPLE)),
        (["--allow-new-classes"], "--allow-new-classes extends --class-map FILE (or an --incremental run's classes), which is not given"),
    ],
)
def test_inconsistent_label_options_are_refused(tmp_path, args, message):
    proc = run_cli("--input", SAMPLE, "--output", tmp_path / "out", *args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: " + message + proc.stderr.strip().splitlines()[-1].split(message, 1)[1]
    assert not (tmp_path / "out" / "manifest.json").exists()


# ---------------------------------------------------------------- image_shape against the smallest image


@pytest.mark.parametrize(
    "edges,color,shape,resize,small",
    [
        ({300: 40}, 1, "3,224,224", None, 0),  # every image is larger: no resize
        ({300: 39, 100: 1}, 1, "3,224,224", 256, 1),  # one small image among 40: image_shape kept, resize set
        ({150: 30}, 0, "1,150,150", None, 0),  # all images 150: image_shape follows them
        ({300: 38, 120: 1, 100: 1}, 1, "3,120,120", 138, 1),  # 5th percentile 120: resize above it
        ({}, 1, "3,224,224", None, 0),
    ],
)
def test_image_shape_is_never_larger_than_an_image_without_resize(edges, color, shape, resize, small):
    from imgrec.sagemaker import advise_image_shape

    advice = advise_image_shape(edges, color)
    assert (advice.image_shape, advice.resize, advice.small) == (shape, resize, small)
    side = int(shape.split(",")[1])
    assert (min(edges) >= side if edges else True) or advice.resize > side


def test_channel_edges_of_a_dataset_made_before_they_were_kept_per_split():
    from imgrec.finalize import previous_edges

    assert previous_edges({"shorter_edges": {"100": 2, "300": 5}}) == ({}, {100: 2, 300: 5})
    by_split = {"train": {"300": 3}, "test": {"100": 1}}
    assert previous_edges({"shorter_edges": {"100": 2, "300": 5}, "shorter_edges_by_split": by_split}) == (
        {"train": {300: 3}, "test": {100: 1}}, {100: 1, 300: 2})
