"""Importing Apache Beam without side effects on the host's logging, and without what a local run never uses.

Beam's GCP modules log "apitools not found ..." through the root logger when
they are imported without the GCP extras; with no handler on the root logger
that call configures logging for the whole process (``logging.basicConfig``)
and prints the line to every user. ``import_beam`` imports Beam with that one
record dropped and the root logger left exactly as it was found.

``import_beam(lean=True)`` is for our own command processes when the job runs
on the local runner: ``import apache_beam`` also imports each optional
integration whose package happens to be installed (BigQuery and Pub/Sub, the
GCS, S3, HDFS and Azure file systems, MongoDB, Arrow), 0.2-0.4 s of a 10-image
run and some 50 MB. The job reads and writes through ``imgrec.storage``, never
through Beam's IOs or ``FileSystems``, so during the import those modules are
refused, and Beam's own ``try: import ... except ImportError`` around each one
leaves it out. The refusal ends with the import: anything that imports one of
them later gets it as usual.

httplib2, with the pyparsing it imports (about 0.06 s), is imported by Beam
without a guard, once, for the stager's HTTP client, which only a remote
runner calls: during that import it is loaded lazily
(``importlib.util.LazyLoader``; the names in ``LOCAL_RUN_DEFERS``), so its
code runs on the first use of one of its names, if any. Others of the same
kind cannot be put off: the local runner's own import subclasses a gRPC class,
and PyYAML is imported from two of Beam's modules (on Python 3.11 the second
import statement runs a lazy module's code: the import system reads its
``__spec__``, and a lazy module loads on any attribute).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import logging
import sys

# Lines that Beam's import logs about optional integrations it leaves out: not about the job.
_NOISE = ("apitools not found", "Could not find a compatible bson package")
# The loggers those lines come through (the first through the root logger).
_NOISY_LOGGERS = ("", "apache_beam.io.mongodbio")

# --runner values that mean the local runner (Beam's FnApiRunner, in this process).
LOCAL_RUNNER_NAMES = ("DirectRunner", "direct")

# What ``import apache_beam`` imports inside a ``try: ... except ImportError`` (each refused, Beam carries on
# without it): the GCP IOs (apache_beam/io/__init__.py), the remote file systems (io/filesystems.py),
# MongoDB's client (io/mongodbio.py: bson comes first) and pyarrow (typehints/__init__.py).
LOCAL_RUN_SKIPS = frozenset({
    "apache_beam.io.gcp.bigquery",
    "apache_beam.io.gcp.gcsfilesystem",
    "apache_beam.io.aws.s3filesystem",
    "apache_beam.io.azure.blobstoragefilesystem",
    "apache_beam.io.hadoopfilesystem",
    "bson",
    "pyarrow",
})

# What ``import apache_beam`` imports unguarded, once, and uses only inside functions a local run never calls:
# loaded on first use (see above).
LOCAL_RUN_DEFERS = frozenset({"httplib2"})


class _DropImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


class _LeanFinder:
    """A meta-path finder for the lean import: it refuses ``LOCAL_RUN_SKIPS`` (ModuleNotFoundError) and hands out
    ``LOCAL_RUN_DEFERS`` with a lazy loader; every other module it leaves to the finders after it."""

    def find_spec(self, name, path=None, target=None):
        if name in LOCAL_RUN_SKIPS:
            raise ModuleNotFoundError("left out of a local run: %s" % name, name=name)
        if name not in LOCAL_RUN_DEFERS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


@contextlib.contextmanager
def _lean_import():
    finder = _LeanFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def runs_locally(argv: list[str]) -> bool:
    """Whether a command line's ``--runner`` (or its absence) means the local runner, read before Beam is imported."""
    runner = None
    for i, arg in enumerate(argv):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(argv):
            runner = argv[i + 1]
    return runner is None or runner in LOCAL_RUNNER_NAMES


def import_beam(lean: bool = False) -> None:
    """Import apache_beam once, leaving the root logger's handlers and filters as they were.

    ``lean``: leave out Beam's optional integrations (``LOCAL_RUN_SKIPS``) and load lazily what it only may use
    (``LOCAL_RUN_DEFERS``); only for a process of ours whose job runs on the local runner. A library user's
    process imports Beam whole.
    """
    if "apache_beam" in sys.modules:
        return
    root = logging.getLogger()
    guard, drop = logging.NullHandler(), _DropImportNoise()
    had_handlers = bool(root.handlers)
    if not had_handlers:
        root.addHandler(guard)  # so the import's logging.warning() does not call basicConfig()
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).addFilter(drop)
    try:
        with _lean_import() if lean else contextlib.nullcontext():
            import apache_beam  # noqa: F401
        if not lean:
            import apache_beam.io.gcp.internal.clients.bigquery  # noqa: F401  (where the line comes from)
    except ImportError:
        pass
    finally:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).removeFilter(drop)
        if not had_handlers:
            root.removeHandler(guard)
