"""ListImages: one element per class folder -> the ImageRefs of its images, in batches.

Each class is listed by its own DoFn call, so classes are listed in parallel
(on S3, one prefix listing per class instead of one sequential listing of the
whole bucket). The label and split of every image are decided here, from its
path alone. Inputs that cannot be used are recorded, per class, in a listing
record under ``_work/`` that the finaliser collects.
"""

from __future__ import annotations

import json
import posixpath

import apache_beam as beam
from apache_beam.metrics import Metrics

from imgrec import storage
from imgrec.env import WorkerEnv
from imgrec.errors import STAGE_LIST, ErrorRecord
from imgrec.finalize import OWNER_MARK
from imgrec.layout import Layout
from imgrec.planning import BATCH_REFS, ImageRef, RefBatch, SplitRatios, assign_split, image_key


def classify_entry(entry: storage.FileEntry, exts: tuple[str, ...], max_bytes: int = 0) -> ErrorRecord | None | bool:
    """What to do with a listed file: an error, ``False`` to ignore it, ``True`` to take it.

    ``max_bytes`` (0 = no limit): an image file larger than this is a ``too_large`` error.
    """
    if entry.error:
        return ErrorRecord(entry.relpath, entry.error, STAGE_LIST, entry.detail)
    ext = posixpath.splitext(entry.relpath)[1].lower()
    if ext not in exts:
        return False
    if max_bytes and entry.size > max_bytes:
        return ErrorRecord(entry.relpath, "too_large", STAGE_LIST, storage.too_large(entry.size, max_bytes))
    try:
        entry.relpath.encode("utf-8")
    except UnicodeEncodeError:
        return ErrorRecord(entry.relpath, "non_utf8_name", STAGE_LIST, "file name is not valid UTF-8")
    if any(c in entry.relpath for c in "\t\n\r"):
        return ErrorRecord(
            entry.relpath, "bad_filename", STAGE_LIST, "a tab or line break in the name cannot be written to a .lst"
        )
    return True


def list_class(
    input_root: str,
    class_index: int,
    class_name: str,
    exts: tuple[str, ...],
    ratios: SplitRatios,
    seed: str,
    max_bytes: int = 0,
):
    """Refs, errors and the count of ignored non-image files for one class folder.

    The folder is listed once, never through a link into itself, a parent or another
    class folder, and never into an output folder of this tool (``storage.walk_files``).
    """
    refs, errors, ignored = [], [], 0
    prefix = class_name + "/"
    for entry in storage.walk_files(storage.join(input_root, class_name), input_root, OWNER_MARK):
        rel = prefix + entry.relpath if entry.relpath else class_name
        entry = entry._replace(relpath=rel)
        verdict = classify_entry(entry, exts, max_bytes)
        if verdict is True:
            key = image_key(rel, seed)
            refs.append(ImageRef(rel, entry.size, class_index, assign_split(key, ratios), key, entry.version))
        elif verdict is False:
            ignored += 1
        else:
            errors.append(verdict)
    return refs, errors, ignored


class _ListClassFn(beam.DoFn):
    def __init__(self, input_root, output_root, layout: Layout, exts, ratios, seed, env: WorkerEnv | None = None,
                 max_bytes=0):
        self._input = input_root
        self._max_bytes = max_bytes
        self._output = output_root
        self._layout = layout
        self._exts = exts
        self._ratios = ratios
        self._seed = seed
        self._env = env
        self._listed = Metrics.counter("imgrec", "images_listed")
        self._errors = Metrics.counter("imgrec", "list_errors")

    def setup(self):
        # Beam's own --s3_* options do not reach these workers: apply ours in every process.
        if self._env is not None:
            self._env.apply()

    def process(self, element):
        # element: (class_index, class_name)
        class_index, class_name = element
        refs, errors, ignored = list_class(
            self._input, class_index, class_name, self._exts, self._ratios, self._seed, self._max_bytes
        )
        record = {
            "class": class_name,
            "index": class_index,
            "images": len(refs),
            "bytes": sum(r.size for r in refs),
            "ignored_non_image": ignored,
            "errors": [e.to_json() for e in errors],
        }
        storage.write_text(
            storage.join(self._output, self._layout.listing_record(class_index)),
            json.dumps(record, ensure_ascii=False, sort_keys=True),
        )
        self._listed.inc(len(refs))
        self._errors.inc(len(errors))
        # batches, not one element per image: Beam's per-element cost would exceed the listing's
        for start in range(0, len(refs), BATCH_REFS):
            yield RefBatch(refs[start:start + BATCH_REFS])


class ListImages(beam.PTransform):
    """PCollection[(class_index, class_name)] -> PCollection[list[ImageRef]] (batches of one class)."""

    def __init__(self, input_root, output_root, layout, exts, ratios, seed, env: WorkerEnv | None = None, max_bytes=0):
        super().__init__()
        self._args = (input_root, output_root, layout, exts, ratios, seed, env, max_bytes)

    def expand(self, classes):
        return (
            classes
            # Spread the classes over workers before the (slow, I/O-bound) listing.
            | "KeyByClass" >> beam.Map(lambda c: (c[0], c))
            | "SpreadClasses" >> beam.GroupByKey()
            | "Unkey" >> beam.FlatMap(lambda kv: kv[1])
            | "ListClass" >> beam.ParDo(_ListClassFn(*self._args))
        )
