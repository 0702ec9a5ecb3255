"""What sources hand to ``WriteToRecordIO``: images with their labels, skipped inputs, findings, listings.

The elements of the PCollection a ``WriteToRecordIO`` is applied to are any of:

* ``(uri, label)`` or ``(uri, label, size)``: an image and its class name (or
  list of class names, for multi-label data). ``uri`` is a path relative to the
  transform's ``input`` root, or an absolute path or ``s3://`` URI.
* ``Image(path, labels, size, version)``: the same, with what a listing knows.
* ``ErrorRecord``: an input a source could not use (it goes to ``errors.jsonl``).
* ``Finding(kind, count, item)``: something a source found (``report.jsonl``, counts).
* ``FolderListing``: a folder still to be listed; the transform lists it where
  it likes (a worker process, a cluster task), and its images get the
  listing's labels.
* a list of any of these (saves a runner's per-element cost).

Pure code: the folder listing itself (``FolderListing.items``) and the checks
every image path and label must pass before it can be written to a ``.lst``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple

from imgrec import storage
from imgrec.errors import STAGE_LIST, ErrorRecord
from imgrec.layout import OWNER_MARK

IGNORED = "ignored_non_image"  # count-only finding: files without an image extension
ERROR = "error"


class Image(NamedTuple):
    """One image to convert: where it is, its class names, and what a listing knew about the file."""

    path: str  # relative to the input root, or an absolute path / s3:// URI
    labels: tuple[str, ...]
    size: int = -1  # bytes; -1 when not known (the transform asks the storage)
    version: str = ""  # modification time or ETag: --resume redoes a shard when it changes


class Finding(NamedTuple):
    """Something a source or stage found: a report item (or only a count) of some ``kind``."""

    kind: str
    count: int
    item: dict | None = None


SKIPPED = "skipped"


def error_finding(error: ErrorRecord) -> Finding:
    """A skipped input as a finding: it goes to ``errors.jsonl`` (the report lists what sources found)."""
    return Finding(SKIPPED, 1, {"kind": SKIPPED, **error.to_json()})


def path_problem(relpath: str) -> tuple[str, str] | None:
    """(reason, detail) when a path cannot name a record in a ``.lst`` (or be hashed), else None."""
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return "non_utf8_name", "file name is not valid UTF-8"
    if any(c in relpath for c in "\t\n\r"):
        return "bad_filename", "a tab or line break in the name cannot be written to a .lst"
    return None


LABEL_FORBIDDEN = "\t\n\r\x1f"


def label_problem(labels: Iterable[Any], single_label: bool = True) -> str | None:
    """Why these labels cannot be class names (None when they can); a multi-label image may have none."""
    labels = tuple(labels)
    if single_label and len(set(labels)) != 1:
        return ("%d labels, but the output is single-label: pass label_format multi-hot or class-ids for "
                "multi-label data" % len(set(labels)))
    for name in labels:
        if not isinstance(name, str) or not name.strip():
            return "label %r is not a class name (a non-empty string)" % (name,)
        if any(c in name for c in LABEL_FORBIDDEN):
            return "class name %r holds a tab, line break or control character" % name
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return "class name %r is not valid UTF-8" % name
    return None


def as_labels(label) -> tuple:
    """A label as given by a source: one class name, or a list of them."""
    if isinstance(label, (list, tuple, set, frozenset)):
        return tuple(sorted(label)) if isinstance(label, (set, frozenset)) else tuple(label)
    return (label,)


@dataclass(frozen=True)
class FolderListing:
    """A top-level folder of the input, listed on demand: its images get ``labels`` (the folder's class).

    The folder is listed once, never through a link into itself, a parent or
    another top-level folder, and never into an output folder of this tool
    (``storage.walk_files``).
    """

    root: str  # the input root
    folder: str  # the folder's name under it
    labels: tuple[str, ...]
    exts: tuple[str, ...]
    max_file_bytes: int = 0

    def items(self) -> Iterator[Image | ErrorRecord | Finding]:
        prefix = self.folder + "/"
        ignored = 0
        for entry in storage.walk_files(storage.join(self.root, self.folder), self.root, OWNER_MARK):
            rel = prefix + entry.relpath if entry.relpath else self.folder
            verdict = classify_entry(entry._replace(relpath=rel), self.exts, self.max_file_bytes)
            if verdict is True:
                yield Image(rel, self.labels, entry.size, entry.version)
            elif verdict is False:
                ignored += 1
            else:
                yield verdict
        if ignored:
            yield Finding(IGNORED, ignored)


def classify_entry(entry: storage.FileEntry, exts: tuple[str, ...], max_bytes: int = 0) -> ErrorRecord | bool:
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
    problem = path_problem(entry.relpath)
    if problem:
        return ErrorRecord(entry.relpath, problem[0], STAGE_LIST, problem[1])
    return True


def flatten(element) -> Iterator:
    """The items of one element of the input PCollection (lists unpacked, listings listed)."""
    if isinstance(element, list):
        for item in element:
            yield from flatten(item)
    elif isinstance(element, FolderListing):
        yield from element.items()
    else:
        yield element


def relative_path(path: str, root: str) -> str:
    """``path`` as a record's path: relative to ``root`` when it lies under it, else as given."""
    if not root:
        return path
    if storage.is_s3(root):
        prefix = root.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path
    if path.startswith("/"):
        base = root.rstrip("/") + "/"
        if path.startswith(base):
            return path[len(base):]
        import os

        absolute_root = os.path.abspath(root).rstrip("/") + "/"
        return path[len(absolute_root):] if path.startswith(absolute_root) else path
    return posixpath.normpath(path)


def to_image(item, root: str, single_label: bool = True) -> Image | ErrorRecord | Finding:
    """One input item as an Image with a record path (or the ErrorRecord that says why it cannot be one)."""
    if isinstance(item, (ErrorRecord, Finding)):
        return item
    if isinstance(item, Image):
        image = item
    elif isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], str):
        image = Image(item[0], as_labels(item[1]), int(item[2]) if len(item) == 3 else -1)
    else:
        return ErrorRecord(repr(item)[:200], "bad_element", STAGE_LIST,
                           "expected (uri, label), (uri, label, size) or an Image, got %s" % type(item).__name__)
    rel = relative_path(image.path, root)
    if rel in (".", "") or rel == ".." or rel.startswith("../"):
        return ErrorRecord(image.path, "bad_filename", STAGE_LIST, "the path names no image under the input root")
    problem = path_problem(rel)
    if problem:
        return ErrorRecord(rel, problem[0], STAGE_LIST, problem[1])
    why = label_problem(image.labels, single_label)
    if why:
        return ErrorRecord(rel, "bad_label", STAGE_LIST, why)
    return image._replace(path=rel, labels=tuple(image.labels))


def source_uri(root: str, relpath: str) -> str:
    """Where the image of a record path is read from."""
    if not root or storage.is_s3(relpath) or relpath.startswith("/"):
        return relpath
    return storage.join(root, relpath)
