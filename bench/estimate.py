"""ImageNet-1k / ImageNet-21k conversion time, projected from per-image costs measured by bench/compare.py.

What is measured (by ``compare.py``, on the machine it runs on): for each mode,
the CPU seconds per image of the whole job (all threads and processes) and the
GIL-held seconds per image in the process that holds its GIL longest, both as
the difference between a run of N images and a run of 10 (start-up left out).

What is projected here, and how:

- The rate on ``cores`` cores is ``min(cores / cpu_s, 1 / gil_s)``: every core
  busy, until the busiest GIL is held all the time (the core ceiling). The
  ceiling is that of the process layout measured (the default local run on one
  machine); a runner with one GIL per worker process on many machines has one
  such ceiling per process, which this does not model.
- Pass-through costs are taken as linear in the file size through the two
  measured points, ~1 KB tiny images and ~52 KB photographs, and read at the
  collection's mean file size; with only the photographs measured, the cost
  is scaled by bytes from them (an upper bound: the per-file part is scaled
  too).
- ``--resize 256`` costs are those of the 500x375 photographs, used per image
  as they are: ImageNet's mean picture is of similar pixel count, but its files
  are about twice the bytes, and the longer entropy decode is not modelled.
- Compute time only: start-up, listing, planning, the network and the storage
  are left out (see docs/runners.md for those bounds).

    import estimate
    rows = estimate.imagenet_estimate(pass_cost=estimate.Cost(52e3, 150e-6, 40e-6),
                                      tiny_cost=estimate.Cost(940, 60e-6, 30e-6),
                                      resize_cost=estimate.Cost(52e3, 1.3e-3, 170e-6))
    print(estimate.markdown(rows))
"""

from __future__ import annotations

from dataclasses import dataclass

CORES = (1, 8, 32, 128)


@dataclass(frozen=True)
class Collection:
    name: str
    images: int
    bytes: float

    @property
    def mean_bytes(self) -> float:
        return self.bytes / self.images


# The figures docs/runners.md states as its assumptions.
IMAGENET_1K = Collection("ImageNet-1k", 1_281_167, 140e9)
IMAGENET_21K = Collection("ImageNet-21k", 14_197_122, 1.3e12)


@dataclass(frozen=True)
class Cost:
    """Measured per-image cost of one mode on images of ``mean_bytes``."""

    mean_bytes: float
    cpu_s: float  # CPU seconds per image, all threads and processes
    gil_s: float  # GIL-held seconds per image in the busiest process; NaN or 0: not measured

    def usable(self) -> bool:
        return self.cpu_s == self.cpu_s and self.cpu_s > 0


@dataclass(frozen=True)
class Projection:
    collection: str
    mode: str
    cores: int
    seconds: float
    bound: str  # "cores": every core busy; "GIL": the busiest process's GIL held all the time


def at_size(size: float, photo: Cost, tiny: Cost | None) -> Cost:
    """Pass-through cost at ``size`` bytes: linear through ``tiny`` and ``photo``, or scaled by bytes from ``photo``."""

    def line(a_small: float, a_large: float) -> float:
        slope = (a_large - a_small) / (photo.mean_bytes - tiny.mean_bytes)
        # never below the smaller measured cost: noise must not make a bigger file cheaper
        return max(min(a_small, a_large), a_small + slope * (size - tiny.mean_bytes))

    if tiny is not None and tiny.usable() and tiny.mean_bytes < photo.mean_bytes:
        gil = line(tiny.gil_s, photo.gil_s) if _measured(tiny.gil_s) and _measured(photo.gil_s) else photo.gil_s
        return Cost(size, line(tiny.cpu_s, photo.cpu_s), gil)
    scale = size / photo.mean_bytes
    return Cost(size, photo.cpu_s * scale, photo.gil_s * scale if _measured(photo.gil_s) else photo.gil_s)


def _measured(v: float) -> bool:
    return v == v and v > 0


def rate(cost: Cost, cores: int) -> tuple[float, str]:
    """Images per second on ``cores`` cores, and what bounds it."""
    by_cores = cores / cost.cpu_s
    if _measured(cost.gil_s) and 1 / cost.gil_s < by_cores:
        return 1 / cost.gil_s, "GIL"
    return by_cores, "cores"


def core_ceiling(cost: Cost) -> float:
    """Cores at which the busiest GIL is held all the time (NaN: GIL not measured)."""
    return cost.cpu_s / cost.gil_s if _measured(cost.gil_s) else float("nan")


def imagenet_estimate(pass_cost: Cost | None, resize_cost: Cost | None, tiny_cost: Cost | None = None,
                      cores=CORES, collections=(IMAGENET_1K, IMAGENET_21K)) -> list[Projection]:
    """Projected compute time per collection, mode and core count (modes without a usable cost are left out)."""
    out = []
    for coll in collections:
        modes = []
        if pass_cost is not None and pass_cost.usable():
            modes.append(("pass-through", at_size(coll.mean_bytes, pass_cost, tiny_cost)))
        if resize_cost is not None and resize_cost.usable():
            modes.append(("resize 256", resize_cost))
        for mode, cost in modes:
            for n in cores:
                r, bound = rate(cost, n)
                out.append(Projection(coll.name, mode, n, coll.images / r, bound))
    return out


def duration(seconds: float) -> str:
    if seconds < 120:
        return "%.0f s" % seconds
    if seconds < 2 * 3600:
        return "%.0f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)


def markdown(rows: list[Projection]) -> str:
    """One row per core count, one column per collection and mode; "(GIL)" marks a time the core ceiling sets."""
    columns = list(dict.fromkeys((r.collection, r.mode) for r in rows))
    by = {(r.collection, r.mode, r.cores): r for r in rows}
    cores = sorted({r.cores for r in rows})
    lines = ["| cores | " + " | ".join("%s %s" % c for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for n in cores:
        cells = []
        for c in columns:
            r = by.get(c + (n,))
            cells.append("-" if r is None else duration(r.seconds) + (" (GIL)" if r.bound == "GIL" else ""))
        lines.append("| %d | %s |" % (n, " | ".join(cells)))
    return "\n".join(lines) + "\n"
