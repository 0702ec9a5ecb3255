"""imgrec.findings: report fragments written, every one of them, and read back merged."""

from __future__ import annotations

import json
import os
import random

import pytest

from imgrec import findings
from imgrec.errors import STAGE_LIST, ErrorRecord
from imgrec.items import error_finding
from imgrec.options import from_kwargs
from imgrec.workrecords import ReportFragment, WorkRecordError

UNLISTED_B = {"kind": findings.UNLISTED, "path": "b/two.jpg"}
UNLISTED_A = {"kind": findings.UNLISTED, "path": "a/one.jpg"}
DUPLICATE = {"kind": findings.DUPLICATE, "paths": ["c/x.jpg", "c/y.jpg"], "split": "train"}
MISSING = findings.error_item("z/gone.jpg", "missing", "listed but not found")


def found():
    """Findings as workers emit them: (kind, count, item), counts of one kind spread over several values."""
    return [
        (findings.UNLISTED, 1, UNLISTED_B),
        (findings.LABELLED, 3, None),
        (findings.UNLISTED, 1, UNLISTED_A),
        (findings.ERROR, 1, MISSING),
        (findings.LABELLED, 4, None),
        (findings.DUPLICATE, 1, DUPLICATE),
        (findings.IGNORED, 2, None),
    ]


def fragment_files(out):
    return sorted((out / findings.REPORT_DIR).iterdir())


def test_fragment_document_sums_counts_per_kind_and_sorts_items():
    doc = findings.fragment_document(found())
    fragment = ReportFragment.from_json(doc)  # a versioned work record
    assert fragment.counts == {findings.DUPLICATE: 1, findings.ERROR: 1, findings.IGNORED: 2,
                               findings.LABELLED: 7, findings.UNLISTED: 2}
    assert list(fragment.items) == [DUPLICATE, MISSING, UNLISTED_A, UNLISTED_B]  # by kind, then path


def test_every_fragment_is_written_even_when_nothing_was_found(tmp_path):
    findings.write_fragments(str(tmp_path), [])
    files = fragment_files(tmp_path)
    assert [f.name for f in files] == ["part-%05d-of-%05d.json" % (i, findings.FRAGMENTS)
                                       for i in range(findings.FRAGMENTS)]
    for f in files:
        assert ReportFragment.from_json(json.loads(f.read_text())) == ReportFragment({}, ())
    assert findings.read_report(str(tmp_path)) == ({}, [])


def test_written_fragments_read_back_as_the_merged_report(tmp_path):
    findings.write_fragments(str(tmp_path), found())
    counts, items = findings.read_report(str(tmp_path))
    expected = {}
    for kind, n, _ in found():
        expected[kind] = expected.get(kind, 0) + n
    assert {k: n for k, n in counts.items() if n} == expected
    assert list(counts) == sorted(counts)
    assert items == [DUPLICATE, MISSING, UNLISTED_A, UNLISTED_B]
    assert len(fragment_files(tmp_path)) == findings.FRAGMENTS
    # placed as the Beam writer (WriteFindings) places them: an item by its content, a count by its kind
    docs = [json.loads(f.read_text()) for f in fragment_files(tmp_path)]
    for kind, n, item in found():
        if item is not None:
            holding = [i for i, d in enumerate(docs) if item in d["items"]]
            assert holding == [findings.fragment_of(kind, item)], item
        else:
            holding = [i for i, d in enumerate(docs) if d["counts"].get(kind)]
            assert holding == [findings.fragment_of(kind, None)], kind


def test_counts_of_one_kind_in_several_fragments_are_summed(tmp_path):
    # the Beam writer may leave one kind's count in several fragments; read_report adds them up
    spread = {0: [(findings.LABELLED, 5, None), (findings.UNLISTED, 0, UNLISTED_B)],
              9: [(findings.LABELLED, 2, None), (findings.UNLISTED, 1, None)],
              15: [(findings.UNLISTED, 1, UNLISTED_A)]}
    for index in range(findings.FRAGMENTS):
        path = tmp_path / findings.fragment_path(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(findings.fragment_document(spread.get(index, []))))
    counts, items = findings.read_report(str(tmp_path))
    assert counts == {findings.LABELLED: 7, findings.UNLISTED: 2}
    assert items == [UNLISTED_A, UNLISTED_B], "sorted across fragments, not in fragment order"


def test_fragments_do_not_depend_on_the_order_findings_arrive_in(tmp_path):
    findings.write_fragments(str(tmp_path / "a"), found())
    shuffled = found()
    random.Random(3).shuffle(shuffled)
    findings.write_fragments(str(tmp_path / "b"), shuffled)
    for fa, fb in zip(fragment_files(tmp_path / "a"), fragment_files(tmp_path / "b")):
        assert fa.read_bytes() == fb.read_bytes(), fa.name


def test_a_missing_or_foreign_fragment_is_not_read_as_an_empty_one(tmp_path):
    findings.write_fragments(str(tmp_path), found())
    victim = tmp_path / findings.fragment_path(5)
    victim.write_text(json.dumps({"version": 0, "counts": {}, "items": []}))
    with pytest.raises(WorkRecordError, match="ReportFragment"):
        findings.read_report(str(tmp_path))
    victim.unlink()
    with pytest.raises(FileNotFoundError):
        findings.read_report(str(tmp_path))


def test_skipped_inputs_become_error_records():
    error = ErrorRecord("cat/empty.jpg", "empty_file", STAGE_LIST, "0 bytes")
    kind, count, item = error_finding(error)
    assert (kind, count) == (findings.SKIPPED, 1)
    assert findings.to_error(item) == error
    assert findings.to_error(MISSING) == ErrorRecord("z/gone.jpg", "missing", STAGE_LIST, "listed but not found")
    assert findings.to_error({"path": "p", "reason": "r"}) == ErrorRecord("p", "r", STAGE_LIST, "")


def test_report_lines_are_one_sorted_key_json_object_each():
    text = findings.to_jsonl([{"path": "é.jpg", "kind": "unlisted"}, DUPLICATE])
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 2
    assert lines[0] == '{"kind": "unlisted", "path": "é.jpg"}'
    assert json.loads(lines[1]) == DUPLICATE


def test_a_report_is_expected_only_with_labels_or_duplicate_checks(tmp_path):
    base = dict(input=str(tmp_path / "in"), output=str(tmp_path / "out"))
    assert not findings.expected(from_kwargs(**base))
    assert findings.expected(from_kwargs(**base, check_duplicates=True))
    assert findings.expected(from_kwargs(**base, dedup=True))
    assert findings.expected(from_kwargs(**base, labels=str(tmp_path / "labels.csv")))


def test_tagged_values_split_into_main_elements_and_findings():
    tagged = [(findings.MAIN, "x"), (findings.FOUND, ("error", 1, MISSING)), (findings.MAIN, "y")]
    assert [v for t in tagged for v in findings.main_of(t)] == ["x", "y"]
    assert [v for t in tagged for v in findings.found_of(t)] == [("error", 1, MISSING)]


def test_report_items_beyond_what_is_held_are_sorted_on_disk_and_merged_in_report_order():
    rng = random.Random(7)
    items = [{"kind": findings.DUPLICATE, "paths": ["c/%03d.jpg" % i, "c/%03d-copy.jpg" % i], "split": "train"}
             for i in range(40)]
    items += [{"kind": findings.UNLISTED, "path": p} for p in ("é/ü.jpg", "a/\udcff.jpg", "a/b.jpg", "Z.jpg")]
    items += [dict(DUPLICATE), dict(DUPLICATE), MISSING]  # the same item twice: both lines are kept
    rng.shuffle(items)
    expected = findings.to_jsonl(sorted(items, key=findings.sort_key)).splitlines()

    report = findings.ReportItems(held=5)
    for item in items:
        report.add(item)
    assert report.runs == len(items) // 5, "items beyond the 5 held go to runs on disk"
    runs_dir = report._dir
    assert list(report.lines()) == expected
    assert list(report.lines()) == expected, "the runs can be read more than once until closed"
    report.close()
    assert not os.path.exists(runs_dir)
    assert report.count == len(items)

    held = findings.ReportItems()
    for item in items:
        held.add(item)
    assert held.runs == 0 and list(held.lines()) == expected
