"""imgrec.incremental: what an --incremental run learns from the dataset already in --output."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from imgrec.errors import UsageError
from imgrec.incremental import IncrementalError, Previous, batch_name, class_map_uri, load_previous
from imgrec.options import from_kwargs


def options(tmp_path, **kw):
    return from_kwargs(input=str(tmp_path / "photos"), output=str(tmp_path / "out"), incremental=True, **kw)


def manifest(identity: dict, **extra) -> dict:
    return {
        "classes": ["cat", "dog"],
        "splits": {
            "train": {"records": 5, "next_id": 7, "lst": "lists/train-inc0002.lst"},
            "validation": {"records": 2, "lst": "lists/validation.lst"},  # written before next_id was kept
        },
        "identity": identity,
        **extra,
    }


def write_manifest(tmp_path, doc) -> str:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "manifest.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(out)


def test_an_output_without_a_manifest_has_nothing_to_add_to(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.txt").write_text("a crashed run's file, not a dataset")
    assert load_previous(str(tmp_path / "out"), options(tmp_path).identity()) is None


@pytest.mark.parametrize("increments,batch", [(None, 1), (0, 1), (3, 4)])
def test_the_increment_number_follows_the_manifests(tmp_path, increments, batch):
    opts = options(tmp_path)
    extra = {} if increments is None else {"increments": increments}
    previous = load_previous(write_manifest(tmp_path, manifest(opts.identity(), **extra)), opts.identity())
    assert previous.batch == batch
    assert previous.manifest["classes"] == ["cat", "dog"]


def test_the_same_input_spelled_another_way_is_the_same_dataset(tmp_path, monkeypatch):
    recorded = options(tmp_path).identity()
    monkeypatch.chdir(tmp_path)
    again = from_kwargs(input="./photos/", output="out", incremental=True)
    assert load_previous(write_manifest(tmp_path, manifest(recorded)), again.identity()) is not None


def test_other_options_are_refused_naming_what_differs(tmp_path):
    recorded = options(tmp_path).identity()
    out = write_manifest(tmp_path, manifest(recorded))
    changed = options(tmp_path, name="other", train_ratio=0.5, val_ratio=0.5)
    with pytest.raises(IncrementalError) as caught:
        load_previous(out, changed.identity())
    message = str(caught.value)
    assert "these differ: name, ratios" in message and out in message and "--overwrite" in message
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2


def test_a_manifest_that_is_not_json_is_refused(tmp_path):
    out = write_manifest(tmp_path, '{"classes": ["cat"')
    with pytest.raises(IncrementalError, match="manifest.json is not valid JSON: cannot add to that dataset"):
        load_previous(out, options(tmp_path).identity())


def test_previous_gives_the_classes_the_next_ids_and_the_lists(tmp_path):
    doc = manifest({})
    previous = Previous(doc, 3)
    assert previous.next_ids() == {"train": 7, "validation": 2}  # next_id, else the record count
    assert previous.lists("/data/out") == [os.path.join("/data/out", "lists/train-inc0002.lst"),
                                          os.path.join("/data/out", "lists/validation.lst")]
    assert previous.lists("s3://bucket/set") == ["s3://bucket/set/lists/train-inc0002.lst",
                                                 "s3://bucket/set/lists/validation.lst"]
    classes = previous.classes
    classes.append("bird")
    assert previous.classes == ["cat", "dog"], "a copy: the manifest is not changed through it"
    with pytest.raises(dataclasses.FrozenInstanceError):
        previous.batch = 4


def test_names_of_an_increment_and_of_the_class_map():
    assert batch_name("data", 1) == "data-inc0001"
    assert batch_name("flowers.v2", 12) == "flowers.v2-inc0012"
    assert class_map_uri("s3://b/p") == "s3://b/p/classes.json"
    assert class_map_uri("/data/out") == os.path.join("/data/out", "classes.json")
