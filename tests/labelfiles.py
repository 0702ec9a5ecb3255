"""Label files written the way the tools SageMaker users run write them, over the bundled sample photos.

* ``notebook_lst``: the multi-label notebook's ``.lst``: ``index<TAB>0/1 per class...<TAB>path``, with integers
  (``1<TAB>0<TAB>1``) or im2rec-style ``%f`` floats (``1.000000``);
* ``one_hot_lst``: the same layout with exactly one 1 per line;
* ``guide_manifest``: the developer guide's augmented manifests, ``{"image-ref": ..., "class": "0"}`` or
  ``"class": "[1, 0, 1]"``, values written as strings as in the guide;
* ``ground_truth_job``: a Ground Truth image-classification job's ``output.manifest`` (``source-ref``, the job's
  attribute and its ``-metadata``) and its ``class_labels.json`` class list.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import SAMPLE

CLASSES = sorted(os.listdir(SAMPLE))
NUM_HOT = 10  # classes of the multi-label notebook's .lst


def sample_paths() -> list[str]:
    return ["%s/%s" % (c, f) for c in CLASSES for f in sorted(os.listdir(SAMPLE / c))]


def folder_class(rel: str) -> int:
    return CLASSES.index(rel.split("/")[0])


def hot_vector(i: int) -> list[int]:
    """Image i's 0/1 vector over NUM_HOT classes: two or three classes, every class used."""
    on = {i % NUM_HOT, (3 * i + 1) % NUM_HOT}
    if i % 4 == 0:
        on.add((i + 5) % NUM_HOT)
    return [1 if k in on else 0 for k in range(NUM_HOT)]


def notebook_lst(style: str) -> str:
    """The multi-label notebook's list: index, one 0/1 column per class, path (tabs); ``style`` int or float."""
    rows = []
    for i, rel in enumerate(sample_paths()):
        values = hot_vector(i)
        cols = [str(v) for v in values] if style == "int" else ["%f" % v for v in values]
        rows.append("%d\t%s\t%s\n" % (i, "\t".join(cols), rel))
    return "".join(rows)


def one_hot_lst() -> str:
    return "".join("%d\t%s\t%s\n" % (i, "\t".join("1" if k == folder_class(rel) else "0" for k in range(len(CLASSES))), rel)
                   for i, rel in enumerate(sample_paths()))


def guide_manifest(prefix: str, multi: bool) -> str:
    """The guide's augmented manifest: image-ref, and the class (or a 0/1 list) as a string."""
    lines = []
    for i, rel in enumerate(sample_paths()):
        value = json.dumps(hot_vector(i)) if multi else str(folder_class(rel))
        lines.append(json.dumps({"image-ref": prefix + rel, "class": value}))
    return "\n".join(lines) + "\n"


def ground_truth_job(folder: Path, job_classes: list[str], prefix: str = "s3://gt-bucket/photos/") -> None:
    """A Ground Truth image-classification job's output.manifest and class_labels.json in ``folder``."""
    lines = []
    for rel in sample_paths():
        name = rel.split("/")[0]
        lines.append(json.dumps({
            "source-ref": prefix + rel,
            "pets-job": job_classes.index(name),
            "pets-job-metadata": {"class-name": name, "confidence": 0.9, "type": "groundtruth/image-classification",
                                  "job-name": "labeling-job/pets-job", "human-annotated": "yes",
                                  "creation-date": "2024-05-02T10:11:12.123456"},
        }))
    (folder / "output.manifest").write_text("\n".join(lines) + "\n")
    (folder / "class_labels.json").write_text(json.dumps(
        {"document-version": "2018-11-28", "labels": [{"label": c} for c in job_classes]}))
