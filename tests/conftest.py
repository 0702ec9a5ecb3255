"""Shared fixtures: the bundled sample, a runner for the real command line, image factories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample" / "photos"


@pytest.fixture
def sample_dir(tmp_path) -> Path:
    """A private copy of the bundled sample photos (tests may add or break files)."""
    dst = tmp_path / "photos"
    shutil.copytree(SAMPLE, dst)
    return dst


def run_cli(*args, module: str = "pipeline.run", check: bool = True, env: dict | None = None, timeout: float = 600):
    """Run ``python -m MODULE ARGS`` the way a user does; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONWARNINGS", "ignore")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            "%s %s exited %d\nstdout:\n%s\nstderr:\n%s" % (module, " ".join(map(str, args)), proc.returncode, proc.stdout, proc.stderr)
        )
    return proc


@pytest.fixture
def cli():
    return run_cli


def load_manifest(out: Path) -> dict:
    return json.loads((Path(out) / "manifest.json").read_text())
