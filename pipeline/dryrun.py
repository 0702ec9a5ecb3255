"""``--dry-run``: list, label and split without encoding, and print what a conversion would produce.

    python -m pipeline.run --input ./photos --dry-run
    python -m pipeline.run --input ./images --labels labels.csv --stratify --dry-run

The same listing, labelling, duplicate and split stages as a conversion run
(so the counts are the conversion's), then only counting: images per class
and split, the class imbalance, the shard count per split and the output
size (exact for pass-through records up to RecordIO's rare record splits;
for re-encoding, estimated by encoding a sample of images). Nothing is
written to --output: the stages' scratch files go to a temporary folder (a
temporary prefix under an s3:// --output, for cluster runners) that is
removed at the end.
"""

from __future__ import annotations

from imgrec.quiet import import_beam

import_beam()

import json
import shutil
import tempfile
import time
import uuid

import apache_beam as beam

from imgrec import findings, images, storage
from imgrec.dataset_warnings import WarningList, empty_classes, summary_lines
from imgrec.env import WorkerEnv
from imgrec.layout import WORK
from imgrec.options import ConvertOptions
from imgrec.planning import SPLITS, SplitTotals, plan_shard_counts
from imgrec.summary import human_bytes
from pipeline import runners
from transforms.curate import WriteFindings
from transforms.dryrun import COUNTS, SAMPLE, DryRunCounts
from transforms.write_recordio import SHUFFLE, Job, shuffle_front


def scratch_root(options: ConvertOptions) -> tuple[str, bool]:
    """Where the stages write their scratch files, and whether it is a local temporary folder."""
    if options.output and storage.is_s3(options.output):
        return storage.join(options.output, WORK, "dry-run-%s" % uuid.uuid4().hex[:12]), False
    return tempfile.mkdtemp(prefix="imgrec-dry-run-"), True


def dry_run(options: ConvertOptions, source, beam_args: list[str]) -> dict:
    """Run the listing, labelling and split stages only; returns {"summary_text": the forecast}."""
    import dataclasses

    scratch, local = scratch_root(options)
    try:
        job_options = dataclasses.replace(options, output=scratch)
        job = Job(job_options, tuple(source.classes), tuple(source.warnings), None, time.time(), "", False, 0, 1)
        opts, runner = runners.pipeline_options(beam_args, max(1, len(source.classes)))
        p = beam.Pipeline(runner=runner, options=opts)
        batches, found = shuffle_front(p | "Source" >> source, job)
        refs = batches | "DryRunRefs" >> beam.FlatMap(lambda batch: batch)
        sample = refs | "DryRunCounts" >> DryRunCounts(scratch, max(1, options.label_width) if options.label_format else 0)
        all_found = found[0] if len(found) == 1 else tuple(found) | "AllFindings" >> beam.Flatten()
        fragments = all_found | "WriteFindings" >> WriteFindings(scratch, WorkerEnv.from_options(job_options))
        # Beam's Dask runner computes only the last step and what it needs: one end that needs both
        (sample, fragments) | "Ends" >> beam.Flatten() | "Done" >> beam.combiners.Count.Globally()
        p.run().wait_until_finish()
        text = forecast(options, source, scratch)
    finally:
        if local:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            for rel in storage.list_recursive(scratch):
                storage.delete(storage.join(scratch, rel))
    return {"summary_text": text}


def _load(uri: str, default):
    try:
        return json.loads(storage.read_text(uri))
    except FileNotFoundError:
        return default


def forecast(options: ConvertOptions, source, scratch: str) -> str:
    """The dry run's report, from the counts and findings the stages wrote under ``scratch``."""
    classes = list(source.classes)
    counts = {tuple(k): v for k, v in _load(storage.join(scratch, COUNTS), [])}
    splits = [s for s in SPLITS if counts.get(("images", s, None))]
    per_class = {(s, c): n for (what, s, c), n in counts.items() if what == "class"}
    skipped: dict[str, int] = {}
    examples: list[dict] = []
    found, items = findings.read_report(scratch)
    for item in items:
        if item["kind"] == findings.ERROR:
            skipped[item["reason"]] = skipped.get(item["reason"], 0) + 1
        elif len(examples) < 10:
            examples.append(item)
    lines = ["Dry run of %s: nothing was encoded, nothing written to --output." % options.input]
    if options.labels:
        lines.append("Labels from %s" % options.labels)
    total = sum(counts.get(("images", s, None), 0) for s in splits)
    lines.append("%d images would be converted into %d classes." % (total, len(classes)))
    lines.append("")
    width = max([len("class"), len("total")] + [len(c) for c in classes])
    head = "%-*s" % (width, "class") + "".join("  %10s" % s for s in splits) + "  %10s" % "total"
    lines += [head, "-" * len(head)]
    class_totals = {}
    for name in classes:
        row = [per_class.get((s, name), 0) for s in splits]
        class_totals[name] = sum(row)
        lines.append("%-*s" % (width, name) + "".join("  %10d" % n for n in row) + "  %10d" % sum(row))
    lines.append("-" * len(head))
    lines.append("%-*s" % (width, "images") + "".join("  %10d" % counts.get(("images", s, None), 0) for s in splits)
                 + "  %10d" % total)
    lines.append("")
    present = {k: v for k, v in class_totals.items() if v}
    if present:
        small = min(present.items(), key=lambda kv: (kv[1], kv[0]))
        large = max(present.items(), key=lambda kv: (kv[1], kv[0]))
        lines.append("Class imbalance: largest/smallest = %.2f (%s %d / %s %d)" % (
            large[1] / small[1], large[0], large[1], small[0], small[1]))
    # the warnings the conversion's summary would give
    warnings = WarningList(source.warnings)
    warnings.add(empty_classes(classes, {s: {c: n for (s_, c), n in per_class.items() if s_ == s} for s in splits}))
    totals = {s: SplitTotals(counts.get(("images", s, None), 0), counts.get(("input_bytes", s, None), 0)) for s in splits}
    shards = plan_shard_counts(totals, options.shard_size_mb, options.images_per_shard)
    ratio, how = 1.0, "exact record sizes of the original bytes"
    if not options.pass_through:
        ratio, how = _encoded_ratio(options, scratch)
    lines.append("Shards: " + ", ".join("%s %d" % (s, shards[s]) for s in splits))
    est = {s: int(counts.get(("record_bytes", s, None), 0) * ratio) for s in splits}
    lines.append("Estimated output: " + ", ".join("%s %s" % (s, human_bytes(est[s])) for s in splits)
                 + "; total %s (%s)" % (human_bytes(sum(est.values())), how))
    if skipped:
        lines.append("")
        lines.append("%d inputs would be skipped:" % sum(skipped.values()))
        for reason, n in sorted(skipped.items()):
            lines.append("  %-20s %8d" % (reason, n))
    shown = {k: v for k, v in found.items() if k not in (findings.LABELLED, findings.ERROR, findings.IMAGES,
                                                          findings.IGNORED)}
    if shown:
        lines.append("")
        lines.append("Findings: " + ", ".join("%d %s" % (n, k) for k, n in sorted(shown.items())))
        for item in examples:
            lines.append("  " + json.dumps(item, ensure_ascii=False, sort_keys=True))
    if len(warnings):
        lines.append("")
        lines.extend(summary_lines(warnings.to_json()))
    return "\n".join(lines) + "\n"


def _encoded_ratio(options: ConvertOptions, scratch: str) -> tuple[float, str]:
    """Output/input size ratio of re-encoding, measured on a sample of the images."""
    sample = _load(storage.join(scratch, SAMPLE), [])
    before = after = encoded_count = 0
    for relpath, _ in sample:
        try:
            data = storage.read_bytes(storage.join(options.input, relpath), options.max_file_bytes)
            info = images.check_structure(data, options.max_pixels)
            encoded = images.transcode(data, info, options.encode, options.max_pixels)
        except (images.BadImage, OSError, storage.StorageError):
            continue
        before += len(data)
        after += len(encoded)
        encoded_count += 1
    if not before:
        return 1.0, "re-encoded size unknown: no sample image could be encoded; input size shown"
    return after / before, "re-encoded size estimated from %d sample images" % encoded_count
