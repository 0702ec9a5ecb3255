"""Writing shards without Beam: each shard in parts, each part on any core, the parts joined in order.

A shard's records are ordered by key, so a stretch of them -- a *part*: the
refs of a key range (from sorted runs) or a slice of a given list -- can be
read, checked or re-encoded and framed on its own, by a thread or a forked
worker process (``imgrec.workers``), as long as it knows its first record id.
``write_part`` does that and returns the framed bytes with the facts about
them; ``write_shards`` hands every part of every shard to a ``WorkerPool``
and joins the parts of each shard, in order, into its ``.rec`` while a
second thread hashes them; a finishing thread then writes the last bytes, the
``.idx`` and, last, the shard's completion record
(``imgrec.workrecords.ShardRecord``) while the next shard's parts stream in
(one shard finishing at a time, records yielded in order). The bytes are those of
the whole shard written by one loop: framing does not depend on a record's
position.

Image bytes exist only here: read, turned into a record and framed inside a
part, never passed between stages.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import hashlib
import json
import logging
import os
import pickle
import queue
import shutil
import tempfile
import threading
from array import array
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Sequence

from imgrec import crashpoints, dedup, images, items, labels, recordio, runs, storage
from imgrec.errors import STAGE_ENCODE, STAGE_READ, STAGE_VALIDATE, ErrorRecord
from imgrec.layout import Layout
from imgrec.options import ConvertOptions
from imgrec.parallel import ordered_map
from imgrec.shardplan import PART_IMAGES, RefFilter
from imgrec.storage.local import read_local
from imgrec.workers import Part, WorkerPool
from imgrec.workrecords import ShardRecord, WorkRecordError

LOG = logging.getLogger("imgrec.shardwriter")

# Reads in flight per part for s3:// input: a GET of a ~100 KB image waits 20-50 ms,
# during which one core encodes several images (see docs/benchmark.md).
S3_READ_THREADS = 16
# A shard's .idx is written this many lines at a time (not built as one string of the whole shard).
IDX_LINES_A_WRITE = 8192


# ---------------------------------------------------------------- one image


def read_input(uri: str, max_bytes: int = 0) -> bytes:
    """Read one input file (a regular file of at most ``max_bytes``, 0 = any size).

    Anything else, and an OS-level failure, becomes a BadImage with a reason tag.
    """
    try:
        return storage.read_bytes(uri, max_bytes)
    except (storage.UnusableFileError, OSError) as exc:
        raise _unreadable(exc) from None


def read_local_input(path: str, max_bytes: int = 0) -> bytes:
    """``read_input`` for a local file, without the storage layer's dispatch (every image of a local job)."""
    try:
        return read_local(path, max_bytes)
    except (storage.UnusableFileError, OSError) as exc:
        raise _unreadable(exc) from None


def _unreadable(exc: Exception) -> images.BadImage:
    """Why an input could not be read, as the skip recorded for it."""
    if isinstance(exc, storage.UnusableFileError):  # not_regular_file, too_large: refused before reading
        return images.BadImage(exc.reason, exc.detail)
    if isinstance(exc, PermissionError):
        return images.BadImage("unreadable", "permission denied")
    if isinstance(exc, FileNotFoundError):
        return images.BadImage("missing", "file vanished after listing")
    if isinstance(exc, IsADirectoryError):
        return images.BadImage("unreadable", "is a folder")
    return images.BadImage("unreadable", exc.strerror or str(exc))


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
    values = label if isinstance(label, (list, tuple)) else (label,)
    return "%d\t%s\t%s\n" % (record_id, "\t".join("%f" % float(v) for v in values), relpath)


# ---------------------------------------------------------------- what the parts of a job share


@dataclass(frozen=True)
class WriteSpec:
    """What every part of a job shares: options, class names in id order, the resolved label width."""

    options: ConvertOptions
    classes: tuple[str, ...]
    label_width: int = 0

    @functools.cached_property
    def name_to_id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    @functools.cached_property
    def fingerprint(self) -> bytes:
        return json.dumps(self.options.fingerprint_fields(), sort_keys=True, default=str).encode()

    def record_label(self, names: Sequence[str]):
        """The record label of an image with these class names (an id, or a float vector)."""
        ids = sorted({self.name_to_id[n] for n in names})
        o = self.options
        if not o.label_format:
            return ids[0]
        return labels.encode_label(ids, o.label_format, self.label_width, o.label_pad)

    def label_of(self, joined: str) -> tuple:
        """(record label, its .lst columns) for a ref's joined class names; the same few per job, so cached."""
        found = self._labels.get(joined)
        if found is None:
            label = self.record_label(runs.label_names(runs.RunRef(0, "", 0, "", joined)))
            values = label if isinstance(label, (list, tuple)) else (label,)
            found = self._labels[joined] = (label, "\t".join("%f" % float(v) for v in values))
        return found

    @functools.cached_property
    def _labels(self) -> dict:
        return {}


def save_spec(spec: WriteSpec, path: str) -> None:
    """Write ``spec`` where the parts' workers load it (a local scratch file, read once per process)."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        pickle.dump(spec, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


_SPECS: dict[str, WriteSpec] = {}


def register_spec(name: str, spec: WriteSpec) -> None:
    """Make ``spec`` known in this process under ``name`` (threads only: a worker process loads a saved file)."""
    _SPECS[name] = spec


def load_spec(path: str) -> WriteSpec:
    """The spec saved at ``path`` (read once per process), or registered under that name."""
    spec = _SPECS.get(path)
    if spec is None:
        with open(path, "rb") as f:
            spec = _SPECS[path] = pickle.load(f)
    return spec


# ---------------------------------------------------------------- one part


@dataclass(frozen=True)
class PartJob:
    """One part of a shard: records ``first_id ..`` -- the given ``refs``, or the refs of ``[lo, hi)`` in ``runs``."""

    spec: str  # path of the saved WriteSpec
    split: str
    shard: int
    first_id: int
    count: int  # refs planned in this part
    refs: tuple = ()
    runs: tuple[str, ...] = ()
    lo: int = 0
    hi: int = 0
    flt: RefFilter = RefFilter()
    digest_only: bool = False  # --resume: only the digest of the refs, nothing read or written


@dataclass
class PartMeta:
    """The facts about a part's framed bytes (offsets relative to the part's first byte)."""

    planned: int
    digest: str
    ids: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    lst: list[str] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    edges: dict[str, int] = field(default_factory=dict)
    found: str = ""  # report items found (identical files): JSON lines, ASCII
    found_count: int = 0


def refs_digest(refs: Iterable[runs.RunRef]) -> str:
    """What a part is made from: each image's path, size, labels, key and listed version, in order."""
    h = hashlib.sha256()
    for r in refs:
        h.update(("%s\0%d\0%s\0%d\0%s\n" % (r.relpath, r.size, r.labels, r.key, r.version)).encode(
            "utf-8", "surrogateescape"))
    return h.hexdigest()


def _part_refs(job: PartJob) -> tuple[list[runs.RunRef], list[list[runs.RunRef]]]:
    if job.runs:
        from imgrec.shardplan import select_refs

        refs, groups = select_refs(job.runs, job.lo, job.hi, job.flt)
    else:
        refs, groups = list(job.refs), []
    if len(refs) != job.count:
        raise RuntimeError(
            "part of shard %d of %s holds %d images, the plan says %d (the job's scratch files changed while it ran)"
            % (job.shard, job.split, len(refs), job.count)
        )
    return refs, groups


def write_part(job: PartJob) -> Part:
    """Read, check or re-encode and frame the records of one part (runs in a thread or a worker process)."""
    spec = load_spec(job.spec)
    refs, groups = _part_refs(job)
    meta = PartMeta(len(refs), refs_digest(refs))
    if job.digest_only:
        return Part(meta=meta)
    o = spec.options
    found = _identical_findings(groups, job.split, o.dedup)
    meta.found = "".join(json.dumps(item, sort_keys=True) + "\n" for item in found)
    meta.found_count = len(found)
    root, limit = o.input, o.max_file_bytes
    # a local root: paths joined and files read directly (the refs' paths were checked when listed)
    read = read_local_input if root and not storage.is_s3(root) else read_input
    base = root.rstrip("/") + "/" if root and not storage.is_s3(root) else None

    def fetch(item):
        record_id, ref = item
        rel = ref.relpath
        try:
            uri = base + rel if base is not None and not rel.startswith("/") else items.source_uri(root, rel)
            return record_id, ref, read(uri, limit), None
        except images.BadImage as exc:
            return record_id, ref, None, ErrorRecord(rel, exc.reason, STAGE_READ, exc.detail)

    work: Iterable = ((job.first_id + i, ref) for i, ref in enumerate(refs))
    if storage.is_s3(root):
        work = ordered_map(fetch, work, o.read_threads or S3_READ_THREADS, window=2 * (o.read_threads or S3_READ_THREADS))
    else:
        work = map(fetch, work)
    pieces: list = []
    pos = 0
    ids, offsets, lst, errors, edges = meta.ids, meta.offsets, meta.lst, meta.errors, meta.edges
    for record_id, ref, data, error in work:
        if error is None:
            try:
                payload, edge = image_payload(data, o)
            except images.BadImage as exc:
                stage = STAGE_VALIDATE if o.pass_through or exc.reason != "encode_failed" else STAGE_ENCODE
                error = ErrorRecord(ref.relpath, exc.reason, stage, exc.detail)
        if error is not None:
            errors.append(error)
            continue
        label, columns = spec.label_of(ref.labels)
        framed = recordio.frame_parts(recordio.pack_header(label, record_id), payload)
        ids.append(record_id)
        offsets.append(pos)
        pieces.extend(framed)
        pos += recordio.framed_size(framed)
        lst.append("%d\t%s\t%s\n" % (record_id, columns, ref.relpath))  # format_lst_line's, its label cached
        if edge:
            edges[str(edge)] = edges.get(str(edge), 0) + 1
    # compact for the trip back and the shard's bookkeeping: one string of lines, arrays of ints
    meta.lst = ["".join(lst)] if lst else []
    meta.ids, meta.offsets = array("q", ids), array("q", offsets)
    return Part(pieces, pos, meta)


def _identical_findings(groups, split: str, dedup_on: bool) -> list[dict]:
    found: list[dict] = []
    for group in groups:
        members = [(r.relpath, list(runs.label_names(r))) for r in sorted(group, key=lambda r: r.relpath)]
        found.extend(dedup.identical_findings(group[0].sha, members, split, dedup_on)[1])
    return found


# ---------------------------------------------------------------- the shards of a job


@dataclass(frozen=True)
class ShardWork:
    """A shard to write: its names, first id, planned images and its parts (in order)."""

    split: str
    shard: int
    shards: int
    first_id: int
    planned: int
    parts: tuple[PartJob, ...]


def parts_of_refs(spec_path: str, split: str, shard: int, first_id: int, refs: Sequence[runs.RunRef],
                  size: int = PART_IMAGES) -> tuple[PartJob, ...]:
    """A shard given as its (ordered) refs, cut into parts of ``size``."""
    return tuple(
        PartJob(spec_path, split, shard, first_id + i, len(refs[i:i + size]), refs=tuple(refs[i:i + size]))
        for i in range(0, len(refs), size)
    ) or (PartJob(spec_path, split, shard, first_id, 0),)


def shard_digest(spec: WriteSpec, work: ShardWork, part_digests: Iterable[str]) -> str:
    """What a shard was made from: its parts' refs (with versions), first id and the options that shape bytes.

    An input changed in place since the shard was written (same size, a new
    modification time or ETag) gives another digest, so ``--resume`` writes it again.
    """
    h = hashlib.sha256(spec.fingerprint)
    h.update(b"first_id=%d\n" % work.first_id)
    for d in part_digests:
        h.update(d.encode() + b"\n")
    return h.hexdigest()


def completed_record(out: str, record_uri: str, digest: str) -> ShardRecord | None:
    """A shard's completion record when the shard on storage is complete and unchanged (``--resume``).

    Kept only when the record was made from the same images (same sizes and
    versions: unchanged since) and options, and the ``.rec`` still hashes to the
    recorded sha256 and its ``.idx`` exists.
    """
    try:
        record = ShardRecord.loads(storage.read_text(record_uri))
    except (FileNotFoundError, ValueError, KeyError, TypeError, WorkRecordError, storage.StorageError):
        return None
    if record.digest != digest or not storage.exists(storage.join(out, record.idx)):
        return None
    if record.found_file and not storage.exists(storage.join(out, record.found_file)):
        return None
    try:
        if storage.file_size(storage.join(out, record.lst_file)) != record.lst_bytes:
            return None
    except (OSError, storage.StorageError):
        return None
    h = hashlib.sha256()
    size = 0
    try:
        with storage.open_read(storage.join(out, record.rec)) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
    except (FileNotFoundError, storage.StorageError):
        return None
    if h.hexdigest() != record.sha256 or size != record.bytes:
        return None
    return replace(record, resumed=True)


class _Sink:
    """Hashes and writes parts in order, on two threads of their own; releases each part when both are done."""

    def __init__(self, f):
        self._f = f
        self._hash = hashlib.sha256()
        self._to_hash: queue.Queue = queue.Queue(maxsize=4)
        self._to_write: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, args=(self._to_hash, self._hash_one), name="shard-hash", daemon=True),
            threading.Thread(target=self._run, args=(self._to_write, self._write_one), name="shard-write", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _hash_one(self, item):
        self._hash.update(item[0])
        self._to_write.put(item)

    def _write_one(self, item):
        data, release = item
        try:
            self._f.write(data)
        finally:
            release()

    def _run(self, source: queue.Queue, work: Callable) -> None:
        while True:
            item = source.get()
            if item is None:
                if work == self._hash_one:
                    self._to_write.put(None)
                return
            if self._error is not None:
                item[1]()  # after an error: only give the part back
                continue
            try:
                work(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
                self._error = exc
                if work == self._hash_one:
                    item[1]()

    def add(self, data, release: Callable[[], None]) -> None:
        if self._error is not None:
            release()
            raise self._error
        self._to_hash.put((data, release))

    def close(self) -> str:
        self._to_hash.put(None)
        for t in self._threads:
            t.join()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()


class _Shard:
    """One shard being assembled from its parts: the .rec streams in, then .idx and the completion record."""

    def __init__(self, work: ShardWork, spec: WriteSpec, layout: Layout, digest: str = ""):
        self.work = work
        self.spec = spec
        out = spec.options.output
        self.rec_rel = layout.rec(work.split, work.shard, work.shards)
        self.idx_rel = layout.idx(work.split, work.shard, work.shards)
        self.record_uri = storage.join(out, layout.shard_record(work.split, work.shard, work.shards))
        self.found_rel = layout.shard_found(work.split, work.shard, work.shards)
        self.lst_rel = layout.shard_lst(work.split, work.shard, work.shards)
        self.digest = digest
        self._stack = contextlib.ExitStack()
        f = self._stack.enter_context(storage.atomic_writer(storage.join(out, self.rec_rel)))
        self._sink = _Sink(f)
        # a shard can hold hundreds of thousands of small images: ids and offsets in arrays, and the
        # .lst lines straight to their file beside the record (a shard's lines are not held in memory)
        self._lst = self._stack.enter_context(storage.atomic_writer(storage.join(out, self.lst_rel)))
        self.lst_bytes = 0
        self.base = 0
        self.part_digests: list[str] = []
        self.ids = array("q")
        self.offsets = array("q")
        self.errors: list[ErrorRecord] = []
        self.edges: dict[str, int] = {}
        # report items found while writing: a collection of many identical files has a great many,
        # so they wait in a temporary file, not in memory, and are copied beside the record
        self.found = 0
        self._found_file = None

    def add(self, part: Part) -> None:
        meta: PartMeta = part.meta
        base = self.base
        self.part_digests.append(meta.digest)
        self.ids.extend(meta.ids)
        self.offsets.extend(array("q", (base + o for o in meta.offsets)) if base else meta.offsets)
        for chunk in meta.lst:
            data = chunk.encode("utf-8", "surrogateescape")
            self._lst.write(data)
            self.lst_bytes += len(data)
        self.errors.extend(meta.errors)
        for edge, n in meta.edges.items():
            self.edges[edge] = self.edges.get(edge, 0) + n
        if meta.found_count:
            if self._found_file is None:
                self._found_file = self._stack.enter_context(tempfile.TemporaryFile())
            self._found_file.write(meta.found.encode("ascii"))
            self.found += meta.found_count
        self.base += part.size
        if part.size:
            self._sink.add(part.data, part.release)
        else:
            part.release()

    def finish(self) -> ShardRecord:
        sha = self._sink.close()
        work, out = self.work, self.spec.options.output
        if self._found_file is not None:
            self._found_file.seek(0)
            with storage.atomic_writer(storage.join(out, self.found_rel)) as f:
                shutil.copyfileobj(self._found_file, f, 1 << 20)
        self._stack.close()  # the .rec and the .lst lines are renamed into place (or their uploads completed)
        with storage.atomic_writer(storage.join(out, self.idx_rel)) as f:
            ids, offsets = self.ids, self.offsets
            for i in range(0, len(ids), IDX_LINES_A_WRITE):
                end = i + IDX_LINES_A_WRITE
                f.write("".join(map(recordio.format_idx_line, ids[i:end], offsets[i:end])).encode("ascii"))
        digest = self.digest or shard_digest(self.spec, work, self.part_digests)
        record = ShardRecord(
            work.split, work.shard, work.shards, self.rec_rel, self.idx_rel, len(self.offsets), work.planned,
            self.base, sha, digest, work.first_id, self.offsets, self.lst_rel, self.lst_bytes, tuple(self.errors),
            dict(self.edges), self.found, self.found_rel if self.found else "",
        )
        storage.write_text(self.record_uri, record.dumps())
        crashpoints.reached("shard-recorded")
        return record

    def abort(self) -> None:
        with contextlib.suppress(BaseException):
            self._sink.close()
        # leaving the writer with an exception removes the temporary file (or aborts the upload)
        with contextlib.suppress(BaseException):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


def write_shards(
    works: Sequence[ShardWork],
    spec: WriteSpec,
    layout: Layout,
    pool: WorkerPool,
    progress: Callable[..., None] | None = None,
) -> Iterator[ShardRecord]:
    """Write every shard of ``works``: all their parts on ``pool``, each shard's parts joined in order.

    Yields each shard's completion record once the shard is complete (with
    ``--resume``, first the shards kept from an earlier run).
    """
    out = spec.options.output
    todo: list[tuple[ShardWork, str]] = []
    # without --resume the digest comes with the parts; with it, first, to find the shards to keep
    digests = _shard_digests(works, spec, pool) if spec.options.resume else [""] * len(works)
    for work, digest in zip(works, digests):
        if spec.options.resume:
            kept = completed_record(out, storage.join(out, layout.shard_record(work.split, work.shard, work.shards)),
                                    digest)
            if kept is not None:
                if progress:
                    progress(kept.records, kept.bytes, len(kept.errors))
                yield kept
                continue
        todo.append((work, digest))
    jobs = (job for work, _ in todo for job in work.parts)
    parts = pool.map(write_part, jobs)
    # A shard is finished (the last of its bytes hashed and written, its .idx and record) on a thread of
    # its own while the next shard's parts stream in: the pool does not stand idle at every shard's end.
    finisher = cf.ThreadPoolExecutor(1, thread_name_prefix="shard-finish")
    current: _Shard | None = None
    finishing: tuple[_Shard, cf.Future] | None = None
    try:
        for work, digest in todo:
            current = _Shard(work, spec, layout, digest)
            for _ in work.parts:
                part = next(parts)
                if progress:
                    progress(len(part.meta.offsets), part.size, len(part.meta.errors))
                current.add(part)
                if finishing is not None and finishing[1].done():
                    done, finishing = finishing, None
                    yield _finished(*done)
                    del done  # a shard's bookkeeping is freed as soon as it is recorded
            if finishing is not None:  # one shard finishing at a time: the one before must be done first
                done, finishing = finishing, None
                yield _finished(*done)
                del done
            finishing, current = (current, finisher.submit(current.finish)), None
        if finishing is not None:
            done, finishing = finishing, None
            yield _finished(*done)
    finally:
        if current is not None:
            current.abort()
        if finishing is not None:  # stopped while a complete shard was being finished: let it end as it will
            with contextlib.suppress(BaseException):
                _finished(*finishing)
        finisher.shutdown(wait=True)
        parts.close()


def _finished(shard: _Shard, future: cf.Future) -> ShardRecord:
    """The record of a shard finished on the finisher thread; a shard whose finishing failed is aborted."""
    try:
        return future.result()
    except BaseException:
        shard.abort()
        raise


def _shard_digests(works: Sequence[ShardWork], spec: WriteSpec, pool: WorkerPool) -> list[str]:
    """Each shard's digest: from its parts' refs, read on the pool (cheap: no image is read)."""
    jobs = [replace(job, digest_only=True) for work in works for job in work.parts]
    part_digests = [p.meta.digest for p in _released(pool.map(write_part, jobs))]
    out, i = [], 0
    for work in works:
        out.append(shard_digest(spec, work, part_digests[i:i + len(work.parts)]))
        i += len(work.parts)
    return out


def _released(parts: Iterable[Part]) -> Iterator[Part]:
    for part in parts:
        part.release()
        yield part
