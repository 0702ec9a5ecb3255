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
import logging
import os
import shutil
import tempfile
import time
import uuid
from typing import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from imgrec import findings, items, runs, shardwriter, spill, storage, workers
from imgrec.classmap import lookalike_pairs, shown_name
from imgrec.errors import ImgrecError, UsageError
from imgrec.finalize import PLAN, layout_for, prepare_job
from imgrec.incremental import Previous
from imgrec.layout import WORK
from imgrec.options import ConvertOptions
from imgrec.planning import RefBatch
from imgrec.progress import ProgressWriter
from imgrec.shardplan import Plan
from imgrec.summary import human_bytes
from imgrec.workrecords import Failure
from transforms.curate import GroupIdentical, Stratify, WriteFindings, single_unit
from transforms.exclude_existing import ExcludeExisting
from transforms.finalize import Finalize
from transforms.plan_shards import BatchRefs, PlanShards, plan_and_classes

LOG = logging.getLogger("transforms.write_recordio")

SPILL, SHUFFLE, AUTO = "spill", "shuffle", "auto"
FAILURES = WORK + "/failures"
# A source's loose images are handed to a spill task in batches of this many.
SPILL_BATCH = 4096


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


def record_failure(output: str, exc: ImgrecError) -> None:
    """Leave why a stage stopped the job where the launcher looks (any runner, any process); never raises."""
    failure = Failure("\n".join(exc.lines()), exc.exit_code, type(exc).__name__)
    with contextlib.suppress(Exception):
        storage.write_text(storage.join(output, FAILURES, "%s.json" % uuid.uuid4().hex),
                           __import__("json").dumps(failure.to_json()))


def read_failures(output: str) -> list[Failure]:
    """The failures stages recorded under ``output`` (for the launcher, after a failed run)."""
    import json

    out = []
    with contextlib.suppress(Exception):
        for rel in storage.list_recursive(storage.join(output, FAILURES)):
            with contextlib.suppress(Exception):
                out.append(Failure.from_json(json.loads(storage.read_text(storage.join(output, FAILURES, rel)))))
    return out


class _JobDoFn(beam.DoFn):
    """A DoFn of the job: applies the job's worker settings once per process; records an ImgrecError it raises."""

    def __init__(self, job: Job):
        self.job = job

    def setup(self):
        self.job.options.env().apply()

    @contextlib.contextmanager
    def recorded(self):
        try:
            yield
        except ImgrecError as exc:
            record_failure(self.job.options.output, exc)
            raise


# ---------------------------------------------------------------- the shared pool of the local runner

_POOLS: dict[tuple, workers.WorkerPool] = {}


def job_pool(job: Job) -> workers.WorkerPool:
    """The worker pool of this process for the job's settings (forked once, used by listing and writing)."""
    key = (job.processes, job.threads, os.getpid())
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = workers.WorkerPool(job.processes, job.threads, init=job.options.env().apply_in_worker)
    return pool


def close_pools() -> None:
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.close()


# ---------------------------------------------------------------- the spill planner


class _SpillFn(_JobDoFn):
    """Items -> runs on local disk: (PLAN, RunSummary) once per bundle, and (FOUND, Finding) values."""

    def start_bundle(self):
        self._listings: list[items.FolderListing] = []
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
        return spill.SpillJob(self.job.scratch, o.input, o.split_seed, o.check_duplicates, o.max_file_bytes, **kw)

    def finish_bundle(self):
        if self._loose:
            self._jobs.append(self._job(images=tuple(self._loose)))
        summary = spill.RunSummary()
        with self.recorded():
            for part in job_pool(self.job).map(spill.spill, self._jobs):
                part.release()
                summary.merge(part.meta)
        found, summary.findings = summary.findings, []
        yield beam.transforms.window.GlobalWindows.windowed_value((findings.MAIN, summary))
        for finding in found:
            yield beam.transforms.window.GlobalWindows.windowed_value((findings.FOUND, finding))


def _unpack(element):
    if isinstance(element, list):
        for item in element:
            yield from _unpack(item)
    else:
        yield element


class _MergeSummaries(beam.CombineFn):
    def create_accumulator(self):
        return spill.RunSummary()

    def add_input(self, acc, summary):
        return acc.merge(summary)

    def merge_accumulators(self, accs):
        out = spill.RunSummary()
        for acc in accs:
            out.merge(acc)
        return out

    def extract_output(self, acc):
        return acc


class _PlanFn(_JobDoFn):
    """The one RunSummary of the job -> ShardWork per shard (and _work/plan.json, the write spec)."""

    def process(self, summary):
        with self.recorded():
            yield from self._plan(summary)

    def _plan(self, summary: spill.RunSummary):
        job, o = self.job, self.job.options
        classes = settle_job_classes(job, summary.names)
        width = spill.label_width(o, classes, summary.max_labels)
        exclude: list[str] = []
        first_ids = None
        if job.previous is not None:
            exclude = spill.existing_runs(job.previous.lists(o.output), job.scratch, o.split_seed)
            first_ids = job.previous.next_ids()
        plan = spill.make_plan(summary, o, exclude, first_ids)
        spec = shardwriter.WriteSpec(o, tuple(classes), width)
        spec_path = os.path.join(job.scratch, "write-spec.pickle")
        shardwriter.save_spec(spec, spec_path)
        write_plan(o.output, plan, classes, width)
        run_paths = tuple(sorted(summary.runs))
        flt = spill.RefFilter(dedup=o.dedup, exclude=tuple(exclude))
        for task in plan.all_tasks():
            parts = tuple(
                shardwriter.PartJob(spec_path, task.split, task.shard, p.first_id, p.count, runs=run_paths,
                                    lo=p.lo, hi=p.hi, flt=flt)
                for p in task.parts
            )
            yield shardwriter.ShardWork(task.split, task.shard, task.shards, task.first_id, task.records, parts)


def settle_job_classes(job: Job, names: set[str]) -> list[str]:
    """The job's classes in id order; refuses look-alike names unless allowed, and a changed class map."""
    o = job.options
    classes = spill.settle_classes(names, list(job.classes) if job.classes is not None else None, o)
    if job.previous is not None and classes[:len(job.previous.classes)] != job.previous.classes:
        raise UsageError("the classes of this increment do not extend those of the dataset in %s" % o.output)
    check_lookalikes(classes, o)
    return classes


def check_lookalikes(classes: Sequence[str], options: ConvertOptions) -> None:
    pairs = lookalike_pairs(classes)
    if pairs and not options.allow_lookalike_classes:
        a, b = pairs[0]
        raise UsageError(
            "class names %s and %s look the same (they differ only in case or Unicode form): rename one, or pass "
            "--allow-lookalike-classes to keep both" % (shown_name(a), shown_name(b))
        )


def write_plan(output: str, plan: Plan, classes: Sequence[str], width: int) -> None:
    import json

    doc = plan.to_json()
    doc["classes"] = list(classes)
    doc["label_width"] = width
    storage.write_text(storage.join(output, PLAN), json.dumps(doc, ensure_ascii=False, sort_keys=True))


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

    def process(self, element):
        self._works.append(self._work(element))

    def _work(self, element) -> shardwriter.ShardWork:
        return element

    def _pool(self) -> workers.WorkerPool:
        return job_pool(self.job)

    def _spec(self) -> shardwriter.WriteSpec:
        return shardwriter.load_spec(os.path.join(self.job.scratch, "write-spec.pickle"))

    def finish_bundle(self):
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
    """The shuffle planner's shards: ((split, shard, shards), first_id, [ImageRef]) -> written, on threads."""

    def setup(self):
        super().setup()
        self._spec_cache = None
        self._pool_cache = None

    def _spec(self) -> shardwriter.WriteSpec:
        if self._spec_cache is None:
            import json

            plan = json.loads(storage.read_text(storage.join(self.job.options.output, PLAN)))
            self._spec_cache = shardwriter.WriteSpec(self.job.options, tuple(plan["classes"]), plan["label_width"])
            path = os.path.join(tempfile.gettempdir(), "imgrec-spec-%s.pickle" % uuid.uuid4().hex)
            shardwriter.register_spec(path, self._spec_cache)
            self._spec_path = path
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


def _run_ref(ref) -> runs.RunRef:
    label = ref.label
    names = (label,) if isinstance(label, str) else tuple(label)
    return runs.RunRef(ref.key, ref.relpath, ref.size, ref.version, runs.join_labels(names))


# ---------------------------------------------------------------- the shuffle planner's front


class _ToRefs(_JobDoFn):
    """Items -> (MAIN, ImageRef with its class names as label) | (FOUND, Finding)."""

    def process(self, element):
        from imgrec.planning import ImageRef, assign_split, image_key

        o = self.job.options
        for item in items.flatten(element):
            item = items.to_image(item, o.input) if not isinstance(item, (items.Finding,)) else item
            if isinstance(item, items.Finding):
                yield findings.FOUND, item
                continue
            if not isinstance(item, items.Image):
                yield findings.FOUND, items.error_finding(item)
                continue
            if item.size < 0:
                try:
                    item = item._replace(size=storage.file_size(items.source_uri(o.input, item.path)))
                except (OSError, storage.StorageError) as exc:
                    from imgrec.errors import ErrorRecord

                    reason = "missing" if isinstance(exc, FileNotFoundError) else "unreadable"
                    yield findings.FOUND, items.error_finding(ErrorRecord(item.path, reason, "list", str(exc)))
                    continue
            key = image_key(item.path, o.split_seed)
            label = item.labels[0] if not o.label_format else tuple(item.labels)
            yield findings.FOUND, items.Finding("names", 0, None)  # keeps the findings branch non-empty
            yield findings.MAIN, ImageRef(item.path, item.size, label, assign_split(key, o.ratios), key, item.version)


def _shuffle_front(pcoll, job: Job):
    """Items -> (batches of ImageRefs ready to plan, findings) through Beam's shuffles."""
    o = job.options
    tagged = pcoll | "ToRefs" >> beam.ParDo(_ToRefs(job))
    refs = tagged | "Refs" >> beam.FlatMap(findings.main_of)
    found = [tagged | "SourceFindings" >> beam.FlatMap(findings.found_of)]
    if o.check_duplicates:
        units, identical = refs | "GroupIdentical" >> GroupIdentical(o, job.classes or ())
        found.append(identical)
    elif o.stratify:
        units = refs | "Units" >> beam.Map(single_unit)
    if o.stratify:
        refs = units | "Stratify" >> Stratify(o.ratios)
    elif o.check_duplicates:
        refs = units | "UnitRefs" >> beam.FlatMap(lambda u: u.refs)
    batches = refs | "BatchRefs" >> BatchRefs()
    if job.previous is not None:
        batches = (
            batches
            | "RefsToCheck" >> beam.FlatMap(lambda batch: batch)
            | "ExcludeExisting" >> ExcludeExisting(job.previous.lists(o.output), o.env())
            | "BatchNew" >> BatchRefs()
        )
    return batches, found


# ---------------------------------------------------------------- the transform


def default_planner(pipeline: beam.Pipeline) -> str:
    """``spill`` on the local runner (one machine, one scratch folder), else ``shuffle``."""
    from apache_beam.runners.direct.direct_runner import DirectRunner, SwitchingDirectRunner
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    runner = pipeline.runner
    return SPILL if isinstance(runner, (FnApiRunner, DirectRunner, SwitchingDirectRunner)) else SHUFFLE


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

            options = from_kwargs(output=output, **flags)
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
        options, previous = prepare_job(self._options)
        planner = self._planner if self._planner != AUTO else default_planner(pcoll.pipeline)
        if planner == SPILL and options.stratify:
            planner = SHUFFLE  # --stratify ranks each class's images in Beam's shuffles (docs/architecture.md)
        if self._classes is not None:
            check_lookalikes(self._classes, options)
        job = self._job(options, previous, planner)
        if planner == SPILL:
            tagged = pcoll | "Spill" >> beam.ParDo(_SpillFn(job))
            found = [tagged | "SpillFindings" >> beam.FlatMap(findings.found_of)]
            written = (
                tagged
                | "Summaries" >> beam.FlatMap(findings.main_of)
                | "AllSummaries" >> beam.CombineGlobally(_MergeSummaries())
                | "Plan" >> beam.ParDo(_PlanFn(job))
                | "WriteShards" >> beam.ParDo(_WriteFn(job))
            )
        else:
            batches, found = _shuffle_front(pcoll, job)
            groups = batches | "PlanShards" >> PlanShards(
                options.ratios, options.shard_size_mb, options.images_per_shard, options.output, options.env(),
                first_ids=previous.next_ids() if previous else None,
                classes_for=lambda names, max_labels: plan_and_classes(job, names, max_labels),
            )
            written = groups | "WriteShards" >> beam.ParDo(_WriteRefsFn(job))
        fragments = (
            (found if len(found) == 1 else found) if len(found) == 1 else found
        )
        all_found = fragments[0] if len(fragments) == 1 else tuple(fragments) | "AllFindings" >> beam.Flatten()
        written_fragments = all_found | "WriteFindings" >> WriteFindings(options.output, options.env())
        return (written, written_fragments) | "Finalize" >> Finalize(job)

    def _job(self, options: ConvertOptions, previous: Previous | None, planner: str) -> Job:
        scratch, temp = "", False
        if planner == SPILL:
            if storage.is_s3(options.output):
                scratch, temp = tempfile.mkdtemp(prefix="imgrec-runs-"), True
            else:
                scratch = os.path.join(options.output, WORK, "runs")
                shutil.rmtree(scratch, ignore_errors=True)
                os.makedirs(scratch)
        processes, threads = worker_counts(options, self._processes, planner)
        return Job(options, self._classes, self._warnings, previous, self._started, scratch, temp, processes, threads)


def worker_counts(options: ConvertOptions, processes: int | None, planner: str) -> tuple[int, int]:
    """(worker processes, threads): the local runner's use of the cores (--workers; --threads)."""
    cores = workers.usable_cores()
    wanted = options.workers if processes is None else processes
    if planner != SPILL:
        wanted = 0
    elif wanted < 0:  # automatic: processes whenever there is more than one core
        wanted = cores if cores > 1 else 0
    threads = options.threads or (cores + 1 if not options.pass_through or storage.is_s3(options.input) else 1)
    return wanted, threads
