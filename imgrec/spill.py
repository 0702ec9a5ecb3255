"""The local runner's planning, without Beam: images into sorted runs, runs into shard tasks.

``spill`` runs in a worker (a thread or a forked process): it lists a folder
(or takes a batch of images a source handed over), gives every image its key
-- the salted hash of its path, or of its content with ``--check-duplicates``
-- and writes the refs as runs (``imgrec.runs``) in the job's scratch folder.
It returns a ``RunSummary``: the runs written, the class names seen, the most
labels on one image, and what it found (skipped inputs, counts).

``make_plan`` runs once, after every listing: it settles the class ids and
the label width, counts the runs' refs per shard and part
(``imgrec.shardplan``), and returns the shard tasks. Only counts and file
names pass between the two; the refs stay on disk.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from imgrec import classmap, findings, items, labels, runs, storage
from imgrec.dedup import content_key
from imgrec.errors import ErrorRecord, UsageError
from imgrec.options import ConvertOptions
from imgrec.planning import image_key
from imgrec.shardplan import Plan, RefFilter, plan_shards
from imgrec.workers import Part, trim_heap

# Refs per run file: a run is sorted in memory before it is written.
RUN_REFS = 1 << 16
# The largest multi-hot or class-ids vector a record may carry (mxnet allocates it per record).
MAX_LABEL_WIDTH = 65536


@dataclass
class RunSummary:
    """What one spill task left: its runs, the class names it saw, and what it found."""

    runs: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    max_labels: int = 0
    findings: list[items.Finding] = field(default_factory=list)
    refs: int = 0

    def merge(self, other: "RunSummary") -> "RunSummary":
        self.runs.extend(other.runs)
        self.names |= other.names
        self.max_labels = max(self.max_labels, other.max_labels)
        self.findings.extend(other.findings)
        self.refs += other.refs
        return self


@dataclass(frozen=True)
class SpillJob:
    """List ``listing`` (or take ``images``) and write their refs as runs under ``scratch``."""

    scratch: str
    input_root: str
    seed: str
    hash_content: bool = False
    max_file_bytes: int = 0
    listing: items.FolderListing | None = None
    images: tuple = ()
    single_label: bool = True


def _content_sha(uri: str, max_bytes: int) -> str:
    try:
        return hashlib.sha256(storage.read_bytes(uri, max_bytes)).hexdigest()
    except (OSError, storage.StorageError):
        return ""  # unreadable now: keeps its path key; writing it reports why


def spill(job: SpillJob) -> Part:
    """One spill task (runs in a worker): the refs of a folder or a batch, as runs; a Part with its RunSummary."""
    summary = RunSummary()
    batch: list[runs.RunRef] = []
    listed = job.listing is not None  # a listing's images are checked already (paths, labels)
    source = job.listing.items() if listed else job.images
    single = job.single_label
    for item in source:
        if isinstance(item, items.Finding):
            summary.findings.append(item)
            continue
        if not listed:
            item = items.to_image(item, job.input_root, single)
        if isinstance(item, ErrorRecord):
            summary.findings.append(items.error_finding(item))
            continue
        if isinstance(item, items.Finding):
            summary.findings.append(item)
            continue
        if item.size < 0:  # a source that did not say: ask the storage
            try:
                item = item._replace(size=storage.file_size(items.source_uri(job.input_root, item.path)))
            except FileNotFoundError:
                summary.findings.append(items.error_finding(
                    ErrorRecord(item.path, "missing", "list", "the image does not exist")))
                continue
            except (OSError, storage.StorageError) as exc:
                summary.findings.append(items.error_finding(ErrorRecord(item.path, "unreadable", "list", str(exc))))
                continue
        sha = _content_sha(items.source_uri(job.input_root, item.path), job.max_file_bytes) if job.hash_content else ""
        key = content_key(sha, job.seed) if sha else image_key(item.path, job.seed)
        summary.names.update(item.labels)
        summary.max_labels = max(summary.max_labels, len(set(item.labels)))
        batch.append(runs.RunRef(key, item.path, item.size, item.version, runs.join_labels(item.labels), sha))
        if len(batch) >= RUN_REFS:
            _flush(job.scratch, batch, summary)
            batch = []
    if batch:
        _flush(job.scratch, batch, summary)
    del batch, source
    trim_heap()
    summary.findings.append(items.Finding(findings.IMAGES, summary.refs))
    return Part(meta=summary)


def _flush(scratch: str, batch: list[runs.RunRef], summary: RunSummary) -> None:
    path = os.path.join(scratch, "%s.run" % uuid.uuid4().hex)
    summary.refs += runs.write_run(path, batch)
    summary.runs.append(path)


def existing_runs(list_uris: Iterable[str], scratch: str, seed: str) -> list[str]:
    """The images already in a dataset (``--incremental``): its ``.lst`` paths as runs, keyed by path."""
    paths: list[str] = []
    batch: list[runs.RunRef] = []

    def flush():
        path = os.path.join(scratch, "old-%s.run" % uuid.uuid4().hex)
        runs.write_run(path, batch)
        paths.append(path)

    for uri in list_uris:
        with storage.open_read(uri) as f:
            for raw in f:
                line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
                if line:
                    rel = line.rsplit("\t", 1)[-1]
                    batch.append(runs.RunRef(image_key(rel, seed), rel, 0))
                    if len(batch) >= RUN_REFS:
                        flush()
                        batch = []
    if batch:
        flush()
    return paths


# ---------------------------------------------------------------- the plan


def settle_classes(names: set[str], given: Sequence[str] | None, options: ConvertOptions) -> list[str]:
    """The class names in id order: ``given`` (pinned), else from ``--class-map`` and the names seen, sorted."""
    if given is not None:
        unknown = sorted(names - set(given))
        if unknown and not options.allow_new_classes:
            raise UsageError(
                "%d image label%s not among the classes given (%s): add them to the classes, or pass "
                "allow_new_classes to append them" % (len(unknown), "s are" if len(unknown) > 1 else " is",
                                                       ", ".join(repr(n) for n in unknown[:5]))
            )
        return list(given) + unknown
    pinned = classmap.load_class_map(options.class_map) if options.class_map else None
    return classmap.resolve_names({n: None for n in names}, pinned, options.allow_new_classes)


def label_width(options: ConvertOptions, classes: Sequence[str], max_labels: int) -> int:
    """The vector width of multi-label records (0 for single-label records)."""
    if not options.label_format:
        return 0
    if options.label_format == labels.MULTI_HOT:
        width = len(classes)
        if options.label_width and options.label_width != width:
            raise UsageError("--label-width %d: multi-hot vectors have one value per class (%d classes); drop "
                             "--label-width" % (options.label_width, width))
    else:
        width = options.label_width or max(1, max_labels)
        if max_labels > width:
            raise UsageError("an image has %d labels, more than --label-width %d" % (max_labels, width))
    if width > MAX_LABEL_WIDTH:
        raise UsageError("label vectors of %d values are more than the %d readers are given; use --label-format "
                         "class-ids with a --label-width" % (width, MAX_LABEL_WIDTH))
    return width


def make_plan(
    summary: RunSummary,
    options: ConvertOptions,
    exclude: Sequence[str] = (),
    first_ids: dict[str, int] | None = None,
) -> Plan:
    """The shard tasks for every ref in ``summary``'s runs (``exclude``: runs of images already converted)."""
    flt = RefFilter(dedup=options.dedup, exclude=tuple(exclude))
    return plan_shards(sorted(summary.runs), options.ratios, options.shard_size_mb, options.images_per_shard,
                       first_ids, flt)
