"""im2rec.py's behaviour (mxnet 1.9.1 ``tools/im2rec.py``) as plain functions, no Beam.

List mode: the folder walk and its label numbering (each folder that directly
holds images gets the next number in the walk's sorted order), the ``%f`` label
format, the chunking, the ``_train``/``_val``/``_test`` names and the shuffle
(``random.seed(100)`` then ``random.shuffle``) reproduce im2rec.py's ``.lst``
files byte for byte. Where that numbering surprises (a folder inside a class
folder gets a label of its own), ``nested_label_warnings`` says so; the files
stay as im2rec.py writes them.

Record mode: ``.lst`` parsing with im2rec.py's rules (tab-separated, at least
three fields, ``int`` id, ``float`` labels, path last), the record label rule of
``--pack-label``, and the per-image work (read, check, optionally re-encode,
pack) that the Beam stage calls. Every name this mode writes comes from one of
the ``*_name`` helpers here.
"""

from __future__ import annotations

import os
import posixpath
import random
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, NamedTuple, Sequence

from imgrec import images, recordio, storage

DEFAULT_EXTS = (".jpeg", ".jpg", ".png")  # im2rec.py's --exts default, in its order
SHUFFLE_SEED = 100  # im2rec.py: random.seed(100)

LABELS_SUFFIX = "_labels.txt"  # PREFIX_labels.txt: the folder -> label map im2rec.py only prints
ERRORS_SUFFIX = ".errors.jsonl"  # beside each .rec: the inputs that did not become records
WORK_MARK = ".im2rec-work-"  # temporary fragments, beside the outputs, removed at the end
# Nested label folders are named one warning line each up to this many, then counted.
MAX_NESTED_WARNINGS = 20


# ---------------------------------------------------------------- names


def labels_name(prefix: str) -> str:
    return prefix + LABELS_SUFFIX


def rec_name(lst_path: str) -> str:
    return _strip_ext(lst_path) + ".rec"


def idx_name(lst_path: str) -> str:
    return _strip_ext(lst_path) + ".idx"


def errors_name(lst_path: str) -> str:
    return _strip_ext(lst_path) + ERRORS_SUFFIX


def _strip_ext(path: str) -> str:
    # im2rec.py: os.path.splitext(basename)[0]; splitext only looks at the last component.
    return posixpath.splitext(path)[0]


# ---------------------------------------------------------------- list mode


class ListEntry(NamedTuple):
    """One image of a listing: im2rec.py's ``(i, relpath, label)`` item."""

    index: int
    relpath: str
    label: int


@dataclass(frozen=True)
class Listing:
    entries: list[ListEntry]
    label_dirs: list[tuple[str, int]]  # (folder relative to ROOT, "." for ROOT itself; label)
    warnings: list[str]  # folders or files the walk could not use, one line each


def has_ext(name: str, exts: Sequence[str]) -> bool:
    """im2rec.py's test: the lower-cased extension must be in ``exts`` as given."""
    return os.path.splitext(name)[1].lower() in exts


def walk_local(root: str, recursive: bool, exts: Sequence[str]) -> Listing:
    """im2rec.py's ``list_image`` on a local folder (``os.walk``, links followed, sorted)."""
    entries: list[ListEntry] = []
    warnings: list[str] = []
    if not recursive:
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if os.path.isfile(path) and has_ext(name, exts):
                entries.append(ListEntry(len(entries), os.path.relpath(path, root), 0))
        return Listing(entries, [(".", 0)] if entries else [], warnings)

    cat: dict[str, int] = {}
    # Folder identities on the way down from ROOT: a link back to one of them
    # would make os.walk(followlinks=True) descend forever.
    chain: dict[str, frozenset] = {}

    def on_error(exc: OSError) -> None:
        warnings.append("cannot list %s: %s" % (exc.filename, exc.strerror or exc))

    for path, dirs, files in os.walk(root, onerror=on_error, followlinks=True):
        dirs.sort()
        files.sort()
        here = chain.get(os.path.dirname(path), frozenset()) | {_identity(path)}
        chain[path] = here
        for d in list(dirs):
            if _identity(os.path.join(path, d)) in here:
                warnings.append("not following %s: it links back to a folder above it" % os.path.join(path, d))
                dirs.remove(d)
        for name in files:
            fpath = os.path.join(path, name)
            if not has_ext(name, exts):
                continue
            if not os.path.isfile(fpath):
                warnings.append("not listed %s: not a regular file (broken link?)" % fpath)
                continue
            if path not in cat:
                cat[path] = len(cat)
            entries.append(ListEntry(len(entries), os.path.relpath(fpath, root), cat[path]))
    label_dirs = [(os.path.relpath(k, root), v) for k, v in sorted(cat.items(), key=lambda kv: kv[1])]
    return Listing(entries, label_dirs, warnings)


def _identity(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def walk_order_key(relpath: str) -> tuple:
    """Sort key that orders relative file paths the way ``os.walk`` with sorted
    ``dirs`` and ``files`` visits them: a folder's files first, then its
    sub-folders one after another."""
    parts = relpath.split("/")
    return tuple((1, p) for p in parts[:-1]) + ((0, parts[-1]),)


def listing_from_paths(relpaths: Iterable[str], recursive: bool, exts: Sequence[str]) -> Listing:
    """``list_image`` over a flat listing of file paths (an ``s3://`` prefix has no folders to walk)."""
    paths = [p for p in relpaths if p and not p.endswith("/")]
    if not recursive:
        top = sorted(p for p in paths if "/" not in p and has_ext(p, exts))
        entries = [ListEntry(i, p, 0) for i, p in enumerate(top)]
        return Listing(entries, [(".", 0)] if entries else [], [])
    entries = []
    cat: dict[str, int] = {}
    for p in sorted(paths, key=walk_order_key):
        if not has_ext(posixpath.basename(p), exts):
            continue
        folder = posixpath.dirname(p) or "."
        if folder not in cat:
            cat[folder] = len(cat)
        entries.append(ListEntry(len(entries), p, cat[folder]))
    return Listing(entries, sorted(cat.items(), key=lambda kv: kv[1]), [])


def nested_label_warnings(label_dirs: Sequence[tuple[str, int]]) -> list[str]:
    """One line per folder that im2rec.py labels apart from a labelled folder above it.

    im2rec.py gives every folder that directly holds images the next label, so
    ``056.dog/greg/`` inside ``056.dog/`` becomes a class of its own and every
    folder after it is numbered one higher. ROOT's own images (``.``) are not
    counted as a folder above the others.
    """
    labelled = {folder.replace(os.sep, "/"): label for folder, label in label_dirs}
    lines = []
    for folder, label in label_dirs:
        parts = folder.replace(os.sep, "/").split("/")
        above = next(("/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if "/".join(parts[:i]) in labelled), None)
        if above is None:
            continue
        lines.append(
            "%s holds images and gets its own label %d, apart from %s (label %d): im2rec.py labels every folder that "
            "holds images, so each folder listed after it is numbered one higher; move its images into %s to give "
            "them its label (the lists are written as im2rec.py writes them)"
            % (folder, label, above, labelled[above], above)
        )
    if len(lines) > MAX_NESTED_WARNINGS:
        more = len(lines) - MAX_NESTED_WARNINGS
        lines = lines[:MAX_NESTED_WARNINGS] + ["... and %d more folders nested in labelled folders get labels of their own" % more]
    return lines


def shuffled(entries: Sequence[ListEntry], shuffle: bool) -> list[ListEntry]:
    """im2rec.py's order: ``random.seed(100); random.shuffle(list)`` unless --no-shuffle."""
    out = list(entries)
    if shuffle:
        # A private generator with the same seed draws the same sequence as the
        # module-level one im2rec.py seeds, without touching global state.
        random.Random(SHUFFLE_SEED).shuffle(out)
    return out


def split_lists(
    entries: Sequence[ListEntry], prefix: str, chunks: int, train_ratio: float, test_ratio: float
) -> list[tuple[str, list[ListEntry]]]:
    """``make_list``'s files and their entries: the same slicing, arithmetic and names."""
    n = len(entries)
    chunk_size = (n + chunks - 1) // chunks
    out = []
    for i in range(chunks):
        chunk = list(entries[i * chunk_size : (i + 1) * chunk_size])
        base = prefix + ("_%d" % i if chunks > 1 else "")
        # im2rec.py sizes every part from chunk_size, not from the (shorter) last chunk.
        sep = int(chunk_size * train_ratio)
        sep_test = int(chunk_size * test_ratio)
        if train_ratio == 1.0:
            out.append((base + ".lst", chunk))
            continue
        if test_ratio:
            out.append((base + "_test.lst", chunk[:sep_test]))
        if train_ratio + test_ratio < 1.0:
            out.append((base + "_val.lst", chunk[sep_test + sep :]))
        out.append((base + "_train.lst", chunk[sep_test : sep_test + sep]))
    return out


def unlistable(relpath: str) -> bool:
    """A path a ``.lst`` line cannot hold (the line is tab-separated and newline-terminated)."""
    return any(c in relpath for c in "\t\n\r")


def format_lst(entries: Iterable[ListEntry]) -> str:
    """``write_list``: ``index<TAB>label as %f<TAB>path``, one line per image."""
    return "".join("%d\t%f\t%s\n" % (e.index, e.label, e.relpath) for e in entries)


def format_label_map(label_dirs: Iterable[tuple[str, int]]) -> str:
    """The lines im2rec.py prints after the walk: ``folder label`` (the label is the last field)."""
    return "".join("%s %d\n" % (folder, label) for folder, label in label_dirs)


def encode_text(text: str) -> bytes:
    # Names that are not valid UTF-8 come back from os.walk as surrogate
    # escapes; writing them back as the original bytes keeps the path usable.
    return text.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------- .lst reading


class LstItem(NamedTuple):
    """One parsed ``.lst`` line: im2rec.py's ``[id, path, *labels]``, plus where it was."""

    id: int
    path: str
    labels: tuple[float, ...]
    line: int  # 1-based line number in the .lst


class LstLineError(NamedTuple):
    line: int
    text: str
    detail: str


def parse_lst_line(text: str, line: int) -> LstItem | LstLineError | None:
    """``read_list``'s parsing of one line; ``None`` for a blank line (no image, nothing lost)."""
    if not text.strip():
        return None
    fields = [f.strip() for f in text.strip().split("\t")]
    if len(fields) < 3:
        detail = "expected index, label(s) and path separated by tabs, got %d field(s)" % len(fields)
        return LstLineError(line, text, detail)
    try:
        return LstItem(int(fields[0]), fields[-1], tuple(float(v) for v in fields[1:-1]), line)
    except ValueError as exc:
        return LstLineError(line, text, "cannot parse index or label: %s" % exc)


def split_lines(text: str) -> list[str]:
    """Lines as Python's universal-newline reading (``open(path)``) yields them."""
    if not text:
        return []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def parse_lst(data: bytes, first_line: int = 1) -> Iterator[LstItem | LstLineError]:
    """Every non-blank line of a ``.lst`` (or a slice of one starting at ``first_line``)."""
    text = data.decode("utf-8", "surrogateescape")
    for n, line in enumerate(split_lines(text), first_line):
        parsed = parse_lst_line(line, n)
        if parsed is not None:
            yield parsed


class ByteRange(NamedTuple):
    """A slice of a ``.lst`` that starts and ends on line boundaries."""

    start: int
    end: int
    first_line: int


COPY_BLOCK = 1 << 20


def count_lines(fileobj: BinaryIO) -> int:
    """Lines in a stream: newline bytes, plus a last line without one."""
    count, last = 0, b""
    while True:
        block = fileobj.read(COPY_BLOCK)
        if not block:
            break
        count += block.count(b"\n")
        last = block[-1:]
    return count + (1 if last not in (b"", b"\n") else 0)


def line_ranges(fileobj: BinaryIO, lines_per_range: int) -> list[ByteRange]:
    """Cut a ``.lst`` stream into ranges of ``lines_per_range`` lines, by streaming it once.

    Cuts are made just after a ``\\n`` so no line (nor a ``\\r\\n`` pair) is
    split. At least one range is returned, so an empty list still gets its
    (empty) ``.rec`` and ``.idx`` like im2rec.py writes.
    """
    if lines_per_range < 1:
        raise ValueError("lines_per_range must be at least 1")
    ranges: list[ByteRange] = []
    start, pos, lines_in, line_no = 0, 0, 0, 1
    while True:
        block = fileobj.read(COPY_BLOCK)
        if not block:
            break
        i = block.find(b"\n")
        while i != -1:
            lines_in += 1
            if lines_in == lines_per_range:
                ranges.append(ByteRange(start, pos + i + 1, line_no))
                start, line_no, lines_in = pos + i + 1, line_no + lines_per_range, 0
            i = block.find(b"\n", i + 1)
        pos += len(block)
    if pos > start or not ranges:
        ranges.append(ByteRange(start, pos, line_no))
    return ranges


# ---------------------------------------------------------------- record mode


@dataclass(frozen=True)
class PackSettings:
    """How record mode turns a ``.lst`` item into a record (from im2rec.py's flags)."""

    root: str
    pass_through: bool = False
    encode: images.EncodeParams = images.EncodeParams(reduced_decode=False)
    pack_label: bool = False
    max_pixels: int = images.DEFAULT_MAX_PIXELS


def record_label(item: LstItem, pack_label: bool) -> float | tuple[float, ...]:
    """im2rec.py: all labels as a vector with --pack-label and more than one label, else the first."""
    if pack_label and len(item.labels) > 1:
        return item.labels
    return item.labels[0]


def image_uri(root: str, relpath: str) -> str:
    """Where an item's image is: ``os.path.join(ROOT, path)`` as im2rec.py does (an
    absolute path in the list is used as is); under an ``s3://`` ROOT, the key below it."""
    if storage.is_s3(relpath):
        return relpath
    if storage.is_s3(root):
        return storage.join(root, relpath)
    return os.path.join(root, relpath)


def pack_item(item: LstItem, data: bytes, settings: PackSettings) -> bytes:
    """The record payload for one image, or ``BadImage`` saying why there is none.

    Pass-through stores the file's bytes unchanged (after the cheap structure
    check); otherwise the image is decoded, cropped/resized with im2rec.py's
    rules and bilinear filter, and re-encoded.
    """
    info = images.check_structure(data, settings.max_pixels)
    payload = data if settings.pass_through else images.transcode(data, info, settings.encode, settings.max_pixels)
    try:
        return recordio.pack(record_label(item, settings.pack_label), item.id, payload)
    except struct.error as exc:
        # IRHeader holds the id as an unsigned 64-bit integer and labels as float32.
        detail = "id %d or a label does not fit the record header (%s)" % (item.id, exc)
        raise images.BadImage("bad_header_value", detail) from None
    except OverflowError as exc:
        raise images.BadImage("bad_header_value", "a label does not fit float32 (%s)" % exc) from None


def match_lists(prefix: str, working_dir: str, names: Iterable[str]) -> list[str]:
    """The ``.lst`` files record mode packs: in ``working_dir``, full path starting with
    PREFIX and ending in ``.lst`` (im2rec.py's rule), sorted for a stable order."""
    out = []
    for name in names:
        path = storage.join(working_dir, name) if storage.is_s3(working_dir) else os.path.join(working_dir, name)
        if path.startswith(prefix) and path.endswith(".lst"):
            out.append(path)
    return sorted(out)
