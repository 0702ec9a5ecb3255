"""Local paths: folders and files of this machine's file systems.

Listing follows symbolic links but enters every folder once (``_LocalWalk``);
only regular files are opened, and what was opened is checked again (a file
swapped for a FIFO or a device after listing is never read). A file is written
under a temporary name beside its final one and renamed when complete, after
an fsync when the job asked for ``--fsync``; a failed write removes the
temporary file, and a full or read-only disk is one line naming the file.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import stat
from typing import BinaryIO, Iterator

from imgrec.storage.base import WRITE_BUFFER, FileEntry, Storage, StorageError, UnusableFileError, temp_name, too_large

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


def file_version(st: os.stat_result) -> str:
    """A local file's version for ``--resume``: its modification time in nanoseconds (the size is kept beside it)."""
    return "%d" % st.st_mtime_ns


def file_kind(mode: int) -> str:
    """What a file that is not a regular file or a folder is ("a FIFO (named pipe)", ...)."""
    for test, name in _FILE_KINDS:
        if test(mode):
            return name
    return "not a regular file"


def write_error(uri: str, exc: OSError) -> StorageError:
    """The one-line StorageError for an OSError while writing ``uri``."""
    why = _WRITE_ERRNOS.get(exc.errno) or (exc.strerror or str(exc))
    return StorageError("cannot write %s: %s" % (uri, why))


class LocalStorage(Storage):
    """Paths on this machine; ``fsync``: make every write durable before it becomes visible (``--fsync``)."""

    def __init__(self, fsync: bool = False):
        self.fsync = fsync

    def configure(self, fsync: bool) -> None:
        """This process's settings from now on (``imgrec.env.WorkerEnv.apply``)."""
        self.fsync = bool(fsync)

    # ---------------------------------------------------------------- names

    def join(self, base: str, pieces: list[str]) -> str:
        return os.path.join(base, *pieces)

    def relative_to(self, uri: str, base: str) -> str:
        return os.path.relpath(uri, base).replace(os.sep, "/")

    # ---------------------------------------------------------------- listing

    def list_top(self, uri: str) -> tuple[list[str], list[str]]:
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

    def walk_files(self, uri: str, input_root: str = "", skip_marked: str = "") -> Iterator[FileEntry]:
        """Every file under ``uri``, recursively, with paths relative to ``uri``.

        Symlinks are followed, but every folder is listed at most once per
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
        yield from _LocalWalk(uri, input_root, skip_marked).walk()

    def list_recursive(self, uri: str) -> list[str]:
        if not os.path.isdir(uri):
            return []
        out = []
        for dirpath, _, files in os.walk(uri):
            for name in files:
                out.append(os.path.relpath(os.path.join(dirpath, name), uri).replace(os.sep, "/"))
        return sorted(out)

    # ---------------------------------------------------------------- reading

    def read_bytes(self, uri: str, max_bytes: int = 0) -> bytes:
        """The whole file; only a regular file, and at most ``max_bytes`` (0 = no limit).

        A file over the limit is refused before anything is read (UnusableFileError,
        reason ``too_large``), and so is one that grows past it while being read.
        """
        return read_local(uri, max_bytes)

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[BinaryIO]:
        fd, _ = _open_regular(uri)
        with os.fdopen(fd, "rb") as f:
            yield f

    def exists(self, uri: str) -> bool:
        return os.path.exists(uri)

    def file_size(self, uri: str) -> int:
        st = os.stat(uri)
        if not stat.S_ISREG(st.st_mode):
            raise UnusableFileError(uri, "not_regular_file", "%s, not a regular file: never read" % file_kind(st.st_mode))
        return st.st_size

    def regular_file_problem(self, uri: str) -> str:
        try:
            mode = os.stat(uri).st_mode
        except OSError:
            return ""  # missing or unreadable: the reader says so in its own words
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            return ""
        return "%s, not a regular file" % file_kind(mode)

    # ---------------------------------------------------------------- writing

    @contextlib.contextmanager
    def atomic_writer(self, uri: str) -> Iterator[BinaryIO]:
        directory = os.path.dirname(uri) or "."
        tmp = os.path.join(directory, temp_name(os.path.basename(uri)))
        try:
            os.makedirs(directory, exist_ok=True)
            f = open(tmp, "wb", buffering=WRITE_BUFFER)
        except OSError as exc:
            raise write_error(uri, exc) from None
        try:
            yield f
            f.flush()
            if self.fsync:
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

    def delete(self, uri: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(uri)

    def check_output_folder(self, uri: str) -> None:
        """Make the output folder if needed and prove a file can be created in it.

        Raises StorageError with one line when ``uri`` is a file, lies under a file or
        cannot be written (read-only file system, permissions), before any work starts.
        """
        if os.path.lexists(uri) and not os.path.isdir(uri):
            raise StorageError("--output %s is a file, not a folder: choose a folder (it is made if missing)" % uri)
        for parent in _parents(os.path.abspath(uri)):
            if os.path.lexists(parent):
                if not os.path.isdir(parent):
                    raise StorageError("--output %s is under %s, which is a file, not a folder: choose another --output"
                                       % (uri, parent))
                break
        probe = os.path.join(uri, temp_name("imgrec-probe"))
        try:
            os.makedirs(uri, exist_ok=True)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as exc:
            why = _WRITE_ERRNOS.get(exc.errno) or (exc.strerror or str(exc))
            raise StorageError("cannot write to --output %s: %s" % (uri, why)) from None

    def abort_recorded_uploads(self, journal: str) -> int:
        # Nothing to abort: a local write in flight is a temporary file, which the clean-up
        # of an output folder recognises by its name (``is_temp_name``).
        return 0


def read_local(path: str, max_bytes: int = 0) -> bytes:
    """A local regular file, whole (at most ``max_bytes``, 0 = no limit): ``LocalStorage.read_bytes``.

    Called directly for every input image (no dispatch by scheme): a fifth less time
    per small file than ``open().read()``.
    """
    fd, size = _open_regular(path)
    try:
        if max_bytes and size > max_bytes:
            raise UnusableFileError(path, "too_large", too_large(size, max_bytes))
        data = os.read(fd, size + 1)  # one byte more than the size: a file that grew is noticed
        if len(data) <= size:
            # a regular file reads short only at its end: no second read needed to find it
            return data
        chunks, total = [data], len(data)
        while chunks[-1]:  # it grew since fstat
            if max_bytes and total > max_bytes:
                raise UnusableFileError(path, "too_large", too_large(total, max_bytes) + " (it grew while read)")
            chunks.append(os.read(fd, max(size, 1 << 16)))
            total += len(chunks[-1])
        return b"".join(chunks)
    finally:
        os.close(fd)


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
            rel, is_link, st = self.linked.popleft()
            yield from self._subfolder(rel, is_link, st)

    def _subfolder(self, rel: str, is_link: bool, st: os.stat_result) -> Iterator[FileEntry]:
        problem = self._not_to_walk(rel, is_link, st)
        if problem:
            yield FileEntry(rel, 0, *problem)
        else:
            yield from self._folder(rel, st)

    def _folder(self, rel: str, st: os.stat_result) -> Iterator[FileEntry]:
        self.seen[(st.st_dev, st.st_ino)] = rel
        path = os.path.join(self.top, rel) if rel else self.top
        try:
            # names and link flags only: a DirEntry keeps its stat once asked, and a folder of a
            # million images would hold a million of them until its last file was listed
            with os.scandir(path) as it:
                entries = sorted((e.name, e.is_symlink()) for e in it)
        except PermissionError:
            yield FileEntry(rel, 0, "unreadable", "folder is not readable (permission denied)")
            return
        except OSError as exc:
            yield FileEntry(rel, 0, "unreadable", "cannot list folder: %s" % exc.strerror)
            return
        if self.skip_marked and any(name == self.skip_marked for name, _ in entries):
            yield FileEntry(rel, 0, "output_folder", "holds %s: an output folder of this tool, not listed" % self.skip_marked)
            return
        prefix = path + os.sep
        for name, is_link in entries:
            child = name if not rel else rel + "/" + name
            try:
                st = os.stat(prefix + name)  # follows symlinks
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    yield FileEntry(child, 0, "symlink_loop", "symbolic link loop")
                elif exc.errno == errno.ENOENT and is_link:
                    yield FileEntry(child, 0, "broken_symlink", "symbolic link to a missing file")
                else:
                    yield FileEntry(child, 0, "unreadable", exc.strerror or str(exc))
                continue
            if stat.S_ISDIR(st.st_mode):
                if is_link:
                    self.linked.append((child, is_link, st))
                else:
                    yield from self._subfolder(child, is_link, st)
            elif stat.S_ISREG(st.st_mode):
                yield FileEntry(child, st.st_size, version=file_version(st))
            else:
                yield FileEntry(child, 0, "not_regular_file", "%s, not a regular file: never opened" % file_kind(st.st_mode))

    def _not_to_walk(self, rel: str, is_link: bool, st: os.stat_result) -> tuple[str, str] | None:
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
        if self.real_root and is_link:
            real = os.path.realpath(os.path.join(self.top, rel))
            if _contains(self.real_root, real) and not _contains(self.real_top, real):
                other = os.path.relpath(real, self.real_root).split(os.sep, 1)[0]
                return "repeated_folder", "folder link leads into %r, another top-level folder of the input (listed on its own)" % other
        return None
