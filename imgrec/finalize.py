"""The last step of a job: every shard written -> lists, merged indexes, class map, report, manifest last.

``finalize`` reads only what the earlier steps left on storage -- the plan
(``_work/plan.json``), each shard's completion record (``_work/shards/``) and
the report fragments (``_work/report/``) -- and writes, in this order, the
``.lst`` files and merged indexes, ``classes.json`` and ``labels.txt``,
``report.jsonl``, ``errors.jsonl``, the ``--single-file`` files,
``sagemaker.json``, ``summary.txt`` and, last, ``manifest.json``. Anything
missing means the job did not finish: it raises and no manifest is written.

An ``--incremental`` run adds to a dataset whose manifest stays in place, so
its commit is the replacement of that manifest (one atomic rename or PUT):

1. the new shards (``data-incNNNN-*``), then the new state's lists and merged
   indexes under names of their own (``lists/train-incNNNN.lst``,
   ``idx/train-merged-incNNNN.idx``), which the old manifest does not name;
2. ``classes.json``, ``labels.txt``, ``errors.jsonl``, ``sagemaker.json``,
   ``summary.txt`` and the ``--single-file`` files, at their fixed names;
3. ``manifest.json``: the commit;
4. the old state's lists and merged indexes are removed, then ``_work``.

A crash before 3 leaves the old manifest, the files it names untouched, and
files of an uncommitted increment; a crash after 3 leaves the new dataset and
old files that nothing names. The next run puts the fixed-name files of 2 back
as the manifest describes them (``ownership.restore_committed``) and removes
every file this tool wrote that the manifest does not name
(``ownership.prepare_output``), so each image is then in the dataset exactly
once: its increment committed or not.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

from imgrec import crashpoints, findings, shardplan, storage
from imgrec.dataset_warnings import WarningList, empty_classes
from imgrec.errors import STAGE_LIST, ErrorRecord, ImgrecError, JobFailed, to_jsonl
from imgrec.incremental import Previous
from imgrec.labels import decode_label
from imgrec.layout import CLASSES_JSON, ERRORS, LABELS_TXT, MANIFEST, REPORT, SAGEMAKER, SUMMARY, Layout
from imgrec.options import ConvertOptions, error_limit
from imgrec.ownership import (PLAN, OutputError, class_files, clear_work, dataset_files, dataset_identity, layout_for,
                              ownership, remove_stale, sagemaker_text)
from imgrec.planning import SPLITS
from imgrec.sagemaker import CHANNELS, sagemaker_document
from imgrec.shardplan import Plan
from imgrec.workrecords import ShardRecord, WorkRecordError

__all__ = ["ImgrecError", "IncompleteError", "TooManyErrorsError", "OutputError", "finalize"]

LOG = logging.getLogger("imgrec.finalize")

MANIFEST_VERSION = 1
# --single-file: local shards are streamed into the single file in blocks of this size.
COPY_BUFFER = 8 << 20


class IncompleteError(JobFailed):
    """The job ended without every planned shard: no manifest is written."""

    prefix = "the job did not complete, no manifest written: "


class TooManyErrorsError(JobFailed):
    """More inputs were skipped than --max-errors allows: no manifest is written."""


@dataclass
class Gathered:
    """What the earlier steps left: the plan, the classes, every shard's record, the report."""

    plan: Plan
    classes: list[str]
    label_width: int
    shards: dict[str, list[ShardRecord]]  # by split, in shard order (without .lst lines and offsets)
    report_counts: dict[str, int]
    report: findings.ReportItems  # report.jsonl's items (sorted as they are read; close() when done)
    errors: list[ErrorRecord] = field(default_factory=list)  # every skipped input
    listed: int = 0  # images taken in by this run
    ignored: int = 0  # files without an image extension
    warnings: list[str] = field(default_factory=list)  # found when the classes were settled


def load_plan(output: str) -> tuple[Plan, list[str], int, list[str]]:
    """The plan a job's planning step wrote: the shard tasks, the class names in id order, the label width."""
    try:
        return shardplan.load_plan(output)
    except FileNotFoundError:
        raise IncompleteError("%s is missing: shard planning did not finish" % storage.join(output, PLAN)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IncompleteError("%s cannot be read (%s)" % (storage.join(output, PLAN), exc)) from None


def gather(options: ConvertOptions, layout: Layout, previous: Previous | None = None) -> Gathered:
    """Read the plan, each planned shard's completion record and the report; raises IncompleteError on a gap.

    Memory stays small whatever the number of images: a shard's records (its .lst lines and
    offsets) are read again when its split is assembled, and report items beyond a few thousand
    wait in sorted runs on local disk (``findings.ReportItems``).
    """
    report = findings.ReportItems()
    try:
        return _gather(options, layout, previous, report)
    except BaseException:
        report.close()
        raise


def _gather(options: ConvertOptions, layout: Layout, previous: Previous | None,
            report: findings.ReportItems) -> Gathered:
    out = options.output
    counts: dict[str, int] = {}
    error_items: list[dict] = []  # skipped inputs, for errors.jsonl

    def take(item: dict) -> None:
        kind = item["kind"]
        if kind in (findings.ERROR, findings.SKIPPED):
            error_items.append(item)
        if kind != findings.SKIPPED:
            report.add(item)

    try:
        for fragment in findings.iter_fragments(out):
            for kind, n in fragment.counts.items():
                counts[kind] = counts.get(kind, 0) + n
            for item in fragment.items:
                take(item)
    except FileNotFoundError:
        raise IncompleteError("the report fragments under %s/%s are missing: the job did not finish"
                              % (out, findings.REPORT_DIR)) from None
    if (previous is not None or not counts.get(findings.IMAGES)) and not storage.exists(storage.join(out, PLAN)):
        # no image to plan (none found, or none new): a planner may have planned nothing at all
        plan, classes, width, plan_warnings = Plan({}, {}), [], 0, []
    else:
        plan, classes, width, plan_warnings = load_plan(out)
    shards: dict[str, list[ShardRecord]] = {}
    for task in plan.all_tasks():
        uri = storage.join(out, layout.shard_record(task.split, task.shard, task.shards))
        record = _read_shard_record(uri, "shard %d of %s" % (task.shard, task.split))
        if record.planned != task.records:
            raise IncompleteError("shard %d of %s holds %d planned images, the plan says %d"
                                  % (task.shard, task.split, record.planned, task.records))
        for item in _found_while_writing(out, record):  # identical files
            take(item)
            counts[item["kind"]] = counts.get(item["kind"], 0) + 1
        # without its offsets (read again by assemble_splits, with its .lst lines from their file)
        shards.setdefault(task.split, []).append(replace(record, offsets=()))
    error_items.sort(key=findings.sort_key)
    got = Gathered(plan, classes, width, shards, dict(sorted(counts.items())), report, warnings=plan_warnings)
    got.errors = [findings.to_error(i) for i in error_items]
    got.report_counts = {k: n for k, n in got.report_counts.items() if k not in (findings.SKIPPED, findings.IMAGES)}
    got.listed = counts.get(findings.IMAGES, 0)
    got.ignored = counts.get(findings.IGNORED, 0)
    return got


def _read_shard_record(uri: str, what: str) -> ShardRecord:
    try:
        return ShardRecord.loads(storage.read_text(uri))
    except FileNotFoundError:
        raise IncompleteError("%s is missing: %s did not finish" % (uri, what)) from None
    except (ValueError, KeyError, TypeError, WorkRecordError) as exc:
        raise IncompleteError("%s cannot be read (%s): %s did not finish" % (uri, exc, what)) from None


def _found_while_writing(out: str, record: ShardRecord) -> Iterator[dict]:
    """The report items a shard's writer found (its ``found_file``), one at a time."""
    if not record.found:
        return
    uri = storage.join(out, record.found_file)
    seen = 0
    try:
        with storage.open_read(uri) as f:
            for line in f:
                seen += 1
                yield json.loads(line)
    except FileNotFoundError:
        raise IncompleteError("%s is missing: shard %d of %s did not finish" % (uri, record.shard, record.split)) from None
    except ValueError as exc:
        raise IncompleteError("%s cannot be read (%s): shard %d of %s did not finish"
                              % (uri, exc, record.shard, record.split)) from None
    if seen != record.found:
        raise IncompleteError("%s holds %d items, its shard's record says %d: shard %d of %s did not finish"
                              % (uri, seen, record.found, record.shard, record.split))


def _full_record(out: str, layout: Layout, rec: ShardRecord) -> ShardRecord:
    """``rec`` with its offsets (``gather`` keeps records without them)."""
    if len(rec.offsets) == rec.records:
        return rec
    uri = storage.join(out, layout.shard_record(rec.split, rec.shard, rec.shards))
    return _read_shard_record(uri, "shard %d of %s" % (rec.shard, rec.split))


def shard_lst_lines(out: str, record: ShardRecord) -> Iterator[bytes]:
    """The .lst line of each of a shard's records, in order, as bytes (each ending in a newline), from the
    file beside its record; IncompleteError when that file is missing or does not hold them all."""
    what = "shard %d of %s" % (record.shard, record.split)
    if not record.records:
        return
    uri = storage.join(out, record.lst_file)
    lines = size = 0
    try:
        with storage.open_read(uri) as f:
            for line in f:
                size += len(line)
                if lines == record.records or not line.endswith(b"\n"):
                    break  # more lines than records, or a line cut short
                lines += 1
                yield line
    except FileNotFoundError:
        raise IncompleteError("%s is missing: %s did not finish" % (uri, what)) from None
    if lines != record.records or size != record.lst_bytes:
        raise IncompleteError("%s does not hold the %d lines (%d bytes) its shard's record names: %s did not finish"
                              % (uri, record.records, record.lst_bytes, what))


def check_found_images(options: ConvertOptions, got: Gathered) -> None:
    if got.listed:
        return
    if options.labels:
        raise OutputError(
            "none of the images listed in %s was found under %s (%d missing or unusable, see the report): "
            "nothing to convert" % (options.labels, options.input, len(got.errors))
        )
    raise OutputError(
        "no images found under %s (extensions %s; %d other files ignored, %d unusable): nothing to convert"
        % (options.input or "the input", ",".join(options.exts), got.ignored, len(got.errors))
    )


# ---------------------------------------------------------------- the splits


@dataclass
class Assembled:
    """The splits as the manifest describes them, with their class counts and image sizes."""

    splits: dict[str, Any]
    class_counts: dict[str, dict[str, int]]
    edges_by_split: dict[str, dict[int, int]]
    unsplit_edges: dict[int, int]


def assemble_splits(options: ConvertOptions, layout: Layout, got: Gathered, previous: Previous | None) -> Assembled:
    """Write every split's ``.lst`` and merged index (after the dataset added to), count classes and sizes."""
    old_splits = previous.manifest["splits"] if previous else {}
    class_counts = {split: dict(c) for split, c in (previous.manifest.get("class_counts", {}) if previous else {}).items()}
    edges_by_split, unsplit = previous_edges(previous.manifest if previous else {})
    splits: dict[str, Any] = {}
    for split in SPLITS:
        if split not in got.shards and split not in old_splits:
            continue
        splits[split] = _assemble_split(
            options, layout, got, split, old_splits.get(split), class_counts.setdefault(split, {}),
            edges_by_split.setdefault(split, {}), drop_empty=previous is not None,
        )
    return Assembled(splits, class_counts, edges_by_split, unsplit)


def _assemble_split(options, layout, got: Gathered, split, old_doc, counts, edges, drop_empty) -> dict:
    """Write a split's ``.lst`` and merged index, streaming, and return its manifest entry.

    ``old_doc`` is the split in the dataset being added to (``--incremental``): its list
    and merged index are copied first into the new state's files (the layout names
    them after the increment, so the old ones stay as they are until the manifest is
    replaced) and the new shards follow its shards. There, a new shard that ends up
    empty (all its images skipped) is dropped.
    """
    out, classes = options.output, got.classes
    lst_rel, merged_rel = layout.lst(split), layout.merged_idx(split)
    shard_docs = list(old_doc["shards"]) if old_doc else []
    base = old_doc["bytes"] if old_doc else 0
    records = old_doc["records"] if old_doc else 0
    next_id = old_doc.get("next_id", old_doc["records"]) if old_doc else 0
    with storage.atomic_writer(storage.join(out, lst_rel)) as lst_f, \
            storage.atomic_writer(storage.join(out, merged_rel)) as merged_f:
        if old_doc:
            for rel, f in ((old_doc["lst"], lst_f), (old_doc["merged_idx"], merged_f)):
                with storage.open_read(storage.join(out, rel)) as src:
                    shutil.copyfileobj(src, f, COPY_BUFFER)
            crashpoints.reached("writing-lists")
        for rec in got.shards.get(split, []):
            got.errors.extend(rec.errors)
            # every planned id is given out once, a skipped image's too: the next increment starts after them
            next_id = max(next_id, rec.first_id + rec.planned)
            if drop_empty and rec.records == 0:
                storage.delete(storage.join(out, rec.rec))
                storage.delete(storage.join(out, rec.idx))
                continue
            full = _full_record(out, layout, rec)
            for line, offset in zip(shard_lst_lines(out, rec), full.offsets):
                fields = line[:-1].split(b"\t")
                lst_f.write(line)
                merged_f.write(b"%s\t%d\n" % (fields[0], base + offset))
                for class_id in decode_label([float(v) for v in fields[1:-1]], options.label_format, options.label_pad):
                    counts[classes[class_id]] = counts.get(classes[class_id], 0) + 1
            for edge, n in rec.shorter_edges.items():
                edges[int(edge)] = edges.get(int(edge), 0) + n
            base += rec.bytes
            records += rec.records
            shard_docs.append({"rec": rec.rec, "idx": rec.idx, "records": rec.records, "bytes": rec.bytes,
                               "sha256": rec.sha256})
    return {"records": records, "bytes": base, "next_id": next_id, "lst": lst_rel, "merged_idx": merged_rel,
            "shards": shard_docs}


def previous_edges(manifest: dict) -> tuple[dict[str, dict[int, int]], dict[int, int]]:
    """The shorter-edge histograms of a dataset being added to: per split, and any not known per split.

    A manifest written before ``shorter_edges_by_split`` existed has only the total: the
    images its splits do not account for are kept apart and counted as part of every
    channel, which only errs on the safe side.
    """
    by_split = {split: {int(k): v for k, v in e.items()} for split, e in manifest.get("shorter_edges_by_split", {}).items()}
    unsplit = {int(k): v for k, v in manifest.get("shorter_edges", {}).items()}
    for histogram in by_split.values():
        for edge, n in histogram.items():
            unsplit[edge] = unsplit.get(edge, 0) - n
    return by_split, {edge: n for edge, n in unsplit.items() if n > 0}


def merge_edges(histograms: Sequence[dict[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for histogram in histograms:
        for edge, n in histogram.items():
            merged[edge] = merged.get(edge, 0) + n
    return merged


# ---------------------------------------------------------------- the files beside the splits


def write_report(uri: str, lines: Iterator[str], block: int = 4096) -> None:
    """``report.jsonl`` from its lines, streamed (a collection with many identical files has many)."""
    with storage.atomic_writer(uri) as f:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= block:
                f.write(("\n".join(chunk) + "\n").encode("utf-8"))
                chunk = []
        if chunk:
            f.write(("\n".join(chunk) + "\n").encode("utf-8"))


def write_side_files(options: ConvertOptions, got: Gathered, expected_report: bool) -> None:
    """``classes.json``, ``labels.txt``, ``report.jsonl`` and ``errors.jsonl``; then the --max-errors check."""
    out = options.output
    for rel, text in class_files(got.classes).items():
        storage.write_text(storage.join(out, rel), text)
    if expected_report:
        write_report(storage.join(out, REPORT), got.report.lines())
    got.errors.sort(key=lambda e: (e.path, e.stage, e.reason))
    storage.write_text(storage.join(out, ERRORS), to_jsonl(got.errors))
    inputs = got.listed + sum(1 for e in got.errors if e.stage == STAGE_LIST)
    limit = error_limit(options.max_errors, inputs)
    if limit is not None and len(got.errors) > limit:
        raise TooManyErrorsError(
            "%d of %d inputs were skipped, more than --max-errors allows (%d); no manifest written, "
            "see %s for each one and why" % (len(got.errors), inputs, limit, storage.join(out, ERRORS))
        )


def write_single_file(out: str, layout: Layout, split: str, shard_docs: list[dict], merged_idx: str) -> dict:
    """``--single-file``: the split's shards concatenated into one .rec, and the merged index as its .idx.

    On S3 the shards are copied server-side; locally they are streamed into the new file.
    """
    rec_rel, idx_rel = layout.single_rec(split), layout.single_idx(split)
    sources = [(storage.join(out, s["rec"]), s["bytes"]) for s in shard_docs]
    storage.concatenate(storage.join(out, rec_rel), sources)
    storage.write_text(storage.join(out, idx_rel), merged_idx)
    return {"rec": rec_rel, "idx": idx_rel, "records": sum(s["records"] for s in shard_docs),
            "bytes": sum(s["bytes"] for s in shard_docs)}


def write_sagemaker(options: ConvertOptions, got: Gathered, done: Assembled) -> dict:
    """``sagemaker.json``, from the images a training job reads: the train and validation channels."""
    channel_edges = merge_edges([done.edges_by_split.get(s, {}) for s in CHANNELS] + [done.unsplit_edges])
    doc = sagemaker_document(options.output, len(got.classes), done.splits, options.label_format, got.label_width,
                             channel_edges, options.encode.color)
    storage.write_text(storage.join(options.output, SAGEMAKER), sagemaker_text(doc))
    return doc


def job_metrics(got: Gathered, shards_written: int | None) -> dict[str, int]:
    """The job's counters, from what it wrote (the same on every runner, metrics or not)."""
    records = [r for recs in got.shards.values() for r in recs]
    return {
        "bytes_written": sum(r.bytes for r in records),
        "images_listed": got.listed,
        "images_skipped": sum(len(r.errors) for r in records),
        "images_written": sum(r.records for r in records),
        "shards_written": len(records) if shards_written is None else shards_written,
    }


def manifest_document(options, previous, got: Gathered, done: Assembled, sagemaker_doc, warnings, extra) -> dict:
    reasons: dict[str, int] = {}
    for e in got.errors:
        reasons[e.reason] = reasons.get(e.reason, 0) + 1
    edges = merge_edges(list(done.edges_by_split.values()) + [done.unsplit_edges])
    expected = findings.expected(options)
    return {
        "version": MANIFEST_VERSION,
        "input": options.input,
        "classes": got.classes,
        "num_classes": len(got.classes),
        "splits": done.splits,
        "class_counts": done.class_counts,
        "images_listed": got.listed,
        "ignored_non_image_files": got.ignored,
        "errors": len(got.errors),
        "errors_by_reason": dict(sorted(reasons.items())),
        "errors_file": ERRORS,
        "classes_file": CLASSES_JSON,
        "labels_file": LABELS_TXT,
        "labels": {
            "source": options.labels or "folders",
            "format": options.label_format or "single",
            "width": got.label_width if options.label_format else 1,
            **({"pad": options.label_pad} if options.label_format == "class-ids" else {}),
        },
        **({"report_file": REPORT, "report_counts": got.report_counts} if expected else {}),
        "sagemaker_file": SAGEMAKER,
        "sagemaker": sagemaker_doc,
        "shorter_edges": {str(k): v for k, v in sorted(edges.items())},
        "shorter_edges_by_split": {
            split: {str(k): v for k, v in sorted(e.items())} for split, e in done.edges_by_split.items()
            if split in done.splits
        },
        "warnings": warnings,
        "increments": previous.batch if previous else 0,
        "identity": dataset_identity(options),
        "options": options.to_json(),
        **extra,
    }


def commit(options: ConvertOptions, previous: Previous | None, manifest: dict) -> str:
    """Remove what no longer belongs, write ``summary.txt``, then ``manifest.json`` (the commit); returns the summary."""
    from imgrec.summary import render_summary

    out = options.output
    if previous is None:
        # nothing names the replaced dataset's files any more: gone before the manifest says "complete"
        remove_stale(out, ownership(out, options.name), dataset_files(manifest))
    if not findings.expected(options):
        storage.delete(storage.join(out, REPORT))  # from an earlier run with --labels or --check-duplicates
    summary = render_summary(manifest)
    storage.write_text(storage.join(out, SUMMARY), summary)
    crashpoints.reached("before-manifest")
    # The commit: from here on the dataset is the new one (see the module docstring).
    storage.write_text(storage.join(out, MANIFEST), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    crashpoints.reached("manifest-written")
    if previous is not None:
        # the old manifest named the old state's lists and merged indexes until this moment
        remove_stale(out, ownership(out, options.name), dataset_files(manifest))
    crashpoints.reached("stale-removed")
    clear_work(out)
    return summary


def finalize(
    options: ConvertOptions,
    previous: Previous | None = None,
    warnings: Sequence[str] = (),
    started: float | None = None,
    shards_written: int | None = None,
) -> dict:
    """Assemble the dataset from what the job's steps left under ``options.output``; returns the manifest.

    With ``previous`` (``--incremental``) the new shards are added to that dataset; when
    there is nothing new to add, nothing in the output is touched. ``warnings``: one-line
    warnings found before the job; the manifest and the summary carry them and the ones
    found here (classes without images).
    """
    layout = layout_for(options, previous)
    got = gather(options, layout, previous)
    try:
        return _finalize(options, previous, warnings, started, shards_written, layout, got)
    finally:
        got.report.close()


def _finalize(options: ConvertOptions, previous: Previous | None, warnings: Sequence[str], started: float | None,
              shards_written: int | None, layout: Layout, got: Gathered) -> dict:
    check_found_images(options, got)
    if previous is not None and not any(r.records for recs in got.shards.values() for r in recs):
        return nothing_new(options, previous, got)
    done = assemble_splits(options, layout, got, previous)
    found = WarningList(list(warnings) + got.warnings)
    found.add(empty_classes(got.classes, done.class_counts))
    crashpoints.reached("lists-written")
    write_side_files(options, got, findings.expected(options))
    if options.single_file:  # after the --max-errors check: no copying for a refused dataset
        for split, doc in done.splits.items():
            doc["single_file"] = write_single_file(  # named after --name, whatever increment this is
                options.output, layout_for(options), split, doc["shards"],
                storage.read_text(storage.join(options.output, doc["merged_idx"])))
    sagemaker_doc = write_sagemaker(options, got, done)
    extra = {"output": options.output, "metrics": job_metrics(got, shards_written)}
    if started is not None:
        extra["wall_seconds"] = round(time.time() - started, 3)
    manifest = manifest_document(options, previous, got, done, sagemaker_doc, found.to_json(), extra)
    manifest["summary_text"] = commit(options, previous, manifest)
    return manifest


def nothing_new(options: ConvertOptions, previous: Previous, got: Gathered) -> dict:
    """An --incremental run that found no new image to add: leave the dataset exactly as it was."""
    out = options.output
    for recs in got.shards.values():
        for rec in recs:  # shards of new images that were all skipped
            got.errors.extend(rec.errors)
            storage.delete(storage.join(out, rec.rec))
            storage.delete(storage.join(out, rec.idx))
    if options.resume:  # files of an increment killed before its commit were kept for reuse: none was new
        remove_stale(out, ownership(out, options.name), dataset_files(previous.manifest))
    got.errors.sort(key=lambda e: (e.path, e.stage, e.reason))
    text = to_jsonl(got.errors)
    errors_uri = storage.join(out, ERRORS)
    if not storage.exists(errors_uri) or storage.read_text(errors_uri) != text:
        storage.write_text(errors_uri, text)
    clear_work(out)
    manifest = dict(previous.manifest)
    manifest["summary_text"] = nothing_new_text(options, manifest, len(got.errors))
    manifest["nothing_new"] = True
    return manifest


def nothing_new_text(options: ConvertOptions, manifest: dict, errors: int) -> str:
    return (
        "Nothing new in %s: every image found is already in %s (%d images); nothing was changed.\n"
        "%d inputs skipped (details in %s).\n" % (options.input, options.output,
                                                  sum(d["records"] for d in manifest["splits"].values()), errors, ERRORS)
    )
