"""GIL-held time of each process and thread of one command, sampled with py-spy.

    py-spy record --gil --threads --subprocesses --format raw --rate 100 -o run.raw -- \
        python bench/gil_clock.py run.clock.json -- CMD

With ``--gil`` py-spy records a process's stack only at the moments one of its
threads holds the GIL (threads waiting for it, or running C code that released
it, are not sampled), ``--threads`` names the thread, and ``--subprocesses``
follows forked and spawned children, all sampled at the same moments. So a
process's sample count over the samples per second taken is the time its GIL
was held, and the busiest process's figure per image bounds the job's
throughput: at 1 / (GIL-held seconds per image) images/s that GIL is busy all
the time, however many cores there are.

Two corrections, both checked on scripts whose GIL time is known:

- py-spy's gaps between samples are random (exponential), so the count taken
  over a run varies by several per cent; ``gil_clock.py``, the process py-spy
  starts, holds its own GIL throughout and so counts the samples really taken.
- A thread preempted while it holds the GIL keeps it, and py-spy counts it;
  with fewer free cores than runnable threads that inflates the figure (2.4 s
  sampled for 1.0 s of Python beside four compressing threads on 2 cores).
  ``held_running`` takes per thread the lesser of the time held and the time
  the thread ran at all (schedstat): 1.45-1.50 s for two threads spinning
  0.75 s each, 0.79 s for each of two processes spinning 0.8 s, 1.02 s for
  one spinning 1.0 s; an upper bound (1.5-1.7 s in the compressing case).

py-spy needs ptrace on its child (it starts the command itself, which Yama's
``ptrace_scope`` 1 allows); ``unavailable()`` says in one line why it cannot
run here, and the benchmark then reports the GIL figures as not measured.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import measure

CLOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gil_clock.py")
RATE = 100  # samples per second: enough for runs of seconds, and py-spy itself stays under ~5% of a core
_PROCESS = re.compile(r'^process (\d+):"([^"]*)"?$', re.DOTALL)
_THREAD = re.compile(r"^thread \((\d+)\)")


@dataclass
class GilProfile:
    """GIL-held samples per process and thread of one run, and each thread's scheduler figures."""

    rate: int  # asked of py-spy
    samples: dict = field(default_factory=dict)  # "PID" -> GIL-held samples
    commands: dict = field(default_factory=dict)  # "PID" -> its command line (shortened)
    threads: dict = field(default_factory=dict)  # "PID/TID" -> GIL-held samples
    sched: dict = field(default_factory=dict)  # "PID/TID" -> [ns on a CPU, ns runnable but waiting for a CPU]
    achieved_rate: float = 0.0  # samples per second py-spy really took (gil_clock.py); 0: not known
    root: str = ""  # PID of the process py-spy started

    @property
    def per_second(self) -> float:
        return self.achieved_rate or self.rate

    def held(self, pid: str) -> float:
        """Wall seconds during which a thread of ``pid`` held its GIL."""
        return self.samples.get(pid, 0) / self.per_second

    def held_running(self, pid: str) -> float:
        """At most this many seconds a thread of ``pid`` held the GIL while on a CPU.

        A thread preempted while it holds the GIL keeps it (so py-spy counts
        it) without running: where threads outnumber the free cores, as on a
        busy 2-core machine, that inflates ``held``. Per thread, the time it
        held the GIL on a CPU is at most the lesser of the time it held it and
        the time it ran (``/proc/PID/task/TID/schedstat``): an upper bound, so
        the ceiling drawn from it is a lower bound. Exact for threads that only
        run Python code; for a thread that also runs long C code without the
        GIL, nearer ``held``. A thread whose figures were not seen (too
        short-lived), and samples without a thread id, count as held.
        """
        total, counted = 0.0, 0
        for key, n in self.threads.items():
            if key.split("/")[0] != pid:
                continue
            counted += n
            on_cpu = self.sched.get(key, (0, 0))[0]
            total += min(n / self.per_second, on_cpu / 1e9) if on_cpu else n / self.per_second
        return total + (self.samples.get(pid, 0) - counted) / self.per_second

    def busiest(self, how: str = "running") -> float:
        """Seconds of the process that held its GIL longest: on a CPU (``held_running``), or "wall" (``held``)."""
        measure_ = self.held_running if how == "running" else self.held
        return max((measure_(p) for p in self.samples), default=0.0)

    def total(self, how: str = "running") -> float:
        measure_ = self.held_running if how == "running" else self.held
        return sum(measure_(p) for p in self.samples)


def find_py_spy(python: str) -> str | None:
    """py-spy beside the given interpreter (its virtual environment), else on PATH."""
    beside = os.path.join(os.path.dirname(python), "py-spy")
    return beside if os.access(beside, os.X_OK) else shutil.which("py-spy")


def unavailable(py_spy: str | None, python: str = sys.executable) -> str | None:
    """None when py-spy can sample a child here; otherwise the reason, in one line.

    The probe spins for half a second: a child that exits at once races
    py-spy's attach ("Failed to get process executable name").
    """
    if py_spy is None:
        return "py-spy not installed (pip install -e '.[bench]')"
    spin = "import time; t = time.process_time(); any(iter(lambda: time.process_time() - t > 0.5, True))"
    with tempfile.TemporaryDirectory(prefix="bench-gil-") as tmp:
        raw = os.path.join(tmp, "probe.raw")
        try:
            proc = subprocess.run(command(py_spy, raw, [python, "-c", spin], rate=50), capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return "py-spy could not run: %s" % exc
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("Error")]
            return "py-spy cannot sample here (ptrace not permitted?): %s" % (
                lines[0] if lines else "exit %d" % proc.returncode)
        if parse_raw(raw, 50).total() <= 0:
            return "py-spy recorded no GIL samples of a busy child"
    return None


def command(py_spy: str, raw: str, cmd: list[str], rate: int = RATE, clock: tuple[str, str] | None = None) -> list[str]:
    """The py-spy command line; ``clock`` = (python, json path) runs ``cmd`` under gil_clock.py."""
    if clock is not None:
        cmd = [clock[0], CLOCK, clock[1], "--"] + cmd
    return [py_spy, "record", "--gil", "--threads", "--subprocesses", "--format", "raw", "--rate", str(rate),
            "-o", raw, "--"] + cmd


def parse_raw(path: str, rate: int = RATE) -> GilProfile:
    """Samples per process and thread of a ``--format raw`` file (one ``stack count`` line per distinct stack).

    A child's stacks start with its parents' ``process PID:"cmd"`` frames (the
    last such frame is the process the stack was sampled in), then, with
    ``--threads``, a ``thread (TID): name`` frame.
    """
    profile = GilProfile(rate)
    pending = ""
    with open(path) as f:
        for line in f:
            # a command line holding a newline continues its stack on the next line
            stack, _, count = (pending + line.rstrip("\n")).rpartition(" ")
            if not count.isdigit():
                pending += line
                continue
            pending = ""
            pid, tid = "0", None
            for frame in stack.split(";"):  # a ";" inside a command line splits it too: match each piece
                m = _PROCESS.match(frame)
                if m:
                    if pid == "0":  # the first process frame: the root of the tree
                        profile.root = m.group(1)
                    pid, tid = m.group(1), None
                    profile.commands[pid] = m.group(2)[:80].replace("\n", " ")
                    continue
                t = _THREAD.match(frame)
                if t and tid is None:
                    tid = t.group(1)
            profile.samples[pid] = profile.samples.get(pid, 0) + int(count)
            if tid is not None:
                key = "%s/%s" % (pid, tid)
                profile.threads[key] = profile.threads.get(key, 0) + int(count)
    return profile


def record(py_spy: str, cmd: list[str], raw: str, log: str, rate: int = RATE, prefix=(),
           **kwargs) -> tuple[GilProfile, measure.Measurement]:
    """Run ``cmd`` (a Python command) under py-spy and gil_clock.py, after ``prefix`` (e.g. taskset).

    Returns the GIL profile of ``cmd``'s process tree, timed by the clock
    process (which is left out of it), and the measurement of the whole run.
    """
    sched: dict = {}
    clock_json = raw + ".clock.json"
    m = measure.run_checked(list(prefix) + command(py_spy, raw, cmd, rate, clock=(cmd[0], clock_json)), log,
                            schedstat=sched, **kwargs)
    profile = parse_raw(raw, rate)
    profile.sched = {"%d/%d" % key: list(v) for key, v in sched.items()}
    # the clock is the process py-spy started (py-spy often reads its command line as "")
    clock_pid = profile.root or None
    try:
        with open(clock_json) as f:
            seconds = json.load(f)["seconds"]
    except (OSError, ValueError, KeyError):
        seconds = 0.0
    if clock_pid is not None:
        ticks = profile.samples.pop(clock_pid, 0)
        profile.commands.pop(clock_pid, None)
        for key in [k for k in profile.threads if k.split("/")[0] == clock_pid]:
            del profile.threads[key]
        if seconds > 0 and ticks > 0:
            profile.achieved_rate = ticks / seconds
    return profile, m
