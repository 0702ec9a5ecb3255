"""imgrec.sagemaker: sagemaker.json and the Estimator snippet, from a manifest's splits and image sizes."""

from __future__ import annotations

import ast
import math
import random

import pytest

from imgrec.sagemaker import (CLASS_ID_CONTENT_TYPE, CONTENT_TYPE, DEFAULT_SIDE, PLACEHOLDER_PREFIX,
                              advise_image_shape, estimator_snippet, percentile, sagemaker_document)


def split(records: int, shards: int = 1, single: str = "") -> dict:
    doc = {"records": records, "shards": [{"rec": "x"}] * shards}
    if single:
        doc["single_file"] = {"rec": single, "idx": single[:-4] + ".idx", "records": records}
    return doc


SPLITS = {"train": split(80, 2), "validation": split(15), "test": split(5)}


def document(splits=None, edges=None, label_format="", width=0, output="/data/out", color=1):
    return sagemaker_document(output, 3, SPLITS if splits is None else splits, label_format, width,
                              {300: 10} if edges is None else edges, color)


def hyperparameters(snippet: str) -> dict:
    """The keywords of ``estimator.set_hyperparameters(...)`` in the snippet, evaluated."""
    for node in ast.walk(ast.parse(snippet)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "set_hyperparameters":
            return {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    raise AssertionError("no set_hyperparameters call in the snippet")


def fit_channels(snippet: str) -> dict:
    """The channels given to ``estimator.fit({...})``: name -> (s3 uri, content_type)."""
    for node in ast.walk(ast.parse(snippet)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "fit":
            table = node.args[0]
            channels = {}
            for key, value in zip(table.keys, table.values):
                kw = {k.arg: ast.literal_eval(k.value) for k in value.keywords}
                channels[ast.literal_eval(key)] = (ast.literal_eval(value.args[0]), kw["content_type"])
            return channels
    raise AssertionError("no fit call in the snippet")


# ---------------------------------------------------------------- image_shape


def nearest_rank(values: list[int], pct: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * pct / 100)) - 1]


@pytest.mark.parametrize("seed", range(5))
def test_percentile_is_the_nearest_rank_of_the_expanded_values(seed):
    rng = random.Random(seed)
    histogram = {rng.randint(1, 600): rng.randint(1, 30) for _ in range(rng.randint(1, 12))}
    values = [edge for edge, n in histogram.items() for _ in range(n)]
    for pct in (1, 5, 50, 95, 100):
        assert percentile(histogram, pct) == nearest_rank(values, pct)
    assert percentile({}, 5) is None


@pytest.mark.parametrize("seed", range(40))
def test_image_shape_never_exceeds_an_image_unless_resize_makes_room(seed):
    rng = random.Random(seed)
    edges = {rng.choice([100, 150, 200, 224, 256, 480]) + rng.randint(0, 40): rng.randint(1, 200)
             for _ in range(rng.randint(1, 4))}
    for _ in range(rng.randint(0, 3)):  # a few small (or unreadable: 0) images among them
        edges[rng.choice([0, 8, 32, 64, 120])] = rng.randint(1, 6)
    advice = advise_image_shape(edges, 1)
    channels, height, width = map(int, advice.image_shape.split(","))
    assert (channels, height) == (3, width) and height == advice.side <= DEFAULT_SIDE
    smaller = sum(n for edge, n in edges.items() if edge < advice.side)
    assert advice.small == smaller and advice.images == sum(edges.values())
    if smaller:
        assert advice.resize is not None and advice.resize > advice.side, "resize strictly above image_shape"
    else:
        assert advice.resize is None and min(edges) >= advice.side


def test_grayscale_output_gets_one_channel():
    assert advise_image_shape({100: 3}, 0).image_shape == "1,100,100"
    assert advise_image_shape({100: 3}, -1).image_shape == "3,100,100"


def test_small_images_set_resize_in_the_document_and_the_snippet():
    edges = {300: 96, 40: 4}  # 4 of 100 below the 5th percentile: image_shape stays large, resize covers them
    doc = document(edges=edges)
    side = int(doc["image_shape"].split(",")[1])
    assert side > min(edges) and doc["resize"] > side
    assert doc["small_images"] == 4
    hyper = hyperparameters(estimator_snippet(doc))
    assert hyper["image_shape"] == doc["image_shape"] and hyper["resize"] == doc["resize"]
    assert "resize=%d" % doc["resize"] in doc["notes"][0]

    big = document(edges={300: 10})
    assert big["resize"] is None and "resize" not in hyperparameters(estimator_snippet(big))
    assert big["image_shape"] == "3,224,224"


def test_image_sizes_summarise_the_channel_edges():
    doc = document(edges={"50": 1, "100": 18, "400": 1})  # keys as JSON leaves them
    assert doc["image_sizes"] == {"splits": ["train", "validation"], "images": 20, "min_shorter_edge": 50,
                                  "p5_shorter_edge": 50, "median_shorter_edge": 100, "max_shorter_edge": 400}


# ---------------------------------------------------------------- channels


def test_the_test_split_is_held_out_and_never_a_channel():
    doc = document()
    assert set(doc["channels"]) == {"train", "validation"}
    assert doc["held_out"] == {"test": {"prefix": "test/", "records": 5}}
    assert doc["num_training_samples"] == 80
    assert any("test split (5 images, test/) is held out" in n for n in doc["notes"])
    snippet = estimator_snippet(doc)
    assert set(fit_channels(snippet)) == {"train", "validation"}
    assert "test" not in snippet.split("estimator.fit(")[1]


def test_a_local_output_gets_placeholder_uris_and_an_s3_output_real_ones():
    local = estimator_snippet(document())
    assert fit_channels(local)["train"][0] == PLACEHOLDER_PREFIX + "train/"
    assert any("aws s3 sync" in n for n in document()["notes"])
    s3 = document(output="s3://bucket/sets/flowers/")
    assert s3["channels"]["validation"]["s3_uri"] == "s3://bucket/sets/flowers/validation/"
    assert fit_channels(estimator_snippet(s3))["train"][0] == "s3://bucket/sets/flowers/train/"
    assert not any("aws s3 sync" in n for n in s3["notes"])
    assert document(output="s3://bucket/set")["channels"]["train"]["s3_uri"] == "s3://bucket/set/train/"


def test_single_files_are_their_own_channel_prefix():
    splits = {"train": split(10, 3, "single/train/data.rec"), "validation": split(2, 1, "single/validation/data.rec")}
    doc = document(splits)
    assert doc["channels"]["train"]["prefix"] == "single/train/"
    assert doc["channels"]["validation"]["prefix"] == "single/validation/"
    assert not any("one .rec per channel" in n for n in doc["notes"])
    assert any("one .rec per channel" in n for n in document()["notes"]), "train in 2 shards"


def test_no_validation_split_is_pointed_out():
    doc = document({"train": split(10)})
    assert list(doc["channels"]) == ["train"] and doc["held_out"] == {}
    assert any("--val-ratio" in n for n in doc["notes"])
    assert not any("--val-ratio" in n for n in document()["notes"])


def test_several_shards_of_the_test_split_alone_ask_for_no_single_file():
    doc = document({"train": split(10), "validation": split(2), "test": split(30, 4)})
    assert not any("one .rec per channel" in n for n in doc["notes"])


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize("label_format,width,multi,content_type,shown_width", [
    ("", 0, 0, CONTENT_TYPE, 1),
    ("multi-hot", 3, 1, CONTENT_TYPE, 3),
    ("class-ids", 2, 1, CLASS_ID_CONTENT_TYPE, 2),
])
def test_multi_label_settings(label_format, width, multi, content_type, shown_width):
    doc = document(label_format=label_format, width=width)
    assert doc["multi_label"] == multi
    assert doc["label_format"] == (label_format or "single") and doc["label_width"] == shown_width
    assert {c["content_type"] for c in doc["channels"].values()} == {content_type}
    snippet = estimator_snippet(doc)
    assert hyperparameters(snippet)["multi_label"] == multi
    assert {ct for _, ct in fit_channels(snippet).values()} == {content_type}
    assert any("multi-hot" in n and "class-ids" in n for n in doc["notes"]) == (label_format == "class-ids")


def test_the_snippet_is_python_with_the_documents_hyperparameters():
    doc = document()
    hyper = hyperparameters(estimator_snippet(doc))
    assert {k: hyper[k] for k in ("num_classes", "num_training_samples", "image_shape", "multi_label")} == {
        "num_classes": 3, "num_training_samples": 80, "image_shape": doc["image_shape"], "multi_label": 0}
