"""The SageMaker hand-off: ``sagemaker.json`` and a ready-to-paste ``Estimator`` snippet. Pure code.

SageMaker's built-in image classification algorithm trains from a ``train``
and a ``validation`` channel of RecordIO data (content type
``application/x-recordio``); its hyperparameters ``num_classes``,
``num_training_samples``, ``multi_label`` and ``image_shape`` must match the
data. This module writes them down from what the job produced.

SageMaker's guide says training fails when an image is smaller than
``image_shape`` in any dimension. ``image_shape`` is suggested from the
shorter edges of the images in the two channels; when some of them are
smaller than it, the snippet also sets the algorithm's ``resize``
hyperparameter (the shorter side every image is scaled to before it is
cropped), strictly larger than ``image_shape`` as the guide asks. A test
split is held out: it is no channel of the algorithm, and is described so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Mapping

from imgrec.labels import CLASS_IDS

CONTENT_TYPE = "application/x-recordio"
# SageMaker documents the class-id layout of multi-label labels as a content-type parameter.
CLASS_ID_CONTENT_TYPE = CONTENT_TYPE + "; label-format=class-id"
CHANNELS = ("train", "validation")
# ResNet's usual input side, and SageMaker's default image_shape (3,224,224).
DEFAULT_SIDE = 224
# image_shape is suggested from this percentile of the images' shorter edges, so that
# nearly every image is at least that large and is cropped, not blown up.
SHAPE_PERCENTILE = 5
PLACEHOLDER_PREFIX = "s3://YOUR-BUCKET/YOUR-PREFIX/"
# resize / image_shape when small images need the resize hyperparameter: ImageNet's
# convention (shorter side to 256, crop 224), which keeps resize above image_shape.
RESIZE_RATIO = 256 / 224
HELD_OUT = ("test",)


def percentile(histogram: Mapping[int, int], pct: float) -> int | None:
    """The value below which ``pct`` percent of the counted values lie (nearest rank)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = max(1, -(-total * pct // 100))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)


@dataclass(frozen=True)
class ShapeAdvice:
    """The suggested ``image_shape``, and the ``resize`` that makes it safe for every image (None: not needed)."""

    image_shape: str
    side: int
    resize: int | None
    small: int  # images whose shorter edge is below ``side``
    images: int


def advise_image_shape(shorter_edges: Mapping[int, int], color: int) -> ShapeAdvice:
    """``image_shape`` from the 5th-percentile shorter edge (at most 224), and ``resize`` when smaller images exist.

    ``shorter_edges``: shorter edge -> number of images, for the images a training job reads.
    """
    channels = 1 if color == 0 else 3
    low = percentile(shorter_edges, SHAPE_PERCENTILE)
    side = DEFAULT_SIDE if not low else min(DEFAULT_SIDE, low)
    small = sum(n for edge, n in shorter_edges.items() if edge < side)
    resize = math.ceil(side * RESIZE_RATIO) if small else None
    return ShapeAdvice("%d,%d,%d" % (channels, side, side), side, resize, small, sum(shorter_edges.values()))


def size_note(advice: ShapeAdvice) -> str:
    """One line on how the images compare with ``image_shape`` (and what ``resize`` does about it)."""
    if not advice.images:
        return "no train or validation images: image_shape is SageMaker's default"
    if not advice.small:
        return "no train or validation image is smaller than image_shape (%d pixels on its shorter side)" % advice.side
    return (
        "%d of %d train and validation images %s a shorter side below %d pixels (image_shape %s): the snippet sets "
        "resize=%d, so SageMaker scales every image's shorter side to %d before cropping, instead of failing on them"
        % (advice.small, advice.images, "has" if advice.small == 1 else "have", advice.side, advice.image_shape,
           advice.resize, advice.resize)
    )


def channel_prefix(output: str, split: str, single_file: dict | None) -> str:
    """The channel's folder relative to the output root: the shards' folder, or the single file's."""
    if single_file:
        return single_file["rec"].rsplit("/", 1)[0] + "/"
    return split + "/"


def sagemaker_document(
    output: str,
    num_classes: int,
    splits: Mapping[str, dict],
    label_format: str,
    label_width: int,
    shorter_edges: Mapping[int, int],
    color: int,
) -> dict:
    """The content of ``sagemaker.json``; ``splits`` is the manifest's splits section.

    ``shorter_edges``: shorter edge -> images, over the train and validation splits.
    """
    multi_label = 1 if label_format else 0
    content_type = CLASS_ID_CONTENT_TYPE if label_format == CLASS_IDS else CONTENT_TYPE
    on_s3 = output.startswith("s3://")
    channels = {}
    for split in CHANNELS:
        if split not in splits:
            continue
        prefix = channel_prefix(output, split, splits[split].get("single_file"))
        channels[split] = {
            "s3_uri": output.rstrip("/") + "/" + prefix if on_s3 else None,
            "prefix": prefix,
            "content_type": content_type,
            "s3_data_type": "S3Prefix",
            "records": splits[split]["records"],
        }
    held_out = {split: {"prefix": channel_prefix(output, split, splits[split].get("single_file")),
                        "records": splits[split]["records"]} for split in HELD_OUT if split in splits}
    edges = {int(k): v for k, v in shorter_edges.items()}
    advice = advise_image_shape(edges, color)
    doc = {
        "algorithm": "image-classification",
        "num_classes": num_classes,
        "num_training_samples": splits.get("train", {}).get("records", 0),
        "multi_label": multi_label,
        "image_shape": advice.image_shape,
        "resize": advice.resize,
        "small_images": advice.small,
        "label_format": label_format or "single",
        "label_width": label_width if label_format else 1,
        "channels": channels,
        "held_out": held_out,
        "image_sizes": {
            "splits": [s for s in CHANNELS if s in splits],
            "images": sum(edges.values()),
            "min_shorter_edge": min(edges) if edges else None,
            "p5_shorter_edge": percentile(edges, SHAPE_PERCENTILE),
            "median_shorter_edge": percentile(edges, 50),
            "max_shorter_edge": max(edges) if edges else None,
        },
    }
    notes = [size_note(advice)]
    for split, doc_ in held_out.items():
        notes.append("the %s split (%d images, %s) is held out: it is not a SageMaker channel; evaluate the trained "
                     "model on it yourself" % (split, doc_["records"], doc_["prefix"]))
    if not on_s3:
        notes.append(
            "the output is local: upload the output folder (aws s3 sync OUTPUT %s) and use each channel's "
            "prefix under that S3 prefix" % PLACEHOLDER_PREFIX
        )
    if "validation" not in channels:
        notes.append("SageMaker's image classification wants a validation channel: give --val-ratio > 0")
    if label_format == CLASS_IDS:
        notes.append(
            "class-ids records pad to a fixed width; SageMaker's default multi-label layout is multi-hot "
            "(--label-format multi-hot)"
        )
    several_shards = any(len(splits[split].get("shards", [])) > 1 for split in channels)  # test is no channel
    if several_shards and not splits.get("train", {}).get("single_file"):
        notes.append("SageMaker's documentation asks for one .rec per channel: --single-file writes one")
    doc["notes"] = notes
    return doc


def estimator_snippet(doc: Mapping) -> str:
    """Python that starts a SageMaker training job on this dataset (paste, set the role, run)."""
    hyper = {
        "num_classes": doc["num_classes"],
        "num_training_samples": doc["num_training_samples"],
        "image_shape": doc["image_shape"],
        **({"resize": doc["resize"]} if doc.get("resize") else {}),
        "multi_label": doc["multi_label"],
        "epochs": 10,
        "use_pretrained_model": 1,
    }
    lines = [
        "import sagemaker",
        "from sagemaker.estimator import Estimator",
        "from sagemaker.inputs import TrainingInput",
        "",
        "session = sagemaker.Session()",
        "estimator = Estimator(",
        '    image_uri=sagemaker.image_uris.retrieve("image-classification", session.boto_region_name),',
        '    role="arn:aws:iam::123456789012:role/YOUR-SAGEMAKER-ROLE",  # your SageMaker execution role',
        "    instance_count=1,",
        '    instance_type="ml.p3.2xlarge",',
        '    input_mode="Pipe",',
        "    sagemaker_session=session,",
        ")",
        "estimator.set_hyperparameters(",
    ]
    lines += ["    %s=%s," % (k, json.dumps(v)) for k, v in hyper.items()]
    lines += [")", "estimator.fit({"]
    for name, channel in doc["channels"].items():
        uri = channel["s3_uri"] or PLACEHOLDER_PREFIX + channel["prefix"]
        lines.append(
            '    "%s": TrainingInput("%s", content_type="%s", s3_data_type="S3Prefix"),'
            % (name, uri, channel["content_type"])
        )
    lines.append("})")
    return "\n".join(lines) + "\n"
