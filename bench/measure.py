"""Run one command and measure it: wall time, peak memory of its process tree, CPU used.

Peak memory is sampled every ``SAMPLE_SECONDS`` over the process and all its
descendants, two ways: the largest sum of resident set sizes (RSS: a page
shared by forked workers is counted once per process that maps it) and the
largest sum of proportional set sizes (PSS, from ``/proc/PID/smaps_rollup``:
a shared page is split between the processes sharing it, so the sum is the
memory the tree really holds). PSS needs Linux 4.14+; where it cannot be read
``peak_pss`` is 0 and ``memory_kind()`` says "RSS". CPU is the user+system time
of the whole tree; "other CPU" is the CPU the rest of the machine used in the
same wall-clock window, which says how noisy the measurement was.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass

import psutil

SAMPLE_SECONDS = 0.05
# A read of /proc/PID/smaps_rollup walks the process's page tables: 4-6 ms of CPU for one of our job's
# processes (their shared-memory slots are mapped in each), so reading all three every 0.05 s took about 30%
# of a core -- from the tool being timed, on a 2-core run, but from the idle core on a 1-core run. A timed
# run spaces its PSS reads so that they take at most this share of one core; ``pss_budget=None`` reads PSS
# at every sample (the memory mode, whose figure is the peak).
PSS_BUDGET = 0.02


@dataclass
class Measurement:
    wall: float  # seconds, process start to exit
    peak_rss: int  # bytes, largest summed RSS of the tree
    peak_pss: int  # bytes, largest summed PSS of the tree (0: not readable here)
    cpu: float  # seconds of user+system time of the tree
    sys: float  # of which system time (page faults, system calls)
    other_cpu: float  # seconds of CPU the rest of the machine used meanwhile
    returncode: int
    log: str  # path of the combined stdout/stderr

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu / self.wall if self.wall else 0.0

    @property
    def sys_percent(self) -> float:
        return 100.0 * self.sys / self.cpu if self.cpu else 0.0

    @property
    def other_cpu_percent(self) -> float:
        return 100.0 * self.other_cpu / self.wall if self.wall else 0.0


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


def _pss(pid: int) -> int | None:
    """Proportional set size of one process in bytes, or None where smaps_rollup cannot be read."""
    try:
        with open("/proc/%d/smaps_rollup" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_kind() -> str:
    """Which peak memory figure this machine gives: "PSS" (smaps_rollup readable) or "RSS"."""
    return "PSS" if _pss(os.getpid()) is not None else "RSS"


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc] + proc.children(recursive=True)
    except psutil.Error:
        return []


def thread_schedstat(pid: int) -> dict[int, tuple[int, int]]:
    """tid -> (ns on a CPU, ns runnable but waiting for a CPU) of each thread of ``pid`` (empty if gone)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                on_cpu, waiting = f.read().split()[:2]
            out[int(tid)] = (int(on_cpu), int(waiting))
        except (OSError, ValueError):
            continue
    return out


def run(cmd: list[str], log: str, cwd: str | None = None, env: dict | None = None, timeout: float = 7200,
        schedstat: dict | None = None, pss_budget: float | None = PSS_BUDGET) -> Measurement:
    """Run ``cmd`` to completion, sampling its process tree; output goes to ``log``.

    ``schedstat``, if given, is filled with the last scheduler figures seen of
    every thread of the tree: (pid, tid) -> (ns on a CPU, ns waiting for one).
    ``pss_budget``: the share of one core the PSS reads may take (the next read
    waits until the last one's CPU time is that share of the time since); None:
    PSS at every sample. RSS and CPU are read at every sample either way.
    """
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = _busy_seconds()
    seen_cpu: dict[tuple[int, float], tuple[float, float]] = {}  # (pid, create_time) -> last (user, system) seen
    peak = peak_pss = 0
    pss_ok = memory_kind() == "PSS"
    next_pss = 0.0
    with open(log, "wb") as out:
        start = time.perf_counter()
        popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        root = psutil.Process(popen.pid)
        while True:
            total = total_pss = 0
            read_pss = pss_ok and time.perf_counter() >= next_pss
            cpu0 = time.thread_time()
            for p in _tree(root):
                try:
                    with p.oneshot():
                        total += p.memory_info().rss
                        t = p.cpu_times()
                        seen_cpu[(p.pid, p.create_time())] = (t.user, t.system)
                except psutil.Error:
                    continue
                if read_pss:
                    total_pss += _pss(p.pid) or 0  # None: it exited between the two reads
                if schedstat is not None:
                    for tid, figures in thread_schedstat(p.pid).items():
                        schedstat[(p.pid, tid)] = figures
            peak = max(peak, total)
            if read_pss:
                peak_pss = max(peak_pss, total_pss)
                if pss_budget:
                    next_pss = time.perf_counter() + (time.thread_time() - cpu0) / pss_budget
            if popen.poll() is not None:
                break
            if time.perf_counter() - start > timeout:
                popen.kill()
                popen.wait()
                break
            time.sleep(SAMPLE_SECONDS)
        wall = time.perf_counter() - start
    busy = _busy_seconds() - busy0
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Descendants reaped by their parents roll up into the child's rusage; ones
    # that were not are still in the sampled figures, so take the larger.
    reaped = (after_children.ru_utime - before_children.ru_utime, after_children.ru_stime - before_children.ru_stime)
    sampled = (sum(u for u, _ in seen_cpu.values()), sum(s for _, s in seen_cpu.values()))
    user, system = max(reaped, sampled, key=sum)
    cpu = user + system
    return Measurement(wall, peak, peak_pss, cpu, system, max(0.0, busy - cpu), popen.returncode, log)


def wait_for_quiet(max_wait: float, threshold_percent: float = 25.0, sample: float = 2.0) -> float:
    """Wait until the machine's CPU use (ours is idle now) is under ``threshold_percent`` of one core.

    Gives up after ``max_wait`` seconds; returns the last CPU use seen, in percent of one core.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0, t0 = _busy_seconds(), time.monotonic()
        time.sleep(sample)
        used = 100.0 * (_busy_seconds() - busy0) / (time.monotonic() - t0)
        if used < threshold_percent or time.monotonic() >= deadline:
            return used


class RunFailed(RuntimeError):
    """A measured command failed or produced the wrong output; the message names its log."""


def run_checked(cmd: list[str], log: str, **kwargs) -> Measurement:
    m = run(cmd, log, **kwargs)
    if m.returncode != 0:
        with open(log, "rb") as f:
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
        last = lines[-1] if lines else ""
        raise RunFailed("exit %d: %s (%s; full output in %s)" % (m.returncode, " ".join(cmd[:4]) + " ...", last[:300], log))
    return m


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return "%s, %d logical cores (%d usable), %.0f GiB RAM, %s" % (
        cpu, psutil.cpu_count(), len(os.sched_getaffinity(0)), mem, " ".join(os.uname()[0:3:2]))
