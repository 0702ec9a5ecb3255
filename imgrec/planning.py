"""Split assignment, shard planning and record ids: pure functions, no Beam.

Every decision here is a function of an image's relative path (and the
options), never of arrival order, so any runner with any number of workers
makes the same plan.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Sequence

SPLITS = ("train", "validation", "test")
_KEY_SPACE = 1 << 64


class ImageRef(NamedTuple):
    """One input image as it flows through the pipeline: metadata only, never pixels.

    ``key`` is the salted 64-bit hash of ``relpath``; it decides the split, the
    shard and the order of records inside a shard.
    """

    relpath: str
    size: int
    label: int
    split: str
    key: int


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

    def bounds(self) -> list[tuple[str, int, int]]:
        """Each active split's half-open range ``[lo, hi)`` of the 64-bit key space."""
        out = []
        lo = 0
        cumulative = 0.0
        active = self.active()
        for i, name in enumerate(active):
            cumulative += getattr(self, name)
            hi = _KEY_SPACE if i == len(active) - 1 else min(_KEY_SPACE, int(round(cumulative * _KEY_SPACE)))
            out.append((name, lo, hi))
            lo = hi
        return out


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
