"""The job as a Python function: ``convert(input, output, **options) -> manifest``.

    from pipeline import convert
    manifest = convert("photos/", "out/", resize=256, train_ratio=0.8, val_ratio=0.2)

Keyword names are the command's flags (``--train-ratio`` is ``train_ratio``);
Beam's flags go in ``beam_args`` (``["--runner=DaskRunner", ...]``). A bad
option, input or output raises ``UsageError``, a job that fails ``JobFailed``
(both ``imgrec.errors.ImgrecError``, with the message the command prints).
It logs through its module loggers only (``imgrec``, ``transforms``,
``pipeline``, and Beam's own): nothing is added to or removed from the root
logger, and nothing is printed unless ``progress=True``.

``run_job`` is what the command and ``convert`` share: a source transform
(the folder's class folders, or a label file) and ``WriteToRecordIO``, run
on the runner Beam's flags name.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from typing import Sequence

from imgrec.quiet import import_beam

import_beam()

import apache_beam as beam  # noqa: E402

from imgrec import storage  # noqa: E402
from imgrec.env import WorkerEnv  # noqa: E402
from imgrec.errors import ImgrecError, JobFailed, UsageError, find_error  # noqa: E402
from imgrec.layout import ERRORS, MANIFEST, SUMMARY  # noqa: E402
from imgrec.options import ConvertOptions  # noqa: E402
from imgrec.ownership import output_options  # noqa: E402
from pipeline import runners  # noqa: E402
from transforms.sources import ReadImageFolder, ReadLabelFile  # noqa: E402
from imgrec.workers import close_shared_pools  # noqa: E402
from imgrec.workrecords import read_failures  # noqa: E402
from transforms.write_recordio import WriteToRecordIO  # noqa: E402

LOG = logging.getLogger("pipeline.api")

INTERRUPTED = "interrupted, no manifest written (rerun with --resume to keep the shards already finished)"


class Interrupted(JobFailed):
    """Ctrl-C: the job stopped; exit 130."""

    exit_code = 130


def source_for(options: ConvertOptions):
    """The source transform of a job: its label file, or its folder of class folders (both look at it now)."""
    if options.labels:
        return ReadLabelFile(options)
    return ReadImageFolder.from_options(options)


def check_side_files(options: ConvertOptions) -> None:
    """A label file and a class map must be regular files: the label file is scanned whole, then read again
    in chunks (seeking), so a pipe cannot be read twice, and a device never ends."""
    for flag, uri in (("--labels", options.labels), ("--class-map", options.class_map)):
        problem = storage.regular_file_problem(uri) if uri else ""
        if problem:
            raise UsageError("%s %s is %s: save it to a file first (for example: ... > labels.csv) and give "
                             "that file" % (flag, uri, problem))


def resolve_label_width(options: ConvertOptions, source) -> ConvertOptions:
    """The options with the vector width of multi-label records fixed when the source already knows it."""
    if not options.label_format:
        return options
    from imgrec import spill

    width = spill.label_width(options, source.classes, getattr(source, "max_labels", 1))
    return dataclasses.replace(options, label_width=width)


def run_job(options: ConvertOptions, beam_args: Sequence[str] = (), progress: bool = False,
            started: float | None = None) -> dict:
    """Convert with these options on the runner ``beam_args`` names; returns the manifest (and ``summary_text``)."""
    started = time.time() if started is None else started
    WorkerEnv.from_options(options).apply()  # this process reads the input (and the label file) first
    check_side_files(options)
    options = output_options(options)  # before the source: an increment's class map is the dataset's
    source = source_for(options)
    options = resolve_label_width(options, source)
    if options.dry_run:
        from pipeline.dryrun import dry_run

        return dry_run(options, source, list(beam_args))
    before = _manifest_text(options.output) if options.incremental else None
    opts, runner = runners.pipeline_options(list(beam_args), max(1, len(source.classes)))
    runners.check_reachable(opts)
    p = beam.Pipeline(runner=runner, options=opts)
    _ = (
        p
        | "Source" >> source
        | "WriteToRecordIO" >> WriteToRecordIO(options=options, classes=source.classes, warnings=source.warnings,
                                                started=started)
    )
    LOG.info("%d classes under %s; writing to %s", len(source.classes), options.input, options.output)
    monitor = None
    if progress:
        from imgrec.progress import ProgressMonitor

        monitor = ProgressMonitor(options.output).start()
    manifest = None
    try:
        result = p.run()
        url = runners.job_url(result)
        if url:
            LOG.warning("the job runs on the cluster; follow it at %s", url)
        result.wait_until_finish()
        manifest = read_result(options, before)
    except KeyboardInterrupt:
        raise Interrupted(INTERRUPTED) from None
    except ImgrecError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes an ImgrecError with one line
        raise failure_of(exc, options.output) from exc
    finally:
        if monitor is not None:
            monitor.stop(final_counts(manifest))
        close_shared_pools(wait=manifest is not None)
    return manifest


def final_counts(manifest: dict | None) -> tuple[int, int, int, int] | None:
    """(images, bytes, skipped, total) of a finished job, for the progress line's last word."""
    if not manifest or manifest.get("nothing_new"):
        return None
    metrics = manifest.get("metrics") or {}
    written, skipped = metrics.get("images_written", 0), metrics.get("images_skipped", 0)
    return written, metrics.get("bytes_written", 0), skipped, written + skipped


def _manifest_text(output: str) -> str | None:
    try:
        return storage.read_text(storage.join(output, MANIFEST))
    except (FileNotFoundError, storage.StorageError, UnicodeDecodeError):
        return None


def read_result(options: ConvertOptions, before: str | None) -> dict:
    """The manifest the job wrote, with ``summary_text``; an increment with nothing new says so."""
    text = _manifest_text(options.output)
    if text is None:
        raise JobFailed("the job ended but %s is missing: no dataset was written" % storage.join(options.output, MANIFEST))
    manifest = json.loads(text)
    if before is not None and text == before:
        from imgrec.finalize import nothing_new_text

        errors = storage.read_text(storage.join(options.output, ERRORS)).count("\n")
        manifest["summary_text"] = nothing_new_text(options, manifest, errors)
        manifest["nothing_new"] = True
    else:
        manifest["summary_text"] = storage.read_text(storage.join(options.output, SUMMARY))
    return manifest


# How a StorageError raised in a Beam worker process reaches the launcher: as a
# RuntimeError whose text holds the worker's traceback.
_STORAGE_ERROR_LINE = re.compile(r"^(?:imgrec\.storage\.)?(?:base\.)?StorageError: (.+)$", re.MULTILINE)
_STEP_TAG = re.compile(r" \[while running '[^']*'\]$")


def failure_of(exc: BaseException, output: str) -> ImgrecError:
    """The ImgrecError a failed run stands for, however the runner wrapped it."""
    found = find_error(exc)
    if found is not None:
        return found
    if interrupted(exc):
        return Interrupted(INTERRUPTED)
    failures = read_failures(output)
    if failures:
        first = failures[0]
        error = UsageError(first.message) if first.exit_code == 2 else JobFailed(first.message)
        return error
    text = _STORAGE_ERROR_LINE.search(str(exc))
    if text:
        return UsageError(_STEP_TAG.sub("", text.group(1).strip()))
    LOG.debug("the job failed", exc_info=exc)
    return JobFailed("the job failed, no manifest written: %s (rerun with --log-level DEBUG for the full traceback)"
                     % last_line(exc))


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
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "Traceback", "^", "~")) and ":" in line:
            return line[:500]
    return (lines[-1] if lines else type(exc).__name__)[:500]


def convert(input: str, output: str, *, beam_args: Sequence[str] = (), progress: bool = False, **options) -> dict:
    """Convert ``input`` (a folder of class folders, local or s3://) into a dataset at ``output``; returns its manifest.

    ``options`` are the command's flags by their Python names (``resize=256``,
    ``labels="labels.csv"``, ``train_ratio=0.8``...). Raises ``UsageError`` or
    ``JobFailed`` (``imgrec.errors``) with the line the command would print.
    """
    from imgrec.options import from_kwargs

    manifest = run_job(from_kwargs(input=input, output=output, **options), beam_args, progress=progress)
    return {k: v for k, v in manifest.items() if k != "summary_text"}
