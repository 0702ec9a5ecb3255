"""Fixtures for the compatibility tests: the reader environments and a way to run helpers in them.

mxnet 1.9.1 needs numpy<1.24, so it never runs in the job's environment: each
helper script here (``mx_write.py``, ``mx_read.py``, ``dali_read.py``) runs as a
subprocess under ``.venv-mxnet/bin/python`` or ``.venv-dali/bin/python``, takes
one JSON request on stdin and prints one JSON answer on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _venv_python(venv: str, what: str) -> Path:
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        pytest.fail(
            "%s not found: the compatibility tests run %s in that environment. "
            "Create it with `make envs` (the Makefile recipe pins its versions)." % (python, what),
            pytrace=False,
        )
    return python


@pytest.fixture(scope="session")
def mx_python() -> Path:
    return _venv_python(".venv-mxnet", "mxnet 1.9.1")


@pytest.fixture(scope="session")
def dali_python() -> Path:
    return _venv_python(".venv-dali", "NVIDIA DALI")


def run_helper(python: Path, script: str, request: dict, timeout: float = 300) -> dict:
    """Run ``tests/compat/SCRIPT`` under ``python`` with ``request``; returns its JSON answer."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        PYTHONNOUSERSITE="1",
        PYTHONWARNINGS="ignore",
        # Two cores shared by everyone: the readers get one thread each.
        OMP_NUM_THREADS="1",
        MXNET_CPU_WORKER_NTHREADS="1",
        MXNET_CPU_PRIORITY_NTHREADS="1",
    )
    proc = subprocess.run(
        [str(python), str(HERE / script)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        env=env,
    )
    if proc.returncode != 0:
        raise AssertionError(
            "%s %s exited %d\nstderr (last 4000 chars):\n%s" % (python, script, proc.returncode, proc.stderr[-4000:])
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError("%s printed no JSON answer\nstdout:\n%s\nstderr:\n%s" % (script, proc.stdout, proc.stderr[-4000:]))
    return json.loads(lines[-1])
