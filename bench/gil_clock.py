"""Run a command as a child while this process holds its own GIL the whole time: a clock for py-spy.

    python bench/gil_clock.py OUT.json -- CMD ...

py-spy samples at random moments (exponentially distributed gaps, so as not
to alias with periodic work) at ``--rate`` on average, and all processes of
the tree at the same moments: over a run of 2 s at 100 Hz the number of
samples taken varies by about 7% from run to run, and so would samples / rate
as a measure of the time a GIL was held. This process holds its
GIL from start to end (it sleeps in ``usleep`` called through ``ctypes.PyDLL``,
which does not release it), so py-spy samples it at every tick it really
takes: its sample count over the seconds written to OUT.json is the rate py-spy
achieved. Only the standard library: it runs in the measured job's interpreter.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the other imports: py-spy samples from the interpreter's start

import ctypes  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

TICK_US = 20_000  # between polls of the child; the GIL stays held across them


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: gil_clock.py OUT.json -- CMD ...", file=sys.stderr)
        return 2
    out, cmd = argv[0], argv[2:]
    usleep = ctypes.PyDLL(None).usleep  # PyDLL: the call keeps the GIL
    usleep.argtypes = [ctypes.c_uint]
    child = subprocess.Popen(cmd)
    while child.poll() is None:
        usleep(TICK_US)
    with open(out, "w") as f:
        json.dump({"seconds": time.perf_counter() - STARTED}, f)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
