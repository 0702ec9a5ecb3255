"""PlanShards: batches of ImageRefs -> each shard's refs together with its first record id (the shuffle planner).

Only metadata crosses this stage's shuffles, and only in batches (lists of
refs), so a runner's per-element costs are paid per batch, not per image:
per-split totals decide the shard count, an image's key decides its shard,
per-shard counts decide the ids and the written shards (a planned shard that
received no image is not written; the others are numbered densely). The plan
-- with the class names in id order, settled from the labels the refs carry --
is written to ``_work/plan.json`` (``imgrec.shardplan``) for the writers and the
Finalize step.

No side inputs: the global facts (shard counts, first ids) reach the refs
through ``beam.CoGroupByKey``, which Beam builds from a Flatten and a
GroupByKey, both translated by every runner. (Beam's Dask runner evaluates a
side input by recomputing its whole upstream inside every task that reads it.)
"""

from __future__ import annotations

from typing import Callable

import apache_beam as beam

from imgrec.env import WorkerEnv
from transforms.env import EnvDoFn
from imgrec.planning import RefBatch, SplitTotals, assign_shard, plan_shard_counts, shard_bases, written_shards
from imgrec.shardplan import Plan, ShardTask, save_plan

# The batches of each split meet its shard count in this many join groups (a batch's
# group comes from its first key), so shard assignment runs in parallel on a cluster
# while the shuffle carries a few elements per batch. It does not change the output.
JOIN_GROUPS = 64


class _MergeTotals(beam.CombineFn):
    """{key: (records, bytes)} dicts -> one dict with the sums per key."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, totals):
        for key, (records, size) in totals.items():
            r, b = acc.get(key, (0, 0))
            acc[key] = (r + records, b + size)
        return acc

    def merge_accumulators(self, accs):
        merged = {}
        for acc in accs:
            self.add_input(merged, acc)
        return merged

    def extract_output(self, acc):
        return acc


class _MergeFacts(beam.CombineFn):
    """(per-shard totals, label names, most labels) of each batch -> the same for all of them."""

    def create_accumulator(self):
        return {}, set(), 0

    def add_input(self, acc, facts):
        totals, names, most = acc
        more_totals, more_names, more_most = facts
        for key, (records, size) in more_totals.items():
            r, b = totals.get(key, (0, 0))
            totals[key] = (r + records, b + size)
        names |= set(more_names)
        return totals, names, max(most, more_most)

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            out = self.add_input(out, acc)
        return out

    def extract_output(self, acc):
        return acc


def _by_split(batch):
    # [ImageRef] -> ((split, join group), [ImageRef of that split]) per split in the batch
    per_split = {}
    for ref in batch:
        per_split.setdefault(ref.split, RefBatch()).append(ref)
    for split, refs in per_split.items():
        yield (split, refs[0].key % JOIN_GROUPS), refs


def _split_totals(keyed):
    # ((split, group), [ImageRef]) -> {split: (records, bytes)}
    (split, _), refs = keyed
    return {split: (len(refs), sum(r.size for r in refs))}


def _shard_counts_per_group(totals, shard_size_mb, images_per_shard):
    # totals: {split: (records, bytes)} -> ((split, group), shards) for every join group
    counts = plan_shard_counts({s: SplitTotals(*v) for s, v in totals.items()}, shard_size_mb, images_per_shard)
    for split, shards in sorted(counts.items()):
        for group in range(JOIN_GROUPS):
            yield (split, group), shards


def _assign_shards(element, ratios):
    # ((split, group), {"shards": [shards], "refs": [[ImageRef], ...]}) -> ((split, shard, shards), [ImageRef])
    (split, _), joined = element
    shards = joined["shards"][0]
    per_shard = {}
    for refs in joined["refs"]:
        for ref in refs:
            per_shard.setdefault(assign_shard(ref.key, split, ratios, shards), RefBatch()).append(ref)
    for shard, refs in sorted(per_shard.items()):
        yield (split, shard, shards), refs


def _names(label) -> tuple:
    return (label,) if isinstance(label, str) else tuple(label)


def _shard_facts(assigned):
    # ((split, shard, shards), [ImageRef]) -> ({key: (records, bytes)}, label names, most labels on an image)
    key, refs = assigned
    names, most = set(), 0
    for ref in refs:
        labels = _names(ref.label)
        names.update(labels)
        most = max(most, len(set(labels)))
    return {key: (len(refs), sum(r.size for r in refs))}, names, most


def plan_of(per_shard: dict) -> tuple[Plan, dict]:
    """The Plan (shards without parts) and each planned shard's (first id, written key), from per-shard totals."""
    counts = {(split, shard): n for (split, shard, _), (n, _) in per_shard.items()}
    written = written_shards(counts)  # a planned shard that received no image is not written
    bases = shard_bases(counts)
    tasks: dict[str, list[ShardTask]] = {}
    totals: dict[str, tuple[int, int]] = {}
    facts = {}
    for key in sorted(per_shard, key=lambda k: (k[0], k[1])):
        split, shard, _ = key
        records, size = per_shard[key]
        r, b = totals.get(split, (0, 0))
        totals[split] = (r + records, b + size)
        number, of = written[(split, shard)]
        facts[key] = (bases[(split, shard)], (split, number, of))
        tasks.setdefault(split, []).append(ShardTask(split, number, of, bases[(split, shard)], records, size))
    return Plan(tasks, totals), facts


class _PlanFn(EnvDoFn):
    """(per-shard totals, names, most labels) -> ((split, shard, shards), (first id, written key)); saves the plan."""

    def __init__(self, output, env: WorkerEnv, first_ids, settle: Callable):
        super().__init__(env)
        self._output = output
        self._first_ids = first_ids or {}
        self._settle = settle

    def process(self, facts):
        per_shard, names, most = facts
        classes, width = self._settle(names, most)
        plan, bases = plan_of(per_shard)
        offsets = self._first_ids  # an --incremental run continues each split's ids after the ones already used
        plan = Plan({s: [_shifted(t, offsets.get(s, 0)) for t in ts] for s, ts in plan.tasks.items()}, plan.totals)
        save_plan(self._output, plan, classes, width)
        for key, (first_id, written_key) in sorted(bases.items()):
            yield key, (first_id + offsets.get(key[0], 0), written_key)


def _shifted(task: ShardTask, offset: int) -> ShardTask:
    from dataclasses import replace

    return replace(task, first_id=task.first_id + offset)


def _with_first_id(element):
    # ((split, shard, shards), {"first": [(first id, written key)], "refs": [[ImageRef], ...]})
    # -> ((split, written shard, written shards), first id, [ImageRef])
    _, joined = element
    first_id, key = joined["first"][0]
    refs = RefBatch()
    for batch in joined["refs"]:
        refs.extend(batch)
    return key, first_id, refs


class PlanShards(beam.PTransform):
    """PCollection[list[ImageRef]] -> PCollection[((split, shard, shards), first_id, [ImageRef])].

    ``settle(names, most_labels) -> (classes, label_width)`` turns the label names the
    refs carry into the class list (ids) and the label vector width, once, at plan time.
    """

    def __init__(self, ratios, shard_size_mb, images_per_shard, output_root, env: WorkerEnv, first_ids=None,
                 settle: Callable | None = None):
        super().__init__()
        self._ratios = ratios
        self._shard_size_mb = shard_size_mb
        self._images_per_shard = images_per_shard
        self._output = output_root
        self._env = env
        self._first_ids = dict(first_ids or {})
        self._settle = settle

    def expand(self, batches):
        # ((split, group), [ImageRef])
        keyed = batches | "BySplit" >> beam.FlatMap(_by_split)
        # ((split, group), shards) for every join group of every split
        shard_counts = (
            keyed
            | "SplitTotalsInBatch" >> beam.Map(_split_totals)
            | "SplitTotals" >> beam.CombineGlobally(_MergeTotals()).without_defaults()
            | "ShardCounts" >> beam.FlatMap(_shard_counts_per_group, self._shard_size_mb, self._images_per_shard)
        )
        # ((split, shard, shards), [ImageRef]): a batch's refs, cut by shard
        assigned = (
            {"shards": shard_counts, "refs": keyed}
            | "JoinCounts" >> beam.CoGroupByKey()
            | "AssignShards" >> beam.FlatMap(_assign_shards, self._ratios)
        )
        # ((split, shard, shards), (first id, written key)); writes the plan
        first_ids = (
            assigned
            | "ShardFactsInBatch" >> beam.Map(_shard_facts)
            | "ShardFacts" >> beam.CombineGlobally(_MergeFacts()).without_defaults()
            | "PlanAndFirstIds" >> beam.ParDo(_PlanFn(self._output, self._env, self._first_ids, self._settle))
        )
        return (
            {"first": first_ids, "refs": assigned}
            | "JoinFirstIds" >> beam.CoGroupByKey()
            | "WithFirstId" >> beam.Map(_with_first_id)
        )
