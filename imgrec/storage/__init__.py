"""One storage layer for local paths and ``s3://`` URIs.

Everything the pipeline reads or writes goes through these functions, so the
atomic-write policy lives in one place: a local file is written under a
temporary name and renamed when complete; an S3 object is a multipart upload
that is completed on success and aborted on any error. A failed write
therefore never leaves a final-named, partly written file.

Each function hands its URI to the backend of the URI's scheme
(``backend_for``): ``imgrec.storage.local.LocalStorage`` or
``imgrec.storage.s3.S3Storage``, one object of each per process, behind the
interface of ``imgrec.storage.base.Storage``. The backends import only
``base``; this facade imports them. Their settings (S3 endpoint and
encryption, ``--fsync``) are set by ``configure``, which
``imgrec.env.WorkerEnv.apply`` calls in every process of a job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, ContextManager, Iterator

from imgrec.storage.base import (
    TMP_MARK,
    WRITE_BUFFER,
    FileEntry,
    Storage,
    StorageError,
    UnusableFileError,
    is_temp_name,
    temp_name,
    too_large,
)
from imgrec.storage.local import MAX_DEPTH, LocalStorage, file_kind, file_version, write_error
from imgrec.storage.s3 import S3Storage

if TYPE_CHECKING:
    from imgrec.options import S3Settings

__all__ = [
    "MAX_DEPTH", "TMP_MARK", "WRITE_BUFFER", "FileEntry", "LocalStorage", "S3Storage", "Storage", "StorageError",
    "UnusableFileError", "abort_recorded_uploads", "atomic_writer", "backend_for", "check_output_folder",
    "concatenate", "configure", "delete", "exists", "file_kind", "file_size", "file_version", "is_s3", "is_temp_name", "join",
    "list_recursive", "list_top", "open_read", "read_bytes", "read_text", "regular_file_problem", "relative_to",
    "temp_name", "too_large", "walk_files", "write_bytes", "write_error", "write_text",
]

S3_SCHEME = "s3://"

# The backends of this process, by the prefix of the URIs they serve; a URI without one is a local path.
_LOCAL = LocalStorage()
_S3 = S3Storage()
_BACKENDS: dict[str, Storage] = {S3_SCHEME: _S3}


def backend_for(uri: str) -> Storage:
    """The backend that serves ``uri``: by its scheme, and local for a plain path."""
    for prefix, backend in _BACKENDS.items():
        if uri.startswith(prefix):
            return backend
    return _LOCAL


def configure(s3: S3Settings | None = None, fsync: bool = False) -> None:
    """This process's storage settings from now on (idempotent: the same S3 settings keep the S3 client).

    Called through ``imgrec.env.WorkerEnv.apply``, which carries the job's settings to every process.
    """
    _S3.configure(s3)
    _LOCAL.configure(fsync)


# ---------------------------------------------------------------- names


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def join(base: str, *parts: str) -> str:
    """Join ``parts`` under ``base``; refuses parts that would climb out of it."""
    pieces = []
    for part in parts:
        for piece in part.split("/"):
            if piece in ("", "."):
                continue
            if piece == "..":
                raise StorageError("refusing path component '..' in %r" % part)
            pieces.append(piece)
    return backend_for(base).join(base, pieces)


def relative_to(uri: str, base: str) -> str:
    return backend_for(uri).relative_to(uri, base)


# ---------------------------------------------------------------- listing


def list_top(uri: str) -> tuple[list[str], list[str]]:
    """Sub-folder names and file names directly under ``uri`` (one level)."""
    return backend_for(uri).list_top(uri)


def walk_files(uri: str, input_root: str = "", skip_marked: str = "") -> Iterator[FileEntry]:
    """Every file under ``uri``, recursively, with paths relative to ``uri``.

    Local symlinks are followed, but every folder is listed at most once
    (``LocalStorage.walk_files`` says how); ``input_root`` and ``skip_marked``
    guard local listings against links into other classes and this tool's own
    output folders. Unusable entries come with an ``error`` instead of being
    dropped or opened.
    """
    return backend_for(uri).walk_files(uri, input_root, skip_marked)


def list_recursive(uri: str) -> list[str]:
    """Relative paths of every file under ``uri`` (for clean-up); empty when absent."""
    return backend_for(uri).list_recursive(uri)


# ---------------------------------------------------------------- reading


def read_bytes(uri: str, max_bytes: int = 0) -> bytes:
    """The whole file; only a regular file (locally), and at most ``max_bytes`` (0 = no limit).

    A file over the limit is refused before anything is read (UnusableFileError,
    reason ``too_large``), and so is one that grows past it while being read.
    """
    return backend_for(uri).read_bytes(uri, max_bytes)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def exists(uri: str) -> bool:
    return backend_for(uri).exists(uri)


def file_size(uri: str) -> int:
    """The size of a file or object in bytes (FileNotFoundError when it does not exist)."""
    return backend_for(uri).file_size(uri)


def open_read(uri: str) -> ContextManager[BinaryIO]:
    """A seekable binary reader (verify and readers use it)."""
    return backend_for(uri).open_read(uri)


def regular_file_problem(uri: str) -> str:
    """Why a local ``uri`` that exists cannot be read as a file ("" when it can, or is on S3)."""
    return backend_for(uri).regular_file_problem(uri)


# ---------------------------------------------------------------- writing


def atomic_writer(uri: str) -> ContextManager[BinaryIO]:
    """Write ``uri`` so that it appears complete or not at all."""
    return backend_for(uri).atomic_writer(uri)


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_writer(uri) as f:
        f.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def delete(uri: str) -> None:
    """Remove a file if it exists."""
    backend_for(uri).delete(uri)


def check_output_folder(uri: str) -> None:
    """Make the local output folder if needed and prove a file can be created in it.

    Raises StorageError with one line when ``uri`` is a file, lies under a file or
    cannot be written (read-only file system, permissions), before any work starts.
    """
    backend_for(uri).check_output_folder(uri)


def concatenate(dest: str, sources: list[tuple[str, int]]) -> None:
    """Write ``dest`` as the concatenation of the ``(uri, size)`` sources, appearing complete or not at all.

    On S3 the sources are copied server-side (``S3Storage.concatenate``); locally they are streamed.
    """
    backend_for(dest).concatenate(dest, sources)


def abort_recorded_uploads(journal: str) -> int:
    """Abort the uploads that killed processes left open and recorded under ``journal``; returns how many."""
    return backend_for(journal).abort_recorded_uploads(journal)
