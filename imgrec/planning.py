"""Split assignment, shard planning and record ids: pure functions, no Beam.

Every decision here is a function of an image's relative path (and the
options), never of arrival order, so any runner with any number of workers
makes the same plan.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Mapping, NamedTuple, Sequence

SPLITS = ("train", "validation", "test")
_KEY_SPACE = 1 << 64


class ImageRef(NamedTuple):
    """One input image as it flows through the pipeline: metadata only, never pixels.

    ``key`` is the salted 64-bit hash of ``relpath``; it decides the split, the
    shard and the order of records inside a shard. ``version`` is what the
    listing knows of the file's content (``storage.FileEntry.version``): it
    goes into the digest that ``--resume`` compares, never into the output.
    """

    relpath: str
    size: int
    label: int
    split: str
    key: int
    version: str = ""


# Refs travel between stages in lists of up to this many (about 100 bytes each when
# encoded): per-element costs of a runner are then paid per batch, not per image.
BATCH_REFS = 4096


class RefBatch(list):
    """A list of ImageRefs that a runner encodes as one pickle.

    Beam's default coder walks a plain list item by item and pickles each
    NamedTuple on its own (13 pickle calls per image over a whole job); a list
    subclass is not one of its known types, so the batch is pickled whole. It
    pickles as plain tuples: a NamedTuple costs a Python call per item to
    pickle, a tuple none (0.3 instead of 0.9 us per ref).
    """

    __slots__ = ()

    def __reduce__(self):
        return _refbatch_from_rows, (list(map(tuple, self)),)


def _refbatch_from_rows(rows) -> RefBatch:
    return RefBatch(map(ImageRef._make, rows))


def image_key(relpath: str, seed: str) -> int:
    """A stable 64-bit hash of an image's path relative to the input root."""
    digest = hashlib.sha256(b"%s\0%s" % (seed.encode("utf-8"), relpath.encode("utf-8", "surrogateescape")))
    return int.from_bytes(digest.digest()[:8], "big")


@dataclass(frozen=True)
class SplitRatios:
    train: float = 0.8
    validation: float = 0.2
    test: float = 0.0

    def __post_init__(self):
        for name in SPLITS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError("--%s-ratio must be between 0 and 1, got %g" % (_flag(name), value))
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                "split ratios must sum to 1, got train %g + val %g + test %g = %g"
                % (self.train, self.validation, self.test, total)
            )

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SPLITS}

    def active(self) -> list[str]:
        """The splits that receive images, in the fixed order train, validation, test."""
        return [name for name in SPLITS if getattr(self, name) > 0]

    def bounds(self) -> tuple[tuple[str, int, int], ...]:
        """Each active split's half-open range ``[lo, hi)`` of the 64-bit key space."""
        return _bounds(self.train, self.validation, self.test)


@functools.lru_cache(maxsize=64)
def _bounds(train: float, validation: float, test: float) -> tuple[tuple[str, int, int], ...]:
    # computed once per set of ratios: every listed image asks for its split
    out = []
    lo = 0
    cumulative = 0.0
    ratios = {"train": train, "validation": validation, "test": test}
    active = [name for name in SPLITS if ratios[name] > 0]
    for i, name in enumerate(active):
        cumulative += ratios[name]
        hi = _KEY_SPACE if i == len(active) - 1 else min(_KEY_SPACE, int(round(cumulative * _KEY_SPACE)))
        out.append((name, lo, hi))
        lo = hi
    return tuple(out)


def _flag(split: str) -> str:
    return "val" if split == "validation" else split


def assign_split(key: int, ratios: SplitRatios) -> str:
    """The split of an image with this key.

    Splits own fixed ranges of the key space, so adding images never moves an
    existing image to another split.
    """
    for name, lo, hi in ratios.bounds():
        if lo <= key < hi:
            return name
    raise AssertionError("key %d outside the key space" % key)


def split_range(split: str, ratios: SplitRatios) -> tuple[int, int]:
    for name, lo, hi in ratios.bounds():
        if name == split:
            return lo, hi
    raise KeyError(split)


def num_shards(records: int, total_bytes: int, shard_size_mb: float, images_per_shard: int | None) -> int:
    """How many shards a split with these totals gets (at least one when it has records)."""
    if records == 0:
        return 0
    if images_per_shard:
        return max(1, math.ceil(records / images_per_shard))
    target = shard_size_mb * 1024 * 1024
    return max(1, min(records, math.ceil(total_bytes / target)))


def assign_shard(key: int, split: str, ratios: SplitRatios, shards: int) -> int:
    """The shard of an image: its key's position inside its split's key range, scaled to ``shards``.

    Keys are uniform, so shards come out near-equal in size without any global
    sort; the shard of an image depends only on its key and the shard count.
    """
    lo, hi = split_range(split, ratios)
    return min(shards - 1, (key - lo) * shards // (hi - lo))


def written_shards(counts: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], tuple[int, int]]:
    """``(number, count)`` under which every planned shard that received images is written.

    Keys are uniform, but a split planned with nearly as many shards as images
    (``--images-per-shard 1``, or a few large images) leaves some shard ranges
    without a key. Such a shard is not written: the others keep their planned
    order and are numbered densely, and the count in their names is how many
    there are. When no shard is empty this is the plan itself, name for name.
    """
    planned: dict[str, list[int]] = {}
    for split, shard in sorted(counts, key=lambda k: (SPLITS.index(k[0]), k[1])):
        if counts[(split, shard)] > 0:
            planned.setdefault(split, []).append(shard)
    return {
        (split, shard): (number, len(shards))
        for split, shards in planned.items()
        for number, shard in enumerate(shards)
    }


def shard_bases(counts: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """The first record id of every shard: ids run 0..n-1 through each split in shard order."""
    bases: dict[tuple[str, int], int] = {}
    running: dict[str, int] = {}
    for split, shard in sorted(counts, key=lambda k: (SPLITS.index(k[0]), k[1])):
        bases[(split, shard)] = running.get(split, 0)
        running[split] = running.get(split, 0) + counts[(split, shard)]
    return bases


def order_in_shard(refs: Iterable[ImageRef]) -> list[ImageRef]:
    """Records of a shard in their written order: by key, a fixed pseudo-random shuffle."""
    return sorted(refs, key=lambda r: (r.key, r.relpath))


def shard_name(name: str, shard: int, shards: int, ext: str) -> str:
    """The one place output file names are made: ``data-00003-of-00016.rec``."""
    return "%s-%05d-of-%05d.%s" % (name, shard, shards, ext)


@dataclass(frozen=True)
class SplitTotals:
    records: int
    bytes: int


def plan_shard_counts(
    totals: Mapping[str, SplitTotals], shard_size_mb: float, images_per_shard: int | None
) -> dict[str, int]:
    return {
        split: num_shards(t.records, t.bytes, shard_size_mb, images_per_shard)
        for split, t in totals.items()
    }


def classes_from_dirs(names: Sequence[str]) -> list[str]:
    """Class names in label order: sorted top-level folder names."""
    return sorted(names)


# ---------------------------------------------------------------- stratified splits (--stratify)
#
# Each class (a stratum; for multi-label data, each distinct label set) is cut
# into splits by the rank of its images' keys: the lowest-keyed images go to
# train, then validation, then test, in counts that are each the floor or the
# ceiling of ratio x class size. Among the counts that meet that quota, the
# ones closest to the plain hash split are taken, so an image leaves its hash
# split only when the quota needs it to (see docs/labels.md for the guarantee).

# The top bits of a key that cut a stratum's key range into buckets: --stratify
# orders each bucket in memory (a class of n images gives buckets of ~n/1024).
STRATIFY_BUCKET_BITS = 10


def stratify_bucket(key: int) -> int:
    return key >> (64 - STRATIFY_BUCKET_BITS)


def _exact(ratio: float) -> Fraction:
    # 0.7 is 0.6999999999999999556 as a float: 0.7 x 10 must be 7, not 6.99.
    return Fraction(ratio).limit_denominator(1_000_000)


def quota_counts(n: int, natural: Mapping[str, int], ratios: SplitRatios) -> dict[str, int]:
    """How many of a stratum's ``n`` images each active split gets under ``--stratify``.

    Every count is floor or ceil of ratio x n (within one image of its target)
    and they add up to n. Of those choices, the one whose cut points lie
    closest to the hash split's (``natural`` counts) is taken: it moves the
    fewest images away from their hash split. Ties go to the lexically
    smallest counts, so the choice is deterministic.
    """
    active = ratios.active()
    targets = [_exact(getattr(ratios, s)) * n for s in active]
    targets[-1] = n - sum(targets[:-1])
    options = [sorted({math.floor(t), math.ceil(t)}) for t in targets]
    natural_cuts = list(itertools.accumulate(natural.get(s, 0) for s in active))
    best = None
    for counts in itertools.product(*options):
        if sum(counts) != n or min(counts) < 0:
            continue
        cuts = list(itertools.accumulate(counts))
        cost = sum(abs(c - nc) for c, nc in zip(cuts[:-1], natural_cuts[:-1]))
        candidate = (cost, counts)
        if best is None or candidate < best:
            best = candidate
    assert best is not None, "floor/ceil quotas always admit a total of n"
    return dict(zip(active, best[1]))


def split_of_rank(rank: int, counts: Mapping[str, int], ratios: SplitRatios) -> str:
    """The split of the image at ``rank`` (0 = lowest key) of its stratum, given the stratum's split counts."""
    cut = 0
    for split in ratios.active():
        cut += counts[split]
        if rank < cut:
            return split
    raise AssertionError("rank %d beyond the stratum's %d images" % (rank, cut))


def key_in_split(key: int, split: str, ratios: SplitRatios) -> int:
    """The key of an image that ``--stratify`` puts in ``split``: kept when it lies in the split's key
    range, else mapped into that range in proportion, so shard planning (which places a key
    inside its split's range) still applies and the order stays a fixed function of the key."""
    lo, hi = split_range(split, ratios)
    if lo <= key < hi:
        return key
    return lo + (key * (hi - lo) >> 64)


def stratified_splits(keys: Sequence[tuple[int, str]], ratios: SplitRatios) -> list[str]:
    """The splits of one stratum's images, given their ``(key, relpath)``: the whole rule in memory.

    The Beam stage (transforms/curate.py) computes the same by buckets of keys.
    """
    natural: dict[str, int] = {}
    for key, _ in keys:
        split = assign_split(key, ratios)
        natural[split] = natural.get(split, 0) + 1
    counts = quota_counts(len(keys), natural, ratios)
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    out = [""] * len(keys)
    for rank, i in enumerate(order):
        out[i] = split_of_rank(rank, counts, ratios)
    return out
