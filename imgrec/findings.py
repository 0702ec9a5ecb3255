"""What the job found out about its input, beyond the images it wrote: ``report.jsonl``.

Workers emit findings as ``(kind, count, item)`` values; a Beam stage spreads
them over ``FRAGMENTS`` fragment files under ``_work/report/`` (every
fragment is always written, so a missing one means the job did not finish),
and the finaliser merges them into ``report.jsonl``, one item a line, sorted.
Items of kind ``error`` are inputs that did not become records and also go
to ``errors.jsonl``. Kinds:

    error           a listed image that cannot be used: missing, listed_twice, unsupported_ext, ...
    unlisted        an image under --input that the label file does not list
    duplicate       a set of identical files (same sha256), all in one split; 'kept' after --dedup
    label_conflict  identical files with different labels (every path and its labels)

Count-only kinds (no items): ``labelled`` (listed images found), ``ignored_non_image``.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import tempfile
import zlib
from typing import Iterable, Iterator

from imgrec import storage
from imgrec.errors import STAGE_LIST, ErrorRecord
from imgrec.layout import WORK
from imgrec.workrecords import ReportFragment

REPORT_DIR = WORK + "/report"
# The finaliser holds at most this many report items in memory; more go to sorted runs on local disk.
REPORT_ITEMS_HELD = 8192
# Fragments of the report: the findings are spread over this many writers.
FRAGMENTS = 16

ERROR = "error"
UNLISTED = "unlisted"
DUPLICATE = "duplicate"
LABEL_CONFLICT = "label_conflict"
LABELLED = "labelled"
IMAGES = "images"  # count-only: images a job took in (listed, or given by a source)
SKIPPED = "skipped"  # an input a source or listing could not use: errors.jsonl only, not report.jsonl
IGNORED = "ignored_non_image"


# A stage that yields both its main elements and findings tags each value (MAIN, x) or (FOUND, finding)
# in one output, and plain FlatMaps split them: Beam's Dask runner does not separate tagged outputs.
MAIN, FOUND = 0, 1


def main_of(tagged) -> list:
    return [tagged[1]] if tagged[0] == MAIN else []


def found_of(tagged) -> list:
    return [tagged[1]] if tagged[0] == FOUND else []


def error_item(path: str, reason: str, detail: str) -> dict:
    return {"kind": ERROR, "path": path, "reason": reason, "stage": STAGE_LIST, "detail": detail}


def to_error(item: dict) -> ErrorRecord:
    return ErrorRecord(item["path"], item["reason"], item.get("stage", STAGE_LIST), item.get("detail", ""))


def fragment_of(kind: str, item: dict | None) -> int:
    text = json.dumps(item, sort_keys=True, ensure_ascii=False) if item is not None else kind
    return zlib.crc32(text.encode("utf-8", "surrogateescape")) % FRAGMENTS


def fragment_path(index: int) -> str:
    return "%s/part-%05d-of-%05d.json" % (REPORT_DIR, index, FRAGMENTS)


def fragment_document(findings: Iterable[tuple[str, int, dict | None]]) -> dict:
    """The JSON of one report fragment (a ``workrecords.ReportFragment``) holding these findings."""
    counts: dict[str, int] = {}
    items = []
    for kind, count, item in findings:
        counts[kind] = counts.get(kind, 0) + count
        if item is not None:
            items.append(item)
    items.sort(key=sort_key)
    return ReportFragment(counts, tuple(items)).to_json()


def write_fragments(output: str, found: Iterable[tuple[str, int, dict | None]]) -> None:
    """Every fragment of the report from findings held in memory (the local runner's planner), as WriteFindings
    writes them from a PCollection: an item in the fragment of its content, a count in the fragment of its kind."""
    by_fragment: dict[int, list] = {i: [] for i in range(FRAGMENTS)}
    for kind, count, item in found:
        if count:
            by_fragment[fragment_of(kind, None)].append((kind, count, None))
        if item is not None:
            by_fragment[fragment_of(kind, item)].append((kind, 0, item))
    for index, values in by_fragment.items():
        doc = fragment_document(values)
        storage.write_text(storage.join(output, fragment_path(index)), json.dumps(doc, ensure_ascii=False, sort_keys=True))


def sort_key(item: dict):
    return (item.get("kind", ""), item.get("path") or "\0".join(item.get("paths", [])), json.dumps(item, sort_keys=True))


def report_entry(item: dict) -> tuple[str, str, str, str]:
    """An item as the finaliser holds it until the report is written: ``sort_key``'s fields, then its line.

    A few strings instead of a dict of lists: a collection with many identical files has
    as many items, and the finaliser holds them all to sort them.
    """
    line = json.dumps(item, ensure_ascii=False, sort_keys=True)
    plain = json.dumps(item, sort_keys=True)
    return (item.get("kind", ""), item.get("path") or "\0".join(item.get("paths", [])),
            line if plain == line else plain, line)


class ReportItems:
    """``report.jsonl``'s items in bounded memory: an external sort by ``sort_key``.

    A collection with many identical files has as many report items (50,000 in 400,000
    images), found shard by shard: up to ``held`` are kept (as ``report_entry`` strings),
    then sorted into a run on local disk; ``lines()`` merges the runs in order.
    """

    def __init__(self, held: int = REPORT_ITEMS_HELD):
        self._held = max(1, held)
        self._entries: list[tuple[str, str, str, str]] = []
        self._runs: list[str] = []
        self._dir = ""
        self.count = 0

    def add(self, item: dict) -> None:
        self._entries.append(report_entry(item))
        self.count += 1
        if len(self._entries) >= self._held:
            self._spill()

    def _spill(self) -> None:
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix="imgrec-report-")
        self._entries.sort()
        path = os.path.join(self._dir, "run-%05d.jsonl" % len(self._runs))
        with open(path, "w", encoding="ascii") as f:  # ASCII JSON: a path's undecodable bytes survive as escapes
            f.writelines(json.dumps(entry) + "\n" for entry in self._entries)
        self._runs.append(path)
        self._entries = []

    def lines(self) -> Iterator[str]:
        """Every item's JSON line (without its newline), in ``sort_key`` order."""
        self._entries.sort()
        streams = [iter(self._entries)] + [_read_run(path) for path in self._runs]
        for entry in heapq.merge(*streams):
            yield entry[3]

    @property
    def runs(self) -> int:
        """How many sorted runs wait on disk."""
        return len(self._runs)

    def close(self) -> None:
        """Remove the runs on disk (the items held are kept)."""
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir, self._runs = "", []


def _read_run(path: str) -> Iterator[tuple[str, str, str, str]]:
    with open(path, encoding="ascii") as f:
        for line in f:
            yield tuple(json.loads(line))


def iter_fragments(output: str) -> Iterator[ReportFragment]:
    """Each report fragment in turn (FileNotFoundError when one is missing)."""
    for index in range(FRAGMENTS):
        yield ReportFragment.from_json(json.loads(storage.read_text(storage.join(output, fragment_path(index)))))


def read_report(output: str) -> tuple[dict[str, int], list[dict]]:
    """All fragments merged: counts per kind and the sorted items; FileNotFoundError when one is missing."""
    counts: dict[str, int] = {}
    items: list[dict] = []
    for doc in iter_fragments(output):
        for kind, n in doc.counts.items():
            counts[kind] = counts.get(kind, 0) + n
        items.extend(doc.items)
    items.sort(key=sort_key)
    return dict(sorted(counts.items())), items


def to_jsonl(items: Iterable[dict]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in items)


def expected(options) -> bool:
    """Whether this job writes a report (and the finaliser must find every fragment)."""
    return bool(options.labels or options.check_duplicates)
