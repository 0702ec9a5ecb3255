"""Named points where a test can kill the job outright, to check what a crash there leaves. For tests only.

With ``IMGREC_CRASH_AT=NAME`` in its environment, a process that reaches the
point NAME sends itself SIGKILL there: no clean-up, no ``finally``, as when a
machine loses power or the OOM killer strikes. Without it (always, outside the
tests) ``reached`` does nothing. The points are listed in ``POINTS``; the tests
of each protocol kill the job at every point it defines (tests/test_crash_safety.py).
"""

from __future__ import annotations

import os
import signal

ENV = "IMGREC_CRASH_AT"

POINTS = (
    # --incremental's commit (imgrec/finalize.py)
    "writing-lists",  # the new state's lists and merged indexes half written
    "lists-written",  # they are complete; nothing else of the new state yet
    "before-manifest",  # everything of the new state written but the manifest
    "manifest-written",  # the manifest switched; the old state's files not yet removed
    "stale-removed",  # the old state's files removed; _work not yet cleared
    # S3 multipart uploads (imgrec/storage/s3.py)
    "multipart-part-sent",  # an upload recorded under _work/uploads/ and its first part sent
)


def reached(point: str) -> None:
    """Kill this process here when a test asked for ``point``."""
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
