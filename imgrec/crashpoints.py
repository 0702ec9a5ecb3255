"""Named points where a test can kill the job outright, or hold it, to check what a crash there leaves. For tests only.

With ``IMGREC_CRASH_AT=NAME`` in its environment, a process that reaches the
point NAME sends itself SIGKILL there: no clean-up, no ``finally``, as when a
machine loses power or the OOM killer strikes. Without it (always, outside the
tests) ``reached`` does nothing. The points are listed in ``POINTS``; the tests
of each protocol kill the job at every point it defines (tests/test_crash_safety.py).

With ``IMGREC_HOLD_AT=NAME:N`` and ``IMGREC_HOLD_DIR=FOLDER``, the job is held
instead, so that a test can kill it from outside at a moment it chose, with no
race against the job finishing: every arrival at NAME, in any process of the
job, takes the next ticket (the file ``FOLDER/NAME-<k>``, made with O_EXCL, so
two processes never take the same one), and an arrival whose ticket is N or
later waits there until it is killed. A test that sees ``FOLDER/NAME-N`` knows
that N arrivals have passed the point and that the job cannot finish.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "IMGREC_CRASH_AT"
HOLD_ENV = "IMGREC_HOLD_AT"
HOLD_DIR_ENV = "IMGREC_HOLD_DIR"

POINTS = (
    # --incremental's commit (imgrec/finalize.py)
    "writing-lists",  # the new state's lists and merged indexes half written
    "lists-written",  # they are complete; nothing else of the new state yet
    "before-manifest",  # everything of the new state written but the manifest
    "manifest-written",  # the manifest switched; the old state's files not yet removed
    "stale-removed",  # the old state's files removed; _work not yet cleared
    # S3 multipart uploads (imgrec/storage/s3.py)
    "multipart-part-sent",  # an upload recorded under _work/uploads/ and its first part sent
    # shards (transforms/write_shards.py)
    "shard-recorded",  # a shard's .rec, .idx and completion record written
)


def ticket_path(folder: str, point: str, number: int) -> str:
    """The file that the ``number``-th arrival at ``point`` makes under a hold's folder."""
    return os.path.join(folder, "%s-%d" % (point, number))


def reached(point: str) -> None:
    """Kill this process here when a test asked for ``point``; hold it here when a test asked to."""
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
    hold = os.environ.get(HOLD_ENV, "")
    if hold.rpartition(":")[0] == point:
        _arrive(point, int(hold.rpartition(":")[2]), os.environ[HOLD_DIR_ENV])


def _arrive(point: str, hold_from: int, folder: str) -> None:
    number = 1
    while True:
        try:
            os.close(os.open(ticket_path(folder, point, number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            break
        except FileExistsError:
            number += 1
    if number >= hold_from:
        threading.Event().wait()  # until the test kills the job
