"""Before and after the Beam job, on the launcher: guard the output, then assemble it.

``prepare_output`` refuses to mix datasets and removes the old manifest first,
so an output folder never looks complete while it is being rewritten.
``finalize`` reads the plan and the per-shard completion records written by
the workers and writes, in this order, the ``.lst`` files, the merged
indexes, the class map, ``errors.jsonl``, ``summary.txt`` and, last,
``manifest.json``. Anything missing means the job did not finish: it raises
and no manifest is written.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from imgrec import findings, storage
from imgrec.errors import ErrorRecord, from_json, to_jsonl
from imgrec.layout import CLASSES_JSON, ERRORS, LABELS_TXT, MANIFEST, REPORT, SAGEMAKER, SINGLE, SUMMARY, WORK, Layout
from imgrec.errors import STAGE_LIST
from imgrec.options import ConvertOptions, error_limit
from imgrec.labels import decode_label
from imgrec.incremental import Previous, batch_name
from imgrec.planning import SPLITS
from imgrec.sagemaker import sagemaker_document

MANIFEST_VERSION = 1
# Marks a folder as this tool's output, so a re-run after a crash (no manifest yet)
# is told apart from a folder of someone else's files.
OWNER_MARK = ".imgrec-output"
PLAN = WORK + "/plan.json"
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
    name = batch_name(options.name, previous.batch) if previous else options.name
    return Layout(name, options.idx_beside_rec)


def dataset_identity(options: ConvertOptions) -> dict[str, Any]:
    return {"input": options.input, **options.fingerprint_fields()}


def prepare_output(options: ConvertOptions, previous: Previous | None = None) -> None:
    """Guard ``--output`` and clear what a crashed run left; ``previous``: an --incremental run adds to it.

    An increment keeps the manifest: the dataset stays complete and usable while new
    shards are written under new names, and the manifest is replaced (atomically) last.
    """
    out = options.output
    manifest_uri = storage.join(out, MANIFEST)
    existing = storage.list_recursive(out)
    if previous is None and MANIFEST in existing:
        try:
            old = json.loads(storage.read_text(manifest_uri))
        except (ValueError, UnicodeDecodeError):
            old = {}
        if old.get("identity") != dataset_identity(options) and not options.overwrite:
            raise OutputError(
                "%s already holds a different dataset (made from %s with other options); "
                "pass --overwrite to replace it, or choose another --output" % (out, old.get("input", "unknown input"))
            )
        storage.delete(manifest_uri)
    elif previous is None and existing and OWNER_MARK not in existing and not options.overwrite:
        raise OutputError(
            "%s is not empty and was not written by this tool (%d files, e.g. %s); "
            "pass --overwrite to write into it, or choose an empty --output" % (out, len(existing), existing[0])
        )
    keep_work = options.resume
    for rel in existing:
        if storage.is_temp_name(rel) or (rel.startswith(WORK + "/") and not keep_work):
            storage.delete(storage.join(out, rel))
    if OWNER_MARK not in existing:
        storage.write_text(storage.join(out, OWNER_MARK), json.dumps({"written_by": "imgrec-beam"}) + "\n")


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
    warnings: list[str] | None = None,
) -> dict:
    """Assemble the output; ``listed_classes`` are the class folders listed (default: every class).

    ``warnings``: lines for the manifest's ``warnings`` and the summary's ``Warnings:``.

    With ``previous`` (``--incremental``) the new shards are added to that dataset; when
    there is nothing new to add, nothing in the output is touched.
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
    # shorter edge of the stored images -> count
    edges: dict[int, int] = {int(k): v for k, v in (previous.manifest.get("shorter_edges", {}) if previous else {}).items()}
    for split in SPLITS:
        if split not in plan["splits"] and split not in old_splits:
            continue
        counts = class_counts.setdefault(split, {})
        splits_doc[split] = _assemble_split(
            out, layout, options, classes, split, shard_records.get(split, []), old_splits.get(split),
            errors, counts, edges, drop_empty=previous is not None,
        )

    storage.write_text(
        storage.join(out, CLASSES_JSON), json.dumps({name: i for i, name in enumerate(classes)}, indent=2, ensure_ascii=False) + "\n"
    )
    storage.write_text(storage.join(out, LABELS_TXT), "".join(name + "\n" for name in classes))
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
    sagemaker_doc = sagemaker_document(
        out, len(classes), splits_doc, options.label_format, options.label_width, edges, options.encode.color
    )
    storage.write_text(storage.join(out, SAGEMAKER), json.dumps(sagemaker_doc, indent=2) + "\n")
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
        "increments": previous.batch if previous else 0,
        "identity": dataset_identity(options),
        "options": options.to_json(),
        "warnings": list(warnings or []),
        **extra,
    }
    _remove_stale(out, layout, splits_doc)
    if report_counts is None:
        storage.delete(storage.join(out, REPORT))  # from an earlier run with --labels or --check-duplicates
    from imgrec.summary import render_summary

    summary = render_summary(manifest)
    storage.write_text(storage.join(out, SUMMARY), summary)
    storage.write_text(storage.join(out, MANIFEST), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    _clear_work(out)
    manifest["summary_text"] = summary
    return manifest


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
    and merged index are copied first and the new shards follow its shards. There,
    a new shard that ends up empty (all its images skipped) is dropped.
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
    for rel in storage.list_recursive(storage.join(out, WORK)):
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


def _remove_stale(out: str, layout: Layout, splits_doc: dict) -> None:
    """Delete shard files of an earlier dataset that this manifest does not list."""
    keep = set()
    for doc in splits_doc.values():
        for s in doc["shards"]:
            keep.update((s["rec"], s["idx"]))
        keep.update((doc["lst"], doc["merged_idx"]))
        if doc.get("single_file"):
            keep.update((doc["single_file"]["rec"], doc["single_file"]["idx"]))
    for rel in storage.list_recursive(out):
        top = rel.split("/", 1)[0]
        if rel in keep or rel.startswith(WORK + "/"):
            continue
        if top in SPLITS or top in ("idx", "lists", SINGLE):
            if rel.endswith((".rec", ".idx", ".lst")) or storage.is_temp_name(rel):
                storage.delete(storage.join(out, rel))


def _remove_empty_dirs(path: str) -> None:
    for dirpath, _, _ in sorted(os.walk(path, topdown=False), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
