"""Which files under an output this tool wrote, and getting an output ready for a job. Pure code, no Beam.

Only files this tool wrote are ever removed (``Ownership``): those named as it
names its outputs, those listed by the manifest of a dataset it replaces, and
``_work``'s own sub-folders. Files that were in a folder before it first wrote
there, and anything else a user puts beside its files, stay.

``prepare_job`` runs when ``WriteToRecordIO`` is applied, before anything
else: it refuses to mix datasets, aborts the multipart uploads an earlier run
left (``_work/uploads``), removes the old manifest first (so the folder never
looks complete while it is rewritten) and clears what a crashed run left. The
``--incremental`` commit protocol it completes is described in
``imgrec.finalize``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from imgrec import findings, progress, storage
from imgrec.errors import UsageError
from imgrec.incremental import Previous, batch_name, class_map_uri, load_previous
from imgrec.layout import (CLASSES_JSON, ERRORS, FAILURES, LABELS_TXT, MANIFEST, OWNER_MARK, REPORT, SAGEMAKER, SINGLE,
                           SUMMARY, WORK, Layout)
from imgrec.options import ConvertOptions, identity_changes
from imgrec.planning import SPLITS

LOG = logging.getLogger("imgrec.ownership")

PLAN = WORK + "/plan.json"
# The data files of a dataset being replaced (its manifest is removed first), kept until the new one is complete.
REPLACED = WORK + "/replaced.json"
# Where every multipart upload to an s3:// output is recorded while it is open (S3Settings.upload_journal).
UPLOADS = WORK + "/uploads"
# Everything this tool writes under _work; anything else there is someone else's.
# The local runner's sorted runs of refs, and the failures stages record for the launcher.
RUNS = WORK + "/runs"
WORK_ENTRIES = (PLAN, REPLACED, UPLOADS, RUNS, FAILURES, WORK + "/shards", WORK + "/listing", progress.PROGRESS_DIR,
                findings.REPORT_DIR)
# The files at the top of an output that this tool writes.
ROOT_FILES = (MANIFEST, SUMMARY, ERRORS, CLASSES_JSON, LABELS_TXT, REPORT, SAGEMAKER, OWNER_MARK)



class OutputError(UsageError):
    """The output folder cannot be used as asked (message says why and what to do)."""



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
        storage.abort_recorded_uploads(storage.join(out, UPLOADS))
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
        remove_stale(out, owner, dataset_files(previous.manifest))
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


def clear_work(out: str) -> None:
    """Remove this tool's files under ``_work`` (and the folders they leave empty); anything else there stays."""
    for rel in storage.list_recursive(storage.join(out, WORK)):
        if in_work(WORK + "/" + rel):
            storage.delete(storage.join(out, WORK, rel))
    if not storage.is_s3(out):
        _remove_empty_dirs(os.path.join(out, WORK))


def remove_stale(out: str, owner: Ownership, keep: set[str]) -> None:
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


# ---------------------------------------------------------------- the job's first step


def output_options(options: ConvertOptions) -> ConvertOptions:
    """The options as this output needs them: uploads journalled; an increment's class map is the dataset's.

    Idempotent. An ``--incremental`` run into an existing dataset first puts back the
    fixed-name files its manifest describes (a crashed increment may have rewritten them).
    """
    options = journal_uploads(options)
    out = options.output
    if options.incremental and not options.dry_run and storage.exists(storage.join(out, MANIFEST)):
        restore_committed(out)
        if not options.class_map:
            # the dataset's class map stays fixed: new classes only with --allow-new-classes
            options = dataclasses.replace(options, class_map=class_map_uri(out))
    return options


def prepare_job(options: ConvertOptions) -> tuple[ConvertOptions, Previous | None]:
    """Get ``--output`` ready for a job (when WriteToRecordIO is applied): the options to use and what it adds to."""
    options = output_options(options)
    out = options.output
    previous = None
    if options.incremental and storage.exists(storage.join(out, MANIFEST)):
        previous = load_previous(out, dataset_identity(options))
    storage.check_output_folder(out)
    prepare_output(options, previous)
    return options, previous

