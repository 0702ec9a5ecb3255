"""Progress a person can watch, on any runner.

Workers write a small cumulative heartbeat per worker to ``_work/progress/``
(at most once a second on disk, every few seconds on S3) and log a line per
finished shard; they also bump Beam metrics counters, which cluster UIs show.
The launcher polls the heartbeats and the shard plan and prints a live line
(a redrawn bar on a terminal, a periodic log line otherwise) with images done
of total, images per second, bytes written, inputs skipped and an ETA.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid

from imgrec import storage
from imgrec.layout import WORK
from imgrec.summary import human_bytes
from imgrec.workrecords import Heartbeat, WorkRecordError

PROGRESS_DIR = WORK + "/progress"
PLAN = WORK + "/plan.json"
LOG = logging.getLogger("imgrec.progress")


class ProgressWriter:
    """Worker side: cumulative counts of one worker, flushed to its heartbeat file now and then."""

    def __init__(self, output: str):
        self._uri = storage.join(output, PROGRESS_DIR, "%s.json" % uuid.uuid4().hex)
        self._interval = 5.0 if storage.is_s3(output) else 1.0
        self._last = 0.0
        self.images = self.bytes = self.errors = 0

    def add(self, images: int = 0, nbytes: int = 0, errors: int = 0, force: bool = False) -> None:
        self.images += images
        self.bytes += nbytes
        self.errors += errors
        now = time.monotonic()
        if force or now - self._last >= self._interval:
            self._last = now
            try:
                storage.write_text(self._uri, json.dumps(Heartbeat(self.images, self.bytes, self.errors).to_json()))
            except (OSError, storage.StorageError) as exc:  # progress must never fail the job
                LOG.debug("progress heartbeat not written: %s", exc)


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return "%d:%02d:%02d" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def progress_parts(done: int, total: int | None, nbytes: int, errors: int, elapsed: float) -> list[str]:
    """The fields of the progress line, most important first."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        pct = min(100.0, 100.0 * (done + errors) / total)
        if done + errors >= total:
            eta = "0:00:00"
        elif rate > 0 and (done + errors) * 100 >= total:
            eta = format_eta((total - done - errors) / rate)
        else:  # the rate so far is mostly start-up: no estimate before 1% is done
            eta = "?"
        head = "[%3.0f%%] %d/%d images" % (pct, min(done, total), total)
    else:
        head, eta = "[ listing ] %d images" % done, "?"
    return [head, "ETA %s" % eta, "%.0f img/s" % rate, "%d skipped" % errors, "%s written" % human_bytes(nbytes)]


_ORDER = (0, 2, 4, 3, 1)  # the order the fields are shown in: head, rate, written, skipped, ETA


def fit_line(parts: list[str], width: int | None) -> str:
    """The fields joined in display order, dropping the least important ones until the line fits ``width``
    columns (None: no limit); a line that still does not fit is cut, so a redrawn bar never wraps."""
    keep = len(parts)
    while True:
        line = " | ".join(parts[i] for i in _ORDER if i < keep)
        if width is None or len(line) <= width or keep == 1:
            break
        keep -= 1
    return line if width is None else line[: max(width, 0)]


def progress_line(done: int, total: int | None, nbytes: int, errors: int, elapsed: float,
                  width: int | None = None) -> str:
    return fit_line(progress_parts(done, total, nbytes, errors, elapsed), width)


def terminal_width(stream) -> int:
    """Columns of the terminal behind ``stream``, less one (a line that fills the last column wraps on some
    terminals); 80 when it cannot be told."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return (columns or 80) - 1


class _ClearLine(logging.Filter):
    """Before a log record reaches the terminal: move to the start of the line and erase the bar."""

    def __init__(self, stream):
        super().__init__()
        self._stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._stream.write("\r\x1b[K")
        except (OSError, ValueError):
            pass
        return True


class ProgressMonitor:
    """Launcher side: a thread that polls the heartbeats and prints progress until stopped."""

    def __init__(self, output: str, stream=None, log_every: float = 10.0):
        self._output = output
        self._stream = stream if stream is not None else sys.stderr
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._poll = 5.0 if storage.is_s3(output) else (0.5 if self._tty else 1.0)
        self._log_every = log_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._start = time.monotonic()
        self._total: int | None = None
        self.last_line = ""

    def start(self) -> "ProgressMonitor":
        if self._tty:
            # A log line written to the same terminal (a finished shard, a warning) first
            # clears the bar, so it starts at the left edge; the next poll redraws the bar.
            self._clear = _ClearLine(self._stream)
            self._handlers = [
                h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is self._stream
            ]
            for handler in self._handlers:
                handler.addFilter(self._clear)
        self._thread.start()
        return self

    def stop(self, final: tuple[int, int, int, int] | None = None) -> None:
        """Stop polling and print the last line: ``final`` = (images, bytes, skipped, total) when the job knows
        them (its Finalize step has removed the heartbeats by then), else the heartbeats as they are."""
        self._stop.set()
        self._thread.join(timeout=10)
        for handler in getattr(self, "_handlers", []):
            handler.removeFilter(self._clear)
        if final is not None:
            self._total = final[3]
        self._emit(final=True, counts=final[:3] if final is not None else None)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _read(self) -> tuple[int, int, int]:
        images = nbytes = errors = 0
        folder = storage.join(self._output, PROGRESS_DIR)
        for rel in storage.list_recursive(folder):
            if storage.is_temp_name(rel):
                continue
            try:
                beat = Heartbeat.from_json(json.loads(storage.read_text(storage.join(folder, rel))))
            except (OSError, ValueError, KeyError, TypeError, WorkRecordError, storage.StorageError):
                continue  # being written, or left by another version: the next poll counts it
            images += beat.images
            nbytes += beat.bytes
            errors += beat.errors
        if self._total is None:
            try:
                plan = json.loads(storage.read_text(storage.join(self._output, PLAN)))
                self._total = sum(s["records"] for s in plan["splits"].values())
            except (OSError, ValueError, storage.StorageError):
                pass
        return images, nbytes, errors

    def _emit(self, final: bool = False, counts: tuple[int, int, int] | None = None) -> None:
        try:
            images, nbytes, errors = counts if counts is not None else self._read()
        except (OSError, storage.StorageError):
            return
        width = terminal_width(self._stream) if self._tty else None  # read each time: the window may be resized
        line = progress_line(images, self._total, nbytes, errors, time.monotonic() - self._start, width)
        self.last_line = line
        if self._tty:
            self._stream.write("\r" + line + "\x1b[K")
            self._stream.flush()
        elif final or line != getattr(self, "_printed", None):
            LOG.info("%s", line)
            self._printed = line

    def _loop(self) -> None:
        last_log = 0.0
        while not self._stop.wait(self._poll):
            now = time.monotonic()
            if self._tty or now - last_log >= self._log_every:
                last_log = now
                self._emit()
