"""GIL-held time of each process of one command, sampled with py-spy.

    py-spy record --gil --subprocesses --format raw --rate 100 -o run.raw -- CMD

With ``--gil`` py-spy records a process's stack only at the moments one of its
threads holds the GIL (threads waiting for it, or running C code that released
it, are not sampled), and ``--subprocesses`` follows forked and spawned
children. So a process's sample count divided by the rate is the time its GIL
was held, and the busiest process's figure per image bounds the job's
throughput: at 1 / (GIL-held seconds per image) images/s that GIL is busy all
the time, however many cores there are.

Checked on this machine with a script that spins for 1 s of CPU on one thread,
then sleeps 1 s on four: 1.03 s at 250 Hz, 1.15 s at 100 Hz (the interpreter's
start-up included), against 2.05 s of wall time.

py-spy needs ptrace on its child (it starts the command itself, which Yama's
``ptrace_scope`` 1 allows); ``unavailable()`` says in one line why it cannot
run here, and the benchmark then reports the GIL figures as not measured.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import measure

RATE = 100  # samples per second: enough for runs of seconds, and py-spy itself stays under ~5% of a core
_PROCESS = re.compile(r'^process (\d+):"(.*)"$')


@dataclass
class GilProfile:
    rate: int
    samples: dict = field(default_factory=dict)  # "PID command" -> GIL-held samples

    def seconds(self) -> dict:
        return {label: n / self.rate for label, n in self.samples.items()}

    @property
    def busiest(self) -> float:
        """GIL-held seconds of the process that held its GIL longest."""
        return max(self.samples.values(), default=0) / self.rate

    @property
    def total(self) -> float:
        return sum(self.samples.values()) / self.rate


def find_py_spy(python: str) -> str | None:
    """py-spy beside the given interpreter (its virtual environment), else on PATH."""
    beside = os.path.join(os.path.dirname(python), "py-spy")
    return beside if os.access(beside, os.X_OK) else shutil.which("py-spy")


def unavailable(py_spy: str | None, python: str = sys.executable) -> str | None:
    """None when py-spy can sample a child here; otherwise the reason, in one line."""
    if py_spy is None:
        return "py-spy not installed (pip install -e '.[bench]')"
    try:
        proc = subprocess.run([py_spy, "record", "--gil", "--rate", "10", "--format", "raw", "-o", os.devnull,
                               "--", python, "-c", "pass"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "py-spy could not run: %s" % exc
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return "py-spy cannot sample here (ptrace not permitted?): %s" % (lines[-1] if lines else "exit %d" % proc.returncode)
    return None


def command(py_spy: str, raw: str, cmd: list[str], rate: int = RATE) -> list[str]:
    return [py_spy, "record", "--gil", "--subprocesses", "--format", "raw", "--rate", str(rate), "-o", raw,
            "--"] + cmd


def parse_raw(path: str, rate: int = RATE) -> GilProfile:
    """Samples per process of a ``--format raw`` file (one ``stack count`` line per distinct stack).

    A child's stacks start with its parents' ``process PID:"cmd"`` frames; the
    last such frame is the process the stack was sampled in.
    """
    samples: collections.Counter = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            label = "main"
            for frame in stack.split(";"):
                m = _PROCESS.match(frame)
                if not m:
                    break
                label = "%s %s" % (m.group(1), m.group(2)[:80])
            samples[label] += int(count)
    return GilProfile(rate, dict(samples))


def record(py_spy: str, cmd: list[str], raw: str, log: str, rate: int = RATE, **kwargs) -> tuple[GilProfile, measure.Measurement]:
    """Run ``cmd`` under py-spy; its GIL profile and the measurement of the run (py-spy included)."""
    m = measure.run_checked(command(py_spy, raw, cmd, rate), log, **kwargs)
    return parse_raw(raw, rate), m
