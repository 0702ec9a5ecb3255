"""PlanShards: ImageRefs -> each shard's refs together with its first record id.

Only metadata crosses this stage's shuffles: per-split totals decide the shard
count, an image's key decides its shard, per-shard counts decide the ids. The
plan is also written to ``_work/plan.json`` so the finaliser knows exactly
which shards must exist.

No side inputs: the global facts (shard counts, first ids) reach the refs
through joins, i.e. a Flatten of tagged elements and a GroupByKey. Beam's
Dask runner evaluates a side input by recomputing its whole upstream inside
every task that reads it (listing the input again, and duplicating elements),
while Flatten and GroupByKey are translated by every runner. Totals are summed
per key-range bucket first, so no step holds one value per image even on a
runner without combiner lifting (Dask).
"""

from __future__ import annotations

import json

import apache_beam as beam

from imgrec import s3, storage
from imgrec.layout import WORK
from imgrec.planning import SplitTotals, assign_shard, plan_shard_counts, shard_bases, split_range

PLAN = WORK + "/plan.json"

# Each split's key range is cut into this many equal buckets: the refs meet their
# split's shard count bucket by bucket (a bucket holds images/JOIN_BUCKETS refs:
# 14k for 14 M images) and a bucket overlaps only a few shards. It does not change the output.
JOIN_BUCKETS = 1024

# Tags of the joined values: a fact (a shard count or a first id) or an image ref.
_FACT, _REF = 0, 1


def key_bucket(key: int, split: str, ratios) -> int:
    """The bucket of a key: its position inside its split's key range, scaled to JOIN_BUCKETS."""
    lo, hi = split_range(split, ratios)
    return (key - lo) * JOIN_BUCKETS // (hi - lo)


class _SumCountBytes(beam.CombineFn):
    """sizes -> (records, bytes)"""

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


def _shard_counts_per_bucket(totals, shard_size_mb, images_per_shard):
    # totals: {split: (records, bytes)} -> ((split, bucket), (_FACT, shards)) for every bucket
    counts = plan_shard_counts({s: SplitTotals(*v) for s, v in totals.items()}, shard_size_mb, images_per_shard)
    for split, shards in sorted(counts.items()):
        for bucket in range(JOIN_BUCKETS):
            yield (split, bucket), (_FACT, shards)


def _assign_shards(element, ratios):
    # ((split, bucket), [(_FACT, shards), (_REF, ImageRef), ...]) -> [((split, shard, shards), ImageRef)]
    (split, _), tagged = element
    tagged = list(tagged)
    shards = next(value for tag, value in tagged if tag == _FACT)
    return [((split, assign_shard(ref.key, split, ratios, shards), shards), ref) for tag, ref in tagged if tag == _REF]


def _shard_totals(assigned):
    # [((split, shard, shards), ImageRef)] -> {(split, shard, shards): (records, bytes)}
    totals = {}
    for key, ref in assigned:
        records, size = totals.get(key, (0, 0))
        totals[key] = (records + 1, size + ref.size)
    return totals


def _plan_document(counts: dict, totals: dict) -> dict:
    splits = {}
    for (split, shard, shards), n in sorted(counts.items()):
        entry = splits.setdefault(split, {"shards": shards, "records": 0, "bytes": totals[split][1], "counts": {}})
        entry["counts"][str(shard)] = n
        entry["records"] += n
    return {"splits": splits}


def _write_plan_and_bases(per_shard, output, s3_settings=None, first_ids=None):
    # {(split, shard, shards): (records, bytes)} -> ((split, shard, shards), (_FACT, first id))
    if s3_settings is not None:  # this runs in a worker: Beam's --s3_* options do not reach it
        s3.configure(s3_settings)
    counts, totals = {}, {}
    for key, (records, size) in per_shard.items():
        counts[key] = records
        split_records, split_bytes = totals.get(key[0], (0, 0))
        totals[key[0]] = (split_records + records, split_bytes + size)
    storage.write_text(storage.join(output, PLAN), json.dumps(_plan_document(counts, totals), sort_keys=True))
    bases = shard_bases({(split, shard): n for (split, shard, _), n in counts.items()})
    for split, shard, shards in sorted(counts):
        # an --incremental run continues each split's ids after the ones already used
        yield (split, shard, shards), (_FACT, bases[(split, shard)] + (first_ids or {}).get(split, 0))


def _with_first_id(element):
    # ((split, shard, shards), [(_FACT, first id), (_REF, ImageRef), ...])
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

    def __init__(self, ratios, shard_size_mb, images_per_shard, output_root, s3_settings=None, first_ids=None):
        super().__init__()
        self._ratios = ratios
        self._shard_size_mb = shard_size_mb
        self._images_per_shard = images_per_shard
        self._output = output_root
        self._s3 = s3_settings
        self._first_ids = dict(first_ids or {})

    def expand(self, refs):
        ratios = self._ratios
        # ((split, bucket), ImageRef)
        bucketed = refs | "KeyByBucket" >> beam.Map(lambda r: ((r.split, key_bucket(r.key, r.split, ratios)), r))
        # ((split, bucket), (_FACT, shards)) for every bucket of every split
        shard_counts = (
            bucketed
            | "SizeByBucket" >> beam.Map(lambda kv: (kv[0], kv[1].size))
            | "BucketTotals" >> beam.CombinePerKey(_SumCountBytes())
            | "BySplit" >> beam.Map(lambda kv: {kv[0][0]: kv[1]})
            | "SplitTotals" >> beam.CombineGlobally(_MergeTotals()).without_defaults()
            | "ShardCounts" >> beam.FlatMap(_shard_counts_per_bucket, self._shard_size_mb, self._images_per_shard)
        )
        # [((split, shard, shards), ImageRef)], one list per bucket
        assigned = (
            (shard_counts, bucketed | "TagRefs" >> beam.Map(lambda kv: (kv[0], (_REF, kv[1]))))
            | "JoinCounts" >> beam.Flatten()
            | "GroupByBucket" >> beam.GroupByKey()
            | "AssignShards" >> beam.Map(_assign_shards, ratios)
        )
        # ((split, shard, shards), (_FACT, first id)); writes the plan
        first_ids = (
            assigned
            | "ShardTotalsInBucket" >> beam.Map(_shard_totals)
            | "ShardTotals" >> beam.CombineGlobally(_MergeTotals()).without_defaults()
            | "PlanAndFirstIds" >> beam.FlatMap(_write_plan_and_bases, self._output, self._s3, self._first_ids)
        )
        # ((split, shard, shards), (_REF, ImageRef))
        tagged_refs = assigned | "TagAssigned" >> beam.FlatMap(lambda pairs: ((k, (_REF, r)) for k, r in pairs))
        return (
            (first_ids, tagged_refs)
            | "JoinFirstIds" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WithFirstId" >> beam.Map(_with_first_id)
        )
