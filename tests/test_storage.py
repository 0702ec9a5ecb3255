"""The storage facade and its backends, on the local file system (the S3 backend: tests/s3/).

The facade picks one backend object per scheme; the backends share one
interface and import nothing of the facade or of each other; the worker
environment sets their per-process settings.
"""

from __future__ import annotations

import ast
import dataclasses
import pickle
import traceback
from pathlib import Path

import pytest

from conftest import REPO
from imgrec import storage
from imgrec.env import WorkerEnv
from imgrec.options import ConvertOptions, S3Settings
from imgrec.storage.base import Storage
from imgrec.storage.local import LocalStorage
from imgrec.storage.s3 import S3Storage

STORAGE = Path(REPO) / "imgrec" / "storage"


@pytest.fixture(autouse=True)
def default_env():
    """Every test starts and ends with this process's default settings."""
    WorkerEnv().apply()
    yield
    WorkerEnv().apply()


def imported_modules(path: Path) -> set[str]:
    """The modules ``path`` imports, at any depth of its code (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update("%s.%s" % (node.module, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("backend", ["base.py", "local.py", "s3.py"])
def test_backends_import_only_the_shared_base(backend):
    """No import circle: the facade imports the backends, a backend imports only ``base`` of the package."""
    ours = {m for m in imported_modules(STORAGE / backend) if m == "imgrec.storage" or m.startswith("imgrec.storage.")}
    beyond_base = {m for m in ours if m != "imgrec.storage.base" and not m.startswith("imgrec.storage.base.")}
    assert beyond_base == set()
    if backend == "base.py":
        assert ours == set()


def test_nothing_imports_the_old_s3_module():
    """``imgrec.s3`` moved to ``imgrec.storage.s3``: no module of the project names the old place."""
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("imgrec", "transforms", "pipeline", "tests", "bench")
        for path in sorted((Path(REPO) / folder).rglob("*.py"))
        if "imgrec.s3" in imported_modules(path)
    ]
    assert offenders == []
    assert not (Path(REPO) / "imgrec" / "s3.py").exists() and not (Path(REPO) / "imgrec" / "storage.py").exists()


def test_one_backend_object_per_scheme():
    local, s3 = storage.backend_for("/data/photos"), storage.backend_for("s3://bucket/photos/")
    assert isinstance(local, LocalStorage) and isinstance(s3, S3Storage)
    assert isinstance(local, Storage) and isinstance(s3, Storage)
    assert storage.backend_for("relative/path") is local and storage.backend_for("s3://other") is s3
    # the scheme is spelt exactly: anything else is a local path, as before
    assert storage.backend_for("S3://bucket/x") is local
    WorkerEnv(s3=S3Settings(region="eu-west-1"), fsync=True).apply()
    assert storage.backend_for("s3://bucket/") is s3, "settings change the object's state, not the object"


def test_every_backend_implements_the_whole_interface():
    for backend in (LocalStorage(), S3Storage()):  # an abstract method left out would refuse to instantiate
        assert not getattr(type(backend), "__abstractmethods__", None)


@pytest.mark.parametrize(
    "base, parts, expected",
    [
        ("/out", ("train", "data.rec"), "/out/train/data.rec"),
        ("/out/", ("a/./b//c",), "/out/a/b/c"),
        ("out", (), "out"),
        ("s3://bkt/pre/", ("train/x.rec",), "s3://bkt/pre/train/x.rec"),
        ("s3://bkt/pre//", ("", "./a"), "s3://bkt/pre/a"),
        ("s3://bkt/pre/", (), "s3://bkt/pre"),
    ],
)
def test_join(base, parts, expected):
    assert storage.join(base, *parts) == expected


@pytest.mark.parametrize("base", ["/out", "s3://bkt/out"])
def test_join_refuses_climbing_out(base):
    with pytest.raises(storage.StorageError, match=r"refusing path component '\.\.' in 'a/\.\./\.\./etc'"):
        storage.join(base, "a/../../etc")


def test_relative_to():
    assert storage.relative_to("/in/cat/a.jpg", "/in") == "cat/a.jpg"
    assert storage.relative_to("s3://b/in/cat/a.jpg", "s3://b/in/") == "cat/a.jpg"
    assert storage.relative_to("s3://b/elsewhere/a.jpg", "s3://b/in") == "s3://b/elsewhere/a.jpg"


def test_storage_error_keeps_its_public_name():
    """A worker's StorageError reaches the launcher as traceback text, which names the class by its module."""
    line = traceback.format_exception_only(storage.StorageError("cannot write x: disk full"))[-1]
    assert line == "imgrec.storage.StorageError: cannot write x: disk full\n"
    assert pickle.loads(pickle.dumps(storage.StorageError("x"))).args == ("x",)
    assert issubclass(storage.UnusableFileError, storage.StorageError)


def test_local_atomic_writer_shows_nothing_until_done_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "sub" / "data.rec"
    with storage.atomic_writer(str(target)) as f:
        f.write(b"abc")
        temps = [p for p in (tmp_path / "sub").iterdir()]
        assert not target.exists() and len(temps) == 1 and storage.is_temp_name(temps[0].name)
    assert target.read_bytes() == b"abc" and list((tmp_path / "sub").iterdir()) == [target]

    class Failed(Exception):
        pass

    with pytest.raises(Failed):
        with storage.atomic_writer(str(tmp_path / "sub" / "other.rec")) as f:
            f.write(b"half")
            raise Failed
    assert list((tmp_path / "sub").iterdir()) == [target]


def test_temp_names_are_recognised():
    name = storage.temp_name("data-00000-of-00002.rec")
    assert name.startswith(".data-00000-of-00002.rec" + storage.TMP_MARK) and len(name) == len(".data-00000-of-00002.rec.tmp-") + 12
    assert storage.is_temp_name("train/" + name)
    assert not storage.is_temp_name("train/data.rec") and not storage.is_temp_name(".hidden")


def test_local_concatenate_streams_the_sources_into_one_file(tmp_path):
    sources = []
    for i, body in enumerate((b"first", b"", b"third" * 1000)):
        path = tmp_path / ("%d.rec" % i)
        path.write_bytes(body)
        sources.append((str(path), len(body)))
    storage.concatenate(str(tmp_path / "all.rec"), sources)
    assert (tmp_path / "all.rec").read_bytes() == b"first" + b"third" * 1000


def test_a_failed_local_concatenation_leaves_no_file(tmp_path):
    (tmp_path / "a.rec").write_bytes(b"a")
    with pytest.raises(FileNotFoundError):
        storage.concatenate(str(tmp_path / "all.rec"), [(str(tmp_path / "a.rec"), 1), (str(tmp_path / "gone.rec"), 1)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.rec"]


def test_local_backend_has_no_uploads_to_abort_and_s3_checks_nothing_up_front(tmp_path):
    assert storage.abort_recorded_uploads(str(tmp_path / "_work" / "uploads")) == 0
    storage.check_output_folder("s3://bucket/out/")  # no request: a refused write says so when it happens
    assert storage.regular_file_problem("s3://bucket/in/a.jpg") == ""


def test_worker_env_from_options_and_apply():
    options = ConvertOptions(input="in", output="out", fsync=True, s3=S3Settings(region="eu-west-1", sse="AES256"))
    env = WorkerEnv.from_options(options)
    assert env == WorkerEnv(s3=S3Settings(region="eu-west-1", sse="AES256"), fsync=True)
    assert pickle.loads(pickle.dumps(env)) == env, "carried to workers by pickling"
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.fsync = False  # type: ignore[misc]
    env.apply()
    env.apply()  # idempotent
    assert storage.backend_for("/x").fsync is True
    assert storage.backend_for("s3://b").settings == options.s3
    WorkerEnv().apply()
    assert storage.backend_for("/x").fsync is False and storage.backend_for("s3://b").settings == S3Settings()
