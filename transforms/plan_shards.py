"""PlanShards: ImageRefs -> refs grouped by shard, plus each shard's first record id.

Only metadata crosses this stage's shuffles: per-split totals decide the shard
count, an image's key decides its shard, per-shard counts decide the ids. The
plan is also written to ``_work/plan.json`` so the finaliser knows exactly
which shards must exist.
"""

from __future__ import annotations

import json

import apache_beam as beam

from imgrec import storage
from imgrec.layout import WORK
from imgrec.planning import SplitTotals, assign_shard, plan_shard_counts, shard_bases

PLAN = WORK + "/plan.json"


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


def _shard_of(ref, shard_counts, ratios):
    shards = shard_counts[ref.split]
    return (ref.split, assign_shard(ref.key, ref.split, ratios, shards), shards), ref


def _plan_document(counts: dict, totals: dict) -> dict:
    splits = {}
    for (split, shard, shards), n in sorted(counts.items()):
        entry = splits.setdefault(split, {"shards": shards, "records": 0, "bytes": totals[split][1], "counts": {}})
        entry["counts"][str(shard)] = n
        entry["records"] += n
    return {"splits": splits}


class PlanShards(beam.PTransform):
    """PCollection[ImageRef] -> (PCollection[((split, shard, shards), [ImageRef])], AsSingleton(bases))."""

    def __init__(self, ratios, shard_size_mb, images_per_shard, output_root):
        super().__init__()
        self._ratios = ratios
        self._shard_size_mb = shard_size_mb
        self._images_per_shard = images_per_shard
        self._output = output_root

    def expand(self, refs):
        ratios = self._ratios
        # (split, (records, bytes))
        totals = (
            refs
            | "SizeBySplit" >> beam.Map(lambda r: (r.split, r.size))
            | "SplitTotals" >> beam.CombinePerKey(_SumCountBytes())
        )
        shard_counts = (
            totals
            | "TotalsToDict" >> beam.combiners.ToDict()
            | "ShardCounts"
            >> beam.Map(
                lambda t: plan_shard_counts(
                    {s: SplitTotals(*v) for s, v in t.items()}, self._shard_size_mb, self._images_per_shard
                )
            )
        )
        # ((split, shard, shards), ImageRef)
        keyed = refs | "AssignShard" >> beam.Map(
            _shard_of, beam.pvalue.AsSingleton(shard_counts), ratios
        )
        per_shard = (
            keyed
            | "OnePerRef" >> beam.Map(lambda kv: (kv[0], 1))
            | "CountPerShard" >> beam.CombinePerKey(sum)
            | "CountsToDict" >> beam.combiners.ToDict()
        )
        output = self._output
        # {(split, shard): first id}
        bases = per_shard | "Bases" >> beam.Map(
            _write_plan_and_bases, beam.pvalue.AsSingleton(totals | "AllTotals" >> beam.combiners.ToDict()), output
        )
        groups = keyed | "GroupByShard" >> beam.GroupByKey()
        return groups, beam.pvalue.AsSingleton(bases)


def _write_plan_and_bases(counts, totals, output):
    storage.write_text(storage.join(output, PLAN), json.dumps(_plan_document(counts, totals), sort_keys=True))
    return shard_bases({(split, shard): n for (split, shard, _), n in counts.items()})
