"""PlanShards: batches of ImageRefs -> each shard's refs together with its first record id.

Only metadata crosses this stage's shuffles, and only in batches (lists of
refs), so a runner's per-element costs are paid per batch, not per image:
per-split totals decide the shard count, an image's key decides its shard,
per-shard counts decide the ids and the written shards (a planned shard that
received no image is not written; the others are numbered densely). The plan
is also written to ``_work/plan.json`` so the finaliser knows exactly which
shards must exist.

No side inputs: the global facts (shard counts, first ids) reach the refs
through joins, i.e. a Flatten of tagged elements and a GroupByKey. Beam's
Dask runner evaluates a side input by recomputing its whole upstream inside
every task that reads it (listing the input again, and duplicating elements),
while Flatten and GroupByKey are translated by every runner.
"""

from __future__ import annotations

import json

import apache_beam as beam

from imgrec import storage
from imgrec.env import WorkerEnv
from imgrec.layout import WORK
from imgrec.planning import (
    BATCH_REFS,
    RefBatch,
    SplitTotals,
    assign_shard,
    plan_shard_counts,
    shard_bases,
    written_shards,
)

PLAN = WORK + "/plan.json"

# The batches of each split meet its shard count in this many join groups (a batch's
# group comes from its first key), so shard assignment runs in parallel on a cluster
# while the shuffle carries a few elements per batch. It does not change the output.
JOIN_GROUPS = 64

# Tags of the joined values: a fact (a shard count or a first id) or a batch of refs.
_FACT, _REF = 0, 1


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
    # totals: {split: (records, bytes)} -> ((split, group), (_FACT, shards)) for every join group
    counts = plan_shard_counts({s: SplitTotals(*v) for s, v in totals.items()}, shard_size_mb, images_per_shard)
    for split, shards in sorted(counts.items()):
        for group in range(JOIN_GROUPS):
            yield (split, group), (_FACT, shards)


def _assign_shards(element, ratios):
    # ((split, group), [(_FACT, shards), (_REF, [ImageRef]), ...]) -> ((split, shard, shards), [ImageRef]) per shard
    (split, _), tagged = element
    shards, batches = None, []
    for tag, value in tagged:
        if tag == _FACT:
            shards = value
        else:
            batches.append(value)
    per_shard = {}
    for refs in batches:
        for ref in refs:
            per_shard.setdefault(assign_shard(ref.key, split, ratios, shards), RefBatch()).append(ref)
    for shard, refs in sorted(per_shard.items()):
        yield (split, shard, shards), refs


def _shard_totals(assigned):
    # ((split, shard, shards), [ImageRef]) -> {(split, shard, shards): (records, bytes)}
    key, refs = assigned
    return {key: (len(refs), sum(r.size for r in refs))}


def _plan_document(counts: dict, totals: dict) -> dict:
    splits = {}
    for (split, shard, shards), n in sorted(counts.items()):
        entry = splits.setdefault(split, {"shards": shards, "records": 0, "bytes": totals[split][1], "counts": {}})
        entry["counts"][str(shard)] = n
        entry["records"] += n
    return {"splits": splits}


def _write_plan_and_bases(per_shard, output, env: WorkerEnv | None = None, first_ids=None):
    # {(split, shard, shards): (records, bytes)} -> ((split, shard, shards), (_FACT, (first id, written key)))
    if env is not None:  # this runs in a worker: Beam's --s3_* options do not reach it
        env.apply()
    counts, totals = {}, {}
    for key, (records, size) in per_shard.items():
        counts[key] = records
        split_records, split_bytes = totals.get(key[0], (0, 0))
        totals[key[0]] = (split_records + records, split_bytes + size)
    # a planned shard that received no image is not written: the others are numbered densely
    written = written_shards({(split, shard): n for (split, shard, _), n in counts.items()})
    written_counts = {(split, *written[(split, shard)]): n for (split, shard, _), n in counts.items()}
    storage.write_text(storage.join(output, PLAN), json.dumps(_plan_document(written_counts, totals), sort_keys=True))
    bases = shard_bases({(split, shard): n for (split, shard, _), n in counts.items()})
    for split, shard, shards in sorted(counts):
        # an --incremental run continues each split's ids after the ones already used
        first_id = bases[(split, shard)] + (first_ids or {}).get(split, 0)
        yield (split, shard, shards), (_FACT, (first_id, (split, *written[(split, shard)])))


def _with_first_id(element):
    # ((split, shard, shards), [(_FACT, (first id, written key)), (_REF, [ImageRef]), ...])
    # -> ((split, written shard, written shards), first id, [ImageRef])
    key, tagged = element
    first_id, refs = None, RefBatch()
    for tag, value in tagged:
        if tag == _FACT:
            first_id, key = value
        else:
            refs.extend(value)
    return key, first_id, refs


class _Batch(beam.DoFn):
    """ImageRefs -> RefBatches of up to ``size`` of them (per bundle)."""

    def __init__(self, size):
        self._size = size

    def start_bundle(self):
        self._batch = RefBatch()

    def process(self, element):
        self._batch.append(element)
        if len(self._batch) >= self._size:
            yield self._batch
            self._batch = RefBatch()

    def finish_bundle(self):
        if self._batch:
            yield beam.transforms.window.GlobalWindows.windowed_value(self._batch)
            self._batch = RefBatch()


class BatchRefs(beam.PTransform):
    """PCollection[ImageRef] -> PCollection[list[ImageRef]]: what PlanShards takes."""

    def expand(self, refs):
        return refs | "Batch" >> beam.ParDo(_Batch(BATCH_REFS))


class PlanShards(beam.PTransform):
    """PCollection[list[ImageRef]] -> PCollection[((split, shard, shards), first_id, [ImageRef])]."""

    def __init__(self, ratios, shard_size_mb, images_per_shard, output_root, env: WorkerEnv | None = None,
                 first_ids=None):
        super().__init__()
        self._ratios = ratios
        self._shard_size_mb = shard_size_mb
        self._images_per_shard = images_per_shard
        self._output = output_root
        self._env = env
        self._first_ids = dict(first_ids or {})

    def expand(self, batches):
        # ((split, group), [ImageRef])
        keyed = batches | "BySplit" >> beam.FlatMap(_by_split)
        # ((split, group), (_FACT, shards)) for every join group of every split
        shard_counts = (
            keyed
            | "SplitTotalsInBatch" >> beam.Map(_split_totals)
            | "SplitTotals" >> beam.CombineGlobally(_MergeTotals()).without_defaults()
            | "ShardCounts" >> beam.FlatMap(_shard_counts_per_group, self._shard_size_mb, self._images_per_shard)
        )
        # ((split, shard, shards), [ImageRef]): a batch's refs, cut by shard
        assigned = (
            (shard_counts, keyed | "TagRefs" >> beam.Map(lambda kv: (kv[0], (_REF, kv[1]))))
            | "JoinCounts" >> beam.Flatten()
            | "GroupBySplit" >> beam.GroupByKey()
            | "AssignShards" >> beam.FlatMap(_assign_shards, self._ratios)
        )
        # ((split, shard, shards), (_FACT, first id)); writes the plan
        first_ids = (
            assigned
            | "ShardTotalsInBatch" >> beam.Map(_shard_totals)
            | "ShardTotals" >> beam.CombineGlobally(_MergeTotals()).without_defaults()
            | "PlanAndFirstIds" >> beam.FlatMap(_write_plan_and_bases, self._output, self._env, self._first_ids)
        )
        # ((split, shard, shards), (_REF, [ImageRef]))
        tagged_refs = assigned | "TagAssigned" >> beam.Map(lambda kv: (kv[0], (_REF, kv[1])))
        return (
            (first_ids, tagged_refs)
            | "JoinFirstIds" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WithFirstId" >> beam.Map(_with_first_id)
        )
