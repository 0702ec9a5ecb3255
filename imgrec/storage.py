"""One storage layer for local paths and ``s3://`` URIs.

Everything the pipeline reads or writes goes through these functions, so the
atomic-write policy lives in one place: a local file is written under a
temporary name and renamed when complete; an S3 object is a multipart upload
that is completed on success and aborted on any error (``imgrec.s3``). A
failed write therefore never leaves a final-named, partly written file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import uuid
from typing import BinaryIO, Iterator, NamedTuple

TMP_MARK = ".tmp-"
# Large sequential writes; the OS page cache does the rest.
WRITE_BUFFER = 1 << 20

# Whether atomic_writer flushes local files to disk before renaming them (--fsync).
_FSYNC = False


def set_fsync(enabled: bool) -> None:
    """``--fsync``: make every later local write durable before it becomes visible (per process)."""
    global _FSYNC
    _FSYNC = bool(enabled)


class StorageError(RuntimeError):
    """A storage problem a person can act on (message names the path and what to check)."""


class FileEntry(NamedTuple):
    """A file found while listing: its path relative to the listed root, or why it is unusable."""

    relpath: str
    size: int
    error: str = ""  # reason tag when the entry cannot be read (broken_symlink, ...)
    detail: str = ""
    version: str = ""  # changes when the content may have changed (``file_version``; S3: the ETag)


def file_version(st: os.stat_result) -> str:
    """A local file's version for ``--resume``: its modification time in nanoseconds (the size is kept beside it)."""
    return "%d" % st.st_mtime_ns


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(base: str, *parts: str) -> str:
    """Join ``parts`` under ``base``; refuses parts that would climb out of it."""
    out = base.rstrip("/") if is_s3(base) else base
    for part in parts:
        for piece in part.split("/"):
            if piece in ("", "."):
                continue
            if piece == "..":
                raise StorageError("refusing path component '..' in %r" % part)
            out = (out + "/" + piece) if is_s3(out) else os.path.join(out, piece)
    return out


def relative_to(uri: str, base: str) -> str:
    if is_s3(uri):
        prefix = base.rstrip("/") + "/"
        return uri[len(prefix):] if uri.startswith(prefix) else uri
    return os.path.relpath(uri, base).replace(os.sep, "/")


# ---------------------------------------------------------------- listing


def list_top(uri: str) -> tuple[list[str], list[str]]:
    """Sub-folder names and file names directly under ``uri`` (one level)."""
    if is_s3(uri):
        from imgrec import s3

        return s3.list_top(uri)
    try:
        entries = list(os.scandir(uri))
    except FileNotFoundError:
        raise StorageError("input folder %s does not exist" % uri) from None
    except NotADirectoryError:
        raise StorageError("input %s is a file, not a folder of class folders" % uri) from None
    except PermissionError:
        raise StorageError("input folder %s is not readable (permission denied)" % uri) from None
    dirs, files = [], []
    for entry in entries:
        try:
            (dirs if entry.is_dir() else files).append(entry.name)
        except OSError:
            files.append(entry.name)
    return sorted(dirs), sorted(files)


def walk_files(uri: str) -> Iterator[FileEntry]:
    """Every file under ``uri``, recursively, with paths relative to ``uri``.

    Local symlinks are followed; a broken link, a link loop or an unreadable
    folder is yielded as an entry with an ``error`` instead of being dropped.
    """
    if is_s3(uri):
        from imgrec import s3

        yield from s3.walk_files(uri)
        return
    yield from _walk_local(uri, "", set())


def _walk_local(root: str, rel: str, seen: set) -> Iterator[FileEntry]:
    path = os.path.join(root, rel) if rel else root
    try:
        st = os.stat(path)
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            yield FileEntry(rel, 0, "symlink_loop", "folder link leads back to a parent folder")
            return
        seen = seen | {ident}
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except PermissionError:
        yield FileEntry(rel, 0, "unreadable", "folder is not readable (permission denied)")
        return
    except OSError as exc:
        yield FileEntry(rel, 0, "unreadable", "cannot list folder: %s" % exc.strerror)
        return
    for entry in entries:
        child = entry.name if not rel else rel + "/" + entry.name
        try:
            if entry.is_dir():  # follows symlinks
                yield from _walk_local(root, child, seen)
                continue
            st = entry.stat()
            yield FileEntry(child, st.st_size, version=file_version(st))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                yield FileEntry(child, 0, "symlink_loop", "symbolic link loop")
            elif entry.is_symlink() and exc.errno == errno.ENOENT:
                yield FileEntry(child, 0, "broken_symlink", "symbolic link to a missing file")
            else:
                yield FileEntry(child, 0, "unreadable", exc.strerror or str(exc))


def list_recursive(uri: str) -> list[str]:
    """Relative paths of every file under ``uri`` (for clean-up); empty when absent."""
    if is_s3(uri):
        from imgrec import s3

        return [e.relpath for e in s3.walk_files(uri) if not e.error]
    if not os.path.isdir(uri):
        return []
    out = []
    for dirpath, _, files in os.walk(uri):
        for name in files:
            out.append(os.path.relpath(os.path.join(dirpath, name), uri).replace(os.sep, "/"))
    return sorted(out)


# ---------------------------------------------------------------- reading


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        from imgrec import s3

        return s3.read_bytes(uri)
    # os.read on a descriptor: a fifth less time per small file than open().read()
    fd = os.open(uri, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        chunks = [os.read(fd, size + 1)]  # one byte more than the size: the next read finds the end
        while chunks[-1]:  # a file that grew since fstat, or a short read
            chunks.append(os.read(fd, max(size, 1 << 16)))
        return chunks[0] if len(chunks) == 2 else b"".join(chunks)
    finally:
        os.close(fd)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def exists(uri: str) -> bool:
    if is_s3(uri):
        from imgrec import s3

        return s3.exists(uri)
    return os.path.exists(uri)


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[BinaryIO]:
    """A seekable binary reader (verify and readers use it)."""
    if is_s3(uri):
        from imgrec import s3

        with s3.open_read(uri) as f:
            yield f
        return
    with open(uri, "rb") as f:
        yield f


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_writer(uri: str) -> Iterator[BinaryIO]:
    """Write ``uri`` so that it appears complete or not at all."""
    if is_s3(uri):
        from imgrec import s3

        with s3.atomic_writer(uri) as f:
            yield f
        return
    directory = os.path.dirname(uri) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s%s%s" % (os.path.basename(uri), TMP_MARK, uuid.uuid4().hex[:12]))
    f = open(tmp, "wb", buffering=WRITE_BUFFER)
    try:
        yield f
        f.flush()
        if _FSYNC:
            os.fsync(f.fileno())
        f.close()
        os.replace(tmp, uri)
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_writer(uri) as f:
        f.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def delete(uri: str) -> None:
    """Remove a file if it exists."""
    if is_s3(uri):
        from imgrec import s3

        s3.delete(uri)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(uri)


def is_temp_name(relpath: str) -> bool:
    return TMP_MARK in posixpath.basename(relpath) and posixpath.basename(relpath).startswith(".")
