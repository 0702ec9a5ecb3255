"""Run MXNet's own ``tools/im2rec.py`` (mxnet 1.9.1, in ``.venv-mxnet``) and ours on the same trees, and compare."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, run_cli

MX_PYTHON = REPO / ".venv-mxnet" / "bin" / "python"
IM2REC = REPO / ".venv-mxnet" / "lib" / "python3.11" / "site-packages" / "mxnet" / "tools" / "im2rec.py"
OURS = "pipeline.im2rec"


def im2rec(cwd: Path, *args) -> subprocess.CompletedProcess:
    """Run MXNet's im2rec.py itself in ``cwd``, the way the tutorial does."""
    if not IM2REC.exists():
        pytest.fail("the mxnet reference environment is missing: run `make envs` (expected %s)" % IM2REC)
    proc = subprocess.run(
        [str(MX_PYTHON), str(IM2REC), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, "im2rec.py %s failed:\n%s\n%s" % (args, proc.stdout, proc.stderr)
    return proc


def ours(cwd: Path | None, *args, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m pipeline.im2rec``; a relative PREFIX is taken relative to ``cwd`` (as the tutorial's ``./``)."""
    args = [Path(cwd) / args[0], *args[1:]] if cwd is not None else list(args)
    return run_cli(*args, module=OURS, check=check)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_same_files(theirs: dict[str, bytes], mine: dict[str, bytes], extra=frozenset()) -> None:
    """Every file im2rec.py wrote exists in ours with the same bytes; ours has only ``extra`` besides."""
    assert theirs, "im2rec.py wrote nothing"
    assert set(mine) - set(theirs) == set(extra)
    for name, data in theirs.items():
        assert name in mine, "%s missing from our output" % name
        assert mine[name] == data, "%s differs from im2rec.py's (%d vs %d bytes)" % (name, len(mine[name]), len(data))


def build_tree(sample_dir: Path) -> Path:
    """The sample's 5 class folders plus nesting that exercises im2rec.py's label numbering:
    an image in ROOT itself, a sub-folder inside a class, a folder that only holds a folder,
    an upper-case extension, a .jpeg and a non-image file."""
    cat = sorted((sample_dir / "cat").glob("*.jpg"))
    flower = sorted((sample_dir / "flower").glob("*.jpg"))
    (sample_dir / "cat" / "kitten").mkdir()
    shutil.copy(cat[0], sample_dir / "cat" / "kitten" / "k0.jpg")
    shutil.copy(cat[1], sample_dir / "cat" / "kitten" / "k1.jpeg")
    (sample_dir / "zoo" / "wild").mkdir(parents=True)
    shutil.copy(flower[0], sample_dir / "zoo" / "wild" / "w0.jpg")
    shutil.copy(sample_dir / "rocket" / "rocket_05.png", sample_dir / "zoo" / "wild" / "w1.png")
    shutil.copy(flower[1], sample_dir / "flower" / "UPPER.JPG")
    shutil.copy(flower[2], sample_dir / "top.jpg")
    (sample_dir / "notes.txt").write_text("not an image\n")
    return sample_dir


def label_map_printed(stdout: str) -> str:
    """The ``folder label`` lines im2rec.py prints after its walk."""
    return "".join(line + "\n" for line in stdout.splitlines() if re.fullmatch(r".+ \d+", line))


TUTORIAL_LIST = ["--recursive", "--list", "--train-ratio", "0.7", "--test-ratio", "0.3"]
TUTORIAL_PACK = ["--recursive", "--pass-through", "--pack-label", "--num-thread", "2"]
