"""Check a finished output folder against its manifest, record by record. No Beam.

``verify_output(OUT)`` reads ``manifest.json`` and then every shard it lists,
once, front to back, through ``imgrec.storage`` (so a local folder and an
``s3://`` prefix are checked the same way). For each shard it checks:

* the RecordIO framing of every record: magic word, continuation flags, length
  words, zero padding (``recordio.read_records`` is strict about all four);
* every payload: a readable IRHeader, labels that are class indexes inside the
  class map, an id not used twice in the split, a JPEG or PNG image (what
  mxnet, DALI and SageMaker decode) that OpenCV decodes without reporting
  corrupt data;
* the shard's ``.idx``: one ``key<TAB>offset`` line per record, in order, the
  key equal to the record's id and the offset equal to its first byte;
* the manifest: the shard's record count, size and sha256.

and per split the merged index (DALI's), the ``.lst`` file and the per-class
counts. Every problem is a ``Problem``: the file (relative to OUT), and a
message that names the record and the byte offset where there is one.

Beside the problems, the report says per split what label layout the records
hold (scalar, or vectors of which width; labels per record; distinct label
sets), so a dataset whose labels collapsed is visible at a glance.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import math
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, ContextManager, Iterable, Iterator, Mapping

import cv2

from imgrec import images, recordio, storage
from imgrec.layout import CLASSES_JSON, LABELS_TXT, MANIFEST, WORK
from imgrec.planning import SPLITS

LOG = logging.getLogger("imgrec.verify")

# Shards are hashed while they are parsed; reading in large pieces keeps the
# number of calls (and S3 range requests) low while records are parsed in small reads.
READ_CHUNK = 1 << 20
_LENGTH_MASK = (1 << 29) - 1  # the low 29 bits of a length word; the top 3 are the continuation flag


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the output: the file it is in and what is wrong, precisely."""

    file: str
    message: str

    def __str__(self) -> str:
        return "%s: %s" % (self.file, self.message)


@dataclass
class ShardResult:
    """What reading one shard found."""

    entries: list[tuple[int, int]] = field(default_factory=list)  # (id, offset) per record, in file order
    labels: dict[int, tuple[float, ...]] = field(default_factory=dict)  # id -> labels
    size: int = 0
    sha256: str = ""
    framing_ok: bool = True
    problems: list[Problem] = field(default_factory=list)
    flags: collections.Counter = field(default_factory=collections.Counter)  # IRHeader flag -> records


@dataclass
class Report:
    out: str
    classes: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> records read
    layouts: dict[str, str] = field(default_factory=dict)  # split -> the label layout its records hold
    shards: int = 0
    records: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _HashingReader:
    """A forward-only reader that hashes and counts every byte it hands out.

    ``position`` is the byte offset of the next byte to be read, which is where
    the next record starts between two ``read_records`` steps.
    """

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._buf = b""
        self._pos = 0  # next unread byte of _buf
        self._hash = hashlib.sha256()
        self.position = 0

    def read(self, n: int) -> bytes:
        avail = len(self._buf) - self._pos
        if avail >= n:
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
        else:
            parts = [self._buf[self._pos :]]
            need = n - avail
            self._buf, self._pos = b"", 0
            while need > 0:
                chunk = self._raw.read(max(READ_CHUNK, need))
                if not chunk:
                    break
                self._hash.update(chunk)
                if len(chunk) <= need:
                    parts.append(chunk)
                    need -= len(chunk)
                else:
                    parts.append(chunk[:need])
                    self._buf, self._pos, need = chunk, need, 0
            out = b"".join(parts)
        self.position += len(out)
        return out

    def drain(self) -> None:
        """Read (and hash) whatever is left, so size and sha256 cover the whole file."""
        self.position += len(self._buf) - self._pos
        self._buf, self._pos = b"", 0
        while True:
            chunk = self._raw.read(READ_CHUNK)
            if not chunk:
                return
            self._hash.update(chunk)
            self.position += len(chunk)

    def sha256(self) -> str:
        return self._hash.hexdigest()


# ---------------------------------------------------------------- one record


@dataclass(frozen=True)
class LabelSpec:
    """How records store labels (``manifest["labels"]``): one class index, or a fixed-width vector."""

    format: str = "single"  # "single" | "multi-hot" | "class-ids"
    width: int = 1
    pad: float = -1.0

    @classmethod
    def from_manifest(cls, manifest: dict) -> "LabelSpec":
        doc = manifest.get("labels") or {}
        return cls(doc.get("format", "single"), int(doc.get("width", 1)), float(doc.get("pad", -1.0)))

    def class_ids(self, labels: tuple[float, ...]) -> tuple[int, ...]:
        """The classes a record's labels stand for (assumes ``label_problem`` found nothing)."""
        if self.format == "multi-hot":
            return tuple(i for i, v in enumerate(labels) if v == 1)
        if self.format == "class-ids":
            return tuple(int(v) for v in labels if v != self.pad)
        return (int(labels[0]),) if labels else ()


def label_problem(labels: tuple[float, ...], num_classes: int, spec: "LabelSpec | None" = None) -> str | None:
    """Why these labels do not fit the class map and the label layout, or None."""
    spec = spec or LabelSpec()
    if spec.format != "single" and len(labels) != spec.width:
        return "record holds %d labels, the dataset's label width is %d" % (len(labels), spec.width)
    if spec.format == "multi-hot":
        bad = [v for v in labels if v not in (0.0, 1.0)]
        return "multi-hot label holds %r, not 0 or 1" % bad[0] if bad else None
    if spec.format == "class-ids":
        labels = tuple(v for v in labels if v != spec.pad)
    for value in labels:
        if not math.isfinite(value) or value != int(value):
            return "label %r is not a class index (a whole number)" % value
        if not 0 <= int(value) < num_classes:
            return "label %d is outside the class map (%d classes, labels 0-%d)" % (
                int(value), num_classes, num_classes - 1
            )
    return None


def decode_problem(image: bytes) -> str | None:
    """Why the target readers cannot use these image bytes, or None when they can.

    The content must be what pipeline.run stores (JPEG or PNG, see
    ``images.check_storable``: mxnet 1.9.1 cannot decode GIF or WebP records,
    whatever OpenCV can), decode with OpenCV, and decode without the decoder
    reporting corrupt or missing data (libjpeg would return grey pixels).
    """
    if not image:
        return "record has no image bytes"
    fmt = images.sniff(image)
    if fmt is not None and fmt not in images.STORABLE_FORMATS:
        return "image is %s, not JPEG or PNG: mxnet, DALI and SageMaker do not all decode it" % images.FORMAT_NAMES[fmt]
    try:
        images.check_storable(images.probe(image))
    except images.BadImage as exc:
        if exc.reason == "unsupported_format":
            return "image is %s, which mxnet, DALI and SageMaker do not all decode" % exc.detail.split(":")[0]
        # a header the probe cannot read: the decode below says whether OpenCV can decode it
    try:
        img = images.decode_checked(image, cv2.IMREAD_UNCHANGED)
    except images.BadImage as exc:
        return "image data is corrupt (%s)" % exc.detail
    except cv2.error as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2.error"
        img, why = None, detail
    else:
        why = "cv2.imdecode returned nothing"
    if img is None or img.size == 0:
        return "image does not decode (%s; %d bytes starting %s)" % (why, len(image), image[:4].hex(" "))
    return None


def _labels_of(header: recordio.IRHeader) -> tuple[float, ...]:
    return tuple(header.label) if isinstance(header.label, tuple) else (header.label,)


def _where(index: int, record_id: int | None, offset: int) -> str:
    ident = "" if record_id is None else " (id %d)" % record_id
    return "record %d%s at byte %d" % (index, ident, offset)


# ---------------------------------------------------------------- one shard


class _Decoder:
    """Runs the decode check on a few threads (OpenCV releases the GIL); ``finish`` gives the results in order."""

    def __init__(self, threads: int):
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="verify") if threads > 1 else None
        self._pending: collections.deque = collections.deque()
        self._found: list[tuple[tuple[int, str], str]] = []  # (key, why) of every image that failed the check

    def submit(self, key: tuple[int, str], image: bytes) -> None:
        if self._pool is None:
            self._keep(key, decode_problem(image))
            return
        self._pending.append((key, self._pool.submit(decode_problem, image)))
        while len(self._pending) > 4 * self._threads:
            self._collect_one()

    def _keep(self, key: tuple[int, str], why: str | None) -> None:
        if why:
            self._found.append((key, why))

    def _collect_one(self) -> None:
        key, fut = self._pending.popleft()
        self._keep(key, fut.result())

    def finish(self) -> list[tuple[tuple[int, str], str]]:
        """Wait for every image submitted; returns ``(key, why)`` for each that failed, in submission order."""
        while self._pending:
            self._collect_one()
        if self._pool is not None:
            self._pool.shutdown()
        return self._found


def read_shard(
    fileobj: BinaryIO,
    name: str,
    num_classes: int,
    decode: bool = True,
    threads: int = 1,
    index: list[tuple[int, int]] | None = None,
    reopen: Callable[[], ContextManager[BinaryIO]] | None = None,
    expected_size: int | None = None,
    spec: LabelSpec | None = None,
) -> ShardResult:
    """Read one ``.rec`` stream front to back and check every record in it.

    ``index`` (the shard's parsed ``.idx``), ``reopen`` and ``expected_size``
    (the shard's size in the manifest) are only used to explain a framing
    error: when the record after a bad one starts where the ``.idx`` says, the
    bad one's length word is what is wrong.
    """
    result = ShardResult()
    reader = _HashingReader(fileobj)
    records = recordio.read_records(reader, name)  # type: ignore[arg-type]
    record_problems: list[tuple[int, Problem]] = []  # (record index, problem), sorted at the end
    decoder = _Decoder(threads if decode else 1)
    try:
        for i in itertools.count():
            start = reader.position
            try:
                raw = next(records)
            except StopIteration:
                break
            except recordio.RecordIOError as exc:
                result.framing_ok = False
                explanation = _explain_framing(result.entries, i, start, index, reopen, name, expected_size)
                record_problems.append((i, _framing_problem(exc, name, i, index, explanation)))
                break
            header, image, problem = _check_record(raw, i, name, num_classes, spec)
            if problem:
                record_problems.append((i, problem))
            if header is None:
                result.entries.append((-1, raw.offset))
                continue
            result.entries.append((header.id, raw.offset))
            result.flags[header.flag] += 1
            result.labels[header.id] = _labels_of(header)
            if decode:
                decoder.submit((i, _where(i, header.id, raw.offset)), image)
    finally:
        undecodable = decoder.finish()
    record_problems.extend((key[0], Problem(name, "%s: %s" % (key[1], why))) for key, why in undecodable)
    reader.drain()
    result.size = reader.position
    result.sha256 = reader.sha256()
    record_problems.sort(key=lambda t: t[0])
    result.problems.extend(p for _, p in record_problems)
    return result


def _check_record(
    raw: recordio.RawRecord, i: int, name: str, num_classes: int, spec: LabelSpec | None
) -> tuple[recordio.IRHeader | None, bytes, Problem | None]:
    """Record ``i``'s header (None: unreadable) and image, and what is wrong with its header or labels."""
    try:
        header, image = recordio.unpack(raw.payload)
    except recordio.RecordIOError as exc:
        return None, b"", Problem(name, "%s: %s" % (_where(i, None, raw.offset), exc))
    why = label_problem(_labels_of(header), num_classes, spec)
    return header, image, Problem(name, "%s: %s" % (_where(i, header.id, raw.offset), why)) if why else None


def _framing_problem(
    exc: recordio.RecordIOError, name: str, i: int, index: list[tuple[int, int]] | None, explanation: str
) -> Problem:
    """The framing error met while reading record ``i``, with the record's id per the ``.idx`` where known."""
    message = str(exc)
    if message.startswith(name + ": "):
        message = message[len(name) + 2 :]
    ident = ", id %d per the .idx" % index[i][0] if index is not None and i < len(index) else ""
    return Problem(name, "%s (reading record %d%s)%s" % (message, i, ident, explanation))


def _explain_framing(entries, i, start, index, reopen, name, expected_size) -> str:
    """Extra words for a framing error met at byte ``start`` while reading record ``i``.

    A wrong length word shows up as an error somewhere after it. The ``.idx``
    (and, for the last record, the shard size in the manifest) say where the
    records really start, which pins the error on the length word at fault.
    """
    if index is None or reopen is None:
        return ""

    def record_starts_at(offset: int) -> bool:
        if offset == expected_size:
            return True  # the end of the shard
        try:
            with reopen() as f:
                recordio.read_record_at(f, offset, name)
        except recordio.RecordIOError:
            return False
        return True

    if 0 < i < len(index) and entries and index[i][1] != start and record_starts_at(index[i][1]):
        prev_id, prev_offset = entries[i - 1]
        return (
            "; the length word of record %d (id %d) at byte %d is wrong: it ends that record at byte %d, "
            "but the .idx puts record %d at byte %d, where a valid record starts"
            % (i - 1, prev_id, prev_offset, start, i, index[i][1])
        )
    if i < len(index) and index[i][1] == start:
        following = index[i + 1][1] if i + 1 < len(index) else expected_size
        if following is None:
            return ""
        with reopen() as f:
            f.seek(start)
            head = f.read(8)
        if len(head) < 8:
            return ""
        magic, lrec = struct.unpack("<II", head)
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        if magic != recordio.MAGIC or cflag != recordio.FLAG_WHOLE:
            return ""
        end = start + 8 + ((length + 3) & ~3)
        if end != following and record_starts_at(following):
            where = "the next record starts at byte %d (per the .idx)" % following if i + 1 < len(index) else (
                "the shard ends at byte %d (per %s)" % (following, MANIFEST))
            return "; its length word at byte %d says %d bytes, but %s: the length word is wrong" % (
                start + 4, length, where)
    return ""


def compare_index(
    found: list[tuple[int, int]], index: list[tuple[int, int]], idx_name: str, complete: bool
) -> list[Problem]:
    """An ``.idx`` against the records it should describe (``complete``: every record was read)."""
    for line, (want, got) in enumerate(zip(found, index), 1):
        if want == got or (want[0] < 0 and want[1] == got[1]):  # unreadable header: reported already
            continue
        (rid, offset), (key, idx_offset) = want, got
        differ = sum(1 for a, b in zip(found, index) if a != b)
        more = " (%d lines differ in all)" % differ if differ > 1 else ""
        if idx_offset != offset:
            return [Problem(idx_name, "line %d: key %d points at byte %d, but record %d (id %d) starts at byte %d%s"
                            % (line, key, idx_offset, line - 1, rid, offset, more))]
        return [Problem(idx_name, "line %d: key %d, but the record at byte %d has id %d%s"
                        % (line, key, offset, rid, more))]
    if len(index) > len(found) and complete:
        key, offset = index[len(found)]
        return [Problem(idx_name, "line %d: key %d points at byte %d, but the shard has only %d records"
                        % (len(found) + 1, key, offset, len(found)))]
    if len(index) < len(found):
        rid, offset = found[len(index)]
        return [Problem(idx_name, "has %d lines but the shard has %d records; record %d (id %d) at byte %d is not indexed"
                        % (len(index), len(found), len(index), rid, offset))]
    return []


# ---------------------------------------------------------------- the whole output


def _read_index(uri: str, rel: str) -> tuple[list[tuple[int, int]] | None, Problem | None]:
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        return None, Problem(rel, "missing (listed in %s)" % MANIFEST)
    except UnicodeDecodeError:
        return None, Problem(rel, "is not a text file")
    try:
        return recordio.parse_idx(text, rel), None
    except recordio.RecordIOError as exc:
        message = str(exc)
        return None, Problem(rel, message[len(rel) :].lstrip(" :") if message.startswith(rel) else message)


def _read_lst(text: str, rel: str) -> tuple[dict[int, tuple[float, ...]], Problem | None]:
    out: dict[int, tuple[float, ...]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            out[int(fields[0])] = tuple(float(v) for v in fields[1:-1])
        except (ValueError, IndexError):
            return out, Problem(rel, "line %d: expected 'id<TAB>label(s)<TAB>path', got %r" % (lineno, line))
    return out, None


def load_manifest(out: str) -> tuple[dict | None, Problem | None]:
    try:
        text = storage.read_text(storage.join(out, MANIFEST))
    except FileNotFoundError:
        return None, Problem(MANIFEST, "missing: the job did not finish, or %s is not an output folder of this tool" % out)
    try:
        manifest = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, Problem(MANIFEST, "is not valid JSON (%s)" % exc)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict) or not isinstance(
        manifest.get("classes"), list
    ):
        return None, Problem(MANIFEST, "does not have the 'classes' and 'splits' this tool writes")
    return manifest, None


def verify_output(out: str, decode: bool = True, threads: int = 1) -> Report:
    """Check everything under ``out`` (a folder or an ``s3://`` prefix); returns the report."""
    report = Report(out)
    manifest, problem = load_manifest(out)
    if problem:
        report.problems.append(problem)
        return report
    classes = [str(c) for c in manifest["classes"]]
    report.classes = classes
    report.problems.extend(_check_class_files(out, classes))
    present = set(storage.list_recursive(out))
    reading = _Reading(out, classes, LabelSpec.from_manifest(manifest), decode, threads)
    listed: set[str] = set()
    for split, doc in manifest["splits"].items():
        check = _check_split(reading, split, doc, manifest)
        report.splits.append(split)
        report.counts[split] = check.counts
        report.layouts[split] = check.layout
        report.problems.extend(check.problems)
        report.shards += check.shards
        report.records += check.records
        listed |= _split_files(doc)
    report.problems.extend(_unlisted_files(present, listed, manifest))
    return report


def _check_class_files(out: str, classes: list[str]) -> list[Problem]:
    problems = []
    try:
        mapping = json.loads(storage.read_text(storage.join(out, CLASSES_JSON)))
        if mapping != {name: i for i, name in enumerate(classes)}:
            problems.append(Problem(CLASSES_JSON, "does not match the %d classes in %s" % (len(classes), MANIFEST)))
    except FileNotFoundError:
        problems.append(Problem(CLASSES_JSON, "missing"))
    except (ValueError, UnicodeDecodeError):
        problems.append(Problem(CLASSES_JSON, "is not valid JSON"))
    try:
        if storage.read_text(storage.join(out, LABELS_TXT)).splitlines() != classes:
            problems.append(Problem(LABELS_TXT, "does not list the classes of %s in label order" % MANIFEST))
    except FileNotFoundError:
        problems.append(Problem(LABELS_TXT, "missing"))
    except UnicodeDecodeError:
        problems.append(Problem(LABELS_TXT, "is not UTF-8 text"))
    return problems


@dataclass(frozen=True)
class _Reading:
    """What checking any shard of an output needs: where it is, its classes and label layout, how to decode."""

    out: str
    classes: list[str]
    spec: LabelSpec
    decode: bool
    threads: int


@dataclass(frozen=True)
class _ShardCheck:
    """What checking one shard that the manifest lists found."""

    problems: list[Problem]
    merged: list[tuple[int, int]]  # (key, offset in the shard) per record, as the merged index must give them
    result: ShardResult | None = None  # None: the .rec is missing


@dataclass(frozen=True)
class SplitCheck:
    """What checking one split found: its problems, images per class, the label layout of its records."""

    problems: list[Problem]
    counts: dict[str, int]  # class -> images (a multi-label image counts once for each of its classes)
    layout: str
    shards: int  # listed in the manifest
    records: int  # read from them


def _check_split(reading: _Reading, split: str, doc: dict, manifest: dict) -> SplitCheck:
    """Every shard of one split; then its totals and ``.lst`` (when every record was sound) and its merged index."""
    problems: list[Problem] = []
    seen_ids: dict[int, str] = {}  # record id -> the shard it was first found in
    labels_by_id: dict[int, tuple[float, ...]] = {}
    flags: collections.Counter = collections.Counter()
    merged_expected: list[tuple[int, int]] = []
    clean = True  # every record read and sound: the split-level totals can be compared
    records = 0
    shards = doc.get("shards", [])
    for shard, base in zip(shards, _shard_bases(shards)):
        check = _check_shard(reading, shard)
        problems.extend(check.problems)
        merged_expected.extend((key, base + offset) for key, offset in check.merged)
        if check.result is None:
            clean = False
            continue
        duplicates, first_seen = _duplicate_ids(check.result.entries, shard["rec"], split, seen_ids)
        problems.extend(duplicates)
        seen_ids.update(first_seen)
        clean = clean and not check.result.problems and not duplicates
        labels_by_id.update(check.result.labels)
        flags.update(check.result.flags)
        records += len(check.result.entries)
    counts = _class_counts(labels_by_id, reading.classes, reading.spec)
    if clean:
        problems.extend(_check_split_totals(reading.out, split, doc, manifest, reading.classes, counts, labels_by_id))
    problems.extend(_check_merged_index(reading.out, doc.get("merged_idx"), merged_expected))
    layout = describe_layout(flags, labels_by_id.values(), reading.spec)
    return SplitCheck(problems, counts, layout, len(shards), records)


def _split_files(doc: dict) -> set[str]:
    """The files a split's manifest entry names: its shards and their indexes, its merged index and list."""
    files = {rel for shard in doc.get("shards", []) for rel in (shard["rec"], shard["idx"])}
    return files | {rel for rel in (doc.get("merged_idx"), doc.get("lst")) if rel}


def _shard_bases(shards: list[dict]) -> Iterator[int]:
    """Where each shard starts in the offsets of the split's merged index: the sizes (per the manifest) before it."""
    return itertools.accumulate((int(shard.get("bytes", 0)) for shard in shards), initial=0)


def _check_shard(reading: _Reading, shard: dict) -> _ShardCheck:
    """One shard read front to back, then its ``.idx`` and its manifest entry checked against what was read."""
    rec_rel, idx_rel = shard["rec"], shard["idx"]
    index, idx_problem = _read_index(storage.join(reading.out, idx_rel), idx_rel)
    rec_uri = storage.join(reading.out, rec_rel)
    try:
        with storage.open_read(rec_uri) as f:
            result = read_shard(
                f, rec_rel, len(reading.classes), reading.decode, reading.threads, index,
                reopen=lambda: storage.open_read(rec_uri), expected_size=shard.get("bytes"), spec=reading.spec,
            )
    except FileNotFoundError:
        missing = Problem(rec_rel, "missing (listed in %s)" % MANIFEST)
        # The merged index can still be checked against this shard's own .idx.
        return _ShardCheck([missing] + ([idx_problem] if idx_problem else []), list(index or []))
    LOG.info("read %s: %d records, %d bytes", rec_rel, len(result.entries), result.size)
    problems = list(result.problems)
    if idx_problem:
        problems.append(idx_problem)
    elif index is not None:
        problems.extend(compare_index(result.entries, index, idx_rel, result.framing_ok))
    problems.extend(_manifest_mismatch(rec_rel, shard, result))
    # The merged index must describe the records as found; fall back to the
    # shard's .idx only where the records could not all be read.
    merged = result.entries if result.framing_ok or index is None else index
    return _ShardCheck(problems, list(merged), result)


def _manifest_mismatch(rec_rel: str, shard: dict, result: ShardResult) -> list[Problem]:
    """Where a shard as read differs from its manifest entry: its record count, then its size or its sha256."""
    problems = []
    if result.framing_ok and len(result.entries) != shard.get("records"):
        problems.append(Problem(rec_rel, "holds %d records, %s says %s"
                                % (len(result.entries), MANIFEST, shard.get("records"))))
    if result.size != shard.get("bytes"):
        problems.append(Problem(rec_rel, "is %d bytes, %s says %s%s" % (
            result.size, MANIFEST, shard.get("bytes"),
            " (truncated)" if isinstance(shard.get("bytes"), int) and result.size < shard["bytes"] else "")))
    elif result.sha256 != shard.get("sha256") and not result.problems:
        problems.append(Problem(rec_rel, "sha256 %s differs from %s (%s): the file was changed after it was written"
                                % (result.sha256, MANIFEST, shard.get("sha256"))))
    return problems


def _duplicate_ids(
    entries: list[tuple[int, int]], rec_rel: str, split: str, seen: Mapping[int, str]
) -> tuple[list[Problem], dict[int, str]]:
    """Records of a shard whose id is used already (``seen``: id -> shard), and the ids this shard uses first."""
    problems: list[Problem] = []
    first_seen: dict[int, str] = {}
    for n, (rid, offset) in enumerate(entries):
        if rid < 0:  # unreadable header: reported already
            continue
        also = seen.get(rid, first_seen.get(rid))
        if also is not None:
            problems.append(Problem(rec_rel, "%s: id %d is used twice in %s (also in %s)" % (
                _where(n, rid, offset), rid, split, also)))
        else:
            first_seen[rid] = rec_rel
    return problems, first_seen


def _class_counts(labels_by_id: Mapping[int, tuple[float, ...]], classes: list[str], spec: LabelSpec) -> dict[str, int]:
    """Images per class (a multi-label image counts once for each of its classes); labels out of place count nowhere."""
    counts: dict[str, int] = {name: 0 for name in classes}
    for labels in labels_by_id.values():
        if label_problem(labels, len(classes), spec) is None:
            for class_id in spec.class_ids(labels):
                counts[classes[class_id]] += 1
    return counts


def _check_merged_index(out: str, merged_rel: str | None, expected: list[tuple[int, int]]) -> list[Problem]:
    """A split's merged index against the entries its shards give (none to check when the manifest names none)."""
    if not merged_rel:
        return []
    merged, problem = _read_index(storage.join(out, merged_rel), merged_rel)
    if problem:
        return [problem]
    return _merged_mismatch(merged, expected, merged_rel) if merged != expected else []


def _check_split_totals(out, split, doc, manifest, classes, counts, labels_by_id) -> list[Problem]:
    problems = []
    total = len(labels_by_id)
    if doc.get("records") != total:
        problems.append(Problem(MANIFEST, "split %s: %s records listed, %d found in its shards" % (split, doc.get("records"), total)))
    expected = manifest.get("class_counts", {}).get(split)
    if expected is not None:
        for name in classes:
            if expected.get(name, 0) != counts[name]:
                problems.append(Problem(MANIFEST, "split %s, class %s: %d records listed in class_counts, %d found"
                                        % (split, name, expected.get(name, 0), counts[name])))
                break
    lst_rel = doc.get("lst")
    if lst_rel:
        try:
            lst, problem = _read_lst(storage.read_text(storage.join(out, lst_rel)), lst_rel)
        except FileNotFoundError:
            return problems + [Problem(lst_rel, "missing (listed in %s)" % MANIFEST)]
        if problem:
            return problems + [problem]
        for rid in sorted(set(lst) | set(labels_by_id)):
            if lst.get(rid) != labels_by_id.get(rid):
                problems.append(Problem(lst_rel, "id %d: label %s in the list, %s in the records" % (
                    rid, _fmt_labels(lst.get(rid)), _fmt_labels(labels_by_id.get(rid)))))
                break
    return problems


def _fmt_labels(labels) -> str:
    if labels is None:
        return "absent"
    return "/".join("%g" % v for v in labels)


def _merged_mismatch(merged, expected, rel) -> list[Problem]:
    for line, (got, want) in enumerate(zip(merged, expected), 1):
        if got != want:
            return [Problem(rel, "line %d: key %d at byte %d, but the shards' .idx files and sizes give key %d at byte %d"
                            % (line, got[0], got[1], want[0], want[1]))]
    return [Problem(rel, "has %d lines, the shards' .idx files have %d" % (len(merged), len(expected)))]


def _unlisted_files(present: Iterable[str], listed: set[str], manifest: dict) -> list[Problem]:
    """Shard files in the data folders that the manifest does not list (a reader given the folder would take them)."""
    problems = []
    data_tops = set(SPLITS) | set(manifest["splits"]) | {"idx"}
    for rel in sorted(present):
        if rel in listed or rel.startswith(WORK + "/"):
            continue
        if rel.split("/", 1)[0] in data_tops and rel.endswith((".rec", ".idx")):
            problems.append(Problem(rel, "is not listed in %s (left over from another run?)" % MANIFEST))
    return problems


# ---------------------------------------------------------------- what the labels look like


def describe_layout(flags: collections.Counter, labels: Iterable[tuple[float, ...]], spec: LabelSpec) -> str:
    """One line on the label layout a split's records hold: scalar or vectors (of which width), as found.

    ``flags``: IRHeader flag -> records (0: one scalar label; W: a vector of W labels).
    For vectors it adds the labels per record and the number of distinct label sets;
    a split whose records all carry the same labels is said to be so.
    """
    records = sum(flags.values())
    if not records:
        return "no records"
    if len(flags) > 1:
        parts = ["%d scalar" % n if flag == 0 else "%d of width %d" % (n, flag) for flag, n in sorted(flags.items())]
        return "mixed label layouts: %s records" % ", ".join(parts)
    (flag,) = flags
    sets = collections.Counter(tuple(v) for v in labels)
    if flag == 0:
        text = "scalar labels (one class id per record; IRHeader flag 0), %d distinct class%s" % (
            len(sets), "es" if len(sets) != 1 else "")
    else:
        kind = {"multi-hot": "multi-hot", "class-ids": "class-ids"}.get(spec.format, "label")
        per = [len(spec.class_ids(v)) for v in sets] if spec.format != "single" else [flag]
        text = "%s vectors of width %d (IRHeader flag %d), %s labels per record, %d distinct label set%s" % (
            kind, flag, flag, "%d" % min(per) if min(per) == max(per) else "%d-%d" % (min(per), max(per)),
            len(sets), "s" if len(sets) != 1 else "")
    if records > 1 and len(sets) == 1:
        (only,) = sets
        text += "; every record has the same labels (%s): check the label file and --labels-as" % _fmt_labels(only)
    return text


# ---------------------------------------------------------------- the table


def count_table(report: Report) -> str:
    """Records per class (rows) and split (columns), with totals."""
    splits = report.splits
    width = max([len("class"), len("total")] + [len(c) for c in report.classes])
    cols = [max(len(s), 7) for s in splits]
    head = "%-*s" % (width, "class") + "".join("  %*s" % (w, s) for w, s in zip(cols, splits)) + "  %7s" % "total"
    lines = [head, "-" * len(head)]
    totals = [0] * len(splits)
    for name in report.classes:
        row = [report.counts.get(s, {}).get(name, 0) for s in splits]
        totals = [t + n for t, n in zip(totals, row)]
        lines.append("%-*s" % (width, name) + "".join("  %*d" % (w, n) for w, n in zip(cols, row)) + "  %7d" % sum(row))
    lines.append("-" * len(head))
    lines.append("%-*s" % (width, "total") + "".join("  %*d" % (w, n) for w, n in zip(cols, totals)) + "  %7d" % sum(totals))
    return "\n".join(lines) + "\n"
