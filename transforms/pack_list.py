"""PackList: im2rec.py's record mode on Beam -- each ``.lst`` becomes a ``.rec`` + ``.idx`` in list order.

A ``.rec`` must hold its records in the list's order, yet reading and
encoding should run on every worker. So each list is cut into fragments
(byte ranges of the ``.lst`` that end on a line break); each fragment is
packed by its own DoFn call into a temporary ``.rec``/``.idx`` pair of its
own (offsets counted from the fragment's start) plus the inputs it skipped;
then one DoFn call per list concatenates the fragments in order, adding each
fragment's start to its offsets. Only fragment descriptors and small
summaries cross the shuffles; image bytes go from the input straight into a
fragment file, and every step streams, so memory stays bounded by one image
(times the read threads) whatever the list's length.

    Fragment(lst, index, count, ByteRange)     planned by the launcher (plan_fragments)
      -> PackFragment     (lst, fragment summary)          # image bytes stay in files
      -> GroupByKey       (lst, [fragment summary])
      -> ConcatFragments  list summary, also written to the work folder for the launcher

Fragments are planned before the pipeline (streaming each ``.lst`` twice,
never holding it) so that runners which partition their input up front, such
as Dask, get one partition per fragment.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from imgrec import images, recordio, storage
from imgrec.env import WorkerEnv
from transforms.env import EnvDoFn
from imgrec.errors import STAGE_ENCODE, STAGE_LIST, STAGE_READ, STAGE_VALIDATE
from imgrec.im2rec_compat import (
    COPY_BLOCK,
    ByteRange,
    LstItem,
    LstLineError,
    PackSettings,
    count_lines,
    errors_name,
    idx_name,
    image_uri,
    line_ranges,
    pack_item,
    parse_lst,
    rec_name,
)
from imgrec.parallel import ordered_map
from imgrec.shardwriter import read_input

# A fragment is the unit of parallel work: large enough that its fixed costs
# (a few small files) vanish, small enough that every worker gets several.
MAX_FRAGMENT_LINES = 1000
FRAGMENTS_PER_WORKER = 4


class Fragment(NamedTuple):
    lst: str
    index: int
    count: int  # fragments in this list
    range: ByteRange


def work_folder(work_root: str, lst: str) -> str:
    """Where one list's fragments and completion record live."""
    return storage.join(work_root, posixpath.basename(lst))


def fragment_path(work_root: str, lst: str, index: int, ext: str) -> str:
    return storage.join(work_folder(work_root, lst), "fragment-%06d.%s" % (index, ext))


def done_path(work_root: str, lst: str) -> str:
    return storage.join(work_folder(work_root, lst), "done.json")


def plan_fragments(lst: str, workers: int, max_lines: int, per_worker: int = FRAGMENTS_PER_WORKER) -> list[Fragment]:
    """Cut one ``.lst`` into about ``per_worker`` fragments per worker, at most ``max_lines`` lines each."""
    with storage.open_read(lst) as f:
        lines = count_lines(f)
    per = max(1, min(max_lines, math.ceil(lines / (max(1, workers) * per_worker))))
    with storage.open_read(lst) as f:
        ranges = line_ranges(f, per)
    return [Fragment(lst, i, len(ranges), r) for i, r in enumerate(ranges)]


def error_entry(lst: str, line: int, record_id: int | None, path: str, reason: str, stage: str, detail: str) -> dict:
    """One line of ``NAME.errors.jsonl``: which list line did not become a record, and why."""
    return {
        "lst": posixpath.basename(lst),
        "line": line,
        "id": record_id,
        "path": path,
        "reason": reason,
        "stage": stage,
        "detail": detail,
    }


def load_record(item: LstItem, lst: str, settings: PackSettings) -> tuple[bytes | None, dict | None]:
    """Read and pack one list item: ``(payload, None)`` or ``(None, error entry)``."""
    try:
        data = read_input(image_uri(settings.root, item.path))
    except images.BadImage as exc:
        return None, error_entry(lst, item.line, item.id, item.path, exc.reason, STAGE_READ, exc.detail)
    except storage.StorageError as exc:
        return None, error_entry(lst, item.line, item.id, item.path, "unreadable", STAGE_READ, str(exc))
    try:
        return pack_item(item, data, settings), None
    except images.BadImage as exc:
        stage = STAGE_ENCODE if exc.reason == "encode_failed" else STAGE_VALIDATE
        return None, error_entry(lst, item.line, item.id, item.path, exc.reason, stage, exc.detail)


def write_fragment(fragment: Fragment, settings: PackSettings, work_root: str, threads: int) -> dict:
    """Pack one fragment into its temporary ``.rec``/``.idx``/``.errors.jsonl``; returns its summary."""
    lst, rng = fragment.lst, fragment.range
    with storage.open_read(lst) as f:
        f.seek(rng.start)
        data = f.read(rng.end - rng.start)

    def load(parsed):
        if isinstance(parsed, LstLineError):
            return parsed, None, error_entry(
                lst, parsed.line, None, "", "bad_lst_line", STAGE_LIST, "%s: %r" % (parsed.detail, parsed.text)
            )
        payload, error = load_record(parsed, lst, settings)
        return parsed, payload, error

    idx_lines, errors = [], []
    rec_path = fragment_path(work_root, lst, fragment.index, "rec")
    with storage.atomic_writer(rec_path) as out, recordio.RecordWriter(out, background=True) as writer:
        for item, payload, error in ordered_map(load, parse_lst(data, rng.first_line), threads, 4 * max(1, threads)):
            if error is None:
                try:
                    offset = writer.write(payload)
                except recordio.RecordIOError as exc:
                    error = error_entry(lst, item.line, item.id, item.path, "too_large", STAGE_ENCODE, str(exc))
            if error is not None:
                errors.append(error)
                continue
            idx_lines.append(recordio.format_idx_line(item.id, offset))
        writer.close()
        size, records = writer.offset, writer.records
    storage.write_text(fragment_path(work_root, lst, fragment.index, "idx"), "".join(idx_lines))
    storage.write_text(
        fragment_path(work_root, lst, fragment.index, "errors.jsonl"),
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors),
    )
    return {"index": fragment.index, "count": fragment.count, "records": records, "bytes": size, "skipped": len(errors)}


def concat_fragments(lst: str, fragments: list[dict], work_root: str) -> dict:
    """Join a list's fragments, in order, into its ``.rec`` and ``.idx`` (offsets shifted) and errors file.

    The completion record is written before the fragments are deleted, and a
    retry that finds it returns it: a retried call never needs the deleted fragments.
    """
    if storage.exists(done_path(work_root, lst)):
        return json.loads(storage.read_text(done_path(work_root, lst)))
    fragments = sorted(fragments, key=lambda s: s["index"])
    expected = fragments[0]["count"] if fragments else 0
    if [s["index"] for s in fragments] != list(range(expected)):
        raise RuntimeError(
            "%s: fragments %s arrived, expected 0..%d" % (lst, [s["index"] for s in fragments], expected - 1)
        )
    rec, idx, err = rec_name(lst), idx_name(lst), errors_name(lst)
    if len(fragments) == 1 and not storage.is_s3(rec):
        # one fragment (the local runner): its offsets are the list's, so it is renamed into place
        total = _move_single_fragment(work_root, lst, fragments[0], rec, idx)
        skipped = fragments[0]["skipped"]
    else:
        total = _copy_fragments(work_root, lst, fragments, rec, idx)
        skipped = sum(s["skipped"] for s in fragments)
    if skipped:
        with storage.atomic_writer(err) as err_out:
            for s in fragments:
                err_out.write(storage.read_bytes(fragment_path(work_root, lst, s["index"], "errors.jsonl")))
    else:
        storage.delete(err)  # a stale report from an earlier run would mislead
    summary = {
        "lst": lst,
        "rec": rec,
        "idx": idx,
        "errors": err if skipped else "",
        "records": sum(s["records"] for s in fragments),
        "skipped": skipped,
        "bytes": total,
    }
    storage.write_text(done_path(work_root, lst), json.dumps(summary, ensure_ascii=False))
    # Free the space now rather than when the launcher removes the work folder.
    for s in fragments:
        for ext in ("rec", "idx", "errors.jsonl"):
            storage.delete(fragment_path(work_root, lst, s["index"], ext))
    return summary


def _move_single_fragment(work_root: str, lst: str, fragment: dict, rec: str, idx: str) -> int:
    src = fragment_path(work_root, lst, fragment["index"], "rec")
    size = os.path.getsize(src)
    if size != fragment["bytes"]:
        raise RuntimeError("%s fragment 0: %d bytes on disk, %d written" % (lst, size, fragment["bytes"]))
    os.replace(fragment_path(work_root, lst, fragment["index"], "idx"), idx)
    os.replace(src, rec)
    return size


def _copy_fragments(work_root: str, lst: str, fragments: list[dict], rec: str, idx: str) -> int:
    """Concatenate the fragments' .rec files, shifting each fragment's .idx offsets; returns the bytes."""
    with storage.atomic_writer(rec) as rec_out, storage.atomic_writer(idx) as idx_out:
        base = 0
        for s in fragments:
            copied = 0
            with storage.open_read(fragment_path(work_root, lst, s["index"], "rec")) as f:
                while True:
                    block = f.read(COPY_BLOCK)
                    if not block:
                        break
                    rec_out.write(block)
                    copied += len(block)
            if copied != s["bytes"]:
                raise RuntimeError(
                    "%s fragment %d: %d bytes read back, %d written" % (lst, s["index"], copied, s["bytes"])
                )
            entries = recordio.parse_idx(storage.read_text(fragment_path(work_root, lst, s["index"], "idx")))
            idx_out.write("".join(recordio.format_idx_line(k, base + off) for k, off in entries).encode("utf-8"))
            base += copied
    return base


class _StorageFn(EnvDoFn):
    """The drop-in's DoFns: the job's WorkerEnv applied in setup."""


class _PackFragmentFn(_StorageFn):
    def __init__(self, settings: PackSettings, work_root: str, threads: int, env: WorkerEnv | None = None):
        super().__init__(env)
        self._settings = settings
        self._work = work_root
        self._threads = threads
        self._written = Metrics.counter("im2rec", "images_written")
        self._skipped = Metrics.counter("im2rec", "images_skipped")
        self._fragments = Metrics.counter("im2rec", "fragments_written")

    def process(self, fragment: Fragment):
        summary = write_fragment(fragment, self._settings, self._work, self._threads)
        self._written.inc(summary["records"])
        self._skipped.inc(summary["skipped"])
        self._fragments.inc()
        yield fragment.lst, summary


class _ConcatFragmentsFn(_StorageFn):
    def __init__(self, work_root: str, env: WorkerEnv | None = None):
        super().__init__(env)
        self._work = work_root

    def process(self, element):
        # element: (lst, [fragment summary])
        lst, summaries = element
        yield concat_fragments(lst, list(summaries), self._work)


class PackList(beam.PTransform):
    """PCollection[Fragment] -> PCollection[list summary dict]; writes each list's .rec/.idx beside it."""

    def __init__(self, settings: PackSettings, work_root: str, threads: int = 1, env: WorkerEnv | None = None):
        super().__init__()
        self._settings = settings
        self._work = work_root
        self._threads = threads
        self._env = env

    def expand(self, fragments):
        return (
            fragments
            # (lst, {index, count, records, bytes, skipped})
            | "PackFragment" >> beam.ParDo(_PackFragmentFn(self._settings, self._work, self._threads, self._env))
            # (lst, [{index, count, records, bytes, skipped}])
            | "GroupByList" >> beam.GroupByKey()
            # {lst, rec, idx, errors, records, skipped, bytes}
            | "ConcatFragments" >> beam.ParDo(_ConcatFragmentsFn(self._work, self._env))
        )
