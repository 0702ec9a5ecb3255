"""Convert a folder of class folders into sharded MXNet RecordIO files, on Apache Beam.

On one machine (the default runner: in this process, one encoding thread per core):

    python -m pipeline.run --input ./photos --output ./out

On a cluster, the same job with Beam's flags for the runner, for example:

    python -m pipeline.run --input s3://bucket/photos/ --output s3://bucket/rec/ \\
        --runner=DaskRunner --dask_client_address=tcp://scheduler:8786

Our own flags are listed by ``--help``; every other flag is passed to Beam's
``PipelineOptions`` unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import time
from typing import NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from apache_beam.metrics.metric import MetricsFilter

from imgrec import storage
from imgrec.env import WorkerEnv
from imgrec.errors import STAGE_LIST, ErrorRecord
from imgrec.finalize import (
    OWNER_MARK,
    IncompleteError,
    OutputError,
    TooManyErrorsError,
    dataset_identity,
    finalize,
    journal_uploads,
    layout_for,
    prepare_output,
    restore_committed,
)
from imgrec.incremental import IncrementalError, class_map_uri, load_previous
from imgrec.layout import MANIFEST
from imgrec.progress import ProgressMonitor
from pipeline import STARTED, cli
from imgrec.options import MAX_LABEL_WIDTH, ConvertOptions, OptionsError
from imgrec.classmap import ClassMapError, load_class_map, lookalike_pairs, resolve_names, shown_name
from imgrec.labels import LabelFileError
from transforms.exclude_existing import ExcludeExisting
from transforms.curate import GroupIdentical, Stratify, WriteFindings, single_unit
from transforms.label_sources import LabelSource, LabelSources, prepare_label_source
from transforms.list_images import ListImages
from transforms.plan_shards import BatchRefs, PlanShards
from transforms.write_shards import WriteShards

LOG = logging.getLogger("pipeline.run")

# Beam accepts only dotted paths for runners outside its own package list.
RUNNER_ALIASES = {
    "DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner",
}

# Beam's Dask runner takes all its parallelism from how each beam.Create is cut into dask
# partitions (by default 128 elements a partition: our list of classes would be ONE task);
# later stages keep that count, and each join doubles it (shards are written by up to 4x
# as many tasks). So: one partition per class, up to this many. Every GroupByKey is an
# all-to-all dask shuffle whose task count grows faster than the partitions (about 9,500
# tasks for 25 partitions, 57,000 for 100), so more is not free; --dask_npartitions overrides.
DASK_MAX_PARTITIONS = 64


# --runner values that mean the local runner (Beam's FnApiRunner, see pipeline_options).
LOCAL_RUNNERS = (None, "DirectRunner", "direct")


class UsageError(Exception):
    """Bad input or options: exit 2 with one line."""


def pipeline_options(beam_args: list[str], classes: int = 1) -> tuple[PipelineOptions, object | None]:
    """Beam options, and the runner object to use (``None`` lets Beam pick from ``--runner``)."""
    args = list(beam_args)
    for i, arg in enumerate(args):
        for short, full in RUNNER_ALIASES.items():
            if arg in ("--runner=%s" % short,):
                args[i] = "--runner=%s" % full
            elif arg == short and i > 0 and args[i - 1] == "--runner":
                args[i] = full
    opts = PipelineOptions(args)
    runner = opts.view_as(StandardOptions).runner
    if runner in LOCAL_RUNNERS:
        # Beam's DirectRunner first tries to download the Prism runner binary, which
        # fails (slowly) offline; the FnApiRunner is what it falls back to anyway.
        # By default the whole job runs in this process (Beam's in_memory mode), and the
        # shard writer uses the cores with threads: OpenCV and file reads release the GIL,
        # and two more threads hash and write. Measured against worker processes, this
        # starts 1 s sooner, needs a third of the memory and is as fast or faster in every
        # mode (docs/benchmark.md). --direct_num_workers N > 1 starts N worker processes.
        direct = opts.view_as(DirectOptions)
        given = " ".join(args)
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        if "--direct_running_mode" in given or direct.direct_num_workers == 1:
            return opts, FnApiRunner()
        # One worker process per core, started as `python -m pipeline.worker` (Beam's own
        # multi_processing mode starts the same harness, but it prints its connection log
        # to the terminal). The runner keeps an environment it is given only in its
        # in_memory mode, which then warns that it will not be parallel: it is.
        from apache_beam.transforms.environments import SubprocessSDKEnvironment

        direct.direct_running_mode = "in_memory"
        logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").setLevel(logging.ERROR)
        worker = SubprocessSDKEnvironment.from_command_string("%s -m pipeline.worker" % sys.executable)
        return opts, FnApiRunner(default_environment=worker)
    if runner == RUNNER_ALIASES["DaskRunner"]:
        from apache_beam.runners.dask.dask_runner import DaskOptions

        dask = opts.view_as(DaskOptions)
        if not dask.npartitions and not dask.partition_size:
            dask.npartitions = max(1, min(classes, DASK_MAX_PARTITIONS))
    return opts, None


def runs_in_process(opts: PipelineOptions) -> bool:
    """Whether ``pipeline_options`` gave the local runner that keeps the whole job in this process."""
    direct = opts.view_as(DirectOptions)
    return opts.view_as(StandardOptions).runner in LOCAL_RUNNERS and (direct.direct_num_workers or 1) == 1


def discover_classes(options: ConvertOptions) -> tuple[list[str], list[ErrorRecord]]:
    """Class names (sorted top-level folders) and the inputs found outside any usable class folder.

    A folder whose name is not UTF-8, or that is an output folder of this tool, is
    reported (``non_utf8_name``, ``output_folder``) instead of becoming a class.
    """
    dirs, files = storage.list_top(options.input)
    if OWNER_MARK in files:
        raise UsageError(
            "--input %s is an output folder of this tool (it holds %s), not a folder of class folders: "
            "give the folder the dataset was made from" % (options.input, OWNER_MARK)
        )
    root_errors = []
    for name in files:
        if os.path.splitext(name)[1].lower() in options.exts:
            root_errors.append(
                ErrorRecord(name, "no_class", STAGE_LIST, "image directly in the input folder has no class folder")
            )
    classes = []
    for name in dirs:
        problem = class_folder_problem(options.input, name)
        if problem:
            root_errors.append(problem)
        else:
            classes.append(name)
    bad = [d for d in classes if d in (".", "..") or "/" in d or any(c in d for c in "\t\n\r")]
    if bad:
        raise UsageError("class folder name %r cannot be used (it would escape the output or break .lst lines)" % bad[0])
    if not dirs:
        raise UsageError(
            "%s has no class folders: put each class's images in its own sub-folder (%d files found at the top level)"
            % (options.input, len(files))
        )
    if not classes:
        raise UsageError(
            "%s has no usable class folders: all %d are skipped (%s: %s)"
            % (options.input, len(dirs), root_errors[-1].reason, root_errors[-1].detail)
        )
    return sorted(classes), root_errors


def class_folder_problem(input_root: str, name: str) -> ErrorRecord | None:
    """Why the top-level folder ``name`` cannot be a class (an ErrorRecord), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return ErrorRecord(name, "non_utf8_name", STAGE_LIST,
                           "folder name is not valid UTF-8: its images are not converted")
    if not storage.is_s3(input_root) and os.path.exists(os.path.join(input_root, name, OWNER_MARK)):
        return ErrorRecord(name, "output_folder", STAGE_LIST,
                           "holds %s: an output folder of this tool, not a class" % OWNER_MARK)
    return None


def lookalike_warnings(classes: list[str], options: ConvertOptions) -> list[str]:
    """Class names that differ only in case or Unicode form: refused, or warnings with --allow-lookalike-classes."""
    pairs = lookalike_pairs(classes)
    if not pairs:
        return []
    what = "class names in %s" % options.labels if options.labels else "class folders"
    lines = ["%s %s and %s differ %s" % (what, shown_name(a), shown_name(b), how) for a, b, how in pairs]
    if not options.allow_lookalike_classes:
        more = " (and %d more such pairs)" % (len(pairs) - 1) if len(pairs) > 1 else ""
        raise UsageError(
            "%s%s: they would be separate classes that look the same; rename or merge them, or pass "
            "--allow-lookalike-classes to keep them apart" % (lines[0], more)
        )
    return [line + ": kept as separate classes (--allow-lookalike-classes)" for line in lines]


class Dataset(NamedTuple):
    """What the launcher learnt before the pipeline: the classes and where the labels come from."""

    classes: list[str]  # names by class id
    root_errors: list[ErrorRecord]
    source: LabelSource | None  # a label file, or None for class folders
    folders: list[int]  # ids of the class folders to list (folder mode)
    warnings: tuple[str, ...] = ()  # one-line warnings found before the job (manifest and summary carry them)

    def first_elements(self) -> int:
        """How many elements the first stage starts from (class folders, or label chunks and folders)."""
        if self.source is None:
            return max(1, len(self.folders))
        return max(1, len(self.source.chunks), len(self.source.folders) + 1)


def discover(options: ConvertOptions) -> Dataset:
    """Classes and label source: folders (ids pinned by --class-map if given) or a label file."""
    for flag, uri in (("--labels", options.labels), ("--class-map", options.class_map)):
        problem = storage.regular_file_problem(uri) if uri else ""
        if problem:
            # the launcher scans a label file whole, then the workers read it again in chunks
            # (seeking): a pipe cannot be read twice, and a device never ends
            raise UsageError("%s %s is %s: save it to a file first (for example: ... > labels.csv) and give "
                             "that file" % (flag, uri, problem))
    if options.labels:
        source = prepare_label_source(options)
        classes = list(source.classes)
        # the top-level folders are listed one per element: a name that is not UTF-8 cannot be one
        problems = [(name, class_folder_problem(options.input, name)) for name in source.folders]
        source = dataclasses.replace(source, folders=tuple(name for name, problem in problems if problem is None))
        root_errors = [problem for _, problem in problems if problem is not None]
        warnings = tuple(source.warnings) + tuple(lookalike_warnings(classes, options))
        return Dataset(classes, root_errors, source, [], warnings)
    dirs, root_errors = discover_classes(options)
    if options.class_map:
        classes = resolve_names({d: "as folder %s" % d for d in dirs}, load_class_map(options.class_map),
                                options.allow_new_classes)
    else:
        classes = dirs
    return Dataset(classes, root_errors, None, [classes.index(d) for d in dirs],
                   tuple(lookalike_warnings(classes, options)))


def resolve_label_width(options: ConvertOptions, dataset: Dataset) -> ConvertOptions:
    """The options with the vector width of multi-label records fixed (multi-hot: one per class)."""
    if not options.label_format:
        return options
    if options.label_format == "multi-hot":
        if options.label_width and options.label_width != len(dataset.classes):
            raise UsageError(
                "--label-width %d: multi-hot vectors have one value per class (%d classes); drop --label-width"
                % (options.label_width, len(dataset.classes))
            )
        width = len(dataset.classes)
    else:
        width = options.label_width or max(1, dataset.source.max_labels if dataset.source else 1)
    if width > MAX_LABEL_WIDTH:
        raise UsageError(
            "multi-hot vectors of %d classes are more than %d labels per record: use --label-format class-ids"
            % (width, MAX_LABEL_WIDTH) if options.label_format == "multi-hot" else
            "an image with %d labels is more than %d labels per record (--label-width)" % (width, MAX_LABEL_WIDTH)
        )
    return dataclasses.replace(options, label_width=width)


def _for_workers(path: str) -> str:
    return path if storage.is_s3(path) else os.path.abspath(path)


def workers_options(options: ConvertOptions) -> ConvertOptions:
    return dataclasses.replace(options, input=_for_workers(options.input), output=_for_workers(options.output))


def build_front(p: beam.Pipeline, options: ConvertOptions, classes: list[str], source=None, folders=None):
    """The stages up to shard planning: list (folders or a label file), then optionally curate.

    Returns PCollection[list[ImageRef(relpath, size, label, split, key)]]: batches of refs
    with every split decided.
    """
    layout = layout_for(options)
    findings = None
    if source is None:
        listed = list(enumerate(classes)) if folders is None else [(i, classes[i]) for i in folders]
        # (class_index, class_name)
        class_elems = p | "Classes" >> beam.Create(listed)
        # [ImageRef(relpath, size, label, split, key)]
        batches = class_elems | "ListImages" >> ListImages(
            options.input, options.output, layout, options.exts, options.ratios, options.split_seed,
            WorkerEnv.from_options(options), options.max_file_bytes,
        )
        if not (options.check_duplicates or options.stratify):
            return batches
        # ImageRef
        refs = batches | "ListedRefs" >> beam.FlatMap(lambda batch: batch)
    else:
        # ImageRef; (kind, count, item) findings
        refs, findings = p | "LabelSources" >> LabelSources(source, options)
    if options.check_duplicates:
        # Unit(stratum, key, first path, refs) per set of identical files; findings
        units, identical = refs | "GroupIdentical" >> GroupIdentical(options, classes)
        findings = identical if findings is None else (findings, identical) | "MergeFindings" >> beam.Flatten()
    elif options.stratify:
        units = refs | "Units" >> beam.Map(single_unit)
    if options.stratify:
        refs = units | "Stratify" >> Stratify(options.ratios)
    elif options.check_duplicates:
        refs = units | "UnitRefs" >> beam.FlatMap(lambda u: u.refs)
    if findings is not None:
        findings | "WriteFindings" >> WriteFindings(options.output, WorkerEnv.from_options(options))
    return refs | "BatchRefs" >> BatchRefs()


def build_pipeline(
    p: beam.Pipeline, options: ConvertOptions, classes: list[str], source=None, folders=None, previous=None
):
    # Workers may run in another directory or container: they get absolute local paths.
    options = workers_options(options)
    layout = layout_for(options, previous)
    # [ImageRef]
    batches = build_front(p, options, classes, source, folders)
    if previous is not None:
        # [ImageRef] of images not yet in the dataset (--incremental)
        batches = (
            batches
            | "RefsToCheck" >> beam.FlatMap(lambda batch: batch)
            | "ExcludeExisting" >> ExcludeExisting(previous.lists(options.output), WorkerEnv.from_options(options))
            | "BatchNew" >> BatchRefs()
        )
    # ((split, shard, shards), first_id, [ImageRef])
    groups = batches | "PlanShards" >> PlanShards(
        options.ratios, options.shard_size_mb, options.images_per_shard, options.output,
        WorkerEnv.from_options(options), first_ids=previous.next_ids() if previous else None,
    )
    # {split, shard, shards, records, bytes, sha256}
    written = groups | "WriteShards" >> WriteShards(options, layout)
    join_branches(p)
    return written


class _Leaves(beam.pipeline.PipelineVisitor):
    """The PCollections that no step reads (main or side input)."""

    def __init__(self):
        self.produced, self.consumed = [], set()

    def visit_transform(self, node):
        self.consumed.update(id(pc) for pc in node.inputs)
        self.consumed.update(id(si.pvalue) for si in node.side_inputs)
        self.produced.extend(pc for pc in node.outputs.values() if isinstance(pc, beam.PCollection))

    def leaves(self):
        return [pc for pc in self.produced if id(pc) not in self.consumed]


def join_branches(p: beam.Pipeline) -> None:
    """Make the pipeline's last step depend on every branch.

    Beam's Dask runner computes only the last step applied and what it depends on, so a
    branch that only writes files (the report fragments) would never run there. Joining
    the ends costs nothing on other runners: one None per element, then nothing.
    """
    visitor = _Leaves()
    p.visit(visitor)
    ends = visitor.leaves()
    if len(ends) > 1:
        nones = [pc | "End%d" % i >> beam.Map(lambda _: None) for i, pc in enumerate(ends)]
        nones | "JoinEnds" >> beam.Flatten() | "Finish" >> beam.Filter(lambda _: False)


# How a StorageError raised in a Beam worker reaches the launcher: as itself, its
# message tagged with the step (in-process workers), or as a RuntimeError whose
# text holds the worker's traceback (worker processes).
_STORAGE_ERROR_LINE = re.compile(r"^(?:imgrec\.storage\.)?StorageError: (.+)$", re.MULTILINE)
_STEP_TAG = re.compile(r" \[while running '[^']*'\]$")


def storage_error_message(exc: BaseException) -> str | None:
    """The one-line message of the StorageError behind ``exc``, however a runner wrapped it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, storage.StorageError):
            return _STEP_TAG.sub("", str(exc))
        found = _STORAGE_ERROR_LINE.search(str(exc))
        if found:
            return _STEP_TAG.sub("", found.group(1).strip())
        exc = exc.__cause__ or exc.__context__
    return None


class _HideStorageErrorTracebacks(logging.Filter):
    """Beam logs a worker's exception with its traceback; a StorageError is reported as one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], storage.StorageError):
            return False
        return "StorageError: " not in record.getMessage()


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options, beam_args, ns = cli.parse(argv)
    except OptionsError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    level = logging.WARNING if ns.quiet else getattr(logging, ns.log_level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("botocore", "urllib3", "smart_open"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))
    # Beam's own log (and the worker logs it relays) is for debugging the runner: a failed
    # job ends with one line of ours instead. --log-level DEBUG shows all of it.
    logging.getLogger("apache_beam").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_HideStorageErrorTracebacks())
    started = STARTED
    options = journal_uploads(options)
    try:
        WorkerEnv.from_options(options).apply()
        incremental = options.incremental and storage.exists(storage.join(options.output, MANIFEST))
        if incremental and not options.dry_run:
            restore_committed(options.output)  # an increment that crashed before its commit may have rewritten them
        if incremental and not options.class_map:
            # the dataset's class map stays fixed: new classes only with --allow-new-classes
            options = dataclasses.replace(options, class_map=class_map_uri(options.output))
        dataset = discover(options)
        classes, root_errors = dataset.classes, dataset.root_errors
        options = resolve_label_width(options, dataset)
        previous = load_previous(options.output, dataset_identity(options)) if incremental else None
        if options.dry_run:
            from pipeline.dryrun import dry_run

            return dry_run(options, dataset, beam_args)
        storage.check_output_folder(options.output)
        prepare_output(options, previous)
        opts, runner = pipeline_options(beam_args, dataset.first_elements())
        LOG.info("%d classes under %s; writing to %s", len(classes), options.input, options.output)
        p = beam.Pipeline(runner=runner, options=opts)
        build_pipeline(
            p, options, classes, dataset.source, dataset.folders if dataset.source is None else None, previous
        )
        monitor = None if ns.quiet else ProgressMonitor(options.output).start()
        try:
            result = p.run()
            result.wait_until_finish()
        finally:
            if monitor:
                monitor.stop()
        manifest = finalize(
            options,
            classes,
            root_errors,
            {
                "output": options.output,
                "wall_seconds": round(time.time() - started, 3),
                "metrics": job_metrics(result),
            },
            listed_classes=dataset.folders if dataset.source is None else [],
            previous=previous,
            warnings=dataset.warnings,
        )
    except LabelFileError as exc:
        for line in exc.lines():
            print("error: %s" % line, file=sys.stderr)
        return 2
    except (UsageError, OutputError, ClassMapError, IncrementalError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    except IncompleteError as exc:
        print("error: the job did not complete, no manifest written: %s" % exc, file=sys.stderr)
        return 1
    except TooManyErrorsError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        if interrupted(exc):  # Ctrl-C inside a Beam step arrives wrapped in the step's error
            print(INTERRUPTED, file=sys.stderr)
            return 130
        message = storage_error_message(exc)
        if message is not None:
            print("error: %s" % message, file=sys.stderr)
            return 2
        LOG.debug("the job failed", exc_info=True)
        print(
            "error: the job failed, no manifest written: %s (rerun with --log-level DEBUG for the full traceback)"
            % last_line(exc),
            file=sys.stderr,
        )
        return 1
    if not ns.quiet:
        print(manifest["summary_text"], end="")
    elif not manifest.get("nothing_new"):
        for line in manifest.get("warnings", []):  # --quiet leaves the terminal only warnings and errors
            print("warning: %s" % line, file=sys.stderr)
    return 0


INTERRUPTED = "error: interrupted, no manifest written (rerun with --resume to keep the shards already finished)"


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C that a runner wrapped in its own error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt) or str(exc).startswith("KeyboardInterrupt"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def last_line(exc: BaseException) -> str:
    """The most telling line of an exception a runner may have wrapped in a long traceback text."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "Traceback", "^", "~")) and ":" in line:
            return line[:500]
    return (lines[-1] if lines else type(exc).__name__)[:500]


def job_metrics(result) -> dict | None:
    """The job's ``imgrec`` counters, or None on runners that do not implement metrics (Dask)."""
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace("imgrec"))["counters"]
    except (NotImplementedError, AttributeError, KeyError, TypeError, RuntimeError):
        return None
    totals: dict[str, int] = {}
    for c in counters:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(value or 0)
    return dict(sorted(totals.items()))


def main() -> None:
    code = run()
    # The job is over and everything is written. A normal interpreter exit would now
    # tear down Beam's modules and thread pools one object at a time (0.15 s here, a
    # tenth of a small run); flush what is buffered and leave at once instead.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
