"""Before and after the Beam job, on the launcher: guard the output, then assemble it.

``prepare_output`` refuses to mix datasets and removes the old manifest first,
so an output folder never looks complete while it is being rewritten.
``finalize`` reads the plan and the per-shard completion records written by
the workers and writes, in this order, the ``.lst`` files, the merged
indexes, the class map, ``errors.jsonl``, ``summary.txt`` and, last,
``manifest.json``. Anything missing means the job did not finish: it raises
and no manifest is written.

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
as the manifest describes them (``restore_committed``) and removes every file
this tool wrote that the manifest does not name (``prepare_output``), so each
image is then in the dataset exactly once: its increment committed or not.

Only files this tool wrote are ever removed (``Ownership``): those named as it
names its outputs, those listed by the manifest of a dataset it replaces, and
``_work``'s own sub-folders. Files that were in a folder before it first wrote
there, and anything else a user puts beside its files, stay.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any, Sequence

from imgrec import crashpoints, findings, progress, storage
from imgrec.dataset_warnings import WarningList, empty_classes
from imgrec.errors import ErrorRecord, from_json, to_jsonl
from imgrec.layout import CLASSES_JSON, ERRORS, LABELS_TXT, MANIFEST, REPORT, SAGEMAKER, SINGLE, SUMMARY, WORK, Layout
from imgrec.errors import STAGE_LIST
from imgrec.options import ConvertOptions, error_limit, identity_changes
from imgrec.labels import decode_label
from imgrec.incremental import Previous, batch_name
from imgrec.planning import SPLITS
from imgrec.sagemaker import CHANNELS, sagemaker_document

LOG = logging.getLogger("imgrec.finalize")

MANIFEST_VERSION = 1
# Marks a folder as this tool's output, so a re-run after a crash (no manifest yet)
# is told apart from a folder of someone else's files.
OWNER_MARK = ".imgrec-output"
PLAN = WORK + "/plan.json"
# The data files of a dataset being replaced (its manifest is removed first), kept until the new one is complete.
REPLACED = WORK + "/replaced.json"
# Where every multipart upload to an s3:// output is recorded while it is open (imgrec.s3.upload_journal).
UPLOADS = WORK + "/uploads"
# Everything this tool writes under _work; anything else there is someone else's.
WORK_ENTRIES = (PLAN, REPLACED, UPLOADS, WORK + "/shards", WORK + "/listing", progress.PROGRESS_DIR, findings.REPORT_DIR)
# The files at the top of an output that this tool writes.
ROOT_FILES = (MANIFEST, SUMMARY, ERRORS, CLASSES_JSON, LABELS_TXT, REPORT, SAGEMAKER, OWNER_MARK)
# --single-file: local shards are streamed into the single file in blocks of this size.
COPY_BUFFER = 8 << 20


class OutputError(RuntimeError):
    """The output folder cannot be used as asked (message says why and what to do)."""


class IncompleteError(RuntimeError):
    """The job ended without every planned shard: no manifest is written."""


class TooManyErrorsError(RuntimeError):
    """More inputs were skipped than --max-errors allows: no manifest is written."""


def layout_for(options: ConvertOptions, previous: Previous | None = None) -> Layout:
    """File names of this run's shards: an increment's carry its number, so they never collide."""
    if previous is None:
        return Layout(options.name, options.idx_beside_rec)
    return Layout(batch_name(options.name, previous.batch), options.idx_beside_rec, previous.batch)


def dataset_identity(options: ConvertOptions) -> dict[str, Any]:
    return options.identity()  # compared with imgrec.options.identity_changes


def journal_uploads(options: ConvertOptions) -> ConvertOptions:
    """The options with every multipart upload to an s3:// output recorded under its ``_work/uploads/``."""
    if not options.output or not storage.is_s3(options.output):  # --dry-run needs no --output
        return options
    s3 = dataclasses.replace(options.s3, upload_journal=storage.join(options.output, UPLOADS))
    return dataclasses.replace(options, s3=s3)


# ---------------------------------------------------------------- which files are ours

_SPLIT = "(?:%s)" % "|".join(SPLITS)
_STATE = r"(?:-inc\d{4,})?"
_TEMP = re.compile(r"^(.*/)?\.([^/]+)%s[0-9a-f]{12}$" % re.escape(storage.TMP_MARK))
_DATA_FOLDERS = frozenset(SPLITS) | {"idx", "lists", SINGLE}


@functools.lru_cache(maxsize=8)
def _data_name_pattern(name: str) -> re.Pattern:
    """The relative paths of the data files this tool writes with ``--name name``, in any increment."""
    shard = r"%s%s-\d{5,}-of-\d{5,}" % (re.escape(name), _STATE)
    single = re.escape(name)
    return re.compile(
        "^(?:" + "|".join((
            r"%s/%s\.(?:rec|idx)" % (_SPLIT, shard),  # shards, and their .idx with --idx-beside-rec
            r"idx/%s/%s\.idx" % (_SPLIT, shard),
            r"idx/%s-merged%s\.idx" % (_SPLIT, _STATE),
            r"lists/%s%s\.lst" % (_SPLIT, _STATE),
            r"%s/%s/%s\.(?:rec|idx)" % (SINGLE, _SPLIT, single),
            r"%s/idx/%s/%s\.idx" % (SINGLE, _SPLIT, single),
        )) + ")$"
    )


def untemp(rel: str) -> str:
    """The final name of a file that ``storage.atomic_writer`` is (or was, before a crash) writing; else ``rel``."""
    found = _TEMP.match(rel)
    return (found.group(1) or "") + found.group(2) if found else rel


def in_work(rel: str) -> bool:
    """Whether ``rel`` is (or is being written as) one of this tool's files under ``_work``."""
    rel = untemp(rel)
    return any(rel == entry or rel.startswith(entry + "/") for entry in WORK_ENTRIES)


def is_data_folder(rel: str) -> bool:
    """Whether ``rel`` lies in a folder that readers (SageMaker channels, DALI, im2rec users) are given."""
    return rel.split("/", 1)[0] in _DATA_FOLDERS


@dataclass(frozen=True)
class Ownership:
    """Which files under the output this tool wrote, and so may replace or remove."""

    name: str  # --name of this run
    foreign: frozenset = frozenset()  # files that were in the folder before this tool first wrote there
    replaced: frozenset = frozenset()  # data files listed by the manifest of a dataset being replaced

    def data_file(self, rel: str) -> bool:
        """A shard, index, list or single file this tool wrote (or was writing): stale unless a manifest names it."""
        if rel in self.foreign:
            return False
        final = untemp(rel)
        return final in self.replaced or bool(_data_name_pattern(self.name).match(final))

    def owns(self, rel: str) -> bool:
        if rel in self.foreign:
            return False
        return self.data_file(rel) or in_work(rel) or untemp(rel) in ROOT_FILES


def _read_mark(out: str) -> dict | None:
    try:
        mark = json.loads(storage.read_text(storage.join(out, OWNER_MARK)))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}
    return mark if isinstance(mark, dict) else {}


def ownership(out: str, name: str) -> Ownership:
    """What this tool wrote under ``out`` (its mark and ``_work/replaced.json``) for a run with ``--name name``."""
    mark = _read_mark(out) or {}
    try:
        replaced = json.loads(storage.read_text(storage.join(out, REPLACED))).get("files", [])
    except (FileNotFoundError, ValueError, AttributeError):  # none (or unreadable): names nothing
        replaced = []
    return Ownership(name, frozenset(mark.get("foreign", ())), frozenset(replaced))


def dataset_files(manifest: dict) -> set[str]:
    """The data files a manifest names: shards, their indexes, lists, merged indexes and single files."""
    files = set()
    try:
        for doc in manifest.get("splits", {}).values():
            for s in doc.get("shards", ()):
                files.update((s["rec"], s["idx"]))
            files.update(doc[k] for k in ("lst", "merged_idx") if doc.get(k))
            if doc.get("single_file"):
                files.update((doc["single_file"]["rec"], doc["single_file"]["idx"]))
    except (AttributeError, KeyError, TypeError):  # not a manifest of this tool's
        return set()
    return files


# ---------------------------------------------------------------- before the job


def prepare_output(options: ConvertOptions, previous: Previous | None = None) -> None:
    """Guard ``--output`` and clear what a crashed run left; ``previous``: an --incremental run adds to it.

    An increment keeps the manifest: the dataset stays complete and usable while new
    shards are written under new names, and the manifest is replaced (atomically) last.
    Files of an increment that never committed, and old files a committed one did not
    get to remove, are removed here (with ``--resume``, at the end of the run).
    """
    out = options.output
    manifest_uri = storage.join(out, MANIFEST)
    if storage.is_s3(out):
        from imgrec import s3

        s3.abort_recorded_uploads(storage.join(out, UPLOADS))
    existing = storage.list_recursive(out)
    mark = _read_mark(out) if OWNER_MARK in existing else None
    if previous is None and MANIFEST in existing:
        try:
            old = json.loads(storage.read_text(manifest_uri))
        except (ValueError, UnicodeDecodeError):
            old = {}
        if identity_changes(old.get("identity"), dataset_identity(options)) and not options.overwrite:
            raise OutputError(
                "%s already holds a different dataset (made from %s with other options); "
                "pass --overwrite to replace it, or choose another --output" % (out, old.get("input", "unknown input"))
            )
        if mark is not None:  # our dataset: its files go once the new one is complete, whatever it names
            _record_replaced(out, dataset_files(old))
        storage.delete(manifest_uri)
    elif previous is None and existing and mark is None and not options.overwrite:
        raise OutputError(
            "%s is not empty and was not written by this tool (%d files, e.g. %s); "
            "pass --overwrite to write into it, or choose an empty --output" % (out, len(existing), existing[0])
        )
    if mark is None:
        # What is already here belongs to someone else and is never removed; only the dataset an
        # --incremental run adds to is this tool's (whoever removed the mark).
        ours = set()
        if previous is not None:
            ours = dataset_files(previous.manifest) | {r for r in existing if untemp(r) in ROOT_FILES or in_work(r)}
        foreign = [rel for rel in existing if rel not in ours]
        doc = {"written_by": "imgrec-beam", **({"foreign": foreign} if foreign else {})}
        storage.write_text(storage.join(out, OWNER_MARK), json.dumps(doc, ensure_ascii=False) + "\n")
    owner = ownership(out, options.name)
    for rel in existing:
        if not owner.owns(rel) or rel == OWNER_MARK:
            continue
        if untemp(rel) != rel:
            storage.delete(storage.join(out, rel))  # a file a crashed run was writing
        elif in_work(rel) and not options.resume and rel != REPLACED:
            storage.delete(storage.join(out, rel))
    if previous is not None and not options.resume:
        _remove_stale(out, owner, dataset_files(previous.manifest))
    foreign = [rel for rel in existing if is_data_folder(rel) and not owner.owns(rel)]
    if foreign:
        LOG.warning(
            "%d file(s) in the data folders of %s were not written by this tool and are left as they are "
            "(e.g. %s): a reader given one of those folders (a SageMaker channel) sees them too",
            len(foreign), out, foreign[0],
        )


def _record_replaced(out: str, files: set[str]) -> None:
    uri = storage.join(out, REPLACED)
    try:
        files = files | set(json.loads(storage.read_text(uri)).get("files", []))
    except FileNotFoundError:
        pass
    storage.write_text(uri, json.dumps({"files": sorted(files)}, ensure_ascii=False) + "\n")


def class_files(classes: list[str]) -> dict[str, str]:
    """``classes.json`` and ``labels.txt`` for these classes, by name."""
    return {
        CLASSES_JSON: json.dumps({name: i for i, name in enumerate(classes)}, indent=2, ensure_ascii=False) + "\n",
        LABELS_TXT: "".join(name + "\n" for name in classes),
    }


def sagemaker_text(doc: dict) -> str:
    return json.dumps(doc, indent=2) + "\n"


def restore_committed(out: str) -> None:
    """Before an --incremental run: put back the fixed-name files the manifest describes.

    An increment that crashed before its commit may have rewritten ``classes.json``,
    ``labels.txt``, ``sagemaker.json`` and ``summary.txt`` already; the next run reads
    its class map from ``classes.json``, so they are made to match the manifest first.
    """
    try:
        manifest = json.loads(storage.read_text(storage.join(out, MANIFEST)))
        expected = class_files([str(c) for c in manifest["classes"]])
        if "sagemaker" in manifest:
            expected[SAGEMAKER] = sagemaker_text(manifest["sagemaker"])
        from imgrec.summary import render_summary

        expected[SUMMARY] = render_summary(manifest)
    except (FileNotFoundError, ValueError, UnicodeDecodeError, KeyError, TypeError):
        return  # no usable manifest: load_previous says why
    for rel, text in expected.items():
        uri = storage.join(out, rel)
        try:
            if storage.read_text(uri) == text:
                continue
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        storage.write_text(uri, text)


def _load_json(uri: str, what: str):
    try:
        return json.loads(storage.read_text(uri))
    except FileNotFoundError:
        raise IncompleteError("%s is missing: %s did not finish" % (uri, what)) from None


def finalize(
    options: ConvertOptions,
    classes: list[str],
    root_errors: list[ErrorRecord],
    extra: dict,
    listed_classes: list[int] | None = None,
    previous: Previous | None = None,
    warnings: Sequence[str] = (),
) -> dict:
    """Assemble the output; ``listed_classes`` are the class folders listed (default: every class).

    ``warnings``: lines for the manifest's ``warnings`` and the summary's ``Warnings:``.

    With ``previous`` (``--incremental``) the new shards are added to that dataset; when
    there is nothing new to add, nothing in the output is touched. ``warnings``: one-line
    warnings found before the job; the manifest and the summary carry them and the ones
    found here (classes without images).
    """
    out = options.output
    layout = layout_for(options, previous)

    # Listing records: one per class folder.
    errors: list[ErrorRecord] = list(root_errors)
    ignored = 0
    listed = 0
    for index in range(len(classes)) if listed_classes is None else listed_classes:
        rec = _load_json(storage.join(out, layout.listing_record(index)), "listing of class %d" % index)
        errors.extend(from_json(e) for e in rec["errors"])
        ignored += rec["ignored_non_image"]
        listed += rec["images"]
    report_counts, report_items = None, []
    if findings.expected(options):
        try:
            report_counts, report_items = findings.read_report(out)
        except FileNotFoundError:
            raise IncompleteError("the report fragments under %s/%s are missing: the job did not finish"
                                  % (out, findings.REPORT_DIR)) from None
        errors.extend(findings.to_error(i) for i in report_items if i["kind"] == findings.ERROR)
        if options.labels:
            listed = report_counts.get(findings.LABELLED, 0)
            ignored = report_counts.get(findings.IGNORED, 0)
    if listed == 0 and options.labels:
        raise OutputError(
            "none of the images listed in %s was found under %s (%d missing or unusable, see the report): "
            "nothing to convert" % (options.labels, options.input, len(errors))
        )
    if listed == 0:
        raise OutputError(
            "no images found under %s (extensions %s; %d other files ignored, %d unusable): nothing to convert"
            % (options.input, ",".join(options.exts), ignored, len(errors))
        )
    if previous is not None and not storage.exists(storage.join(out, PLAN)):
        plan = {"splits": {}}  # every image listed is in the dataset already: nothing was planned
    else:
        plan = _load_json(storage.join(out, PLAN), "shard planning")
    shard_records = _shard_records(out, layout, plan)
    if previous is not None and not any(r["records"] for recs in shard_records.values() for r in recs):
        return _nothing_new(options, previous, root_errors, errors, shard_records)

    splits_doc: dict[str, Any] = {}
    old_splits = previous.manifest["splits"] if previous else {}
    class_counts: dict[str, dict[str, int]] = {
        split: dict(c) for split, c in (previous.manifest.get("class_counts", {}) if previous else {}).items()
    }
    # split -> shorter edge of the stored images -> count
    edges_by_split, unsplit_edges = previous_edges(previous.manifest if previous else {})
    for split in SPLITS:
        if split not in plan["splits"] and split not in old_splits:
            continue
        counts = class_counts.setdefault(split, {})
        splits_doc[split] = _assemble_split(
            out, layout, options, classes, split, shard_records.get(split, []), old_splits.get(split),
            errors, counts, edges_by_split.setdefault(split, {}), drop_empty=previous is not None,
        )
    edges = merge_edges(list(edges_by_split.values()) + [unsplit_edges])
    found = WarningList(warnings)
    found.add(empty_classes(classes, class_counts))
    crashpoints.reached("lists-written")

    for rel, text in class_files(classes).items():
        storage.write_text(storage.join(out, rel), text)
    if report_counts is not None:
        storage.write_text(storage.join(out, REPORT), findings.to_jsonl(report_items))
    errors.sort(key=lambda e: (e.path, e.stage, e.reason))
    storage.write_text(storage.join(out, ERRORS), to_jsonl(errors))
    inputs = listed + sum(1 for e in errors if e.stage == STAGE_LIST)
    limit = error_limit(options.max_errors, inputs)
    if limit is not None and len(errors) > limit:
        raise TooManyErrorsError(
            "%d of %d inputs were skipped, more than --max-errors allows (%d); no manifest written, "
            "see %s for each one and why" % (len(errors), inputs, limit, storage.join(out, ERRORS))
        )

    if options.single_file:  # after the --max-errors check: no copying for a refused dataset
        for split, doc in splits_doc.items():
            doc["single_file"] = write_single_file(  # named after --name, whatever increment this is
                out, layout_for(options), split, doc["shards"], storage.read_text(storage.join(out, doc["merged_idx"]))
            )
    # the images a SageMaker training job reads: the train and validation channels
    channel_edges = merge_edges([edges_by_split.get(s, {}) for s in CHANNELS] + [unsplit_edges])
    sagemaker_doc = sagemaker_document(
        out, len(classes), splits_doc, options.label_format, options.label_width, channel_edges, options.encode.color
    )
    storage.write_text(storage.join(out, SAGEMAKER), sagemaker_text(sagemaker_doc))
    reasons: dict[str, int] = {}
    for e in errors:
        reasons[e.reason] = reasons.get(e.reason, 0) + 1
    manifest = {
        "version": MANIFEST_VERSION,
        "input": options.input,
        "classes": classes,
        "num_classes": len(classes),
        "splits": splits_doc,
        "class_counts": class_counts,
        "images_listed": listed,
        "ignored_non_image_files": ignored,
        "errors": len(errors),
        "errors_by_reason": dict(sorted(reasons.items())),
        "errors_file": ERRORS,
        "classes_file": CLASSES_JSON,
        "labels_file": LABELS_TXT,
        "labels": {
            "source": options.labels or "folders",
            "format": options.label_format or "single",
            "width": options.label_width if options.label_format else 1,
            **({"pad": options.label_pad} if options.label_format == "class-ids" else {}),
        },
        **({"report_file": REPORT, "report_counts": report_counts} if report_counts is not None else {}),
        "sagemaker_file": SAGEMAKER,
        "sagemaker": sagemaker_doc,
        "shorter_edges": {str(k): v for k, v in sorted(edges.items())},
        "shorter_edges_by_split": {
            split: {str(k): v for k, v in sorted(e.items())} for split, e in edges_by_split.items() if split in splits_doc
        },
        "warnings": found.to_json(),
        "increments": previous.batch if previous else 0,
        "identity": dataset_identity(options),
        "options": options.to_json(),
        "warnings": list(warnings or []),
        **extra,
    }
    if previous is None:
        # nothing names the replaced dataset's files any more: gone before the manifest says "complete"
        _remove_stale(out, ownership(out, options.name), dataset_files(manifest))
    if report_counts is None:
        storage.delete(storage.join(out, REPORT))  # from an earlier run with --labels or --check-duplicates
    from imgrec.summary import render_summary

    summary = render_summary(manifest)
    storage.write_text(storage.join(out, SUMMARY), summary)
    crashpoints.reached("before-manifest")
    # The commit: from here on the dataset is the new one (see the module docstring).
    storage.write_text(storage.join(out, MANIFEST), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    crashpoints.reached("manifest-written")
    if previous is not None:
        # the old manifest named the old state's lists and merged indexes until this moment
        _remove_stale(out, ownership(out, options.name), dataset_files(manifest))
    crashpoints.reached("stale-removed")
    _clear_work(out)
    manifest["summary_text"] = summary
    return manifest


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


def _shard_records(out: str, layout: Layout, plan: dict) -> dict[str, list[dict]]:
    """Every planned shard's completion record, by split, in shard order; raises when one is missing."""
    found: dict[str, list[dict]] = {}
    for split in SPLITS:
        if split not in plan["splits"]:
            continue
        shards = plan["splits"][split]["shards"]
        for shard in range(shards):
            rec = _load_json(
                storage.join(out, layout.shard_record(split, shard, shards)), "shard %d of %s" % (shard, split)
            )
            planned = plan["splits"][split]["counts"].get(str(shard), 0)
            if rec["planned"] != planned:
                raise IncompleteError(
                    "shard %d of %s holds %d planned images, the plan says %d" % (shard, split, rec["planned"], planned)
                )
            found.setdefault(split, []).append(rec)
    return found


def _assemble_split(out, layout, options, classes, split, shard_records, old_doc, errors, counts, edges, drop_empty):
    """Write a split's ``.lst`` and merged index, streaming, and return its manifest entry.

    ``old_doc`` is the split in the dataset being added to (``--incremental``): its list
    and merged index are copied first into the new state's files (the layout names
    them after the increment, so the old ones stay as they are until the manifest is
    replaced) and the new shards follow its shards. There, a new shard that ends up
    empty (all its images skipped) is dropped.
    """
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
        for rec in shard_records:
            errors.extend(from_json(e) for e in rec["errors"])
            if drop_empty and rec["records"] == 0:
                storage.delete(storage.join(out, rec["rec"]))
                storage.delete(storage.join(out, rec["idx"]))
                continue
            for line, offset in zip(rec["lst"], rec["offsets"]):
                fields = line.rstrip("\n").split("\t")
                lst_f.write(line.encode("utf-8", "surrogateescape"))
                merged_f.write(b"%s\t%d\n" % (fields[0].encode(), base + offset))
                next_id = max(next_id, int(fields[0]) + 1)
                for class_id in decode_label([float(v) for v in fields[1:-1]], options.label_format, options.label_pad):
                    counts[classes[class_id]] = counts.get(classes[class_id], 0) + 1
            for edge, n in rec.get("shorter_edges", {}).items():
                edges[int(edge)] = edges.get(int(edge), 0) + n
            base += rec["bytes"]
            records += rec["records"]
            shard_docs.append(
                {"rec": rec["rec"], "idx": rec["idx"], "records": rec["records"], "bytes": rec["bytes"], "sha256": rec["sha256"]}
            )
    return {
        "records": records,
        "bytes": base,
        "next_id": next_id,
        "lst": lst_rel,
        "merged_idx": merged_rel,
        "shards": shard_docs,
    }


def _nothing_new(options, previous, root_errors, errors, shard_records) -> dict:
    """An --incremental run that found no new image to add: leave the dataset exactly as it was."""
    out = options.output
    for recs in shard_records.values():
        for rec in recs:  # shards of new images that were all skipped
            errors.extend(from_json(e) for e in rec["errors"])
            storage.delete(storage.join(out, rec["rec"]))
            storage.delete(storage.join(out, rec["idx"]))
    if options.resume:  # files of an increment killed before its commit were kept for reuse: none was new
        _remove_stale(out, ownership(out, options.name), dataset_files(previous.manifest))
    errors.sort(key=lambda e: (e.path, e.stage, e.reason))
    text = to_jsonl(errors)
    errors_uri = storage.join(out, ERRORS)
    if not storage.exists(errors_uri) or storage.read_text(errors_uri) != text:
        storage.write_text(errors_uri, text)
    _clear_work(out)
    manifest = dict(previous.manifest)
    manifest["summary_text"] = (
        "Nothing new in %s: every image found is already in %s (%d images); nothing was changed.\n"
        "%d inputs skipped (details in %s).\n" % (options.input, out, sum(d["records"] for d in manifest["splits"].values()),
                                                  len(errors), ERRORS)
    )
    manifest["nothing_new"] = True
    return manifest


def _clear_work(out: str) -> None:
    """Remove this tool's files under ``_work`` (and the folders they leave empty); anything else there stays."""
    for rel in storage.list_recursive(storage.join(out, WORK)):
        if in_work(WORK + "/" + rel):
            storage.delete(storage.join(out, WORK, rel))
    if not storage.is_s3(out):
        _remove_empty_dirs(os.path.join(out, WORK))


def write_single_file(out: str, layout: Layout, split: str, shard_docs: list[dict], merged_idx: str) -> dict:
    """``--single-file``: the split's shards concatenated into one .rec, and the merged index as its .idx.

    On S3 the shards are copied server-side (``imgrec.s3.concatenate``);
    locally they are streamed into the new file.
    """
    rec_rel, idx_rel = layout.single_rec(split), layout.single_idx(split)
    dest = storage.join(out, rec_rel)
    sources = [(storage.join(out, s["rec"]), s["bytes"]) for s in shard_docs]
    if storage.is_s3(out):
        from imgrec import s3

        s3.concatenate(dest, sources)
    else:
        with storage.atomic_writer(dest) as f:
            for uri, _ in sources:
                with storage.open_read(uri) as src:
                    shutil.copyfileobj(src, f, COPY_BUFFER)
    storage.write_text(storage.join(out, idx_rel), merged_idx)
    return {
        "rec": rec_rel,
        "idx": idx_rel,
        "records": sum(s["records"] for s in shard_docs),
        "bytes": sum(s["bytes"] for s in shard_docs),
    }


def _remove_stale(out: str, owner: Ownership, keep: set[str]) -> None:
    """Delete the data files this tool wrote that the manifest does not name (``keep``).

    They are shards of an earlier dataset, files of an increment that crashed before
    its commit, the old lists and merged indexes of a committed one, or temporary files
    of a crashed writer. Files someone else put there stay (``Ownership``).
    """
    for rel in storage.list_recursive(out):
        if rel not in keep and is_data_folder(rel) and owner.data_file(rel):
            storage.delete(storage.join(out, rel))


def _remove_empty_dirs(path: str) -> None:
    for dirpath, _, _ in sorted(os.walk(path, topdown=False), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
