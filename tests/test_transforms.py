"""Each Beam stage on its own, with TestPipeline + assert_that (FnApiRunner, in memory)."""

import json
import os

import apache_beam as beam
import cv2
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from imgrec import planning, recordio
from imgrec.layout import Layout
from imgrec.options import ConvertOptions
from imgrec.planning import ImageRef, SplitRatios
from transforms.list_images import ListImages
from transforms.plan_shards import PLAN, PlanShards
from transforms.write_shards import WriteShards

RATIOS = SplitRatios(0.5, 0.5, 0.0)


def pipeline():
    # Never DirectRunner: it would try to download the Prism runner first.
    return TestPipeline(runner=FnApiRunner())


def jpeg(seed, w=32, h=24):
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "in"
    files = {"cat/a.jpg": jpeg(1), "cat/deep/b.JPG": jpeg(2), "dog/c.png": cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes(), "dog/notes.txt": b"x"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink(root / "missing.jpg", root / "dog" / "broken.jpg")
    return root, files


def expected_ref(rel, size, label, root=None):
    """The ref of an image; listed from ``root``, it carries the file's version (its modification time)."""
    key = planning.image_key(rel, "0")
    version = "%d" % (root / rel).stat().st_mtime_ns if root else ""
    return ImageRef(rel, size, label, planning.assign_split(key, RATIOS), key, version)


def test_list_images_labels_by_top_folder_and_records_errors(tree, tmp_path):
    root, files = tree
    out = tmp_path / "out"
    layout = Layout()
    with pipeline() as p:
        refs = p | beam.Create([(0, "cat"), (1, "dog")]) | ListImages(
            str(root), str(out), layout, (".jpg", ".jpeg", ".png"), RATIOS, "0"
        ) | beam.FlatMap(lambda batch: batch)
        assert_that(
            refs,
            equal_to(
                [
                    expected_ref("cat/a.jpg", len(files["cat/a.jpg"]), 0, root),
                    expected_ref("cat/deep/b.JPG", len(files["cat/deep/b.JPG"]), 0, root),
                    expected_ref("dog/c.png", len(files["dog/c.png"]), 1, root),
                ]
            ),
        )
    dog = json.loads((out / layout.listing_record(1)).read_text())
    assert dog["images"] == 1 and dog["ignored_non_image"] == 1
    assert dog["errors"] == [
        {"path": "dog/broken.jpg", "reason": "broken_symlink", "stage": "list", "detail": "symbolic link to a missing file"}
    ]


def make_refs(n):
    refs = []
    for i in range(n):
        rel = "c%d/%03d.jpg" % (i % 2, i)
        key = planning.image_key(rel, "0")
        refs.append(ImageRef(rel, 1000, i % 2, planning.assign_split(key, RATIOS), key))
    return refs


def test_plan_shards_groups_by_key_and_numbers_ids_densely(tmp_path):
    refs = make_refs(40)
    with pipeline() as p:
        # two batches with refs of both splits in each
        groups = p | beam.Create([refs[:17], refs[17:]]) | PlanShards(RATIOS, 256, 5, str(tmp_path))
        # (split, shard, shards, first id, sorted relpaths)
        summary = groups | beam.Map(lambda g: (*g[0], g[1], sorted(r.relpath for r in g[2])))
        expected = []
        for split in ("train", "validation"):
            members = [r for r in refs if r.split == split]
            shards = planning.num_shards(len(members), 0, 256, 5)
            by_shard = {}
            for r in members:
                by_shard.setdefault(planning.assign_shard(r.key, split, RATIOS, shards), []).append(r.relpath)
            base = 0
            for shard in sorted(by_shard):
                expected.append((split, shard, shards, base, sorted(by_shard[shard])))
                base += len(by_shard[shard])
        assert_that(summary, equal_to(expected))
    plan = json.loads((tmp_path / PLAN).read_text())
    assert plan["splits"]["train"]["records"] == sum(r.split == "train" for r in refs)


def test_write_shards_streams_records_in_key_order(tree, tmp_path):
    root, files = tree
    out = tmp_path / "out"
    opts = ConvertOptions(input=str(root), output=str(out))
    layout = Layout()
    refs = [expected_ref("cat/a.jpg", 0, 0), expected_ref("dog/c.png", 0, 1), expected_ref("dog/gone.jpg", 0, 1)]
    refs = [r._replace(split="train") for r in refs]
    with pipeline() as p:
        results = p | beam.Create([(("train", 0, 1), 10, refs)]) | WriteShards(opts, layout)
        assert_that(results | beam.Map(lambda r: (r["split"], r["shard"], r["records"])), equal_to([("train", 0, 2)]))
    record = json.loads((out / layout.shard_record("train", 0, 1)).read_text())
    assert record["errors"][0]["path"] == "dog/gone.jpg" and record["errors"][0]["reason"] == "missing"
    ordered = [r for r in planning.order_in_shard(refs) if r.relpath != "dog/gone.jpg"]
    with open(out / layout.rec("train", 0, 1), "rb") as f:
        got = list(recordio.read_records(f))
    ids = []
    for rec, ref in zip(got, ordered):
        header, body = recordio.unpack(rec.payload)
        assert body == files[ref.relpath]
        assert header.label == ref.label
        ids.append(header.id)
    assert len(got) == 2
    # ids are planned positions (base 10 + rank); the skipped image leaves its id unused
    all_ids = {r.relpath: 10 + i for i, r in enumerate(planning.order_in_shard(refs))}
    assert ids == [all_ids[r.relpath] for r in ordered]
    idx = recordio.parse_idx((out / layout.idx("train", 0, 1)).read_text())
    assert idx == [(i, r.offset) for i, r in zip(ids, got)]
