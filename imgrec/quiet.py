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

A lazy module cannot put off ``from X import name`` (the import statement
reads the name at once). Beam takes names that way from beartype (its
type-hint check of a non-Beam type), cryptography (the encrypted
GroupByKey) and fastavro (Avro coders and files), about 0.1 s of a 10-image
run, and uses each only inside a function a local run of ours never calls.
During the lean import those modules (``LOCAL_RUN_PROXIES``) are stand-ins:
each name Beam takes is a function that imports the real module on its first
call and calls the real function (an exception class Beam catches stands for
the real one: what the real function raises of it is raised as the stand-in);
any other name read from a stand-in imports the real module at once. After the
import the stand-ins leave ``sys.modules``: a later import gets the real ones.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import types
from typing import Any, Callable

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

# What ``import apache_beam`` takes names from (``from X import name``) and calls only inside functions: module ->
# those names, each a stand-in until its first call (see above; Beam 2.77: typehints/typehints.py, transforms/util.py,
# coders/coder_impl.py, io/avroio.py). A name ending in "Exception" is an exception class that Beam catches.
LOCAL_RUN_PROXIES = {
    "beartype": (),
    "beartype.door": ("is_subhint",),
    "beartype.roar": ("BeartypeDoorException",),
    "cryptography.fernet": ("Fernet",),
    "fastavro": ("parse_schema", "schemaless_reader", "schemaless_writer"),
    "fastavro.read": ("block_reader",),
    "fastavro.write": ("Writer",),
}


class _DropImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


class _StandIn(types.ModuleType):
    """A module of ``LOCAL_RUN_PROXIES`` during the lean import: its listed names call the real ones; any other
    name is read from the real module (imported then)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in LOCAL_RUN_PROXIES.get(self.__name__, ()):
            return getattr(_real_module(self.__name__), name)
        if name.endswith("Exception"):
            value: Any = type(name, (Exception,), {"__module__": self.__name__})
            _STAND_IN_ERRORS[(self.__name__, name)] = value
        else:
            value = _deferred_call(self.__name__, name)
        setattr(self, name, value)
        return value


# (module, name) -> the stand-in class of one of that module's exceptions
_STAND_IN_ERRORS: dict[tuple[str, str], type] = {}
# top-level packages whose real modules were wanted during the lean import: no more stand-ins of theirs
_MADE_REAL: set[str] = set()


def _real_module(name: str) -> types.ModuleType:
    """The real module ``name`` (imported now if need be, its package's stand-ins put aside for good)."""
    family = name.split(".")[0]
    if family not in _MADE_REAL:
        _MADE_REAL.add(family)
        for other in LOCAL_RUN_PROXIES:
            if other.split(".")[0] == family and isinstance(sys.modules.get(other), _StandIn):
                del sys.modules[other]
    return importlib.import_module(name)


def _deferred_call(module: str, name: str) -> Callable:
    def call(*args, **kwargs):
        real = getattr(_real_module(module), name)
        try:
            return real(*args, **kwargs)
        except Exception as exc:
            stand_in = _stand_in_error(module, exc)
            if stand_in is None:
                raise
            raise stand_in(*exc.args) from exc

    call.__name__ = call.__qualname__ = name
    return call


def _stand_in_error(called: str, exc: BaseException) -> type | None:
    """The stand-in Beam catches for ``exc``, raised by a function of module ``called``: one of that package's
    exception classes it stands for (only that package's are looked at, so no other package is imported here)."""
    family = called.split(".")[0]
    for (module, name), stand_in in list(_STAND_IN_ERRORS.items()):
        if module.split(".")[0] == family and isinstance(exc, getattr(_real_module(module), name)):
            return stand_in
    return None


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return _StandIn(spec.name)

    def exec_module(self, module) -> None:
        pass


class _LeanFinder:
    """A meta-path finder for the lean import: it refuses ``LOCAL_RUN_SKIPS`` (ModuleNotFoundError), hands out
    ``LOCAL_RUN_DEFERS`` with a lazy loader and ``LOCAL_RUN_PROXIES`` as stand-ins; every other module it leaves
    to the finders after it."""

    def find_spec(self, name, path=None, target=None):
        if name in LOCAL_RUN_SKIPS:
            raise ModuleNotFoundError("left out of a local run: %s" % name, name=name)
        if name in LOCAL_RUN_PROXIES and name.split(".")[0] not in _MADE_REAL:
            if importlib.machinery.PathFinder.find_spec(name.split(".")[0]) is None:
                return None  # not installed: Beam's import fails as it would have
            return importlib.machinery.ModuleSpec(name, _StandInLoader(), is_package=True)
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
        for name in LOCAL_RUN_PROXIES:
            if isinstance(sys.modules.get(name), _StandIn):
                del sys.modules[name]


def one_blas_thread() -> None:
    """A command process of ours: numpy's OpenBLAS starts no thread pool (``OPENBLAS_NUM_THREADS=1`` unless set).

    Loading numpy starts one OpenBLAS thread per core but one, and each spins for about 0.1 s before it
    sleeps (0.2 s of CPU on 2 cores in a run of 10 images, competing with the single-threaded start-up;
    more threads on a bigger machine). Nothing in the job calls BLAS. The variable is read when numpy is
    loaded, so this must run before; the processes the command starts inherit it. A library user's
    process is left as it is.
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


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
