"""One storage layer for local paths and ``s3://`` URIs.

Everything the pipeline reads or writes goes through these functions, so the
atomic-write policy lives in one place: a local file is written under a
temporary name and renamed when complete; an S3 object is a multipart upload
that is completed on success and aborted on any error (``imgrec.s3``). A
failed write therefore never leaves a final-named, partly written file.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import posixpath
import stat
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


def walk_files(uri: str, input_root: str = "", skip_marked: str = "") -> Iterator[FileEntry]:
    """Every file under ``uri``, recursively, with paths relative to ``uri``.

    Local symlinks are followed, but every folder is listed at most once per
    call, known by (device, inode): a link back to the folder itself or to a
    parent (``up -> ..``) is a ``symlink_loop``, a folder reached a second way is
    a ``repeated_folder``, and neither is walked, so a link never makes images
    appear twice or under another class. ``input_root`` is the folder whose
    top-level folders ``uri`` is one of: a link into another of them is a
    ``repeated_folder`` too (that folder is listed on its own). A folder holding
    a file named ``skip_marked`` (this tool's output mark) is an
    ``output_folder``, not walked. A broken link, an unreadable folder, a file
    that is not a regular file (FIFO, device, socket) and a folder nested more
    than ``MAX_DEPTH`` deep are entries with an ``error`` instead of being
    dropped or opened.
    """
    if is_s3(uri):
        from imgrec import s3

        yield from s3.walk_files(uri)
        return
    yield from _LocalWalk(uri, input_root, skip_marked).walk()


# How deep a listing goes below the folder listed. Real collections nest a few levels;
# deeper trees are what a file system that makes a new folder at every level (an
# automounter, a FUSE file system, a bind-mount loop with fresh inodes) looks like,
# which the (device, inode) check cannot stop.
MAX_DEPTH = 64

# st_mode file types that are not regular files, as a person names them.
_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file that is not a regular file or a folder is ("a FIFO (named pipe)", ...)."""
    for test, name in _FILE_KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _contains(outer: str, inner: str) -> bool:
    """Whether real path ``inner`` is ``outer`` or lies under it."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _parents(path: str) -> Iterator[str]:
    """The folders above ``path``, nearest first, up to ``/``."""
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        yield path


class _LocalWalk:
    """One listing of a local folder: depth first, in name order, every folder at most once."""

    def __init__(self, top: str, input_root: str = "", skip_marked: str = ""):
        self.top = top
        self.real_top = os.path.realpath(top)
        self.real_root = os.path.realpath(input_root) if input_root else ""
        self.skip_marked = skip_marked
        # (st_dev, st_ino) -> where the folder was listed: a path relative to top, or None
        # for the input folder, the parents of top and theirs (a link to one of them
        # would list top, or the other top-level folders, again)
        self.seen: dict[tuple[int, int], str | None] = {}
        self.root_ident = None
        around = list(_parents(self.real_top))
        if self.real_root:
            around += [self.real_root, *_parents(self.real_root)]
        for folder in around:
            with contextlib.suppress(OSError):
                st = os.stat(folder)
                self.seen.setdefault((st.st_dev, st.st_ino), None)
                if folder == self.real_root:
                    self.root_ident = (st.st_dev, st.st_ino)
        # Folders reached through a link wait until the tree without links is done, so a
        # folder that is also reachable without a link is listed under its own path.
        self.linked: collections.deque = collections.deque()

    def walk(self) -> Iterator[FileEntry]:
        try:
            st = os.stat(self.top)
        except OSError as exc:
            yield FileEntry("", 0, "unreadable", "cannot list folder: %s" % (exc.strerror or exc))
            return
        yield from self._folder("", st)
        while self.linked:
            rel, entry, st = self.linked.popleft()
            yield from self._subfolder(rel, entry, st)

    def _subfolder(self, rel: str, entry: os.DirEntry, st: os.stat_result) -> Iterator[FileEntry]:
        problem = self._not_to_walk(rel, entry, st)
        if problem:
            yield FileEntry(rel, 0, *problem)
        else:
            yield from self._folder(rel, st)

    def _folder(self, rel: str, st: os.stat_result) -> Iterator[FileEntry]:
        self.seen[(st.st_dev, st.st_ino)] = rel
        path = os.path.join(self.top, rel) if rel else self.top
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except PermissionError:
            yield FileEntry(rel, 0, "unreadable", "folder is not readable (permission denied)")
            return
        except OSError as exc:
            yield FileEntry(rel, 0, "unreadable", "cannot list folder: %s" % exc.strerror)
            return
        if self.skip_marked and any(e.name == self.skip_marked for e in entries):
            yield FileEntry(rel, 0, "output_folder", "holds %s: an output folder of this tool, not listed" % self.skip_marked)
            return
        for entry in entries:
            child = entry.name if not rel else rel + "/" + entry.name
            try:
                st = entry.stat()  # follows symlinks
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    yield FileEntry(child, 0, "symlink_loop", "symbolic link loop")
                elif exc.errno == errno.ENOENT and entry.is_symlink():
                    yield FileEntry(child, 0, "broken_symlink", "symbolic link to a missing file")
                else:
                    yield FileEntry(child, 0, "unreadable", exc.strerror or str(exc))
                continue
            if stat.S_ISDIR(st.st_mode):
                if entry.is_symlink():
                    self.linked.append((child, entry, st))
                else:
                    yield from self._subfolder(child, entry, st)
            elif stat.S_ISREG(st.st_mode):
                yield FileEntry(child, st.st_size, version=file_version(st))
            else:
                yield FileEntry(child, 0, "not_regular_file", "%s, not a regular file: never opened" % file_kind(st.st_mode))

    def _not_to_walk(self, rel: str, entry: os.DirEntry, st: os.stat_result) -> tuple[str, str] | None:
        """(reason, detail) when the folder ``rel`` must not be walked, else None."""
        ident = (st.st_dev, st.st_ino)
        if ident in self.seen:
            where = self.seen[ident]
            if where is not None and where != "" and not rel.startswith(where + "/"):
                return "repeated_folder", "the same folder as %r, reached a second way (a link): listed once" % where
            if where == "":
                target = "the folder listed"
            elif where:
                target = "%r, a folder it is in" % where
            elif ident == self.root_ident:
                target = "the input folder"
            else:
                target = "a parent of the folder listed"
            return "symlink_loop", "folder link leads back to %s: not listed again" % target
        if rel.count("/") + 1 > MAX_DEPTH:
            return "too_deep", "more than %d folders deep: not listed" % MAX_DEPTH
        if self.real_root and entry.is_symlink():
            real = os.path.realpath(os.path.join(self.top, rel))
            if _contains(self.real_root, real) and not _contains(self.real_top, real):
                other = os.path.relpath(real, self.real_root).split(os.sep, 1)[0]
                return "repeated_folder", "folder link leads into %r, another top-level folder of the input (listed on its own)" % other
        return None


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


class UnusableFileError(StorageError):
    """A file that is not read: not a regular file, or larger than the limit; ``reason`` tags it."""

    def __init__(self, uri: str, reason: str, detail: str):
        super().__init__("%s: %s" % (uri, detail))
        self.reason = reason
        self.detail = detail


def _open_regular(uri: str) -> tuple[int, int]:
    """A descriptor open for reading on the regular file ``uri``, and its size.

    O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, forever;
    on a regular file the flag changes nothing. What was opened is checked with
    fstat, so a file swapped for a FIFO or a device after listing is never read.
    """
    fd = os.open(uri, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if stat.S_ISREG(st.st_mode):
        return fd, st.st_size
    os.close(fd)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), uri)
    raise UnusableFileError(uri, "not_regular_file", "%s, not a regular file: never read" % file_kind(st.st_mode))


def too_large(size: int, max_bytes: int) -> str:
    """The detail of a ``too_large`` skip."""
    return "%d bytes, more than the limit of %d bytes (--max-file-size-mb)" % (size, max_bytes)


def read_bytes(uri: str, max_bytes: int = 0) -> bytes:
    """The whole file; only a regular file (locally), and at most ``max_bytes`` (0 = no limit).

    A file over the limit is refused before anything is read (UnusableFileError,
    reason ``too_large``), and so is one that grows past it while being read.
    """
    if is_s3(uri):
        from imgrec import s3

        return s3.read_bytes(uri, max_bytes)
    fd, size = _open_regular(uri)
    try:
        if max_bytes and size > max_bytes:
            raise UnusableFileError(uri, "too_large", too_large(size, max_bytes))
        # os.read on a descriptor: a fifth less time per small file than open().read()
        chunks = [os.read(fd, size + 1)]  # one byte more than the size: the next read finds the end
        total = len(chunks[0])
        while chunks[-1]:  # a file that grew since fstat, or a short read
            if max_bytes and total > max_bytes:
                raise UnusableFileError(uri, "too_large", too_large(total, max_bytes) + " (it grew while read)")
            chunks.append(os.read(fd, max(size, 1 << 16)))
            total += len(chunks[-1])
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
    fd, _ = _open_regular(uri)
    with os.fdopen(fd, "rb") as f:
        yield f


def regular_file_problem(uri: str) -> str:
    """Why a local ``uri`` that exists cannot be read as a file ("" when it can, or is on S3)."""
    if is_s3(uri):
        return ""
    try:
        mode = os.stat(uri).st_mode
    except OSError:
        return ""  # missing or unreadable: the reader says so in its own words
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return ""
    return "%s, not a regular file" % file_kind(mode)


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
    tmp = os.path.join(directory, ".%s%s%s" % (os.path.basename(uri), TMP_MARK, uuid.uuid4().hex[:12]))
    try:
        os.makedirs(directory, exist_ok=True)
        f = open(tmp, "wb", buffering=WRITE_BUFFER)
    except OSError as exc:
        raise write_error(uri, exc) from None
    try:
        yield f
        f.flush()
        if _FSYNC:
            os.fsync(f.fileno())
        f.close()
        os.replace(tmp, uri)
    except BaseException as exc:
        # close() flushes what is buffered, which fails again on a full disk: the
        # temporary file is removed whatever close() says
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            raise write_error(uri, exc) from None
        raise


# Errors of the file system under an output file rather than of any one input: the job
# cannot go on, and the message names the file and what to do.
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device: free some space or choose another --output",
    errno.EDQUOT: "disk quota exceeded: free some space or choose another --output",
    errno.EFBIG: "file too large for the file system or the file-size limit (ulimit -f)",
    errno.EROFS: "read-only file system: choose another --output",
    errno.EACCES: "permission denied: choose an --output you can write to",
    errno.EPERM: "operation not permitted: choose an --output you can write to",
    errno.ENOTDIR: "a parent of it is a file, not a folder: choose another --output",
    errno.EEXIST: "a file is where a folder it needs should be: choose another --output",
}


# Raised by writes (not by the reads a writer's caller may do): the disk is full or not writable.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def write_error(uri: str, exc: OSError) -> StorageError:
    """The one-line StorageError for an OSError while writing ``uri``."""
    why = _WRITE_ERRNOS.get(exc.errno) or (exc.strerror or str(exc))
    return StorageError("cannot write %s: %s" % (uri, why))


def check_output_folder(uri: str) -> None:
    """Make the local output folder if needed and prove a file can be created in it.

    Raises StorageError with one line when ``uri`` is a file, lies under a file or
    cannot be written (read-only file system, permissions), before any work starts.
    """
    if is_s3(uri):
        return
    if os.path.lexists(uri) and not os.path.isdir(uri):
        raise StorageError("--output %s is a file, not a folder: choose a folder (it is made if missing)" % uri)
    for parent in _parents(os.path.abspath(uri)):
        if os.path.lexists(parent):
            if not os.path.isdir(parent):
                raise StorageError("--output %s is under %s, which is a file, not a folder: choose another --output"
                                   % (uri, parent))
            break
    probe = os.path.join(uri, ".imgrec-probe%s%s" % (TMP_MARK, uuid.uuid4().hex[:12]))
    try:
        os.makedirs(uri, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        why = _WRITE_ERRNOS.get(exc.errno) or (exc.strerror or str(exc))
        raise StorageError("cannot write to --output %s: %s" % (uri, why)) from None


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
