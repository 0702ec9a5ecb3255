"""The shard plan from sorted runs: counts per split, shard and part, and first record ids. Pure code.

The local runner's planning (see ``imgrec.runs``): listing tasks leave their
refs in runs on disk; this module counts them per key range without holding
them -- ``np.searchsorted`` over each run's keys -- and turns the counts into
``ShardTask`` records: one per shard that receives images, each cut into
``PartSpec`` key ranges small enough to run on any core. A part's records are
a contiguous stretch of its shard (records are ordered by key), so parts can be
written by different workers and concatenated, and the bytes are those of the
whole shard written at once.

Shard membership, names and ids are exactly those of ``imgrec.planning``
(``assign_shard``, ``written_shards``, ``shard_bases``): the shard of a key is
``floor(N * (key - lo) / (hi - lo))``, so its first key is
``lo + ceil(s * (hi - lo) / N)``.

With ``--dedup`` or ``--incremental`` the refs of a range are filtered before
they are counted (``select_refs``): identical files share a key, so they meet
in one range, and the images already in the dataset are runs of their own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from imgrec import runs
from imgrec.planning import SPLITS, SplitRatios, num_shards, shard_bases, written_shards

KEY_SPACE = 1 << 64
# A part holds about this many images, or this many input bytes, whichever comes first:
# large enough that a worker's per-task cost is noise, small enough that parts of a
# shard keep every core busy and a part's bytes fit a shared-memory slot.
PART_IMAGES = 512
PART_BYTES = 8 << 20
# The job's last parts are cut finer, each into this many: the parts of a shard are about equal, so without it
# the last part to start runs alone while the other cores sit idle (0.3-0.5 s of a 2-core resize of 8,000
# photos). A constant, not the machine's core count: the plan, and so each shard's digest, is the same anywhere.
TAIL_PARTS = 8
TAIL_CUT = 4
# Counting with a filter decodes the refs of one bucket of the key space at a time.
FILTER_BUCKET_BITS = 10
PLAN_VERSION = 1


@dataclass(frozen=True)
class PartSpec:
    """Records ``first_id ..`` of a shard: the ``count`` refs with keys in ``[lo, hi)``."""

    lo: int
    hi: int
    count: int
    bytes: int
    first_id: int


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: its name numbers, first id, totals and parts (in order)."""

    split: str
    shard: int  # the number in its file name (empty planned shards are not written)
    shards: int
    first_id: int
    records: int
    bytes: int
    parts: tuple[PartSpec, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        d = asdict(self)
        d["parts"] = [asdict(p) for p in self.parts]
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "ShardTask":
        return cls(**{**d, "parts": tuple(PartSpec(**p) for p in d["parts"])})


@dataclass(frozen=True)
class RefFilter:
    """Which refs of a range are written: ``dedup`` keeps one of identical files; ``exclude`` drops refs in those runs."""

    dedup: bool = False
    exclude: tuple[str, ...] = ()  # runs of the images already in the dataset (--incremental)

    @property
    def active(self) -> bool:
        return self.dedup or bool(self.exclude)


def shard_starts(split_lo: int, split_hi: int, shards: int) -> list[int]:
    """The first key of each of ``shards`` shards of a split's key range, and the range's end."""
    width = split_hi - split_lo
    return [split_lo + -(-s * width // shards) for s in range(shards)] + [split_hi]


def _part_bounds(start: int, end: int, parts: int) -> list[int]:
    width = end - start
    return [start + p * width // parts for p in range(parts)] + [end]


def select_refs(paths: Sequence[str], lo: int, hi: int, flt: RefFilter) -> tuple[list[runs.RunRef], list[list[runs.RunRef]]]:
    """The refs to write of the range ``[lo, hi)``, in order, and the sets of identical files found there.

    Identical files (same content key) are adjacent; with ``flt.dedup`` only the first
    path of each set is kept. Refs whose ``(key, relpath)`` is in an ``exclude`` run
    are dropped (they are in the dataset already).
    """
    refs = runs.read_range(paths, lo, hi)
    if flt.exclude:
        old = {(r.key, r.relpath) for r in runs.read_range(flt.exclude, lo, hi)}
        refs = [r for r in refs if (r.key, r.relpath) not in old]
    groups: list[list[runs.RunRef]] = []
    if not refs:
        return refs, groups
    kept: list[runs.RunRef] = []
    i = 0
    while i < len(refs):
        j = i + 1
        while j < len(refs) and refs[j].key == refs[i].key and refs[j].sha == refs[i].sha and refs[i].sha:
            j += 1
        if j - i > 1:
            groups.append(refs[i:j])
            kept.extend(refs[i:i + 1] if flt.dedup else refs[i:j])
        else:
            kept.append(refs[i])
        i = j
    return kept, groups


def count_ranges(paths: Sequence[str], bounds: Sequence[int], flt: RefFilter) -> tuple[np.ndarray, np.ndarray]:
    """Refs and input bytes per range between consecutive ``bounds``, after ``flt``."""
    if not flt.active:
        return runs.count_ranges(paths, bounds)
    counts = np.zeros(len(bounds) - 1, dtype=np.int64)
    nbytes = np.zeros(len(bounds) - 1, dtype=np.int64)
    edges = np.array([min(b, KEY_SPACE - 1) for b in bounds], dtype=np.uint64)
    step = KEY_SPACE >> FILTER_BUCKET_BITS
    lo_all, hi_all = bounds[0], bounds[-1]
    for b in range(lo_all // step, -(-hi_all // step)):
        lo, hi = max(lo_all, b * step), min(hi_all, (b + 1) * step)
        kept, _ = select_refs(paths, lo, hi, flt)
        if not kept:
            continue
        keys = np.fromiter((r.key for r in kept), dtype=np.uint64, count=len(kept))
        sizes = np.fromiter((r.size for r in kept), dtype=np.int64, count=len(kept))
        idx = np.searchsorted(keys, edges, "left")
        if hi_all >= KEY_SPACE:
            idx[-1] = len(kept)
        counts += np.diff(idx)
        cum = np.concatenate(([0], np.cumsum(sizes)))
        nbytes += np.diff(cum[idx])
    return counts, nbytes


@dataclass
class Plan:
    """Every shard task of the job, by split, and the split totals."""

    tasks: dict[str, list[ShardTask]]
    totals: dict[str, tuple[int, int]]  # split -> (records, input bytes)

    def to_json(self) -> dict:
        return {
            "version": PLAN_VERSION,
            "splits": {
                split: {"records": self.totals[split][0], "bytes": self.totals[split][1],
                        "shards": len(tasks), "tasks": [t.to_json() for t in tasks]}
                for split, tasks in self.tasks.items()
            },
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "Plan":
        if d.get("version") != PLAN_VERSION:
            raise ValueError("plan version %r, expected %d" % (d.get("version"), PLAN_VERSION))
        tasks = {s: [ShardTask.from_json(t) for t in v["tasks"]] for s, v in d["splits"].items()}
        totals = {s: (v["records"], v["bytes"]) for s, v in d["splits"].items()}
        return cls(tasks, totals)

    def all_tasks(self) -> list[ShardTask]:
        return [t for split in SPLITS for t in self.tasks.get(split, [])]


def plan_shards(
    paths: Sequence[str],
    ratios: SplitRatios,
    shard_size_mb: float,
    images_per_shard: int,
    first_ids: Mapping[str, int] | None = None,
    flt: RefFilter = RefFilter(),
    part_images: int = PART_IMAGES,
    part_bytes: int = PART_BYTES,
) -> Plan:
    """The shard tasks for the refs in the runs at ``paths`` (only counts are held, never the refs)."""
    bounds = ratios.bounds()
    split_counts, split_bytes = count_ranges(paths, [lo for _, lo, _ in bounds] + [bounds[-1][2]], flt)
    totals = {name: (int(split_counts[i]), int(split_bytes[i])) for i, (name, _, _) in enumerate(bounds)}
    per_shard: dict[tuple[str, int], tuple[int, int]] = {}
    part_specs: dict[tuple[str, int], list[tuple[int, int, int, int]]] = {}
    for name, lo, hi in bounds:
        records, nbytes = totals[name]
        shards = num_shards(records, nbytes, shard_size_mb, images_per_shard)
        if not shards:
            continue
        parts_each = max(1, math.ceil(max(records / shards / part_images, nbytes / shards / part_bytes)))
        starts = shard_starts(lo, hi, shards)
        edges: list[int] = []
        for s in range(shards):
            edges.extend(_part_bounds(starts[s], starts[s + 1], parts_each)[:-1])
        edges.append(hi)
        counts, sizes = count_ranges(paths, edges, flt)
        for s in range(shards):
            specs = []
            for p in range(parts_each):
                i = s * parts_each + p
                if counts[i]:
                    specs.append((edges[i], edges[i + 1], int(counts[i]), int(sizes[i])))
            per_shard[(name, s)] = (sum(c for _, _, c, _ in specs), sum(b for _, _, _, b in specs))
            part_specs[(name, s)] = specs
    counts_only = {k: v[0] for k, v in per_shard.items()}
    written = written_shards(counts_only)
    bases = shard_bases(counts_only)
    tasks: dict[str, list[ShardTask]] = {}
    for (split, s), (records, nbytes) in sorted(per_shard.items(), key=lambda kv: (SPLITS.index(kv[0][0]), kv[0][1])):
        if not records:
            continue
        first = bases[(split, s)] + (first_ids or {}).get(split, 0)
        parts, running = [], first
        for lo, hi, count, size in part_specs[(split, s)]:
            parts.append(PartSpec(lo, hi, count, size, running))
            running += count
        number, of = written[(split, s)]
        tasks.setdefault(split, []).append(ShardTask(split, number, of, first, records, nbytes, tuple(parts)))
    last = [split for split in SPLITS if tasks.get(split)]
    if last:
        tasks[last[-1]][-1] = _cut_tail(tasks[last[-1]][-1], paths, flt)
    return Plan(tasks, {s: t for s, t in totals.items() if t[0]})


def _cut_tail(task: ShardTask, paths: Sequence[str], flt: RefFilter) -> ShardTask:
    """``task`` (the job's last shard) with its last ``TAIL_PARTS`` parts each cut into ``TAIL_CUT`` key ranges.

    The records and their order are the same, so are the shard's bytes; only where the parts begin moves.
    """
    if TAIL_PARTS < 1 or TAIL_CUT < 2 or not task.parts:
        return task
    keep, tail = task.parts[:-TAIL_PARTS], task.parts[-TAIL_PARTS:]
    bounds = sorted({b for p in tail for b in _part_bounds(p.lo, p.hi, TAIL_CUT)})
    counts, sizes = count_ranges(paths, bounds, flt)
    cut, running = [], tail[0].first_id
    for j in range(len(bounds) - 1):
        if counts[j]:  # a range between two parts (where no ref is) counts none
            cut.append(PartSpec(bounds[j], bounds[j + 1], int(counts[j]), int(sizes[j]), running))
            running += int(counts[j])
    if running - tail[0].first_id != sum(p.count for p in tail):  # cannot happen: the same refs, counted again
        return task
    return replace(task, parts=tuple(keep) + tuple(cut))


PLAN_FILE = "_work/plan.json"


def save_plan(output: str, plan: Plan, classes: Sequence[str], label_width: int, warnings: Sequence[str] = ()) -> None:
    """``_work/plan.json``: the shard tasks, the class names in id order and the label width, for every later step.

    ``warnings``: about the classes settled at plan time (look-alike names), for the manifest.
    """
    import json

    from imgrec import storage

    doc = plan.to_json()
    doc["classes"] = list(classes)
    doc["label_width"] = label_width
    doc["warnings"] = list(warnings)
    storage.write_text(storage.join(output, PLAN_FILE), json.dumps(doc, ensure_ascii=False, sort_keys=True))


def load_plan(output: str) -> tuple[Plan, list[str], int, list[str]]:
    """What ``save_plan`` wrote (FileNotFoundError when the planning step did not finish)."""
    import json

    from imgrec import storage

    doc = json.loads(storage.read_text(storage.join(output, PLAN_FILE)))
    return Plan.from_json(doc), list(doc["classes"]), int(doc.get("label_width", 0)), list(doc.get("warnings", ()))
