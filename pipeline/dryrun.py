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

import dataclasses
import json
import shutil
import tempfile
import uuid

import apache_beam as beam

from imgrec import findings, images, storage
from imgrec.dataset_warnings import WarningList, empty_classes, summary_lines
from imgrec.errors import from_json
from imgrec.layout import WORK
from imgrec.options import ConvertOptions
from imgrec.planning import SPLITS, SplitTotals, plan_shard_counts
from imgrec.recordio import IRHEADER_SIZE
from imgrec.summary import human_bytes

COUNTS = WORK + "/dry-run-counts.json"
SAMPLE = WORK + "/dry-run-sample.json"
# Images re-encoded to estimate the output size when not storing the original bytes.
SAMPLE_SIZE = 8


def record_bytes(image_bytes: int, label_width: int) -> int:
    """A record's size in a .rec: 8 bytes of framing, the IRHeader, the label vector, the image, padding to 4."""
    payload = IRHEADER_SIZE + 4 * label_width + image_bytes
    return 8 + (payload + 3) // 4 * 4


def _class_ids(label) -> tuple:
    return (label,) if isinstance(label, int) else tuple(label)


def _count(ref, label_width: int):
    # ref: ImageRef -> ((what, split, class id or None), n)
    yield ("images", ref.split, None), 1
    yield ("input_bytes", ref.split, None), ref.size
    yield ("record_bytes", ref.split, None), record_bytes(ref.size, label_width)
    for class_id in _class_ids(ref.label):
        yield ("class", ref.split, class_id), 1


def _write_json(element, uri: str):
    _, values = element
    storage.write_text(uri, json.dumps(sorted(values, key=repr), default=list))


class DryRunCounts(beam.PTransform):
    """PCollection[ImageRef] -> the counts and a small sample written under the scratch root."""

    def __init__(self, scratch: str, label_width: int):
        super().__init__()
        self._scratch = scratch
        self._width = label_width

    def expand(self, refs):
        (
            refs
            | "Count" >> beam.FlatMap(_count, self._width)
            | "SumCounts" >> beam.CombinePerKey(sum)
            | "CountsAsOne" >> beam.Map(lambda kv: (None, kv))
            | "AllCounts" >> beam.GroupByKey()
            | "WriteCounts" >> beam.Map(_write_json, storage.join(self._scratch, COUNTS))
        )
        return (
            refs
            | "Sample" >> beam.combiners.Top.Of(SAMPLE_SIZE, key=lambda r: (r.key, r.relpath), reverse=True)
            | "SampleAsOne" >> beam.Map(lambda refs_: (None, [(r.relpath, r.size) for r in refs_]))
            | "SampleGroup" >> beam.GroupByKey()
            | "WriteSample" >> beam.Map(lambda kv, uri: storage.write_text(uri, json.dumps(list(kv[1])[0])),
                                        storage.join(self._scratch, SAMPLE))
        )


def scratch_root(options: ConvertOptions) -> tuple[str, bool]:
    """Where the stages write their scratch files, and whether it is a local temporary folder."""
    if options.output and storage.is_s3(options.output):
        return storage.join(options.output, WORK, "dry-run-%s" % uuid.uuid4().hex[:12]), False
    return tempfile.mkdtemp(prefix="imgrec-dry-run-"), True


def dry_run(options: ConvertOptions, dataset, beam_args: list[str]) -> int:
    """Run the listing and split stages only, print the forecast; returns the exit code."""
    from pipeline.run import build_front, join_branches, pipeline_options, workers_options

    scratch, local = scratch_root(options)
    try:
        job = workers_options(dataclasses.replace(options, output=scratch))
        opts, runner = pipeline_options(beam_args, dataset.first_elements())
        p = beam.Pipeline(runner=runner, options=opts)
        batches = build_front(p, job, dataset.classes, dataset.source, dataset.folders if dataset.source is None else None)
        refs = batches | "DryRunRefs" >> beam.FlatMap(lambda batch: batch)
        refs | "DryRunCounts" >> DryRunCounts(job.output, max(1, options.label_width) if options.label_format else 0)
        join_branches(p)  # Dask computes only the last step: make it depend on every branch
        p.run().wait_until_finish()
        text = forecast(options, dataset, job.output)
    finally:
        if local:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            for rel in storage.list_recursive(scratch):
                storage.delete(storage.join(scratch, rel))
    print(text, end="")
    return 0


def _load(uri: str, default):
    try:
        return json.loads(storage.read_text(uri))
    except FileNotFoundError:
        return default


def forecast(options: ConvertOptions, dataset, scratch: str) -> str:
    """The dry run's report, from the counts the stages wrote under ``scratch``."""
    classes = dataset.classes
    counts = {tuple(k): v for k, v in _load(storage.join(scratch, COUNTS), [])}
    splits = [s for s in SPLITS if counts.get(("images", s, None))]
    per_class = {(s, c): n for (what, s, c), n in counts.items() if what == "class"}
    skipped: dict[str, int] = {}
    found: dict[str, int] = {}
    examples: list[dict] = []
    if dataset.source is None:
        for i in dataset.folders:
            rec = _load(storage.join(scratch, WORK, "listing", "class-%06d.json" % i), {"errors": []})
            for e in rec["errors"]:
                skipped[from_json(e).reason] = skipped.get(from_json(e).reason, 0) + 1
    for e in dataset.root_errors:
        skipped[e.reason] = skipped.get(e.reason, 0) + 1
    if findings.expected(options):
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
    for i, name in enumerate(classes):
        row = [per_class.get((s, i), 0) for s in splits]
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
    warnings = WarningList(dataset.warnings)
    warnings.add(empty_classes(classes, {s: {classes[i]: n for (s_, i), n in per_class.items() if s_ == s} for s in splits}))
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
    shown = {k: v for k, v in found.items() if k not in (findings.LABELLED, findings.ERROR)}
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
