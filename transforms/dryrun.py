"""DryRunCounts: the refs a conversion would write -> counts per split and class, and a sample, in a scratch folder.

Only counts cross its shuffles (``CombinePerKey``), so it stays flat however
many images there are; ``pipeline.dryrun`` turns what it writes into the
forecast a person reads.
"""

from __future__ import annotations

import json

import apache_beam as beam

from imgrec import storage
from imgrec.layout import WORK
from imgrec.recordio import IRHEADER_SIZE

COUNTS = WORK + "/dry-run-counts.json"
SAMPLE = WORK + "/dry-run-sample.json"
# Images re-encoded to estimate the output size when not storing the original bytes.
SAMPLE_SIZE = 8


def record_bytes(image_bytes: int, label_width: int) -> int:
    """A record's size in a .rec: 8 bytes of framing, the IRHeader, the label vector, the image, padding to 4."""
    payload = IRHEADER_SIZE + 4 * label_width + image_bytes
    return 8 + (payload + 3) // 4 * 4


def _class_names(label) -> tuple:
    return (label,) if isinstance(label, str) else tuple(label)


def _count(ref, label_width: int):
    # ref: ImageRef (its label the class name or names) -> ((what, split, class name or None), n)
    yield ("images", ref.split, None), 1
    yield ("input_bytes", ref.split, None), ref.size
    yield ("record_bytes", ref.split, None), record_bytes(ref.size, label_width)
    for name in sorted(set(_class_names(ref.label))):
        yield ("class", ref.split, name), 1


def _write_json(element, uri: str):
    _, values = element
    storage.write_text(uri, json.dumps(sorted(values, key=repr), default=list))


class DryRunCounts(beam.PTransform):
    """PCollection[ImageRef] -> the counts and a small sample written under the scratch root."""

    def __init__(self, scratch: str, label_width: int):
        super().__init__()
        self._scratch = scratch
        self._width = label_width

    def expand(self, refs):
        (
            refs
            | "Count" >> beam.FlatMap(_count, self._width)
            | "SumCounts" >> beam.CombinePerKey(sum)
            | "CountsAsOne" >> beam.Map(lambda kv: (None, kv))
            | "AllCounts" >> beam.GroupByKey()
            | "WriteCounts" >> beam.Map(_write_json, storage.join(self._scratch, COUNTS))
        )
        return (
            refs
            | "Sample" >> beam.combiners.Top.Of(SAMPLE_SIZE, key=lambda r: (r.key, r.relpath), reverse=True)
            | "SampleAsOne" >> beam.Map(lambda refs_: (None, [(r.relpath, r.size) for r in refs_]))
            | "SampleGroup" >> beam.GroupByKey()
            | "WriteSample" >> beam.Map(lambda kv, uri: storage.write_text(uri, json.dumps(list(kv[1])[0])),
                                        storage.join(self._scratch, SAMPLE))
        )
