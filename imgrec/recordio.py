"""MXNet RecordIO, written and read in pure Python.

Two layers, as in MXNet itself:

* framing (dmlc-core ``src/recordio.cc``): every record starts with the magic
  word ``0xced7230a`` and a length word whose top 3 bits are a continuation
  flag, followed by the payload and zero padding to a multiple of 4 bytes.
  A payload that contains the magic word at a 4-byte-aligned offset is cut
  there into parts (flag 1 = first, 2 = middle, 3 = last) and the magic word
  itself is dropped from the data; the reader puts it back between parts.
* the image record payload (``mx.recordio.pack``): a 24-byte ``IRHeader``
  ``<IfQQ`` (flag, label, id, id2); when ``flag > 0`` the float32 label vector
  of ``flag`` values follows the header and the scalar label is 0.

No Beam and no storage policy here: the writer streams into any binary file
object, so the same code writes to local disk and to S3 multipart uploads.
"""

from __future__ import annotations

import hashlib
import queue
import struct
import threading
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Sequence

import numpy as np

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
# dmlc-core refuses records of 2**29 bytes or more: the length word keeps its
# top 3 bits for the continuation flag.
MAX_RECORD_BYTES = (1 << 29) - 1
_LENGTH_MASK = (1 << 29) - 1

FLAG_WHOLE, FLAG_FIRST, FLAG_MIDDLE, FLAG_LAST = 0, 1, 2, 3

_IRHEADER = struct.Struct("<IfQQ")
IRHEADER_SIZE = _IRHEADER.size  # 24


class RecordIOError(ValueError):
    """A RecordIO file or payload that does not follow the format."""


@dataclass(frozen=True)
class IRHeader:
    """The image record header of ``mx.recordio``: flag, label(s), id, id2."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int = 0


def pack_header(label: float | Sequence[float], record_id: int, id2: int = 0) -> bytes:
    """The bytes ``mx.recordio.pack`` puts before the image bytes.

    A scalar label gives flag 0; a sequence of labels gives flag = its length,
    the scalar label 0 and the labels as float32 after the header.
    """
    if isinstance(label, (int, float)):
        return _IRHEADER.pack(0, float(label), record_id, id2)
    labels = tuple(float(v) for v in label)
    return _IRHEADER.pack(len(labels), 0.0, record_id, id2) + struct.pack(
        "<%df" % len(labels), *labels
    )


def pack(label: float | Sequence[float], record_id: int, image: bytes, id2: int = 0) -> bytes:
    """``mx.recordio.pack(IRHeader(0, label, record_id, id2), image)``."""
    return pack_header(label, record_id, id2) + image


def unpack(payload: bytes) -> tuple[IRHeader, bytes]:
    """Split a record payload into its header and image bytes (``mx.recordio.unpack``)."""
    if len(payload) < IRHEADER_SIZE:
        raise RecordIOError(
            "record payload of %d bytes is shorter than the %d-byte IRHeader"
            % (len(payload), IRHEADER_SIZE)
        )
    flag, label, rid, id2 = _IRHEADER.unpack_from(payload)
    body = payload[IRHEADER_SIZE:]
    if flag > 0:
        need = 4 * flag
        if len(body) < need:
            raise RecordIOError(
                "record declares %d labels but has only %d bytes after its header"
                % (flag, len(body))
            )
        labels = struct.unpack_from("<%df" % flag, body)
        return IRHeader(flag, labels, rid, id2), body[need:]
    return IRHeader(flag, label, rid, id2), body


def _length_word(cflag: int, length: int) -> bytes:
    return struct.pack("<I", (cflag << 29) | length)


_WORD = np.dtype("<u4")


def aligned_magic_offsets(payload: bytes) -> list[int]:
    """Byte offsets of the magic word at 4-byte-aligned positions of ``payload``.

    Only aligned occurrences split a record. Comparing the payload as an array
    of 32-bit words is about 7x faster than ``bytes.find`` (which also stops at
    every unaligned match) and, unlike it, does not hold the GIL per match.
    """
    words = len(payload) // 4
    if not words:
        return []
    hits = np.flatnonzero(np.frombuffer(payload, dtype=_WORD, count=words) == MAGIC)
    return (hits * 4).tolist()


def frame(payload: bytes) -> list[bytes]:
    """The byte pieces dmlc-core's ``RecordIOWriter::WriteRecord`` writes for ``payload``.

    Returned as a list of pieces (joined by the caller or written one by one)
    so that a multi-megabyte payload is never copied just to be framed.
    """
    size = len(payload)
    if size > MAX_RECORD_BYTES:
        raise RecordIOError(
            "record of %d bytes is too large for RecordIO (limit %d bytes)" % (size, MAX_RECORD_BYTES)
        )
    pieces: list[bytes] = []
    view = memoryview(payload)
    start = 0  # first byte of the part being built (dmlc-core's dptr)
    for pos in aligned_magic_offsets(payload):
        pieces.append(MAGIC_BYTES)
        pieces.append(_length_word(FLAG_FIRST if start == 0 else FLAG_MIDDLE, pos - start))
        if pos != start:
            pieces.append(view[start:pos])
        start = pos + 4
    pieces.append(MAGIC_BYTES)
    pieces.append(_length_word(FLAG_LAST if start != 0 else FLAG_WHOLE, size - start))
    if start != size:
        pieces.append(view[start:] if start else payload)
    pad = -size % 4
    if pad:
        pieces.append(b"\0" * pad)
    return pieces


# Below this size the magic word is looked for with bytes.find (one C call, no array set-up);
# above it with numpy, whose comparison runs without the GIL.
_FIND_BELOW = 16 << 10


def _has_aligned_magic(data) -> bool:
    if len(data) >= _FIND_BELOW:
        return bool(aligned_magic_offsets(data))
    pos = data.find(MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:
            return True
        pos = data.find(MAGIC_BYTES, pos + 1)
    return False


def frame_parts(head: bytes, body) -> list:
    """``frame(head + body)`` without copying ``body`` (the image bytes) into one payload first.

    ``head`` is the IRHeader and its label vector, a multiple of 4 bytes long, so
    every 4-byte-aligned word of the payload lies wholly in one of the two. The
    rare payload with an aligned magic word is framed by ``frame`` itself.
    """
    if len(head) % 4 or MAGIC_BYTES in head or _has_aligned_magic(body):
        return frame(bytes(head) + bytes(body))
    size = len(head) + len(body)
    if size > MAX_RECORD_BYTES:
        raise RecordIOError("record of %d bytes is too large for RecordIO (limit %d bytes)" % (size, MAX_RECORD_BYTES))
    pieces = [MAGIC_BYTES + _length_word(FLAG_WHOLE, size) + head, body]
    pad = -size % 4
    if pad:
        pieces.append(b"\0" * pad)
    return pieces


def framed_size(pieces: Sequence[bytes]) -> int:
    return sum(len(p) for p in pieces)


class RecordWriter:
    """Streams framed records into a binary file object and tracks what it wrote.

    ``write`` returns the byte offset of the record's first byte, the value the
    ``.idx`` file stores. The sha256 of everything written is kept as it goes,
    so a shard's checksum costs no second read.

    With ``background=True`` the hashing and the writes run on two threads of
    their own, fed in chunks of about ``CHUNK`` bytes: both release the GIL, so
    they overlap with the caller's reading and packing of the next records.
    Call ``close()`` (or use the writer as a context manager) before reading
    ``sha256()``; a write error from the thread is raised there or by the next
    ``write``.
    """

    CHUNK = 1 << 20

    def __init__(self, fileobj: BinaryIO, background: bool = False):
        self._out = fileobj
        self._hash = hashlib.sha256()
        self.offset = 0
        self.records = 0
        self._sink = _Sink(fileobj, self._hash, self.CHUNK) if background else None

    def write(self, payload: bytes) -> int:
        start = self.offset
        pieces = frame(payload)
        # Magic word and length word as one 8-byte piece: a whole record then
        # costs three write and hash calls (head, payload, pad) instead of four.
        pieces[0:2] = [pieces[0] + pieces[1]]
        if self._sink is not None:
            self.offset += self._sink.add(pieces)
        else:
            write, update = self._out.write, self._hash.update
            for piece in pieces:
                write(piece)
                update(piece)
                self.offset += len(piece)
        self.records += 1
        return start

    def close(self) -> None:
        """Wait until every record is hashed and handed to the file object."""
        if self._sink is not None:
            self._sink.close()

    def abort(self) -> None:
        """Stop the background thread without waiting for what is queued (after an error)."""
        if self._sink is not None:
            self._sink.close(abort=True)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def sha256(self) -> str:
        if self._sink is not None and not self._sink.closed:
            raise RuntimeError("RecordWriter.sha256() before close()")
        return self._hash.hexdigest()


class _Sink:
    """Two threads in a row: one joins and hashes each chunk of pieces, the next writes it.

    Hashing (about 0.5 s per GB here) and writing into the page cache (about as
    much) both release the GIL; on their own threads they overlap with each other
    and with the caller's reading and packing.
    """

    def __init__(self, fileobj: BinaryIO, hasher, chunk: int):
        self._out = fileobj
        self._hash = hasher
        self._chunk = chunk
        self._pending: list = []
        self._pending_bytes = 0
        # a few chunks in flight per stage: memory stays bounded whatever the shard size
        self._to_hash: queue.Queue = queue.Queue(maxsize=4)
        self._to_write: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self.closed = False
        self._threads = [
            threading.Thread(target=self._stage, args=(self._to_hash, self._hash_chunk, self._to_write),
                             name="record-hash", daemon=True),
            threading.Thread(target=self._stage, args=(self._to_write, self._out.write, None),
                             name="record-write", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def add(self, pieces: list) -> int:
        if self._error is not None:
            raise self._error
        size = 0
        for piece in pieces:
            size += len(piece)
        self._pending.extend(pieces)
        self._pending_bytes += size
        if self._pending_bytes >= self._chunk:
            self._flush()
        return size

    def _flush(self) -> None:
        if self._pending:
            self._put(self._pending)
            self._pending, self._pending_bytes = [], 0

    def _put(self, item) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._to_hash.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _hash_chunk(self, pieces: list) -> bytes:
        data = b"".join(pieces)
        self._hash.update(data)
        return data

    def _stage(self, source: queue.Queue, work, sink: queue.Queue | None) -> None:
        while True:
            item = source.get()
            if item is not None and self._error is None:
                try:
                    item = work(item)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                    self._error = exc
                    continue  # keep draining, so that nobody waits on a full queue
            elif item is not None:
                continue  # drain after a failure
            if sink is not None:
                sink.put(item)  # None passes on: the next stage stops after this one
            if item is None:
                return

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if not abort:
            self._flush()
        self._to_hash.put(None)
        for thread in self._threads:
            thread.join()
        if self._error is not None and not abort:
            raise self._error


@dataclass(frozen=True)
class RawRecord:
    """One record as found in a file: where it starts and its joined payload."""

    offset: int
    payload: bytes


def _read_record(fileobj: BinaryIO, pos: int, name: str) -> tuple[bytes, int] | None:
    """Read the record starting at byte ``pos`` (the stream's position).

    Returns its joined payload and the position after it, or ``None`` at a
    clean end of stream. Every framing problem raises ``RecordIOError`` naming
    the file and byte offset.
    """
    parts: list[bytes] = []
    start = pos
    while True:
        head = fileobj.read(8)
        if not head:
            if parts:
                raise RecordIOError("%s: record at byte %d ends before its last part" % (name, start))
            return None
        if len(head) < 8:
            raise RecordIOError("%s: truncated record header at byte %d" % (name, pos))
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(
                "%s: bad magic 0x%08x at byte %d (expected 0x%08x)" % (name, magic, pos, MAGIC)
            )
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        if cflag > FLAG_LAST:
            raise RecordIOError("%s: invalid continuation flag %d at byte %d" % (name, cflag, pos))
        if bool(parts) != (cflag in (FLAG_MIDDLE, FLAG_LAST)):
            raise RecordIOError(
                "%s: continuation flag %d out of sequence at byte %d" % (name, cflag, pos)
            )
        padded = (length + 3) & ~3
        data = fileobj.read(padded)
        if len(data) < padded:
            raise RecordIOError(
                "%s: record part at byte %d is truncated (%d of %d bytes present)"
                % (name, pos, len(data), padded)
            )
        if padded != length and any(data[length:]):
            raise RecordIOError("%s: non-zero padding after record part at byte %d" % (name, pos))
        pos += 8 + padded
        if cflag in (FLAG_WHOLE, FLAG_LAST):
            parts.append(data[:length] if padded != length else data)
            return b"".join(parts), pos
        parts.append(data[:length] if padded != length else data)
        parts.append(MAGIC_BYTES)


def read_records(fileobj: BinaryIO, name: str = "<stream>") -> Iterator[RawRecord]:
    """Yield every record of a RecordIO stream, checking the framing strictly."""
    pos = 0
    while True:
        got = _read_record(fileobj, pos, name)
        if got is None:
            return
        payload, end = got
        yield RawRecord(pos, payload)
        pos = end


def read_record_at(fileobj: BinaryIO, offset: int, name: str = "<stream>") -> bytes:
    """The payload of the record starting at ``offset`` (random access through an ``.idx``)."""
    fileobj.seek(offset)
    got = _read_record(fileobj, offset, name)
    if got is None:
        raise RecordIOError("%s: no record at byte %d (end of file)" % (name, offset))
    return got[0]


def format_idx_line(key: int, offset: int) -> str:
    """One ``.idx`` line as ``MXIndexedRecordIO.write_idx`` writes it."""
    return "%d\t%d\n" % (key, offset)


def parse_idx(text: str, name: str = "<idx>") -> list[tuple[int, int]]:
    """``(key, offset)`` pairs of an ``.idx`` file, in file order."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise RecordIOError("%s line %d: expected 'key<TAB>offset', got %r" % (name, lineno, line))
        try:
            entries.append((int(fields[0]), int(fields[1])))
        except ValueError:
            raise RecordIOError(
                "%s line %d: key and offset must be integers, got %r" % (name, lineno, line)
            ) from None
    return entries
