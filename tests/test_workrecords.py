"""The _work/ records: typed, versioned, and read back as written; a record of another version is refused."""

import json
from array import array

import pytest

from imgrec.errors import ErrorRecord, JobFailed, UsageError
from imgrec.progress import PROGRESS_DIR, ProgressMonitor, ProgressWriter
from imgrec.shardplan import PartSpec, Plan, ShardTask, load_plan, save_plan
from imgrec.workrecords import (
    Failure, Heartbeat, ReportFragment, ShardRecord, WorkRecordError, read_failures, record_failure,
)


def _shard():
    return ShardRecord(
        split="train", shard=1, shards=2, rec="train/data-00001-of-00002.rec", idx="train/data-00001-of-00002.idx",
        records=2, planned=3, bytes=120, sha256="ab" * 32, digest="d1", first_id=5, offsets=array("q", [0, 60]),
        lst_file="_work/shards/train-data-00001-of-00002.lst", lst_bytes=44,
        errors=(ErrorRecord("cat/c.jpg", "decode_failed", "encode", "not an image"),),
        shorter_edges={"100": 2}, found=3, found_file="_work/shards/train-data-00001-of-00002.found.jsonl",
    )


@pytest.mark.parametrize("record", [
    _shard(),
    ReportFragment({"IMAGES": 3, "empty_class": 1}, ({"kind": "empty_class", "class": "bird"},)),
    Heartbeat(10, 2048, 1),
    Failure("output is a file: /x", 2, "StorageError"),
])
def test_records_read_back_as_written_through_json(record):
    text = json.dumps(record.to_json())
    back = type(record).from_json(json.loads(text))
    assert back == record
    assert json.loads(text)["version"] == type(record).VERSION


@pytest.mark.parametrize("cls,doc", [
    (Heartbeat, {"images": 1, "bytes": 2, "errors": 0}),  # written before records had versions
    (ReportFragment, {"version": 99, "counts": {}, "items": []}),
    (Failure, {"version": 0, "message": "x"}),
    (ShardRecord, {**_shard().to_json(), "version": 1}),
    (ShardRecord, {**_shard().to_json(), "version": 3}),  # report items inline
    (ShardRecord, {**_shard().to_json(), "version": 4}),  # .lst lines inline: written by the previous release
])
def test_a_record_of_another_version_is_refused_by_name(cls, doc):
    with pytest.raises(WorkRecordError, match=cls.__name__):
        cls.from_json(doc)


def test_shard_record_keeps_resumed_out_of_the_file():
    d = ShardRecord.loads(_shard().dumps())
    assert not d.resumed and "resumed" not in _shard().to_json()


def test_plan_round_trip_keeps_tasks_parts_classes_and_width(tmp_path):
    task = ShardTask("train", 0, 1, 0, 3, 300, (PartSpec(0, 10, 2, 200, 0), PartSpec(10, 20, 1, 100, 2)))
    plan = Plan({"train": [task]}, {"train": (3, 300)})
    save_plan(str(tmp_path), plan, ["cat", "dog"], 2, ["look-alike"])
    back, classes, width, warnings = load_plan(str(tmp_path))
    assert back.tasks == plan.tasks and back.totals == plan.totals
    assert (classes, width, warnings) == (["cat", "dog"], 2, ["look-alike"])


def test_failures_recorded_by_stages_are_read_back_with_their_exit_code(tmp_path):
    record_failure(str(tmp_path), UsageError("--labels: line 3 has 2 label columns"))
    record_failure(str(tmp_path), JobFailed("shard 1 of train did not finish"))
    (tmp_path / "_work" / "failures" / "junk.json").write_text("{not json")
    got = sorted(read_failures(str(tmp_path)), key=lambda f: f.exit_code)
    assert [(f.exit_code, f.kind) for f in got] == [(1, "JobFailed"), (2, "UsageError")]
    assert "line 3" in got[1].message
    assert read_failures(str(tmp_path / "nowhere")) == []


def test_monitor_sums_heartbeats_and_skips_one_it_cannot_read(tmp_path):
    a, b = ProgressWriter(str(tmp_path)), ProgressWriter(str(tmp_path))
    a.add(images=3, nbytes=300, force=True)
    b.add(images=2, nbytes=50, errors=1, force=True)
    (tmp_path / PROGRESS_DIR / "old.json").write_text(json.dumps({"images": 100, "bytes": 1, "errors": 0}))
    assert ProgressMonitor(str(tmp_path))._read() == (5, 350, 1)


def test_shard_record_offsets_travel_as_one_base64_string_and_come_back_as_int64():
    offsets = array("q", [0, 60, 5 << 33, (1 << 62) + 7])  # a .rec beyond 4 GiB keeps exact offsets
    record = ShardRecord(**{**_shard().__dict__, "offsets": offsets, "records": 4})
    doc = json.loads(record.dumps())
    assert isinstance(doc["offsets"], str) and len(doc["offsets"]) == 44  # 32 bytes of int64, base64
    back = ShardRecord.loads(record.dumps())
    assert back.offsets == offsets and back.offsets.typecode == "q"
    assert ShardRecord.loads(ShardRecord(**{**_shard().__dict__, "offsets": (0, 60)}).dumps()).offsets == array("q", [0, 60])
