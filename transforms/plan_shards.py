"""PlanShards: ImageRefs -> each shard's refs together with its first record id.

Only metadata crosses this stage's shuffles: per-split totals decide the shard
count, an image's key decides its shard, per-shard counts decide the ids. The
plan is also written to ``_work/plan.json`` so the finaliser knows exactly
which shards must exist.

No side inputs: the global facts (shard counts, first ids) reach the refs
through joins, i.e. a Flatten of tagged elements and a GroupByKey. Beam's
Dask runner evaluates a side input by recomputing its whole upstream inside
every task that reads it (listing the input again, and duplicating elements),
while Flatten and GroupByKey are translated by every runner.
"""

from __future__ import annotations

import json

import apache_beam as beam

from imgrec import s3, storage
from imgrec.layout import WORK
from imgrec.planning import SplitTotals, assign_shard, plan_shard_counts, shard_bases

PLAN = WORK + "/plan.json"

# The refs meet their split's shard count in this many groups per split, keyed by
# their key's low bits: one group holds images/JOIN_BUCKETS refs (14k for 14 M images),
# and the planning work spreads over that many tasks. It does not change the output.
JOIN_BUCKETS = 1024

# Tags of the joined values: a fact (a shard count or a first id) or an image ref.
_FACT, _REF = 0, 1


class _SumCountBytes(beam.CombineFn):
    def create_accumulator(self):
        return (0, 0)

    def add_input(self, acc, size):
        return acc[0] + 1, acc[1] + size

    def merge_accumulators(self, accs):
        records = total = 0
        for r, b in accs:
            records += r
            total += b
        return records, total

    def extract_output(self, acc):
        return acc


def _shard_counts_per_bucket(element, shard_size_mb, images_per_shard):
    # element: (None, [(split, (records, bytes))]) -> ((split, bucket), (_FACT, shards))
    _, totals = element
    counts = plan_shard_counts({s: SplitTotals(*v) for s, v in totals}, shard_size_mb, images_per_shard)
    for split, shards in sorted(counts.items()):
        for bucket in range(JOIN_BUCKETS):
            yield (split, bucket), (_FACT, shards)


def _assign_shards(element, ratios):
    # element: ((split, bucket), [(_FACT, shards), (_REF, ImageRef), ...]) -> ((split, shard, shards), ImageRef)
    (split, _), tagged = element
    tagged = list(tagged)
    shards = next(value for tag, value in tagged if tag == _FACT)
    for tag, ref in tagged:
        if tag == _REF:
            yield (split, assign_shard(ref.key, split, ratios, shards), shards), ref


def _plan_document(counts: dict, totals: dict) -> dict:
    splits = {}
    for (split, shard, shards), n in sorted(counts.items()):
        entry = splits.setdefault(split, {"shards": shards, "records": 0, "bytes": totals[split][1], "counts": {}})
        entry["counts"][str(shard)] = n
        entry["records"] += n
    return {"splits": splits}


def _write_plan_and_bases(element, output, s3_settings=None):
    # element: (None, [((split, shard, shards), (records, bytes))]) -> ((split, shard, shards), (_FACT, first id))
    _, per_shard = element
    if s3_settings is not None:  # this runs in a worker: Beam's --s3_* options do not reach it
        s3.configure(s3_settings)
    counts, totals = {}, {}
    for key, (records, size) in per_shard:
        counts[key] = records
        split_records, split_bytes = totals.get(key[0], (0, 0))
        totals[key[0]] = (split_records + records, split_bytes + size)
    storage.write_text(storage.join(output, PLAN), json.dumps(_plan_document(counts, totals), sort_keys=True))
    bases = shard_bases({(split, shard): n for (split, shard, _), n in counts.items()})
    for split, shard, shards in sorted(counts):
        yield (split, shard, shards), (_FACT, bases[(split, shard)])


def _with_first_id(element):
    # element: ((split, shard, shards), [(_FACT, first id), (_REF, ImageRef), ...])
    key, tagged = element
    first_id, refs = None, []
    for tag, value in tagged:
        if tag == _FACT:
            first_id = value
        else:
            refs.append(value)
    return key, first_id, refs


class PlanShards(beam.PTransform):
    """PCollection[ImageRef] -> PCollection[((split, shard, shards), first_id, [ImageRef])]."""

    def __init__(self, ratios, shard_size_mb, images_per_shard, output_root, s3_settings=None):
        super().__init__()
        self._s3 = s3_settings
        self._ratios = ratios
        self._shard_size_mb = shard_size_mb
        self._images_per_shard = images_per_shard
        self._output = output_root

    def expand(self, refs):
        # ((split, bucket), (_FACT, shards)) for every bucket of every split
        shard_counts = (
            refs
            | "SizeBySplit" >> beam.Map(lambda r: (r.split, r.size))
            | "SplitTotals" >> beam.CombinePerKey(_SumCountBytes())
            | "KeyTotalsAsOne" >> beam.Map(lambda kv: (None, kv))
            | "AllTotals" >> beam.GroupByKey()
            | "ShardCounts" >> beam.FlatMap(_shard_counts_per_bucket, self._shard_size_mb, self._images_per_shard)
        )
        # ((split, bucket), (_REF, ImageRef))
        bucketed = refs | "KeyByBucket" >> beam.Map(lambda r: ((r.split, r.key % JOIN_BUCKETS), (_REF, r)))
        # ((split, shard, shards), ImageRef)
        keyed = (
            (shard_counts, bucketed)
            | "JoinCounts" >> beam.Flatten()
            | "GroupByBucket" >> beam.GroupByKey()
            | "AssignShard" >> beam.FlatMap(_assign_shards, self._ratios)
        )
        # ((split, shard, shards), (_FACT, first id)); writes the plan
        first_ids = (
            keyed
            | "SizeByShard" >> beam.Map(lambda kv: (kv[0], kv[1].size))
            | "ShardTotals" >> beam.CombinePerKey(_SumCountBytes())
            | "KeyShardTotalsAsOne" >> beam.Map(lambda kv: (None, kv))
            | "AllShardTotals" >> beam.GroupByKey()
            | "PlanAndFirstIds" >> beam.FlatMap(_write_plan_and_bases, self._output, self._s3)
        )
        return (
            (first_ids, keyed | "TagRefs" >> beam.Map(lambda kv: (kv[0], (_REF, kv[1]))))
            | "JoinFirstIds" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WithFirstId" >> beam.Map(_with_first_id)
        )
