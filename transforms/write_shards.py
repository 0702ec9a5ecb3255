"""WriteShards: one DoFn call per shard reads, checks/encodes and streams its records.

Image bytes exist only inside this stage: they are read, turned into a
record and written to the shard's output stream, never emitted as elements.
Per shard: the ``.rec`` (atomic), its ``.idx`` (atomic), then a completion
record under ``_work/shards/`` with the counts, the sha256, the ``.lst``
lines and the skipped inputs. The completion record is written last, so its
presence means the shard is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import apache_beam as beam
from apache_beam.metrics import Metrics

from imgrec import crashpoints, images, labels, recordio, storage
from imgrec.env import WorkerEnv
from imgrec.errors import STAGE_ENCODE, STAGE_READ, STAGE_VALIDATE, ErrorRecord
from imgrec.layout import Layout
from imgrec.options import ConvertOptions
from imgrec.parallel import ordered_map
from imgrec.planning import order_in_shard
from imgrec.progress import ProgressWriter
from imgrec.summary import human_bytes

LOG = logging.getLogger("imgrec.write_shards")


def read_input(uri: str, max_bytes: int = 0) -> bytes:
    """Read one input file (a regular file of at most ``max_bytes``, 0 = any size).

    Anything else, and an OS-level failure, becomes a BadImage with a reason tag.
    """
    try:
        return storage.read_bytes(uri, max_bytes)
    except storage.UnusableFileError as exc:  # not_regular_file, too_large: refused before reading
        raise images.BadImage(exc.reason, exc.detail) from None
    except PermissionError:
        raise images.BadImage("unreadable", "permission denied") from None
    except FileNotFoundError:
        raise images.BadImage("missing", "file vanished after listing") from None
    except IsADirectoryError:
        raise images.BadImage("unreadable", "is a folder") from None
    except OSError as exc:
        raise images.BadImage("unreadable", exc.strerror or str(exc)) from None


def image_payload(data: bytes, options: ConvertOptions) -> tuple[bytes, int]:
    """The image bytes to store for one input and their shorter edge; raises BadImage when it cannot be stored."""
    info = images.check_structure(data, options.max_pixels)
    if options.pass_through:
        # Stored as is, so it must be what every target reader decodes (GIF, WebP, ... are re-encoded or skipped).
        images.check_storable(info)
        if options.validate == "decode":
            images.full_decode_check(data, options.encode.color)
        return data, min(info.width, info.height)
    payload = images.transcode(data, info, options.encode, options.max_pixels)
    return payload, shorter_edge(payload)


def shorter_edge(payload: bytes) -> int:
    """The shorter side of a stored image (JPEG or PNG), from its header; 0 when it cannot be read."""
    try:
        info = images.probe(payload)
    except images.BadImage:
        return 0
    return min(info.width, info.height)


def format_lst_line(record_id: int, label, relpath: str) -> str:
    """One ``.lst`` line the way im2rec.py writes it: index, labels as %f, path."""
    labels = label if isinstance(label, (list, tuple)) else (label,)
    return "%d\t%s\t%s\n" % (record_id, "\t".join("%f" % float(v) for v in labels), relpath)


def shard_digest(refs, first_id: int, options: ConvertOptions) -> str:
    """What a shard was made from: its images (in order, each with its size and listed version), its first id
    and the options that shape bytes. An input changed in place since the shard was written (same size, a new
    modification time or ETag) gives another digest, so ``--resume`` writes the shard again."""
    h = hashlib.sha256(json.dumps(options.fingerprint_fields(), sort_keys=True, default=str).encode())
    h.update(b"first_id=%d\n" % first_id)
    for ref in refs:
        line = "%s\0%d\0%r\0%d\0%s\n" % (ref.relpath, ref.size, ref.label, ref.key, ref.version)
        h.update(line.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def write_shard(
    split, shard, shards, refs, first_id, options: ConvertOptions, layout: Layout, threads: int, progress=None,
    read_threads: int = 0,
):
    """Write one shard and its completion record; returns the completion record (a dict).

    ``threads`` images are checked/encoded at once. With ``read_threads`` above that,
    reads run ahead on their own threads (S3, where a GET waits tens of milliseconds).
    ``progress``, when given, is called as ``progress(images, bytes, errors)`` after each input.
    """
    ordered = order_in_shard(refs)
    out = options.output
    rec_rel = layout.rec(split, shard, shards)
    idx_rel = layout.idx(split, shard, shards)
    record_uri = storage.join(out, layout.shard_record(split, shard, shards))
    digest = shard_digest(ordered, first_id, options)
    if options.resume:
        kept = completed_record(out, record_uri, digest)
        if kept is not None:
            return kept

    def fetch(item):
        # (record_id, ref) -> (record_id, ref, bytes or None, ErrorRecord or None)
        record_id, ref = item
        try:
            return record_id, ref, read_input(storage.join(options.input, ref.relpath), options.max_file_bytes), None
        except images.BadImage as exc:
            return record_id, ref, None, ErrorRecord(ref.relpath, exc.reason, STAGE_READ, exc.detail)

    def load(item):
        record_id, ref, data, error = item if len(item) == 4 else fetch(item)
        if error is not None:
            return ref, record_id, None, error
        try:
            payload, edge = image_payload(data, options)
        except images.BadImage as exc:
            stage = STAGE_VALIDATE if options.pass_through or exc.reason != "encode_failed" else STAGE_ENCODE
            return ref, record_id, None, ErrorRecord(ref.relpath, exc.reason, stage, exc.detail)
        label = labels.encode_label(ref.label, options.label_format, options.label_width, options.label_pad)
        return ref, record_id, (recordio.pack(label, record_id, payload), label, edge), None

    idx_lines, lst_lines, offsets, errors = [], [], [], []
    edges: dict[str, int] = {}  # shorter image edge -> images, for sagemaker.json's image_shape
    work = ((first_id + i, ref) for i, ref in enumerate(ordered))
    if read_threads > threads:
        work = ordered_map(fetch, work, read_threads, window=2 * read_threads)
    with storage.atomic_writer(storage.join(out, rec_rel)) as f, recordio.RecordWriter(f, background=True) as writer:
        for ref, record_id, packed, error in ordered_map(load, work, threads, window=4 * max(1, threads)):
            if error is not None:
                errors.append(error)
                if progress:
                    progress(0, 0, 1)
                continue
            packed, label, edge = packed
            offset = writer.write(packed)
            if progress:
                progress(1, writer.offset - offset, 0)
            offsets.append(offset)
            idx_lines.append(recordio.format_idx_line(record_id, offset))
            lst_lines.append(format_lst_line(record_id, label, ref.relpath))
            if edge:
                edges[str(edge)] = edges.get(str(edge), 0) + 1
        writer.close()
        size, sha, written = writer.offset, writer.sha256(), writer.records
    storage.write_text(storage.join(out, idx_rel), "".join(idx_lines))
    record = {
        "split": split,
        "shard": shard,
        "shards": shards,
        "rec": rec_rel,
        "idx": idx_rel,
        "records": written,
        "planned": len(ordered),
        "bytes": size,
        "sha256": sha,
        "digest": digest,
        "offsets": offsets,
        "lst": lst_lines,
        "errors": [e.to_json() for e in errors],
        "shorter_edges": edges,
    }
    storage.write_text(record_uri, json.dumps(record, ensure_ascii=False))
    crashpoints.reached("shard-recorded")
    return record


def completed_record(out: str, record_uri: str, digest: str) -> dict | None:
    """A shard's completion record when the shard on storage is complete and unchanged (``--resume``).

    Kept only when the record was made from the same images (same sizes and
    versions: unchanged since) and options, and the ``.rec`` still hashes to the
    recorded sha256 and its ``.idx`` exists.
    """
    try:
        record = json.loads(storage.read_text(record_uri))
    except (FileNotFoundError, ValueError):
        return None
    except storage.StorageError:
        return None
    if record.get("digest") != digest or not storage.exists(storage.join(out, record["idx"])):
        return None
    h = hashlib.sha256()
    size = 0
    try:
        with storage.open_read(storage.join(out, record["rec"])) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
    except (FileNotFoundError, storage.StorageError):
        return None
    if h.hexdigest() != record["sha256"] or size != record["bytes"]:
        return None
    record["resumed"] = True
    return record


# Reads in flight per worker for s3:// input by default: a GET of a ~100 KB image waits
# 20-50 ms, during which one core encodes several images (see docs/benchmark.md).
S3_READ_THREADS = 16


def default_threads(options: ConvertOptions) -> int:
    """Threads per worker for ``--threads 0``: one per core and one more, except for local pass-through.

    Threads pay off where the work releases the GIL for long (OpenCV decode and
    encode) or waits (S3 reads). Local pass-through is short Python work per
    image; there a second thread only adds GIL hand-offs (measured: 20% more CPU
    per image and slower shards), and the worker processes already use the cores.
    """
    if options.pass_through and options.validate != "decode" and not storage.is_s3(options.input):
        return 1
    # one more than the cores: while a thread holds the GIL for its Python steps, the
    # others' OpenCV work still fills every core (measured: 3-5% faster than one per core)
    return (os.cpu_count() or 1) + 1


class _WriteShardFn(beam.DoFn):
    def __init__(self, options: ConvertOptions, layout: Layout):
        self._options = options
        self._layout = layout
        self._images = Metrics.counter("imgrec", "images_written")
        self._bytes = Metrics.counter("imgrec", "bytes_written")
        self._skipped = Metrics.counter("imgrec", "images_skipped")
        self._shards = Metrics.counter("imgrec", "shards_written")
        self._resumed = Metrics.counter("imgrec", "shards_resumed")

    def setup(self):
        images.tune_for_threads()
        self._threads = self._options.threads or default_threads(self._options)
        self._read_threads = self._options.read_threads or (
            S3_READ_THREADS if storage.is_s3(self._options.input) else 0
        )
        # Beam's own --s3_* options do not reach these workers: apply ours in every process.
        WorkerEnv.from_options(self._options).apply()
        self._progress = ProgressWriter(self._options.output)

    def process(self, element):
        # element: ((split, shard, shards), first_id, [ImageRef])
        (split, shard, shards), first_id, refs = element
        record = write_shard(
            split, shard, shards, list(refs), first_id, self._options, self._layout, self._threads, self._progress.add,
            read_threads=self._read_threads,
        )
        if record.get("resumed"):
            self._progress.add(record["records"], record["bytes"], len(record["errors"]))
        self._progress.add(force=True)
        LOG.info(
            "shard %s %d/%d %s: %d images, %s, %d skipped",
            split, shard + 1, shards, "kept (--resume)" if record.get("resumed") else "written",
            record["records"], human_bytes(record["bytes"]), len(record["errors"]),
        )
        self._images.inc(record["records"])
        self._bytes.inc(record["bytes"])
        self._skipped.inc(len(record["errors"]))
        self._shards.inc()
        if record.get("resumed"):
            self._resumed.inc()
        yield {k: record[k] for k in ("split", "shard", "shards", "records", "bytes", "sha256")}


class WriteShards(beam.PTransform):
    """PCollection[((split, shard, shards), first_id, [ImageRef])] -> PCollection[shard summary dict]."""

    def __init__(self, options: ConvertOptions, layout: Layout):
        super().__init__()
        self._options = options
        self._layout = layout

    def expand(self, groups):
        return groups | "WriteShard" >> beam.ParDo(_WriteShardFn(self._options, self._layout))
