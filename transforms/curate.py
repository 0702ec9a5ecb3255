"""Curate: the optional steps between listing and shard planning.

* ``GroupIdentical`` (``--check-duplicates``, ``--dedup``): reads and hashes
  every image (one more pass over the input bytes, spread over the workers
  and a few threads each), re-keys it by its content so identical files share
  a split, groups identical files, reports them and their label conflicts,
  and with ``--dedup`` keeps one file of each group.
* ``Stratify`` (``--stratify``): per class (per label set for multi-label
  data), cuts the images into splits by key rank with every split within one
  image of its share (``imgrec.planning.quota_counts``). Identical files form
  one unit that moves as a whole. Only counts cross the shuffles until the
  last join, in which each bucket of a class's key range (1/1024 of it) is
  ordered in memory.
* ``WriteFindings``: spreads the findings over a fixed number of fragment
  files under ``_work/report/`` for the finaliser (``imgrec.findings``).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from imgrec import dedup, findings, storage
from imgrec.env import WorkerEnv
from transforms.env import EnvDoFn
from imgrec.parallel import ordered_map
from imgrec.planning import ImageRef, assign_split, key_in_split, quota_counts, split_of_rank, stratify_bucket

# The refs are hashed in this many groups (each by one worker's threads): 14 M images
# give groups of ~14k refs, a few MB of metadata each.
HASH_GROUPS = 1024


class Unit(NamedTuple):
    """Images that go to one split together: one image, or a set of identical files."""

    stratum: object  # the class id, or the tuple of class ids of a multi-label image
    key: int
    first_path: str
    refs: tuple


def single_unit(ref: ImageRef) -> Unit:
    return Unit(ref.label, ref.key, ref.relpath, (ref,))


# ---------------------------------------------------------------- identical files


def hash_batch(refs, input_root: str, seed: str, ratios, threads: int, max_bytes: int = 0):
    """(sha256, ref re-keyed by content) per ref; an unreadable file keeps its path key (WriteShards reports it).

    ``max_bytes``: a larger file is not read here (--max-file-size-mb; WriteShards reports it too).
    """

    def digest(ref):
        try:
            return ref, dedup.content_sha256(storage.read_bytes(storage.join(input_root, ref.relpath), max_bytes))
        except (OSError, storage.StorageError):
            return ref, None

    for ref, sha in ordered_map(digest, refs, threads, window=2 * max(1, threads)):
        if sha is None:
            yield "unread:" + ref.relpath, ref
            continue
        key = dedup.content_key(sha, seed)
        yield sha, ref._replace(key=key, split=assign_split(key, ratios))


class _HashFn(EnvDoFn):
    def __init__(self, input_root, seed, ratios, threads, env: WorkerEnv, max_bytes=0):
        super().__init__(env)
        self._args = (input_root, seed, ratios)
        self._max_bytes = max_bytes
        self._threads = threads
        self._hashed = Metrics.counter("imgrec", "images_hashed")

    def setup(self):
        super().setup()
        self._pool_threads = self._threads or os.cpu_count() or 1

    def process(self, element):
        # element: (group, [ImageRef]) -> (sha256, ImageRef)
        _, refs = element
        for out in hash_batch(refs, *self._args, self._pool_threads, self._max_bytes):
            self._hashed.inc()
            yield out


def _resolve_group(element, dedup_on: bool, classes):
    # element: (sha256, [ImageRef]) -> (MAIN, Unit) | (FOUND, finding)
    sha, refs = element
    refs = list(refs)
    if sha.startswith("unread:"):
        for ref in refs:
            yield findings.MAIN, single_unit(ref)
        return
    kept, found = dedup.resolve_identical(sha, refs, dedup_on, classes)
    for item in found:
        yield findings.FOUND, (item["kind"], 1, item)
    yield findings.MAIN, Unit(kept[0].label, kept[0].key, kept[0].relpath, tuple(kept))


class GroupIdentical(beam.PTransform):
    """PCollection[ImageRef] -> (PCollection[Unit], findings)."""

    def __init__(self, options, classes):
        super().__init__()
        self._options = options
        self._classes = tuple(classes)

    def expand(self, refs):
        o = self._options
        grouped = (
            refs
            # Groups of refs for the hashing threads, spread over the workers by a GroupByKey
            # (as every stage here: it is translated by every runner).
            | "KeyForHashing" >> beam.Map(lambda r: (r.key % HASH_GROUPS, r))
            | "GroupForHashing" >> beam.GroupByKey()
            | "HashContent" >> beam.ParDo(
                _HashFn(o.input, o.split_seed, o.ratios, o.threads, WorkerEnv.from_options(o), o.max_file_bytes)
            )
            | "GroupByContent" >> beam.GroupByKey()
            | "ResolveIdentical" >> beam.FlatMap(_resolve_group, o.dedup, self._classes)
        )
        return grouped | "Units" >> beam.FlatMap(findings.main_of), grouped | "Findings" >> beam.FlatMap(findings.found_of)


# ---------------------------------------------------------------- stratified splits


class _CountBySplit(beam.CombineFn):
    def __init__(self, splits: int):
        self._splits = splits

    def create_accumulator(self):
        return [0] * self._splits

    def add_input(self, acc, index):
        acc[index] += 1
        return acc

    def merge_accumulators(self, accs):
        out = [0] * self._splits
        for acc in accs:
            out = [a + b for a, b in zip(out, acc)]
        return out

    def extract_output(self, acc):
        return tuple(acc)


def _plan_stratum(element, ratios):
    # element: (stratum, {"natural": [counts per split], "buckets": [(bucket, units), ...]})
    #   -> ((stratum, bucket), (first rank, quota counts))
    stratum, joined = element
    natural = dict(zip(ratios.active(), joined["natural"][0]))
    quota = quota_counts(sum(natural.values()), natural, ratios)
    rank = 0
    for bucket, count in sorted(joined["buckets"]):
        yield (stratum, bucket), (rank, quota)
        rank += count


def _assign_bucket(element, ratios):
    # element: ((stratum, bucket), {"facts": [(first rank, quota)], "units": [Unit, ...]}) -> ImageRef
    _, joined = element
    first, quota = joined["facts"][0]
    units = sorted(joined["units"], key=lambda u: (u.key, u.first_path))
    for i, unit in enumerate(units):
        split = split_of_rank(first + i, quota, ratios)
        key = key_in_split(unit.key, split, ratios)
        for ref in unit.refs:
            yield ref._replace(split=split, key=key)


class Stratify(beam.PTransform):
    """PCollection[Unit] -> PCollection[ImageRef] with every stratum's split shares within one unit."""

    def __init__(self, ratios):
        super().__init__()
        self._ratios = ratios

    def expand(self, units):
        ratios = self._ratios
        active = ratios.active()
        # (stratum, units per split under the plain hash split)
        natural = (
            units
            | "NaturalSplit" >> beam.Map(lambda u: (u.stratum, active.index(assign_split(u.key, ratios))))
            | "CountNatural" >> beam.CombinePerKey(_CountBySplit(len(active)))
        )
        # (stratum, (bucket, units))
        buckets = (
            units
            | "KeyByBucket" >> beam.Map(lambda u: ((u.stratum, stratify_bucket(u.key)), 1))
            | "CountBucket" >> beam.CombinePerKey(sum)
            | "ByStratum" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1])))
        )
        # ((stratum, bucket), (first rank, quota))
        facts = (
            {"natural": natural, "buckets": buckets}
            | "JoinStratum" >> beam.CoGroupByKey()
            | "PlanStratum" >> beam.FlatMap(_plan_stratum, ratios)
        )
        keyed_units = units | "KeyUnits" >> beam.Map(lambda u: ((u.stratum, stratify_bucket(u.key)), u))
        return (
            {"facts": facts, "units": keyed_units}
            | "JoinBucket" >> beam.CoGroupByKey()
            | "AssignByRank" >> beam.FlatMap(_assign_bucket, ratios)
        )


# ---------------------------------------------------------------- findings


class _WriteFragmentFn(EnvDoFn):
    def __init__(self, output: str, env: WorkerEnv | None):
        super().__init__(env)
        self._output = output

    def process(self, element):
        # element: (fragment, {"counts": [...], "items": [...], "every": [None]}) -> fragment path
        index, joined = element
        doc = findings.fragment_document(list(joined["counts"]) + list(joined["items"]))
        path = storage.join(self._output, findings.fragment_path(index))
        storage.write_text(path, json.dumps(doc, ensure_ascii=False, sort_keys=True))
        yield path


class WriteFindings(beam.PTransform):
    """PCollection[(kind, count, item)] -> every fragment of the report written under ``_work/report/``."""

    def __init__(self, output: str, env: WorkerEnv | None = None):
        super().__init__()
        self._output = output
        self._env = env

    def expand(self, found):
        # (fragment, (kind, n, None)): counts summed per kind first, so a count-only kind
        # seen once per image (labelled) is not gathered into one worker's memory
        counts = (
            found
            | "CountKey" >> beam.Map(lambda f: ((findings.fragment_of(f[0], None), f[0]), f[1]))
            | "CountKinds" >> beam.CombinePerKey(sum)
            | "CountsToFragment" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1], None)))
        )
        # (fragment, (kind, 0, item))
        items = (
            found
            | "WithItem" >> beam.Filter(lambda f: f[2] is not None)
            | "ItemToFragment" >> beam.Map(lambda f: (findings.fragment_of(f[0], f[2]), (f[0], 0, f[2])))
        )
        # (fragment, None): every fragment is written, also the empty ones
        every = found.pipeline | "EveryFragment" >> beam.Create([(i, None) for i in range(findings.FRAGMENTS)])
        return (
            {"counts": counts, "items": items, "every": every}
            | "JoinFragments" >> beam.CoGroupByKey()
            | "WriteFragment" >> beam.ParDo(_WriteFragmentFn(self._output, self._env))
        )
