"""Every core of one machine: tasks on threads, or on forked worker processes, results in order.

The local runner runs the whole Beam job in one process; its heavy stages
(listing, and writing the records of each part of a shard) hand their tasks
to a ``WorkerPool``. Threads suffice where the work releases the GIL for
long (OpenCV decode/encode, reads that wait on S3); where the per-image
Python work would make the GIL the limit (pass-through of many small files,
or re-encoding on many cores), the same tasks run on worker processes forked
from this one -- no second interpreter or Beam start-up, a few milliseconds
each.

A task function returns a ``Part``: the framed bytes of some records and the
facts about them. From a worker process the bytes come back through a slot of
shared memory mapped before the fork (one copy, no pickling of image bytes);
from a thread they are passed as they are. Either way the caller receives the
parts in task order and calls ``part.release()`` once it is done with
``part.data`` (it may hand the part to another thread first: a new task waits
for a free slot, so memory stays bounded).

Task functions must be module-level functions (they are pickled by name) and
return errors as values; an exception a task raises ends the map with that
exception, and a worker process that dies (a crash inside a native library,
an out-of-memory kill) ends it with ``WorkerDied``.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import gc
import logging
import mmap
import multiprocessing
import os
import queue
import signal
import sys
import tempfile
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from imgrec.errors import JobFailed

LOG = logging.getLogger(__name__)

# A part's bytes travel in one shared-memory slot of this size; a larger part
# (a few huge images) goes through a temporary file instead. The task planner
# aims parts well below it.
SLOT_BYTES = 32 << 20


class WorkerDied(JobFailed):
    """A worker process ended without finishing its task (a crash or a kill)."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class Part:
    """What a task produced: ``pieces`` (framed record bytes, in order) and ``meta`` (anything picklable)."""

    pieces: list = field(default_factory=list)
    size: int = 0
    meta: Any = None
    data: Any = None  # on the caller's side: one bytes-like object holding all the pieces
    release: Callable[[], None] = field(default=lambda: None, repr=False)  # the caller is done with data


# ---------------------------------------------------------------- the worker side

_SLOTS: mmap.mmap | None = None  # inherited by forked workers
_INIT: Callable[[], None] | None = None


def _worker_start(init: Callable[[], None] | None) -> None:
    # Ctrl-C is the launcher's to handle: a worker that died of it would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _REAL_STDERR is not None:  # forked while the parent's stderr was caught: the worker's own is the real one
        os.dup2(_REAL_STDERR, 2)
        os.close(_REAL_STDERR)
    _die_with_parent()
    if init is not None:
        init()


def _die_with_parent() -> None:
    """Ask Linux to end this worker when the process that forked it dies (a SIGKILL leaves no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _run_in_slot(fn: Callable[[Any], Part], task: Any, slot: int) -> tuple:
    part = fn(task)
    size = part.size
    if size <= SLOT_BYTES:
        view = memoryview(_SLOTS)[slot * SLOT_BYTES:slot * SLOT_BYTES + SLOT_BYTES]
        pos = 0
        for piece in part.pieces:
            n = len(piece)
            view[pos:pos + n] = piece
            pos += n
        view.release()
        return ("slot", slot, size, part.meta)
    fd, path = tempfile.mkstemp(prefix="imgrec-part-")
    with os.fdopen(fd, "wb") as f:
        for piece in part.pieces:
            f.write(piece)
    return ("file", path, size, part.meta)


# ---------------------------------------------------------------- the caller side


class WorkerPool:
    """``processes`` forked workers (0: threads of this process), each task run by one of them.

    ``threads`` is how many tasks run at once when there are no worker processes.
    ``init`` runs once in each worker process after the fork (reset per-process
    clients and settings there).
    """

    def __init__(self, processes: int = 0, threads: int = 1, init: Callable[[], None] | None = None):
        global _SLOTS
        self.processes = processes if _can_fork() else 0
        self.threads = max(1, threads)
        self._window = 2 * (self.processes or self.threads)
        self._pool: cf.Executor
        if self.processes:
            # parts in flight, and as many again held by the caller until it releases them
            slots = 2 * self._window
            if _SLOTS is None or len(_SLOTS) < slots * SLOT_BYTES:
                # anonymous shared memory: pages exist only once written; the workers inherit the map
                _SLOTS = mmap.mmap(-1, slots * SLOT_BYTES, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
            self._slots = _SLOTS
            # Last in, first out: the slot given back last is taken next. A page of a slot costs each process
            # a page fault the first time it touches it (2-10 us here), so the fewer slots in use, the fewer.
            self._free: queue.LifoQueue = queue.LifoQueue()
            for i in reversed(range(slots)):
                self._free.put(i)
            self._pool = cf.ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("fork"),
                initializer=_worker_start, initargs=(init,),
            )
            # The job's objects as they are now are never scanned by a worker's garbage collector: a scan
            # writes to every object and so copies the parent's whole heap into each worker.
            gc.freeze()
            try:
                with _fork_notes_kept_off_stderr():
                    self._pool.submit(int)  # with "fork", the first submit starts every worker, now
            finally:
                gc.unfreeze()
        else:
            self._pool = cf.ThreadPoolExecutor(self.threads, thread_name_prefix="imgrec-work")

    @property
    def parallel(self) -> int:
        return self.processes or self.threads

    def map(self, fn: Callable[[Any], Part], tasks: Iterable[Any]) -> Iterator[Part]:
        """``fn(task)`` for every task, in order; call ``release()`` on each Part once done with its data."""
        pending: collections.deque = collections.deque()
        try:
            for task in tasks:
                while len(pending) >= self._window:
                    yield self._take(pending.popleft())
                pending.append(self._submit(fn, task))
            while pending:
                yield self._take(pending.popleft())
        finally:
            for fut in pending:
                fut.cancel()
            # results of tasks already running still arrive: give their slots back
            for fut in pending:
                if not fut.cancelled():
                    with contextlib.suppress(BaseException):
                        self._give_back(fut.result())

    def _submit(self, fn, task):
        if not self.processes:
            return self._pool.submit(fn, task)
        slot = self._free.get()  # waits while the caller still holds every slot
        try:
            return self._pool.submit(_run_in_slot, fn, task, slot)
        except BrokenProcessPool:
            self._free.put(slot)
            raise WorkerDied(_DIED) from None

    def _take(self, fut) -> Part:
        try:
            result = fut.result()
        except BrokenProcessPool:
            raise WorkerDied(_DIED) from None
        if not self.processes:
            part = result
            part.data = part.pieces[0] if len(part.pieces) == 1 else b"".join(part.pieces)
            part.pieces = []
            return part
        kind, where, size, meta = result
        if kind == "slot":
            data = memoryview(self._slots)[where * SLOT_BYTES:where * SLOT_BYTES + size]
        else:
            with open(where, "rb") as f:
                data = f.read()
        done = []

        def release() -> None:
            if not done:  # once only
                done.append(True)
                self._give_back(result)

        return Part(size=size, meta=meta, data=data, release=release)

    def _give_back(self, result) -> None:
        kind, where, _, _ = result
        if kind == "slot":
            self._free.put(where)
        else:
            with contextlib.suppress(OSError):
                os.unlink(where)

    def close(self, wait: bool = True) -> None:
        """Stop the workers: after their running tasks (``wait``), or at once (a failed or interrupted job
        does not wait for tasks whose results nobody will read)."""
        if not wait and self.processes:
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                with contextlib.suppress(OSError, ValueError):
                    proc.terminate()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SHARED: dict[tuple, "WorkerPool"] = {}


def shared_pool(processes: int, threads: int, init: Callable[[], None] | None = None) -> "WorkerPool":
    """This process's pool for these settings, made once: the stages of a job share its worker processes."""
    key = (processes, threads, os.getpid())
    pool = _SHARED.get(key)
    if pool is None:
        pool = _SHARED[key] = WorkerPool(processes, threads, init)
    return pool


def close_shared_pools(wait: bool = True) -> None:
    """Stop this process's shared pools: the job is over (``wait``), or failed or was interrupted (at once)."""
    while _SHARED:
        _, pool = _SHARED.popitem()
        pool.close(wait)


_DIED = "a worker process died while converting (killed, out of memory, or a crash in a native library)"


def trim_heap() -> None:
    """Give the heap's free memory back to the system (glibc's malloc_trim) after a task that built and dropped
    a large structure (a folder's refs): the writer keeps freed memory otherwise (``images.tune_for_threads``),
    and every worker process would hold its largest listing for the rest of the job."""
    global _LIBC
    try:
        if _LIBC is None:
            import ctypes

            _LIBC = ctypes.CDLL(None)  # libc is loaded already: no ldconfig run to find it
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


_LIBC = None
_FORK_NOTE = b"fork_posix.cc"
_REAL_STDERR: int | None = None  # the parent's stderr while it is caught around a fork


@contextlib.contextmanager
def _fork_notes_kept_off_stderr():
    """While workers are forked: keep gRPC's "Other threads are currently calling into gRPC, skipping fork()
    handlers" lines off the terminal (gRPC writes one per fork once a Beam pipeline of the host has started its
    threads; the workers never use gRPC). Whatever else reaches stderr meanwhile is passed on afterwards."""
    if "grpc" not in sys.modules:
        yield
        return
    global _REAL_STDERR
    sys.stderr.flush()
    saved = _REAL_STDERR = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            _REAL_STDERR = None
            caught.seek(0)
            kept = b"".join(line for line in caught if _FORK_NOTE not in line)
            if kept:
                os.write(2, kept)


def _can_fork() -> bool:
    return hasattr(os, "fork") and "fork" in multiprocessing.get_all_start_methods()
