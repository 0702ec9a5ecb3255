"""What every storage backend offers, and what the backends share.

A backend serves one kind of URI (``imgrec.storage.local``: paths on this
machine; ``imgrec.storage.s3``: ``s3://bucket/key``) behind the ``Storage``
interface, and the facade (``imgrec.storage``) picks the backend for each URI.
Backends import this module and their own libraries, never the facade or each
other, so the storage layer has no import circle.

The interface's promise, on every backend: a listing reports an unusable entry
(``FileEntry.error``) instead of dropping it or failing; a read of a file over
the caller's limit is refused before its body is read (``UnusableFileError``);
a write appears complete under its final name or not at all; and a problem a
person must act on is a ``StorageError`` whose one-line message names the path
and what to check.
"""

from __future__ import annotations

import abc
import posixpath
import shutil
import uuid
from typing import BinaryIO, ContextManager, Iterator, NamedTuple

from imgrec.errors import ImgrecError

# Temporary files are named ".<final name>.tmp-<12 hex digits>" beside their final name.
TMP_MARK = ".tmp-"
# Large sequential writes; the OS page cache (or the multipart buffer) does the rest.
WRITE_BUFFER = 1 << 20
# Chunk of a concatenation that streams its sources (the S3 backend copies server-side instead).
COPY_BUFFER = 8 << 20


class StorageError(ImgrecError, RuntimeError):
    """A storage problem a person can act on (message names the path and what to check): exit 2."""

    exit_code = 2

    # Its public name: tracebacks that cross a Beam worker's boundary show "imgrec.storage.StorageError",
    # which the launcher recognises, and pickles name the facade, which re-exports it.
    __module__ = "imgrec.storage"


class UnusableFileError(StorageError):
    """A file that is not read: not a regular file, or larger than the limit; ``reason`` tags it."""

    __module__ = "imgrec.storage"

    def __init__(self, uri: str, reason: str, detail: str):
        super().__init__("%s: %s" % (uri, detail))
        self.reason = reason
        self.detail = detail


class FileEntry(NamedTuple):
    """A file found while listing: its path relative to the listed root, or why it is unusable."""

    relpath: str
    size: int
    error: str = ""  # reason tag when the entry cannot be read (broken_symlink, ...)
    detail: str = ""
    version: str = ""  # changes when the content may have changed (local: mtime in ns; S3: the ETag)



def too_large(size: int, max_bytes: int) -> str:
    """The detail of a ``too_large`` skip."""
    return "%d bytes, more than the limit of %d bytes (--max-file-size-mb)" % (size, max_bytes)


def temp_name(name: str) -> str:
    """A fresh temporary name for a file that will be called ``name`` (a base name, no folder)."""
    return ".%s%s%s" % (name, TMP_MARK, uuid.uuid4().hex[:12])


def is_temp_name(relpath: str) -> bool:
    """Whether the last component of ``relpath`` is a name made by ``temp_name``."""
    name = posixpath.basename(relpath)
    return TMP_MARK in name and name.startswith(".")


class Storage(abc.ABC):
    """The files of one URI scheme: listing, reading, atomic writing, deleting.

    One object per scheme serves the whole process (``imgrec.storage.backend_for``);
    its settings come from the worker environment (``imgrec.env``) and its
    clients are made in the process that uses them, never pickled.
    """

    # ---------------------------------------------------------------- names

    @abc.abstractmethod
    def join(self, base: str, pieces: list[str]) -> str:
        """``base`` with the path components ``pieces`` (already checked: none empty, '.' or '..') under it."""

    @abc.abstractmethod
    def relative_to(self, uri: str, base: str) -> str:
        """``uri`` as a '/'-separated path relative to ``base``."""

    # ---------------------------------------------------------------- listing

    @abc.abstractmethod
    def list_top(self, uri: str) -> tuple[list[str], list[str]]:
        """Sorted sub-folder names and file names directly under ``uri`` (one level)."""

    @abc.abstractmethod
    def walk_files(self, uri: str, input_root: str = "", skip_marked: str = "") -> Iterator[FileEntry]:
        """Every file under ``uri``, recursively, relative to it; unusable entries carry an ``error``."""

    @abc.abstractmethod
    def list_recursive(self, uri: str) -> list[str]:
        """Relative paths of every file under ``uri`` (for clean-up); empty when absent."""

    # ---------------------------------------------------------------- reading

    @abc.abstractmethod
    def read_bytes(self, uri: str, max_bytes: int = 0) -> bytes:
        """The whole file; one over ``max_bytes`` (0 = no limit) is refused before it is read."""

    @abc.abstractmethod
    def open_read(self, uri: str) -> ContextManager[BinaryIO]:
        """A seekable binary reader of one file."""

    @abc.abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether the file exists."""

    @abc.abstractmethod
    def file_size(self, uri: str) -> int:
        """The size of the file in bytes (FileNotFoundError when it does not exist)."""

    @abc.abstractmethod
    def regular_file_problem(self, uri: str) -> str:
        """Why an existing ``uri`` cannot be read as a file ("" when it can)."""

    # ---------------------------------------------------------------- writing

    @abc.abstractmethod
    def atomic_writer(self, uri: str) -> ContextManager[BinaryIO]:
        """A writer of ``uri`` whose file appears complete when the block ends, and not at all on an error."""

    @abc.abstractmethod
    def delete(self, uri: str) -> None:
        """Remove a file if it exists."""

    @abc.abstractmethod
    def check_output_folder(self, uri: str) -> None:
        """Refuse, with one line, an output folder that cannot be written, before any work starts."""

    @abc.abstractmethod
    def abort_recorded_uploads(self, journal: str) -> int:
        """Abort the unfinished writes that killed processes recorded under ``journal``; returns how many."""

    def concatenate(self, dest: str, sources: list[tuple[str, int]]) -> None:
        """Write ``dest`` as the concatenation of the ``(uri, size)`` sources, atomically.

        Streams every source through this process; a backend that can copy
        on the server side does so instead.
        """
        with self.atomic_writer(dest) as f:
            for uri, _ in sources:
                with self.open_read(uri) as src:
                    shutil.copyfileobj(src, f, COPY_BUFFER)

