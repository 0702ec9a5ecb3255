"""NVIDIA DALI's ``fn.readers.mxnet`` (CPU only, ``device_id=None``) reads a multi-shard split.

DALI takes the list of a split's shard files and one index whose offsets run
across the shards as if concatenated: the split's merged index
(``manifest["splits"][split]["merged_idx"]``). One epoch must return every
record once, with its label and the source file's bytes (a pass-through output).
"""

from __future__ import annotations

import collections
import hashlib

import cv2
import pytest

from conftest import SAMPLE, load_manifest, run_cli

from .conftest import run_helper

CLASSES = sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    out = tmp_path_factory.mktemp("dali") / "out"
    run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "4")
    manifest = load_manifest(out)
    assert all(len(doc["shards"]) >= 3 for doc in manifest["splits"].values()), "the test needs several shards per split"
    return out, manifest


@pytest.fixture(scope="module")
def dali_epochs(dali_python, output):
    out, manifest = output
    readers = [
        {
            "path": [str(out / s["rec"]) for s in doc["shards"]],
            "index_path": str(out / doc["merged_idx"]),
            "batch_size": 4,
        }
        for doc in manifest["splits"].values()
    ]
    results = run_helper(dali_python, "dali_read.py", {"readers": readers})["results"]
    return dict(zip(manifest["splits"], results))


@pytest.mark.parametrize("split", ["train", "validation"])
def test_one_epoch_returns_every_record_with_its_label(split, output, dali_epochs):
    out, manifest = output
    result = dali_epochs[split]
    doc = manifest["splits"][split]
    assert result["epoch_size"] == doc["records"]
    expected = collections.Counter()
    shapes = {}
    for line in (out / doc["lst"]).read_text().splitlines():
        _, _, rel = line.split("\t")
        data = (SAMPLE / rel).read_bytes()
        key = (hashlib.sha256(data).hexdigest(), (float(CLASSES.index(rel.split("/")[0])),))
        expected[key] += 1
        shapes[key[0]] = list(cv2.imread(str(SAMPLE / rel)).shape)
    got = collections.Counter((item["sha256"], tuple(item["label"])) for item in result["items"])
    assert got == expected, "every record once, with the bytes of its source file and the label of its class"
    for item in result["items"]:
        assert item["shape"] == shapes[item["sha256"]], "DALI decodes the image to the source's size"


def test_merged_index_is_what_dali_needs(output):
    """The shard files really are several, and the merged index offsets run past the first shard."""
    out, manifest = output
    doc = manifest["splits"]["train"]
    merged = [int(line.split("\t")[1]) for line in (out / doc["merged_idx"]).read_text().splitlines()]
    assert len(merged) == doc["records"] and merged == sorted(merged)
    assert merged[-1] >= sum(s["bytes"] for s in doc["shards"][:-1])
