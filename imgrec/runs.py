"""Sorted runs of image refs on local disk: how the local runner plans without holding every ref.

A *run* is one file holding refs sorted by ``(key, relpath)``: a listing task
writes one run per class folder (or per few tens of thousands of refs), and a
shard task later reads just the refs of its key range from every run. Between
the two only counts travel, so the job's memory is bounded by the refs of one
run or one key range, never by the whole collection (what a runner's shuffle
would hold in memory on the local runner).

File layout (little-endian)::

    b"IMGRUN1\\n"          magic, 8 bytes
    n, text_bytes         two uint64
    keys[n]               uint64, sorted
    sizes[n]              uint64, the input file sizes
    offsets[n + 1]        uint64, where each ref's text starts in the text block
    text                  per ref: relpath, version, labels (joined by US, 0x1f), sha256 -- tab-separated

The arrays are read with ``numpy`` straight from a memory map, so counting the
refs of a key range (``np.searchsorted``) touches only the keys, and reading a
range decodes only its own text. Pure code: no Beam, local files only.
"""

from __future__ import annotations

import mmap
import os
import uuid
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

MAGIC = b"IMGRUN1\n"
_HEADER = 8 + 16
_U8 = np.dtype("<u8")
LABEL_SEP = "\x1f"  # between the labels of a multi-label image; refused in class names
_FIELD_SEP = "\t"


class RunRef(NamedTuple):
    """One image in a run: enough to plan it and to read it again."""

    key: int  # the 64-bit key that orders records and decides split and shard
    relpath: str  # the image's path relative to the input root (its .lst path)
    size: int  # bytes of the input file when it was listed
    version: str = ""  # what changes when the file changes in place (mtime, ETag): --resume compares it
    labels: str = ""  # class names joined by LABEL_SEP
    sha: str = ""  # content sha256 when it was hashed (--check-duplicates)


def label_names(ref: RunRef) -> tuple[str, ...]:
    return tuple(ref.labels.split(LABEL_SEP)) if ref.labels else ()


def join_labels(names: Iterable[str]) -> str:
    return LABEL_SEP.join(names)


def write_run(path: str, refs: Sequence[RunRef], presorted: bool = False) -> int:
    """Write ``refs`` as a run at ``path`` (atomically: complete or absent); returns the ref count."""
    ordered = list(refs) if presorted else sorted(refs, key=_order)
    n = len(ordered)
    text_parts = [
        ("%s\t%s\t%s\t%s" % (r.relpath, r.version, r.labels, r.sha)).encode("utf-8", "surrogateescape")
        for r in ordered
    ]
    lengths = np.fromiter(map(len, text_parts), dtype=_U8, count=n)
    offsets = np.zeros(n + 1, dtype=_U8)
    np.cumsum(lengths, out=offsets[1:])
    keys = np.fromiter((r.key for r in ordered), dtype=_U8, count=n)
    sizes = np.fromiter((r.size for r in ordered), dtype=_U8, count=n)
    tmp = "%s.tmp-%s" % (path, uuid.uuid4().hex[:8])
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(np.array([n, int(offsets[-1])], dtype=_U8).tobytes())
            f.write(keys.tobytes())
            f.write(sizes.tobytes())
            f.write(offsets.tobytes())
            f.write(b"".join(text_parts))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return n


def _order(ref: RunRef):
    return (ref.key, ref.relpath)


class RunError(ValueError):
    """A run file that is not what this module wrote (the scratch folder was tampered with)."""


class Run:
    """A run opened for reading (memory-mapped; close it, or use it as a context manager)."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _HEADER:
                raise RunError("%s: too short for a run (%d bytes)" % (path, size))
            self._map = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        if self._map[:8] != MAGIC:
            self._map.close()
            raise RunError("%s is not a run file" % path)
        n, text_bytes = np.frombuffer(self._map, dtype=_U8, count=2, offset=8).tolist()
        expected = _HEADER + 8 * (3 * n + 1) + text_bytes
        if size != expected:
            self._map.close()
            raise RunError("%s: %d bytes, expected %d for %d refs" % (path, size, expected, n))
        self.n = n
        base = _HEADER
        self.keys = np.frombuffer(self._map, dtype=_U8, count=n, offset=base)
        self.sizes = np.frombuffer(self._map, dtype=_U8, count=n, offset=base + 8 * n)
        self.offsets = np.frombuffer(self._map, dtype=_U8, count=n + 1, offset=base + 16 * n)
        self._text_start = base + 8 * (3 * n + 1)

    def __len__(self) -> int:
        return self.n

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """The index range ``[i, j)`` of the refs whose keys lie in ``[lo, hi)``."""
        keys = self.keys
        return int(np.searchsorted(keys, np.uint64(lo), "left")), (
            self.n if hi >= 1 << 64 else int(np.searchsorted(keys, np.uint64(hi), "left"))
        )

    def refs(self, i: int, j: int) -> list[RunRef]:
        """Refs ``i .. j-1`` decoded."""
        if j <= i:
            return []
        offsets = self.offsets[i:j + 1].tolist()
        start = self._text_start
        blob = self._map[start + offsets[0]:start + offsets[-1]].decode("utf-8", "surrogateescape")
        base = offsets[0]
        keys = self.keys[i:j].tolist()
        sizes = self.sizes[i:j].tolist()
        out = []
        for k in range(j - i):
            relpath, version, labels, sha = blob[offsets[k] - base:offsets[k + 1] - base].split(_FIELD_SEP)
            out.append(RunRef(keys[k], relpath, sizes[k], version, labels, sha))
        return out

    def close(self) -> None:
        # the numpy views must go first: an exported buffer keeps the map open
        self.keys = self.sizes = self.offsets = None
        self._map.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_range(paths: Iterable[str], lo: int, hi: int) -> list[RunRef]:
    """Every ref with a key in ``[lo, hi)`` from the runs at ``paths``, in ``(key, relpath)`` order."""
    out: list[RunRef] = []
    for path in paths:
        with Run(path) as run:
            i, j = run.span(lo, hi)
            out.extend(run.refs(i, j))
    out.sort(key=_order)
    return out


def count_ranges(paths: Iterable[str], bounds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Refs and input bytes per range ``[bounds[i], bounds[i+1])`` over all the runs at ``paths``.

    ``bounds`` ascending; the last may be ``1 << 64`` (the end of the key space).
    """
    edges = np.array([min(b, (1 << 64) - 1) for b in bounds], dtype=_U8)
    top_is_end = bounds[-1] >= 1 << 64
    counts = np.zeros(len(bounds) - 1, dtype=np.int64)
    nbytes = np.zeros(len(bounds) - 1, dtype=np.int64)
    for path in paths:
        with Run(path) as run:
            idx = np.searchsorted(run.keys, edges, "left")
            if top_is_end:
                idx[-1] = run.n
            counts += np.diff(idx)
            cum = np.concatenate(([0], np.cumsum(run.sizes, dtype=np.int64)))
            nbytes += np.diff(cum[idx])
    return counts, nbytes


def iter_keys(paths: Iterable[str]) -> Iterator[np.ndarray]:
    """Each run's sorted keys (a copy: the run is closed when the next is opened)."""
    for path in paths:
        with Run(path) as run:
            yield np.array(run.keys)
