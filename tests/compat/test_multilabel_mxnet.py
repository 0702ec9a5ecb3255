"""Multi-label records read back by mxnet 1.9.1: ImageRecordIter(label_width=...) and MXIndexedRecordIO.

The job writes multi-hot and class-ids records from a JSON Lines label file,
and from the label files SageMaker users bring (the multi-label notebook's
``.lst`` with integer and ``%f`` columns, a one-hot ``.lst``, the developer
guide's ``image-ref`` manifests, a Ground Truth job's ``output.manifest`` with
its ``class_labels.json``); mxnet (in .venv-mxnet, as a subprocess) reads
every record. Expected label vectors come from the label file, the record
order from the .lst.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import SAMPLE, load_manifest, run_cli
from labelfiles import (
    NUM_HOT,
    folder_class,
    ground_truth_job,
    guide_manifest,
    hot_vector,
    notebook_lst,
    one_hot_lst,
    sample_paths,
)

from .conftest import REPO

SIDE = 32
CLASSES = sorted(os.listdir(SAMPLE))
EXTRA = {"astronaut": ["person", "space"], "rocket": ["space"]}

# Runs under .venv-mxnet. Request: {"rec": ..., "idx": ..., "width": W, "side": S}.
MX_READER = r'''
import json, sys
import mxnet as mx
req = json.load(sys.stdin)
it = mx.io.ImageRecordIter(path_imgrec=req["rec"], path_imgidx=req["idx"], data_shape=(3, req["side"], req["side"]),
                           label_width=req["width"], batch_size=1, shuffle=False, preprocess_threads=1)
iterated = []
for batch in it:
    assert batch.pad == 0
    iterated.append([float(v) for v in batch.label[0].asnumpy()[0].ravel()])
reader = mx.recordio.MXIndexedRecordIO(req["idx"], req["rec"], "r")
indexed = {}
for key in reader.keys:
    header, _ = mx.recordio.unpack(reader.read_idx(key))
    label = header.label if header.flag else [header.label]  # a scalar label is one float
    indexed[int(header.id)] = {"flag": int(header.flag), "label": [float(v) for v in label]}
print(json.dumps({"iterated": iterated, "indexed": indexed}))
'''


def mx_read(mx_python: Path, tmp_path: Path, request: dict) -> dict:
    script = tmp_path / "mx_multilabel_read.py"
    script.write_text(MX_READER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONNOUSERSITE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               MXNET_CPU_WORKER_NTHREADS="1", MXNET_CPU_PRIORITY_NTHREADS="1")
    proc = subprocess.run([str(mx_python), str(script)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=300, cwd=str(REPO), env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlmx")
    labels = {}
    for cls in CLASSES:
        for f in sorted(os.listdir(SAMPLE / cls)):
            labels["%s/%s" % (cls, f)] = [cls] + EXTRA.get(cls, [])
    (root / "labels.jsonl").write_text("".join(json.dumps({"path": p, "labels": l}) + "\n" for p, l in labels.items()))
    return root, labels


@pytest.mark.parametrize("label_format", ["multi-hot", "class-ids"])
def test_image_record_iter_reads_every_label_vector(mx_python, labelled, tmp_path, label_format):
    root, labels = labelled
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--labels", root / "labels.jsonl", "--output", out, "--label-format", label_format,
            "--resize", str(SIDE), "--center-crop", "--images-per-shard", "6", "--single-file")
    m = load_manifest(out)
    names = m["classes"]
    width = len(names) if label_format == "multi-hot" else max(len(l) for l in labels.values())
    assert m["labels"]["width"] == width

    def expected(rel):
        ids = sorted(names.index(n) for n in labels[rel])
        if label_format == "multi-hot":
            return [1.0 if i in ids else 0.0 for i in range(width)]
        return [float(i) for i in ids] + [-1.0] * (width - len(ids))

    seen = set()
    for split, doc in m["splits"].items():
        rows = [l.split("\t") for l in (out / doc["lst"]).read_text().splitlines()]
        got = mx_read(mx_python, tmp_path, {"rec": str(out / doc["single_file"]["rec"]),
                                            "idx": str(out / doc["single_file"]["idx"]), "width": width, "side": SIDE})
        # ImageRecordIter without shuffling yields the records in file order, which is the .lst order
        assert got["iterated"] == [expected(r[-1]) for r in rows]
        assert set(got["indexed"]) == {r[0] for r in rows}
        for r in rows:
            assert got["indexed"][r[0]] == {"flag": width, "label": expected(r[-1])}
        seen.update(r[-1] for r in rows)
    assert seen == set(labels)


def write_source(kind: str, folder: Path) -> tuple[list[str], dict]:
    """A label file as SageMaker users' tools write it: (pipeline.run arguments, {relpath: label vector})."""
    paths = sample_paths()
    hot = {rel: [float(v) for v in hot_vector(i)] for i, rel in enumerate(paths)}
    scalar = {rel: [float(folder_class(rel))] for rel in paths}
    if kind in ("notebook-int", "notebook-float"):
        (folder / "train.lst").write_text(notebook_lst(kind.split("-")[1]))
        return ["--labels", folder / "train.lst", "--label-format", "multi-hot"], hot
    if kind == "one-hot":
        (folder / "onehot.lst").write_text(one_hot_lst())
        return ["--labels", folder / "onehot.lst"], scalar
    if kind == "guide-image-ref":
        (folder / "train.manifest").write_text(guide_manifest("s3://bkt/images/", multi=True))
        return ["--labels", folder / "train.manifest", "--refs-root", "s3://bkt/images/", "--label-format", "multi-hot"], hot
    job = ["astronaut", "cat", "dog", "coffee", "flower", "rocket"]  # "dog" has no image yet
    ground_truth_job(folder, job)
    return (["--labels", folder / "output.manifest", "--refs-root", "s3://gt-bucket/photos/", "--class-map",
             folder / "class_labels.json"], {rel: [float(job.index(rel.split("/")[0]))] for rel in paths})


@pytest.mark.parametrize("kind", ["notebook-int", "notebook-float", "one-hot", "guide-image-ref", "ground-truth"])
def test_sagemaker_label_files_give_the_label_vectors_mxnet_reads(mx_python, tmp_path, kind):
    args, expected = write_source(kind, tmp_path)
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, *args, "--output", out, "--resize", str(SIDE), "--center-crop", "--single-file")
    m = load_manifest(out)
    width = m["labels"]["width"]
    assert width == (NUM_HOT if "multi-hot" in args else 1)
    assert m["num_classes"] == (NUM_HOT if "multi-hot" in args else 6 if kind == "ground-truth" else 5)
    seen = set()
    for split, doc in m["splits"].items():
        rows = [l.split("\t") for l in (out / doc["lst"]).read_text().splitlines()]
        got = mx_read(mx_python, tmp_path, {"rec": str(out / doc["single_file"]["rec"]),
                                            "idx": str(out / doc["single_file"]["idx"]), "width": width, "side": SIDE})
        assert got["iterated"] == [expected[r[-1]] for r in rows]
        for r in rows:
            assert got["indexed"][r[0]] == {"flag": width if width > 1 else 0, "label": expected[r[-1]]}
        seen.update(r[-1] for r in rows)
    assert seen == set(expected)
