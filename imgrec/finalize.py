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


def layout_for(options: ConvertOptions) -> Layout:
    return Layout(options.name, options.idx_beside_rec)


def dataset_identity(options: ConvertOptions) -> dict[str, Any]:
    return {"input": options.input, **options.fingerprint_fields()}


def prepare_output(options: ConvertOptions) -> None:
    out = options.output
    manifest_uri = storage.join(out, MANIFEST)
    existing = storage.list_recursive(out)
    if MANIFEST in existing:
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
    elif existing and OWNER_MARK not in existing and not options.overwrite:
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
) -> dict:
    """Assemble the output; ``listed_classes`` are the class folders listed (default: every class)."""
    out = options.output
    layout = layout_for(options)

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
    plan = _load_json(storage.join(out, PLAN), "shard planning")

    splits_doc: dict[str, Any] = {}
    class_counts: dict[str, dict[str, int]] = {}
    edges: dict[int, int] = {}  # shorter edge of the stored images -> count
    merged_text: dict[str, str] = {}
    for split in SPLITS:
        if split not in plan["splits"]:
            continue
        shards = plan["splits"][split]["shards"]
        lst_parts: list[str] = []
        merged: list[str] = []
        shard_docs = []
        base = 0
        records = 0
        counts = class_counts.setdefault(split, {})
        for shard in range(shards):
            rec = _load_json(
                storage.join(out, layout.shard_record(split, shard, shards)), "shard %d of %s" % (shard, split)
            )
            if rec["planned"] != plan["splits"][split]["counts"].get(str(shard), 0):
                raise IncompleteError(
                    "shard %d of %s holds %d planned images, the plan says %d"
                    % (shard, split, rec["planned"], plan["splits"][split]["counts"].get(str(shard), 0))
                )
            errors.extend(from_json(e) for e in rec["errors"])
            lst_parts.extend(rec["lst"])
            for line, offset in zip(rec["lst"], rec["offsets"]):
                fields = line.rstrip("\n").split("\t")
                merged.append("%s\t%d\n" % (fields[0], base + offset))
                for class_id in decode_label([float(v) for v in fields[1:-1]], options.label_format, options.label_pad):
                    name = classes[class_id]
                    counts[name] = counts.get(name, 0) + 1
            for edge, n in rec.get("shorter_edges", {}).items():
                edges[int(edge)] = edges.get(int(edge), 0) + n
            base += rec["bytes"]
            records += rec["records"]
            shard_docs.append(
                {"rec": rec["rec"], "idx": rec["idx"], "records": rec["records"], "bytes": rec["bytes"], "sha256": rec["sha256"]}
            )
        storage.write_text(storage.join(out, layout.lst(split)), "".join(lst_parts))
        storage.write_text(storage.join(out, layout.merged_idx(split)), "".join(merged))
        splits_doc[split] = {
            "records": records,
            "bytes": base,
            "lst": layout.lst(split),
            "merged_idx": layout.merged_idx(split),
            "shards": shard_docs,
        }
        merged_text[split] = "".join(merged)

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
            doc["single_file"] = write_single_file(out, layout, split, doc["shards"], merged_text[split])
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
        "identity": dataset_identity(options),
        "options": options.to_json(),
        **extra,
    }
    _remove_stale(out, layout, splits_doc)
    if report_counts is None:
        storage.delete(storage.join(out, REPORT))  # from an earlier run with --labels or --check-duplicates
    from imgrec.summary import render_summary

    summary = render_summary(manifest)
    storage.write_text(storage.join(out, SUMMARY), summary)
    storage.write_text(storage.join(out, MANIFEST), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    for rel in storage.list_recursive(storage.join(out, WORK)):
        storage.delete(storage.join(out, WORK, rel))
    if not storage.is_s3(out):
        _remove_empty_dirs(os.path.join(out, WORK))
    manifest["summary_text"] = summary
    return manifest


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
