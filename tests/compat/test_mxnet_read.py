"""Real pipeline output read back by mxnet 1.9.1: MXIndexedRecordIO, ImageRecordIter, Gluon.

Two outputs of the bundled photos are built once per module: pass-through
(records hold the source files' bytes) and re-encoded (``--resize 64
--center-crop``, with ``--idx-beside-rec`` for Gluon), each split into several
shards. Expected ids, labels and bytes come from the sources and the ``.lst``
files, not from our reader.
"""

from __future__ import annotations

import collections
import hashlib
import io

import cv2
import numpy as np
import pytest

from conftest import SAMPLE, load_manifest, run_cli
from imgrec import recordio

from .conftest import run_helper

CLASSES = sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())
SIDE = 64


def convert(tmp_path_factory, name, *args):
    out = tmp_path_factory.mktemp(name) / "out"
    run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "8", *args)
    manifest = load_manifest(out)
    assert len(manifest["splits"]["train"]["shards"]) >= 3, "the test needs several train shards"
    return out, manifest


def sources(out, manifest, split) -> dict[int, str]:
    """Record id -> source path (relative to the sample), from the split's .lst."""
    rows = {}
    for line in (out / manifest["splits"][split]["lst"]).read_text().splitlines():
        rid, _, rel = line.split("\t")
        rows[int(rid)] = rel
    return rows


def label_of(rel: str) -> float:
    return float(CLASSES.index(rel.split("/")[0]))


def shard_pairs(out, manifest, split):
    return [[str(out / s["rec"]), str(out / s["idx"])] for s in manifest["splits"][split]["shards"]]


def shard_ids(out, shard) -> list[int]:
    return [key for key, _ in recordio.parse_idx((out / shard["idx"]).read_text())]


def source_thumb(rel: str, resize: int | None) -> np.ndarray:
    """The 8x8 RGB thumbnail of a source image, after the pipeline's centre crop and resize."""
    img = cv2.cvtColor(cv2.imread(str(SAMPLE / rel), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if resize:
        h, w = img.shape[:2]
        m = abs(h - w) // 2
        img = img[m : m + w] if h > w else img[:, m : m + h]
        img = cv2.resize(img, (resize, resize), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (8, 8), interpolation=cv2.INTER_AREA).astype(int)


@pytest.fixture(scope="module")
def pass_through(tmp_path_factory):
    return convert(tmp_path_factory, "mx-pass-through")


@pytest.fixture(scope="module")
def reencoded(tmp_path_factory):
    return convert(tmp_path_factory, "mx-reencoded", "--resize", str(SIDE), "--center-crop", "--idx-beside-rec")


@pytest.fixture(scope="module")
def mx_pass_through(mx_python, pass_through):
    out, manifest = pass_through
    train = manifest["splits"]["train"]
    tasks = [
        {"kind": "records", "shards": [p for split in manifest["splits"] for p in shard_pairs(out, manifest, split)]},
        {
            "kind": "iter",
            "path_imgrec": ";".join(str(out / s["rec"]) for s in train["shards"]),
            "path_imgidx": str(out / train["merged_idx"]),
            "data_shape": [3, SIDE, SIDE],
            "resize": SIDE,
            "epochs": 2,
            "shards": [],
        },
    ]
    return run_helper(mx_python, "mx_read.py", {"tasks": tasks})["results"]


@pytest.fixture(scope="module")
def mx_reencoded(mx_python, reencoded):
    out, manifest = reencoded
    train = manifest["splits"]["train"]
    pairs = shard_pairs(out, manifest, "train")
    iter_common = {"kind": "iter", "data_shape": [3, SIDE, SIDE], "resize": 0, "epochs": 2, "shards": pairs}
    tasks = [{"kind": "records", "shards": [p for split in manifest["splits"] for p in shard_pairs(out, manifest, split)]}]
    tasks += [dict(iter_common, path_imgrec=rec, path_imgidx=idx) for rec, idx in pairs]
    tasks.append(
        dict(
            iter_common,
            path_imgrec=";".join(rec for rec, _ in pairs),
            path_imgidx=str(out / train["merged_idx"]),
        )
    )
    tasks.append(
        {
            "kind": "gluon",
            "recs": [str(out / s["rec"]) for split in manifest["splits"] for s in manifest["splits"][split]["shards"]],
            "shards": [p for split in manifest["splits"] for p in shard_pairs(out, manifest, split)],
        }
    )
    return run_helper(mx_python, "mx_read.py", {"tasks": tasks})["results"]


def check_records_ids_labels(out, manifest, records):
    """Common to both outputs: every record once, key == header id, the label of its class folder."""
    expected = {}
    pairs = []
    for split in manifest["splits"]:
        for shard in manifest["splits"][split]["shards"]:
            pairs.append((split, shard))
        expected.update({(split, rid): rel for rid, rel in sources(out, manifest, split).items()})
    seen = set()
    by_source = {}
    for r in records:
        split, shard = pairs[r["shard"]]
        assert r["key"] == r["id"], "the .idx key must be the record id"
        assert r["id"] in shard_ids(out, shard)
        rel = expected[(split, r["id"])]
        assert (r["flag"], r["label"], r["id2"]) == (0, label_of(rel), 0), rel
        assert (split, r["id"]) not in seen
        seen.add((split, r["id"]))
        by_source[rel] = r
    assert seen == set(expected) and len(seen) == 30
    return by_source


# ---------------------------------------------------------------- MXIndexedRecordIO + unpack


def test_pass_through_records_hold_the_source_bytes(pass_through, mx_pass_through):
    out, manifest = pass_through
    records = mx_pass_through[0]
    by_source = check_records_ids_labels(out, manifest, records["records"])
    for rel, r in by_source.items():
        data = (SAMPLE / rel).read_bytes()
        assert (r["len"], r["sha256"]) == (len(data), hashlib.sha256(data).hexdigest()), rel
        assert r["shape"] == list(cv2.imread(str(SAMPLE / rel)).shape), rel
    shards = [s for split in manifest["splits"] for s in manifest["splits"][split]["shards"]]
    assert records["sequential"] == [s["records"] for s in shards], "MXRecordIO reads each shard front to back"


def test_reencoded_records_are_the_resized_sources(reencoded, mx_reencoded):
    out, manifest = reencoded
    records = mx_reencoded[0]
    by_source = check_records_ids_labels(out, manifest, records["records"])
    ours = {}
    for split in manifest["splits"]:
        for shard in manifest["splits"][split]["shards"]:
            with open(out / shard["rec"], "rb") as f:
                for raw in recordio.read_records(f):
                    header, image = recordio.unpack(raw.payload)
                    ours[(split, header.id)] = hashlib.sha256(image).hexdigest()
    thumbs = {rel: source_thumb(rel, SIDE) for rel in by_source}
    for rel, r in by_source.items():
        split = next(s for s in manifest["splits"] if sources(out, manifest, s).get(r["id"]) == rel)
        assert r["sha256"] == ours[(split, r["id"])], "mxnet and our reader see the same image bytes"
        assert r["shape"] == [SIDE, SIDE, 3]
        got = np.array(r["thumb"]).reshape(8, 8, 3)
        diffs = {other: np.abs(got - t).mean() for other, t in thumbs.items()}
        assert diffs[rel] < 5, (rel, diffs[rel])
        assert min(diffs, key=diffs.get) == rel, "the record's picture is its own source's, not another's"
    assert records["sequential"] == [s["records"] for sp in manifest["splits"] for s in manifest["splits"][sp]["shards"]]


# ---------------------------------------------------------------- ImageRecordIter


def check_epochs(epochs, want_ids, expected_labels):
    assert len(epochs) == 2
    for items in epochs:
        ids = [item["id"] for item in items]
        assert None not in ids, "every item's pixels are those of one record"
        assert sorted(ids) == sorted(want_ids), "one epoch returns every record exactly once"
        assert all(item["label"] == expected_labels[item["id"]] for item in items)


def test_image_record_iter_each_train_shard(reencoded, mx_reencoded):
    out, manifest = reencoded
    names = sources(out, manifest, "train")
    labels = {rid: label_of(rel) for rid, rel in names.items()}
    shards = manifest["splits"]["train"]["shards"]
    for shard, result in zip(shards, mx_reencoded[1 : 1 + len(shards)]):
        check_epochs(result["epochs"], shard_ids(out, shard), labels)


def test_image_record_iter_all_train_shards_with_merged_index(reencoded, mx_reencoded):
    out, manifest = reencoded
    names = sources(out, manifest, "train")
    result = mx_reencoded[1 + len(manifest["splits"]["train"]["shards"])]
    check_epochs(result["epochs"], list(names), {rid: label_of(rel) for rid, rel in names.items()})
    first, second = ([item["id"] for item in epoch] for epoch in result["epochs"])
    assert first != second, "shuffle=True reorders every epoch"
    assert first != sorted(first)


def test_image_record_iter_pass_through_with_resize(pass_through, mx_pass_through):
    out, manifest = pass_through
    want = collections.Counter(label_of(rel) for rel in sources(out, manifest, "train").values())
    epochs = mx_pass_through[1]["epochs"]
    assert len(epochs) == 2
    for items in epochs:
        assert collections.Counter(item["label"] for item in items) == want
    assert [i["label"] for i in epochs[0]] != [i["label"] for i in epochs[1]]


# ---------------------------------------------------------------- Gluon


def test_gluon_image_record_dataset_with_idx_beside_rec(reencoded, mx_reencoded):
    out, manifest = reencoded
    datasets = mx_reencoded[-1]["datasets"]
    shards = [(split, s) for split in manifest["splits"] for s in manifest["splits"][split]["shards"]]
    assert len(datasets) == len(shards)
    for (split, shard), ds in zip(shards, datasets):
        assert (out / shard["idx"]).parent == (out / shard["rec"]).parent, "--idx-beside-rec"
        names = sources(out, manifest, split)
        ids = shard_ids(out, shard)
        assert ds["len"] == shard["records"] == len(ids)
        assert [item["id"] for item in ds["items"]] == ids, "item i is the record of .idx line i"
        for item in ds["items"]:
            assert item["label"] == label_of(names[item["id"]])
            assert item["shape"] == [SIDE, SIDE, 3]
