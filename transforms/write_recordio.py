"""WriteToRecordIO: images and their labels -> a complete, verifiable RecordIO dataset, inside the pipeline.

    with beam.Pipeline() as p:
        p | beam.Create([("s3://b/cat/1.jpg", "cat"), ("s3://b/dog/2.jpg", "dog")]) | WriteToRecordIO("out/")

The composite transform at the heart of the job (``python -m pipeline.run`` is a
source transform and this). Its input elements are listed in ``imgrec.items``:
``(uri, label)`` pairs (a label is a class name or a list of them),
``Image`` records, skipped inputs and findings from a source, folders still
to be listed, or lists of these. When the pipeline finishes, the output holds
the shards (``.rec`` + ``.idx``), the ``.lst`` files, the merged indexes, the
class map, ``errors.jsonl``, ``sagemaker.json``, ``summary.txt`` and, written
last, ``manifest.json``: the Finalize step is a step of the pipeline, so a
runner that never returns to the launcher (a template, a detached submission)
still commits the dataset. The output folder is checked and prepared when the
transform is applied, before anything runs.

Two ways to plan, one output (byte for byte):

* ``spill`` (the local runner): every folder is listed and every image keyed
  by a worker (a thread, or a process forked from this one), the refs left in
  sorted runs on local disk; one step counts them into shard tasks; each shard
  is written in parts, on every core (``imgrec.spill``, ``imgrec.shardwriter``).
  Memory is bounded by a part, not by the collection.
* ``shuffle`` (clusters: Dask, Flink, Spark, Dataflow, the portable runner):
  refs cross Beam's own shuffles, in batches (``PlanShards``), which those
  runners keep on disk; each shard is written by one task's threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from typing import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from imgrec import findings, images, items, runs, shardplan, shardwriter, spill, storage, workers
from imgrec.env import WorkerEnv
from imgrec.errors import ErrorRecord, ImgrecError, UsageError
from imgrec.folders import lookalike_warnings
from imgrec.incremental import Previous
from imgrec.options import ConvertOptions
from imgrec.ownership import RUNS, layout_for, prepare_job
from imgrec.planning import ImageRef, RefBatch, assign_split, image_key
from imgrec.progress import ProgressWriter
from imgrec.summary import human_bytes
from imgrec.workrecords import record_failure
from transforms.curate import GroupIdentical, Stratify, WriteFindings, single_unit
from transforms.env import EnvDoFn
from transforms.exclude_existing import ExcludeExisting
from transforms.finalize import Finalize
from transforms.plan_shards import PlanShards

LOG = logging.getLogger("transforms.write_recordio")

SPILL, SHUFFLE, AUTO = "spill", "shuffle", "auto"
SPEC = "write-spec.pickle"  # the WriteSpec of the spill planner's parts, in its scratch folder
# A source's loose images are handed to a spill task in batches of this many.
SPILL_BATCH = 4096
# The shuffle planner gathers refs into this many batches (by key) before planning.
BATCH_GROUPS = 1024


# ---------------------------------------------------------------- what every stage knows


@dataclasses.dataclass(frozen=True)
class Job:
    """The job as WriteToRecordIO prepared it: options, classes (if given), what it adds to, where it spills."""

    options: ConvertOptions
    classes: tuple[str, ...] | None
    warnings: tuple[str, ...]
    previous: Previous | None
    started: float
    scratch: str  # local folder of the runs and the write spec (spill planner)
    scratch_is_temp: bool  # a temporary folder of its own (s3:// output), removed at the end
    processes: int  # worker processes of the spill planner (0: threads)
    threads: int

    @property
    def layout(self):
        return layout_for(self.options, self.previous)

    @property
    def env(self) -> WorkerEnv:
        return WorkerEnv.from_options(self.options)


def _worker_init(env: WorkerEnv) -> None:
    """A forked worker process: its own S3 client and settings, OpenCV on one thread (the pool is the parallelism)."""
    env.apply()
    images.tune_for_threads()


class _JobDoFn(EnvDoFn):
    """A DoFn of the job: the job's WorkerEnv applied in setup (EnvDoFn); records an ImgrecError it raises."""

    def __init__(self, job: Job):
        super().__init__(job.env)
        self.job = job

    def setup(self):
        super().setup()
        images.tune_for_threads()

    @contextlib.contextmanager
    def recorded(self):
        try:
            yield
        except ImgrecError as exc:
            record_failure(self.job.options.output, exc)
            raise


# ---------------------------------------------------------------- the shared pool of the local runner


def job_pool(job: Job) -> workers.WorkerPool:
    """The worker pool of this process for the job's settings (forked once, used by listing and writing)."""
    return workers.shared_pool(job.processes, job.threads, functools.partial(_worker_init, job.env))


# ---------------------------------------------------------------- the spill planner


def _unpack(element):
    if isinstance(element, list):
        for item in element:
            yield from _unpack(item)
    else:
        yield element


class _SpillFn(_JobDoFn):
    """Items -> runs on local disk: one RunSummary per bundle (what it found included)."""

    def start_bundle(self):
        self._loose: list = []
        self._jobs: list[spill.SpillJob] = []

    def process(self, element):
        for item in _unpack(element):
            if isinstance(item, items.FolderListing):
                self._jobs.append(self._job(listing=item))
            else:
                self._loose.append(item)
                if len(self._loose) >= SPILL_BATCH:
                    self._jobs.append(self._job(images=tuple(self._loose)))
                    self._loose = []

    def _job(self, **kw) -> spill.SpillJob:
        o = self.job.options
        return spill.SpillJob(self.job.scratch, o.input, o.split_seed, o.check_duplicates, o.max_file_bytes,
                              single_label=not o.label_format, **kw)

    def finish_bundle(self):
        if self._loose:
            self._jobs.append(self._job(images=tuple(self._loose)))
        summary = spill.RunSummary()
        with self.recorded():
            for part in job_pool(self.job).map(spill.spill, self._jobs):
                part.release()
                summary.merge(part.meta)
        yield beam.transforms.window.GlobalWindows.windowed_value(summary)


PLANNED = "planned"  # what the Plan step emits after its shard tasks: Finalize always has something to wait for


class _PlanFn(_JobDoFn):
    """Every spill task's RunSummary -> ShardWork per shard, then PLANNED (and _work/plan.json, the write spec)."""

    def process(self, keyed):
        # keyed: (None, [RunSummary, ...]): a GroupByKey on one key is lighter than CombineGlobally
        summary = spill.RunSummary()
        for part in keyed[1]:
            summary.merge(part)
        with self.recorded():
            yield from self._plan(summary)
        yield PLANNED

    def _plan(self, summary: spill.RunSummary):
        job, o = self.job, self.job.options
        findings.write_fragments(o.output, summary.findings)
        classes, width, warnings = settle(job, summary.names, summary.max_labels)
        exclude: list[str] = []
        first_ids = None
        if job.previous is not None:
            exclude = spill.existing_runs(job.previous.lists(o.output), job.scratch, o.split_seed)
            first_ids = job.previous.next_ids()
        plan = spill.make_plan(summary, o, exclude, first_ids)
        spec_path = os.path.join(job.scratch, SPEC)
        shardwriter.save_spec(shardwriter.WriteSpec(o, tuple(classes), width), spec_path)
        shardplan.save_plan(o.output, plan, classes, width, warnings)
        run_paths = tuple(sorted(summary.runs))
        flt = shardplan.RefFilter(dedup=o.dedup, exclude=tuple(exclude))
        for task in plan.all_tasks():
            parts = tuple(
                shardwriter.PartJob(spec_path, task.split, task.shard, p.first_id, p.count, runs=run_paths,
                                    lo=p.lo, hi=p.hi, flt=flt)
                for p in task.parts
            )
            yield shardwriter.ShardWork(task.split, task.shard, task.shards, task.first_id, task.records, parts)


def settle(job: Job, names: set[str], max_labels: int) -> tuple[list[str], int, list[str]]:
    """At plan time: the classes in id order, the label width, and warnings about the class names.

    Refuses an increment whose classes do not extend the dataset's, and class names that
    look alike (differ only in case or Unicode form) unless they are allowed.
    """
    o = job.options
    classes = spill.settle_classes(names, list(job.classes) if job.classes is not None else None, o)
    if job.previous is not None and classes[:len(job.previous.classes)] != job.previous.classes:
        raise UsageError("the classes of this increment do not extend those of the dataset in %s" % o.output)
    warnings = [] if job.classes is not None else lookalike_warnings(classes, o.allow_lookalike_classes, "class names")
    return classes, spill.label_width(o, classes, max_labels), warnings


def settle_for_plan(job: Job, names: set[str], max_labels: int) -> tuple[list[str], int]:
    """``settle`` for the shuffle planner's PlanShards (which saves the plan itself)."""
    try:
        classes, width, _ = settle(job, names, max_labels)
    except ImgrecError as exc:
        record_failure(job.options.output, exc)
        raise
    return classes, width


# ---------------------------------------------------------------- writing (both planners)


class _WriteFn(_JobDoFn):
    """Shards to write -> a small summary of each written shard (after its completion record)."""

    def __init__(self, job: Job):
        super().__init__(job)
        self._images = Metrics.counter("imgrec", "images_written")
        self._bytes = Metrics.counter("imgrec", "bytes_written")
        self._skipped = Metrics.counter("imgrec", "images_skipped")
        self._shards = Metrics.counter("imgrec", "shards_written")
        self._resumed = Metrics.counter("imgrec", "shards_resumed")

    def setup(self):
        super().setup()
        self._progress = ProgressWriter(self.job.options.output)

    def start_bundle(self):
        self._works: list[shardwriter.ShardWork] = []
        self._planned = False

    def process(self, element):
        if element is PLANNED or element == PLANNED:
            self._planned = True
            return
        self._works.append(self._work(element))

    def _work(self, element) -> shardwriter.ShardWork:
        return element

    def _pool(self) -> workers.WorkerPool:
        return job_pool(self.job)

    def _spec(self) -> shardwriter.WriteSpec:
        return shardwriter.load_spec(os.path.join(self.job.scratch, SPEC))

    def finish_bundle(self):
        if self._planned:  # passed on to Finalize, which then runs even when there is no shard to write
            yield beam.transforms.window.GlobalWindows.windowed_value(PLANNED)
        if not self._works:
            return
        with self.recorded():
            records = shardwriter.write_shards(self._works, self._spec(), self.job.layout, self._pool(),
                                               self._progress.add)
            for record in records:
                self._count(record)
                yield beam.transforms.window.GlobalWindows.windowed_value(
                    {"split": record.split, "shard": record.shard, "shards": record.shards,
                     "records": record.records, "bytes": record.bytes, "sha256": record.sha256})
        self._progress.add(force=True)

    def _count(self, record) -> None:
        LOG.info("shard %s %d/%d %s: %d images, %s, %d skipped", record.split, record.shard + 1, record.shards,
                 "kept (--resume)" if record.resumed else "written", record.records, human_bytes(record.bytes),
                 len(record.errors))
        self._images.inc(record.records)
        self._bytes.inc(record.bytes)
        self._skipped.inc(len(record.errors))
        self._shards.inc()
        if record.resumed:
            self._resumed.inc()


class _WriteRefsFn(_WriteFn):
    """The shuffle planner's shards: ((split, shard, shards), first_id, [ImageRef]) -> written, on threads.

    Each shard is written in its own ``process`` call: Beam's Dask runner drops what a
    DoFn emits from ``finish_bundle``.
    """

    def setup(self):
        super().setup()
        self._spec_cache = None
        self._pool_cache = None

    def process(self, element):
        self._works = [self._work(element)]
        yield from self.finish_bundle()
        self._works = []

    def _spec(self) -> shardwriter.WriteSpec:
        if self._spec_cache is None:
            _, classes, width, _ = shardplan.load_plan(self.job.options.output)
            self._spec_cache = shardwriter.WriteSpec(self.job.options, tuple(classes), width)
            self._spec_path = "memory:%s" % uuid.uuid4().hex  # threads only: the spec stays in this process
            shardwriter.register_spec(self._spec_path, self._spec_cache)
        return self._spec_cache

    def _work(self, element) -> shardwriter.ShardWork:
        (split, shard, shards), first_id, refs = element
        self._spec()
        ordered = sorted((_run_ref(r) for r in refs), key=lambda r: (r.key, r.relpath))
        parts = shardwriter.parts_of_refs(self._spec_path, split, shard, first_id, ordered)
        return shardwriter.ShardWork(split, shard, shards, first_id, len(ordered), parts)

    def _pool(self) -> workers.WorkerPool:
        if self._pool_cache is None:
            self._pool_cache = workers.WorkerPool(0, self.job.threads)
        return self._pool_cache

    def teardown(self):
        if getattr(self, "_pool_cache", None) is not None:
            self._pool_cache.close()


def _run_ref(ref: ImageRef) -> runs.RunRef:
    names = (ref.label,) if isinstance(ref.label, str) else tuple(ref.label)
    return runs.RunRef(ref.key, ref.relpath, ref.size, ref.version, runs.join_labels(names))


# ---------------------------------------------------------------- the shuffle planner's front


class _ToRefs(_JobDoFn):
    """Items -> (MAIN, ImageRef with its class names as label) | (FOUND, Finding)."""

    def process(self, element):
        o = self.job.options
        taken = 0
        for item in items.flatten(element):
            item = items.to_image(item, o.input, not o.label_format)
            if isinstance(item, items.Finding):
                yield findings.FOUND, item
                continue
            if isinstance(item, ErrorRecord):
                yield findings.FOUND, items.error_finding(item)
                continue
            if item.size < 0:
                try:
                    item = item._replace(size=storage.file_size(items.source_uri(o.input, item.path)))
                except (OSError, storage.StorageError) as exc:
                    reason = "missing" if isinstance(exc, FileNotFoundError) else "unreadable"
                    yield findings.FOUND, items.error_finding(ErrorRecord(item.path, reason, "list", str(exc)))
                    continue
            key = image_key(item.path, o.split_seed)
            label = item.labels[0] if not o.label_format else tuple(item.labels)
            taken += 1
            yield findings.MAIN, ImageRef(item.path, item.size, label, assign_split(key, o.ratios), key, item.version)
        if taken:
            yield findings.FOUND, items.Finding(findings.IMAGES, taken)


def _spread_key(element) -> int:
    """A key that spreads the source's elements (class folders, batches) over the workers; not part of the output."""
    import zlib

    first = element[0] if isinstance(element, list) and element else element
    return zlib.crc32(repr(first)[:200].encode("utf-8", "surrogateescape")) % 4096


def shuffle_front(pcoll, job: Job):
    """Items -> (batches of ImageRefs ready to plan, [findings]) through Beam's shuffles."""
    o = job.options
    tagged = (
        pcoll
        # spread the elements (class folders to list, label-file chunks) over the workers first
        | "KeyElements" >> beam.Map(lambda e: (_spread_key(e), e))
        | "SpreadElements" >> beam.GroupByKey()
        | "UnkeyElements" >> beam.FlatMap(lambda kv: kv[1])
        | "ToRefs" >> beam.ParDo(_ToRefs(job))
    )
    refs = tagged | "Refs" >> beam.FlatMap(findings.main_of)
    found = [tagged | "SourceFindings" >> beam.FlatMap(findings.found_of)]
    if o.check_duplicates:
        units, identical = refs | "GroupIdentical" >> GroupIdentical(o, ())
        found.append(identical)
    elif o.stratify:
        units = refs | "Units" >> beam.Map(single_unit)
    if o.stratify:
        refs = units | "Stratify" >> Stratify(o.ratios)
    elif o.check_duplicates:
        refs = units | "UnitRefs" >> beam.FlatMap(lambda u: u.refs)
    if job.previous is not None:
        refs = refs | "ExcludeExisting" >> ExcludeExisting(job.previous.lists(o.output), job.env)
    # [ImageRef]: batches by key group, through a shuffle (a batching DoFn would emit its last batch
    # from finish_bundle, which Beam's Dask runner drops)
    batches = (
        refs
        | "KeyForBatches" >> beam.Map(lambda r: (r.key % BATCH_GROUPS, r))
        | "GroupBatches" >> beam.GroupByKey()
        | "Batches" >> beam.Map(lambda kv: RefBatch(kv[1]))
    )
    return batches, found


# ---------------------------------------------------------------- the transform


def default_planner(pipeline: beam.Pipeline) -> str:
    """``spill`` on the local runner (one machine, one scratch folder), else ``shuffle``."""
    from apache_beam.runners.direct.direct_runner import DirectRunner, SwitchingDirectRunner
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    runner = pipeline.runner
    return SPILL if isinstance(runner, (FnApiRunner, DirectRunner, SwitchingDirectRunner)) else SHUFFLE


def beam_workers(pipeline) -> int:
    """How many worker processes the local runner itself starts (--direct_num_workers), 1 when in this process."""
    if pipeline is None or pipeline.options is None:
        return 1
    from apache_beam.options.pipeline_options import DirectOptions

    return pipeline.options.view_as(DirectOptions).direct_num_workers or 1


def worker_counts(options: ConvertOptions, processes: int | None, planner: str) -> tuple[int, int]:
    """(worker processes, threads): the local runner's use of the cores (--workers; --threads)."""
    cores = workers.usable_cores()
    wanted = getattr(options, "workers", -1) if processes is None else processes
    if planner != SPILL:
        wanted = 0
    elif wanted < 0:  # automatic: processes whenever there is more than one core
        wanted = cores if cores > 1 else 0
    threads = options.threads or (cores + 1 if not options.pass_through or storage.is_s3(options.input) else 1)
    return wanted, threads


class WriteToRecordIO(beam.PTransform):
    """PCollection of images (see ``imgrec.items``) -> a complete dataset under ``output``.

    ``classes``: class names in id order (pins the ids; labels outside it are refused
    unless ``allow_new_classes``); by default the sorted names found (or ``class_map``).
    Other keywords are the command's flags (``resize=256``, ``train_ratio=0.8``, ...),
    or ``options=`` a ready ``ConvertOptions``. Returns a PCollection holding the
    manifest (a dict), once it is written.
    """

    def __init__(self, output: str = "", *, classes: Sequence[str] | None = None, warnings: Sequence[str] = (),
                 planner: str = AUTO, options: ConvertOptions | None = None, started: float | None = None,
                 processes: int | None = None, **flags):
        super().__init__()
        if options is None:
            from imgrec.options import from_kwargs

            options = from_kwargs(input_required=False, output=output, **flags)
        elif output or flags:
            raise TypeError("give either options= or the output and keyword flags, not both")
        if planner not in (AUTO, SPILL, SHUFFLE):
            raise UsageError("planner must be 'auto', 'spill' or 'shuffle', got %r" % planner)
        self._options = options
        self._classes = tuple(classes) if classes is not None else None
        self._warnings = tuple(warnings)
        self._planner = planner
        self._started = started if started is not None else time.time()
        self._processes = processes

    def expand(self, pcoll):
        # the output is checked and prepared here, in the applying process: with the job's S3 settings
        WorkerEnv.from_options(self._options).apply()
        options, previous = prepare_job(self._options)
        planner = self._planner if self._planner != AUTO else options.planner
        if planner == AUTO:
            planner = default_planner(pcoll.pipeline)
        if planner == SPILL and options.stratify:
            planner = SHUFFLE  # --stratify ranks each class's images in Beam's shuffles (docs/architecture.md)
        if planner == SPILL and default_planner(pcoll.pipeline) != SPILL:
            raise UsageError("the spill planner needs the local runner (one machine, one scratch folder); "
                             "on %s use planner 'shuffle' (the default there)" % type(pcoll.pipeline.runner).__name__)
        job = self._job(options, previous, planner, pcoll.pipeline)
        if planner == SPILL:
            # the findings travel in the run summaries: the Plan step writes the report fragments
            written = (
                pcoll
                | "Spill" >> beam.ParDo(_SpillFn(job))  # one summary per bundle, an empty input's too
                | "KeySummaries" >> beam.Map(lambda s: (None, s))
                | "AllSummaries" >> beam.GroupByKey()
                | "Plan" >> beam.ParDo(_PlanFn(job))
                | "WriteShards" >> beam.ParDo(_WriteFn(job))
            )
            return written | "Finalize" >> Finalize(job)
        batches, found = shuffle_front(pcoll, job)
        groups = batches | "PlanShards" >> PlanShards(
            options.ratios, options.shard_size_mb, options.images_per_shard, options.output, job.env,
            first_ids=previous.next_ids() if previous else None, settle=functools.partial(settle_for_plan, job),
        )
        written = groups | "WriteShards" >> beam.ParDo(_WriteRefsFn(job))
        all_found = found[0] if len(found) == 1 else tuple(found) | "AllFindings" >> beam.Flatten()
        fragments = all_found | "WriteFindings" >> WriteFindings(options.output, job.env)
        return (written, fragments) | "Finalize" >> Finalize(job)

    def _job(self, options: ConvertOptions, previous: Previous | None, planner: str, pipeline=None) -> Job:
        scratch, temp = "", False
        if planner == SPILL:
            if storage.is_s3(options.output):
                scratch, temp = tempfile.mkdtemp(prefix="imgrec-runs-"), True
            else:
                scratch = os.path.join(options.output, RUNS)
                shutil.rmtree(scratch, ignore_errors=True)
                os.makedirs(scratch)
        processes, threads = worker_counts(options, self._processes, planner)
        if beam_workers(pipeline) > 1:
            # Beam's own worker processes talk gRPC: a process forked from one would inherit its threads' locks
            processes = 0
        return Job(options, self._classes, self._warnings, previous, self._started, scratch, temp, processes, threads)
