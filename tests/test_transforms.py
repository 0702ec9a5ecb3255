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

from imgrec import items, planning, recordio, shardplan
from imgrec.env import WorkerEnv
from imgrec.errors import ErrorRecord
from imgrec.planning import ImageRef, SplitRatios
from transforms.plan_shards import PlanShards
from transforms.sources import ListFolders, ReadImageFolder

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


def test_read_image_folder_labels_by_top_folder_and_records_errors(tree, tmp_path):
    root, files = tree
    (root / "stray.jpg").write_bytes(files["cat/a.jpg"])  # directly in the input: no class
    source = ReadImageFolder(str(root))
    assert source.classes == ["cat", "dog"]

    def version(rel):
        return "%d" % (root / rel).stat().st_mtime_ns

    with pipeline() as p:
        found = p | source | ListFolders()
        assert_that(
            found,
            equal_to(
                [
                    items.Image("cat/a.jpg", ("cat",), len(files["cat/a.jpg"]), version("cat/a.jpg")),
                    items.Image("cat/deep/b.JPG", ("cat",), len(files["cat/deep/b.JPG"]), version("cat/deep/b.JPG")),
                    items.Image("dog/c.png", ("dog",), len(files["dog/c.png"]), version("dog/c.png")),
                    ErrorRecord("dog/broken.jpg", "broken_symlink", "list", "symbolic link to a missing file"),
                    ErrorRecord("stray.jpg", "no_class", "list", "image directly in the input folder has no class folder"),
                    items.Finding(items.IGNORED, 1),  # dog/notes.txt
                ]
            ),
        )


def make_refs(n):
    refs = []
    for i in range(n):
        rel = "c%d/%03d.jpg" % (i % 2, i)
        key = planning.image_key(rel, "0")
        refs.append(ImageRef(rel, 1000, "c%d" % (i % 2), planning.assign_split(key, RATIOS), key))
    return refs


def _settle(names, most_labels):
    return sorted(names), 0


def test_plan_shards_groups_by_key_and_numbers_ids_densely(tmp_path):
    refs = make_refs(40)
    with pipeline() as p:
        # two batches with refs of both splits in each
        groups = p | beam.Create([refs[:17], refs[17:]]) | PlanShards(RATIOS, 256, 5, str(tmp_path), WorkerEnv(),
                                                                      settle=_settle)
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
    plan, classes, width, _ = shardplan.load_plan(str(tmp_path))
    assert plan.totals["train"][0] == sum(r.split == "train" for r in refs)
    assert classes == ["c0", "c1"] and width == 0
    assert [t.records for t in plan.tasks["train"]] == [len(e[4]) for e in expected if e[0] == "train"]
