"""Finalize: the last step of the pipeline -- every shard written -> lists, class map, report, manifest last.

It waits for everything the dataset is made of: each shard's summary (its
completion record is under ``_work/shards/``) and each fragment of the report
(``_work/report/``). Then, in one task, ``imgrec.finalize.finalize`` writes the
``.lst`` files and merged indexes, ``classes.json`` and ``labels.txt``,
``report.jsonl``, ``errors.jsonl``, ``sagemaker.json``, ``summary.txt`` and,
last, ``manifest.json`` (an increment's commit: see that module). Like
``filebasedsink``'s finalize, it reads only what the earlier steps left on
storage, so it runs on any runner and can run again after a crash.
"""

from __future__ import annotations

import shutil

import apache_beam as beam

from imgrec import finalize
from imgrec.workers import close_shared_pools
from imgrec.workrecords import record_failure
from transforms.env import EnvDoFn

# Tags of what Finalize waits for.
_SHARD, _FRAGMENT = "shard", "fragment"


class _FinalizeFn(EnvDoFn):
    def __init__(self, job):
        super().__init__(job.env)
        self.job = job

    def process(self, keyed):
        # keyed: (None, [(tag, value)]) for every shard written and every report fragment (or the plan's end)
        ends = list(keyed[1])
        job = self.job
        try:
            manifest = finalize.finalize(
                job.options, previous=job.previous, warnings=job.warnings, started=job.started,
                shards_written=sum(1 for tag, value in ends if tag == _SHARD and value != "planned"),
            )
        except finalize.ImgrecError as exc:
            record_failure(job.options.output, exc)
            raise
        finally:
            close_shared_pools()
            if job.scratch_is_temp:
                shutil.rmtree(job.scratch, ignore_errors=True)
        yield manifest


class Finalize(beam.PTransform):
    """(shard summaries, report fragments written), or the shard summaries alone -> PCollection[manifest]."""

    def __init__(self, job):
        super().__init__()
        self._job = job

    def expand(self, pcolls):
        if isinstance(pcolls, beam.PCollection):  # the shard summaries only (the report is written already)
            ends = pcolls | "TagShards" >> beam.Map(lambda s: (_SHARD, s))
        else:
            written, fragments = pcolls
            # (tag, value): one element per end the dataset waits for; all of them in one list
            ends = (
                written | "TagShards" >> beam.Map(lambda s: (_SHARD, s)),
                fragments | "TagFragments" >> beam.Map(lambda f: (_FRAGMENT, f)),
            ) | "AllEnds" >> beam.Flatten()
        return (
            ends
            # all of them in one place: a GroupByKey on one key (lighter than CombineGlobally)
            | "KeyEnds" >> beam.Map(lambda e: (None, e))
            | "CollectEnds" >> beam.GroupByKey()
            | "AssembleDataset" >> beam.ParDo(_FinalizeFn(self._job))
        )
