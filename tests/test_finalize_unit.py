"""imgrec.finalize without Beam: a tiny output folder built by hand as the earlier steps leave it.

Each test builds ``OUT/_work/plan.json`` (``shardplan.save_plan``), real shard files (``recordio``),
``OUT/_work/shards/*.json`` (``ShardRecord``) and the report fragments (``findings.write_fragments``),
then runs the finalize steps and reads what they wrote back with the RecordIO reader.
Expected values come from the fixture's own images, never from finalize's output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

import imagefactory as fac
from imgrec import findings, recordio, shardplan, storage
from imgrec.errors import STAGE_LIST, STAGE_READ, ErrorRecord
from imgrec.finalize import (IncompleteError, TooManyErrorsError, assemble_splits, commit, finalize, gather,
                             job_metrics, manifest_document, merge_edges, shard_lst_lines, write_side_files)
from imgrec.incremental import load_previous
from imgrec.items import error_finding
from imgrec.labels import encode_label
from imgrec.layout import CLASSES_JSON, ERRORS, LABELS_TXT, MANIFEST, OWNER_MARK, REPORT, SAGEMAKER, SUMMARY, Layout
from imgrec.options import from_kwargs
from imgrec.ownership import dataset_files, layout_for
from imgrec.shardplan import Plan, ShardTask
from imgrec.shardwriter import format_lst_line
from imgrec.workrecords import ShardRecord

CLASSES = ["cat", "dog"]


@dataclass
class Img:
    """One planned image of a shard: written (a real JPEG of ``size``) or skipped (``reason``)."""

    path: str
    classes: tuple[int, ...] = ()
    size: tuple[int, int] = (64, 48)
    reason: str = ""  # skipped while reading

    @property
    def edge(self) -> int:
        return min(self.size)


@dataclass
class Built:
    """What a fixture wrote, by split: the records in id order (id, Img, payload bytes)."""

    written: dict[str, list[tuple[int, Img, bytes]]] = field(default_factory=dict)
    skipped: list[Img] = field(default_factory=list)


class Output:
    """An output folder as the planning and writing steps leave it, written shard by shard."""

    def __init__(self, out: Path, layout: Layout, label_format: str = "", width: int = 0):
        self.out, self.layout = out, layout
        self.label_format, self.width = label_format, width
        self.tasks: dict[str, list[ShardTask]] = {}
        self.records: list[ShardRecord] = []
        self.built = Built()
        self.seed = 0

    def label(self, img: Img):
        if not self.label_format:
            return float(img.classes[0])
        return encode_label(img.classes, self.label_format, self.width)

    def shard(self, split: str, shard: int, shards: int, first_id: int, images: list[Img]) -> ShardRecord:
        rec_rel, idx_rel = self.layout.rec(split, shard, shards), self.layout.idx(split, shard, shards)
        offsets, lst, errors, edges, idx_lines = [], [], [], {}, []
        (self.out / rec_rel).parent.mkdir(parents=True, exist_ok=True)
        with open(self.out / rec_rel, "wb") as f:
            writer = recordio.RecordWriter(f)
            for i, img in enumerate(images):
                rid = first_id + i
                if img.reason:
                    errors.append(ErrorRecord(img.path, img.reason, STAGE_READ, "cannot be read"))
                    self.built.skipped.append(img)
                    continue
                self.seed += 1
                payload = recordio.pack(self.label(img), rid, fac.jpeg(*img.size, seed=self.seed))
                offset = writer.write(payload)
                offsets.append(offset)
                lst.append(format_lst_line(rid, self.label(img), img.path))
                idx_lines.append(recordio.format_idx_line(rid, offset))
                edges[str(img.edge)] = edges.get(str(img.edge), 0) + 1
                self.built.written.setdefault(split, []).append((rid, img, payload))
            writer.close()
        (self.out / idx_rel).parent.mkdir(parents=True, exist_ok=True)
        (self.out / idx_rel).write_text("".join(idx_lines))
        lst_rel = self.layout.shard_lst(split, shard, shards)
        lst_bytes = "".join(lst).encode()
        (self.out / lst_rel).parent.mkdir(parents=True, exist_ok=True)
        (self.out / lst_rel).write_bytes(lst_bytes)
        record = ShardRecord(
            split=split, shard=shard, shards=shards, rec=rec_rel, idx=idx_rel, records=len(offsets),
            planned=len(images), bytes=writer.offset, sha256=writer.sha256(), digest="fixture", first_id=first_id,
            offsets=tuple(offsets), lst_file=lst_rel, lst_bytes=len(lst_bytes), errors=tuple(errors),
            shorter_edges=edges,
        )
        task = ShardTask(split, shard, shards, first_id, len(images), 1000 * len(images))
        self.tasks.setdefault(split, []).append(task)
        self.records.append(record)
        return record

    def found_while_writing(self, index: int, items: list[dict]) -> None:
        """Report items found while writing shard ``index``, in a file beside its record, as the writer keeps them."""
        record = self.records[index]
        rel = self.layout.shard_found(record.split, record.shard, record.shards)
        (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.out / rel).write_text("".join(json.dumps(item, sort_keys=True) + "\n" for item in items))
        self.records[index] = replace(record, found=len(items), found_file=rel)

    def finish(self, found=(), images: int | None = None) -> None:
        """The plan, every shard's completion record and the report fragments (``found``: extra findings)."""
        totals = {s: (sum(t.records for t in ts), sum(t.bytes for t in ts)) for s, ts in self.tasks.items()}
        shardplan.save_plan(str(self.out), Plan(self.tasks, totals), CLASSES, self.width)
        for record in self.records:
            path = self.out / self.layout.shard_record(record.split, record.shard, record.shards)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(record.dumps())
        planned = sum(t.records for ts in self.tasks.values() for t in ts)
        counted = [(findings.IMAGES, planned if images is None else images, None)]
        findings.write_fragments(str(self.out), counted + list(found))


LIST_SKIP = ErrorRecord("dog/empty.jpg", "empty_file", STAGE_LIST, "0 bytes")


def standard(out: Path, layout: Layout | None = None) -> Output:
    """Train in two shards (one image skipped while reading), validation in one, a test split of one tiny image."""
    o = Output(out, layout or Layout())
    o.shard("train", 0, 2, 0, [Img("cat/a.jpg", (0,), (64, 48)), Img("dog/b.jpg", (1,), (80, 60)),
                              Img("cat/broken.jpg", reason="truncated")])
    o.shard("train", 1, 2, 3, [Img("dog/c.jpg", (1,), (100, 70)), Img("dog/d.jpg", (1,), (64, 64))])
    o.shard("validation", 0, 1, 0, [Img("cat/e.jpg", (0,), (90, 56)), Img("dog/f.jpg", (1,), (72, 50))])
    o.shard("test", 0, 1, 0, [Img("cat/tiny.jpg", (0,), (30, 20))])
    o.finish([error_finding(LIST_SKIP), (findings.IGNORED, 1, None)])
    return o


def options_for(tmp_path: Path, **kw):
    return from_kwargs(input=str(tmp_path / "photos"), output=str(tmp_path / "out"), **kw)


@pytest.fixture
def out(tmp_path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def read_lst(path: Path) -> list[tuple[int, tuple[float, ...], str]]:
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        rows.append((int(fields[0]), tuple(float(v) for v in fields[1:-1]), fields[-1]))
    return rows


def records_of(out: Path, split_doc: dict) -> list[tuple[int, int, bytes]]:
    """(id, offset in the split's shards laid end to end, payload) of every record, read from the .rec files."""
    found, base = [], 0
    for shard in split_doc["shards"]:
        data = (out / shard["rec"]).read_bytes()
        for raw in recordio.read_records(io.BytesIO(data)):
            header, _ = recordio.unpack(raw.payload)
            found.append((header.id, base + raw.offset, raw.payload))
        base += len(data)
    return found


def check_split_files(out: Path, split_doc: dict) -> None:
    """The merged index and the .lst agree with the records found in the shards, in order."""
    found = records_of(out, split_doc)
    merged = recordio.parse_idx((out / split_doc["merged_idx"]).read_text())
    assert merged == [(rid, offset) for rid, offset, _ in found]
    blob = io.BytesIO(b"".join((out / s["rec"]).read_bytes() for s in split_doc["shards"]))
    for rid, offset in merged:  # random access through the merged index lands on the record of that id
        assert recordio.unpack(recordio.read_record_at(blob, offset))[0].id == rid
    assert [row[0] for row in read_lst(out / split_doc["lst"])] == [rid for rid, _, _ in found]
    assert split_doc["records"] == len(found)
    assert split_doc["bytes"] == sum((out / s["rec"]).stat().st_size for s in split_doc["shards"])


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- a whole finalize


def test_finalize_writes_lists_merged_indexes_and_a_manifest_that_matches_the_shards(tmp_path, out):
    built = standard(out).built
    options = options_for(tmp_path)
    manifest = finalize(options)

    assert list(manifest["splits"]) == ["train", "validation", "test"]
    for split, doc in manifest["splits"].items():
        check_split_files(out, doc)
        written = built.written[split]
        assert read_lst(out / doc["lst"]) == [(rid, (float(img.classes[0]),), img.path) for rid, img, _ in written]
        assert [p for _, _, p in records_of(out, doc)] == [p for _, _, p in written]
        for shard in doc["shards"]:
            assert shard["sha256"] == hashlib.sha256((out / shard["rec"]).read_bytes()).hexdigest()
        assert doc["next_id"] == max(rid for rid, _, _ in written) + 1
    assert [s["rec"] for s in manifest["splits"]["train"]["shards"]] == [
        "train/data-00000-of-00002.rec", "train/data-00001-of-00002.rec"]

    expected_counts = {}
    for split, rows in built.written.items():
        for _, img, _ in rows:
            per = expected_counts.setdefault(split, {})
            per[CLASSES[img.classes[0]]] = per.get(CLASSES[img.classes[0]], 0) + 1
    assert manifest["class_counts"] == expected_counts
    assert manifest["images_listed"] == 8 and manifest["ignored_non_image_files"] == 1
    assert manifest["metrics"] == {
        "bytes_written": sum(d["bytes"] for d in manifest["splits"].values()), "images_listed": 8,
        "images_skipped": 1, "images_written": 7, "shards_written": 4}
    edges = {}
    for rows in built.written.values():
        for _, img, _ in rows:
            edges[str(img.edge)] = edges.get(str(img.edge), 0) + 1
    assert manifest["shorter_edges"] == dict(sorted(edges.items(), key=lambda kv: int(kv[0])))

    on_disk = json.loads((out / MANIFEST).read_text())
    assert on_disk == {k: v for k, v in manifest.items() if k != "summary_text"}
    assert (out / SUMMARY).read_text() == manifest["summary_text"]
    assert json.loads((out / CLASSES_JSON).read_text()) == {"cat": 0, "dog": 1}
    assert (out / LABELS_TXT).read_text() == "cat\ndog\n"
    assert not (out / REPORT).exists(), "no report without --labels or --check-duplicates"
    assert not (out / "_work").exists(), "finalize clears _work after the manifest"


def test_errors_jsonl_lists_every_skipped_input_sorted_by_path(tmp_path, out):
    standard(out)
    manifest = finalize(options_for(tmp_path))
    lines = [json.loads(line) for line in (out / ERRORS).read_text().splitlines()]
    assert [(e["path"], e["reason"], e["stage"]) for e in lines] == [
        ("cat/broken.jpg", "truncated", STAGE_READ),  # found by a shard's writer
        ("dog/empty.jpg", "empty_file", STAGE_LIST),  # found by the listing, through the report fragments
    ]
    assert manifest["errors"] == 2
    assert manifest["errors_by_reason"] == {"empty_file": 1, "truncated": 1}


def test_sagemaker_json_reads_image_shape_from_the_channels_only(tmp_path, out):
    built = standard(out).built
    manifest = finalize(options_for(tmp_path))
    doc = json.loads((out / SAGEMAKER).read_text())
    assert doc == manifest["sagemaker"]
    side = int(doc["image_shape"].split(",")[1])
    channel_edges = [img.edge for s in ("train", "validation") for _, img, _ in built.written[s]]
    test_edges = [img.edge for _, img, _ in built.written["test"]]
    assert side <= min(channel_edges) or doc["resize"] > side
    assert side > max(test_edges), "the held-out test split's tiny image does not shrink image_shape"
    assert doc["num_training_samples"] == len(built.written["train"])
    assert set(doc["channels"]) == {"train", "validation"}
    assert doc["held_out"] == {"test": {"prefix": "test/", "records": 1}}


def test_manifest_is_the_last_file_written_and_names_only_files_already_complete(tmp_path, out, monkeypatch):
    standard(out)
    events: list[tuple[str, str]] = []
    at_commit: set[str] = set()

    def rel(uri):
        return os.path.relpath(uri, out)

    real_atomic, real_delete = storage.atomic_writer, storage.delete

    @contextlib.contextmanager
    def atomic_writer(uri):  # every write of the storage layer (write_text, write_bytes) goes through here
        if rel(uri) == MANIFEST:
            at_commit.update(files_under(out))
        with real_atomic(uri) as f:
            yield f
        events.append(("write", rel(uri)))

    def delete(uri):
        real_delete(uri)
        events.append(("delete", rel(uri)))

    monkeypatch.setattr(storage, "atomic_writer", atomic_writer)
    monkeypatch.setattr(storage, "delete", delete)
    manifest = finalize(options_for(tmp_path))

    writes = [name for kind, name in events if kind == "write"]
    assert writes[-1] == MANIFEST and writes.count(MANIFEST) == 1
    after = events[events.index(("write", MANIFEST)) + 1:]
    assert after and all(kind == "delete" and name.startswith("_work/") for kind, name in after)
    named = dataset_files(manifest) | {CLASSES_JSON, LABELS_TXT, ERRORS, SAGEMAKER, SUMMARY}
    assert named <= at_commit, "every file the manifest names exists when it is written"
    assert not [n for n in at_commit if n.split("/")[-1].startswith(".")], "no temporary file left at the commit"


def test_single_file_is_the_shards_end_to_end_with_the_merged_index(tmp_path, out):
    standard(out)
    manifest = finalize(options_for(tmp_path, single_file=True))
    doc = manifest["splits"]["train"]
    single = doc["single_file"]
    assert single["rec"] == "single/train/data.rec"
    assert (out / single["rec"]).read_bytes() == b"".join((out / s["rec"]).read_bytes() for s in doc["shards"])
    assert (out / single["idx"]).read_text() == (out / doc["merged_idx"]).read_text()
    with open(out / single["rec"], "rb") as f:
        ids = [recordio.unpack(r.payload)[0].id for r in recordio.read_records(f)]
    assert single["records"] == len(ids) == doc["records"]
    assert manifest["sagemaker"]["channels"]["train"]["prefix"] == "single/train/"


def test_multi_label_records_count_every_class_they_carry(tmp_path, out):
    o = Output(out, Layout(), "class-ids", 2)
    o.shard("train", 0, 1, 0, [Img("a.jpg", (0, 1)), Img("b.jpg", (1,)), Img("c.jpg", (1, 0))])
    o.finish()
    manifest = finalize(options_for(tmp_path, label_format="class-ids"))
    assert manifest["class_counts"] == {"train": {"cat": 2, "dog": 3}}
    assert manifest["labels"] == {"source": "folders", "format": "class-ids", "width": 2, "pad": -1.0}
    assert [row[1] for row in read_lst(out / "lists/train.lst")] == [(0.0, 1.0), (1.0, -1.0), (1.0, 0.0)]
    assert manifest["sagemaker"]["multi_label"] == 1 and manifest["sagemaker"]["label_width"] == 2


# ---------------------------------------------------------------- a job that did not finish


def test_a_missing_shard_record_raises_a_clear_error_and_writes_no_manifest(tmp_path, out):
    standard(out)
    missing = out / "_work/shards/train-data-00001-of-00002.json"
    missing.unlink()
    with pytest.raises(IncompleteError) as caught:
        finalize(options_for(tmp_path))
    text = "\n".join(caught.value.lines())
    assert str(missing) in text and "shard 1 of train" in text and "no manifest written" in text
    assert caught.value.exit_code == 1
    assert not (out / MANIFEST).exists()
    assert not (out / "lists").exists(), "nothing assembled from a partial job"
    assert (out / "_work/plan.json").exists(), "_work stays for the next run (--resume)"


def test_a_shard_record_that_disagrees_with_the_plan_is_refused(tmp_path, out):
    standard(out)
    path = out / "_work/shards/validation-data-00000-of-00001.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "planned": doc["planned"] + 1}))
    with pytest.raises(IncompleteError, match="shard 0 of validation holds 3 planned images, the plan says 2"):
        finalize(options_for(tmp_path))
    assert not (out / MANIFEST).exists()


def test_a_shard_record_of_another_version_is_not_misread(tmp_path, out):
    standard(out)
    path = out / "_work/shards/test-data-00000-of-00001.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 1}))
    with pytest.raises(IncompleteError, match="cannot be read .*ShardRecord record of version 1"):
        finalize(options_for(tmp_path))
    assert not (out / MANIFEST).exists()


def test_a_missing_report_fragment_or_plan_means_the_job_did_not_finish(tmp_path, out):
    standard(out)
    fragment = out / findings.fragment_path(7)
    kept = fragment.read_text()
    fragment.unlink()
    with pytest.raises(IncompleteError, match="report fragments .* are missing"):
        finalize(options_for(tmp_path))
    fragment.write_text(kept)
    (out / "_work/plan.json").unlink()
    with pytest.raises(IncompleteError, match="plan.json is missing: shard planning did not finish"):
        finalize(options_for(tmp_path))
    assert not (out / MANIFEST).exists()


def test_too_many_skipped_inputs_write_errors_jsonl_but_no_manifest(tmp_path, out):
    standard(out)
    with pytest.raises(TooManyErrorsError, match="2 of 9 inputs were skipped, more than --max-errors allows \\(1\\)"):
        finalize(options_for(tmp_path, max_errors=1))
    assert len((out / ERRORS).read_text().splitlines()) == 2
    assert not (out / MANIFEST).exists() and not (out / SAGEMAKER).exists()


# ---------------------------------------------------------------- the named steps


def test_gather_merges_the_report_and_the_findings_of_the_shard_records(tmp_path, out):
    o = Output(out, Layout())
    record = o.shard("train", 0, 1, 0, [Img("cat/a.jpg", (0,)), Img("cat/a-copy.jpg", (0,))])
    identical = {"kind": findings.DUPLICATE, "paths": ["cat/a-copy.jpg", "cat/a.jpg"], "split": "train"}
    o.found_while_writing(0, [identical])
    unlisted = {"kind": findings.UNLISTED, "path": "dog/z.jpg"}
    o.finish([(findings.UNLISTED, 1, unlisted), error_finding(LIST_SKIP), (findings.IGNORED, 2, None)])
    options = options_for(tmp_path, check_duplicates=True)
    got = gather(options, layout_for(options))

    assert got.classes == CLASSES and got.listed == 2 and got.ignored == 2
    assert [r.rec for r in got.shards["train"]] == ["train/data-00000-of-00001.rec"]
    assert [json.loads(line) for line in got.report.lines()] == [identical, unlisted], \
        "sorted by kind; skipped inputs are not report items"
    assert got.report_counts == {findings.DUPLICATE: 1, findings.IGNORED: 2, findings.UNLISTED: 1}
    assert got.errors == [LIST_SKIP]

    write_side_files(options, got, findings.expected(options))
    report = [json.loads(line) for line in (out / REPORT).read_text().splitlines()]
    assert report == [identical, unlisted]


@pytest.mark.parametrize("damage", ["missing", "short"])
def test_a_shard_whose_found_items_are_gone_or_short_means_the_job_did_not_finish(tmp_path, out, damage):
    o = Output(out, Layout())
    o.shard("train", 0, 1, 0, [Img("cat/a.jpg", (0,)), Img("cat/a-copy.jpg", (0,))])
    identical = {"kind": findings.DUPLICATE, "paths": ["cat/a-copy.jpg", "cat/a.jpg"], "split": "train"}
    o.found_while_writing(0, [identical, dict(identical, split="validation")])
    o.finish()
    found = out / o.records[0].found_file
    if damage == "missing":
        found.unlink()
    else:
        found.write_text(found.read_text().splitlines(keepends=True)[0])
    options = options_for(tmp_path, check_duplicates=True)
    with pytest.raises(IncompleteError, match="shard 0 of train did not finish"):
        gather(options, layout_for(options))


@pytest.mark.parametrize("damage", ["missing", "short", "cut", "longer"])
def test_a_shard_whose_lst_lines_are_gone_or_changed_means_the_job_did_not_finish(tmp_path, out, damage):
    o = Output(out, Layout())
    o.shard("train", 0, 1, 0, [Img("cat/a.jpg", (0,)), Img("dog/b.jpg", (1,)), Img("dog/c.jpg", (1,))])
    o.finish()
    lst = out / o.records[0].lst_file
    lines = lst.read_bytes().splitlines(keepends=True)
    if damage == "missing":
        lst.unlink()
    elif damage == "short":
        lst.write_bytes(b"".join(lines[:-1]))
    elif damage == "cut":
        lst.write_bytes(b"".join(lines)[:-1])  # the last line without its newline
    else:
        lst.write_bytes(b"".join(lines + lines[-1:]))
    options = options_for(tmp_path)
    layout = layout_for(options)
    got = gather(options, layout)
    with pytest.raises(IncompleteError, match="shard 0 of train did not finish"):
        assemble_splits(options, layout, got, None)


def test_assemble_splits_offsets_continue_across_shards(tmp_path, out):
    standard(out)
    options = options_for(tmp_path)
    layout = layout_for(options)
    got = gather(options, layout)
    done = assemble_splits(options, layout, got, None)
    train = done.splits["train"]
    shard0 = (out / train["shards"][0]["rec"]).stat().st_size
    merged = recordio.parse_idx((out / train["merged_idx"]).read_text())
    light = got.shards["train"][1]
    assert not light.offsets, "gather keeps no shard's offsets: they are read again per split"
    second = ShardRecord.loads((out / layout.shard_record(light.split, light.shard, light.shards)).read_text())
    assert merged[-len(second.offsets):] == [(int(line.split(b"\t")[0]), shard0 + offset)
                                             for line, offset in zip(shard_lst_lines(str(out), second), second.offsets)]
    check_split_files(out, train)
    assert done.edges_by_split["test"] == {20: 1} and done.unsplit_edges == {}
    assert sorted(e.path for e in got.errors) == ["cat/broken.jpg", "dog/empty.jpg"], "shard errors join the report's"


def test_commit_removes_stale_shards_of_ours_and_keeps_everyone_elses(tmp_path, out):
    standard(out)
    for rel in ("train/data-00007-of-00009.rec", "idx/train/data-00007-of-00009.idx", "train/README.txt",
                "train/data-00008-of-00009.rec", "_work/notes.txt"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    # a file that looks like ours but was there before this tool wrote into the folder
    mark = {"written_by": "imgrec-beam", "foreign": ["train/data-00008-of-00009.rec"]}
    (out / OWNER_MARK).write_text(json.dumps(mark))
    options = options_for(tmp_path)
    layout = layout_for(options)
    got = gather(options, layout)
    done = assemble_splits(options, layout, got, None)
    write_side_files(options, got, False)
    manifest = manifest_document(options, None, got, done, {}, [], {})
    summary = commit(options, None, manifest)

    left = files_under(out)
    assert "train/data-00007-of-00009.rec" not in left and "idx/train/data-00007-of-00009.idx" not in left
    assert {"train/README.txt", "train/data-00008-of-00009.rec", "_work/notes.txt"} <= left
    assert dataset_files(manifest) <= left
    assert not any(n.startswith("_work/") and n != "_work/notes.txt" for n in left)
    assert (out / SUMMARY).read_text() == summary and json.loads((out / MANIFEST).read_text()) == manifest


def test_merge_edges_and_job_metrics(tmp_path, out):
    assert merge_edges([{48: 1, 60: 2}, {}, {60: 1, 20: 4}]) == {48: 1, 60: 3, 20: 4}
    standard(out)
    options = options_for(tmp_path)
    got = gather(options, layout_for(options))
    records = [r for rs in got.shards.values() for r in rs]
    assert job_metrics(got, None)["shards_written"] == len(records) == 4
    assert job_metrics(got, 1)["shards_written"] == 1, "a --resume run counts only the shards it wrote"


# ---------------------------------------------------------------- --incremental


def first_dataset(tmp_path, out):
    standard(out)
    options = options_for(tmp_path, incremental=True)
    m0 = finalize(options)
    previous = load_previous(str(out), options.identity())
    assert previous is not None and previous.batch == 1
    return options, m0, previous


def test_an_increment_appends_to_lists_and_indexes_under_new_names_then_drops_the_old(tmp_path, out):
    options, m0, previous = first_dataset(tmp_path, out)
    old = {rel: (out / rel).read_bytes() for rel in dataset_files(m0)}
    old_ids = {row[0] for row in read_lst(out / m0["splits"]["train"]["lst"])}
    first = previous.next_ids()["train"]
    o = Output(out, layout_for(options, previous))
    o.shard("train", 0, 2, first, [Img("cat/new.jpg", (0,), (66, 50)), Img("dog/new.jpg", (1,), (70, 52))])
    o.shard("train", 1, 2, first + 2, [Img("dog/gone.jpg", reason="truncated")])  # every image skipped
    o.finish()
    m1 = finalize(options, previous)

    train = m1["splits"]["train"]
    assert train["lst"] == "lists/train-inc0001.lst" and train["merged_idx"] == "idx/train-merged-inc0001.idx"
    assert (out / train["lst"]).read_bytes().startswith(old["lists/train.lst"])
    new_rows = read_lst(out / train["lst"])[len(old_ids):]
    assert [(r[0], r[2]) for r in new_rows] == [(first, "cat/new.jpg"), (first + 1, "dog/new.jpg")]
    assert not old_ids & {r[0] for r in new_rows}, "new ids never collide with the dataset's"
    assert [s["rec"] for s in train["shards"]] == [s["rec"] for s in m0["splits"]["train"]["shards"]] + [
        "train/data-inc0001-00000-of-00002.rec"], "the empty new shard is dropped"
    assert not (out / "train/data-inc0001-00001-of-00002.rec").exists()
    check_split_files(out, train)
    check_split_files(out, m1["splits"]["validation"])
    assert (out / "lists/validation-inc0001.lst").read_bytes() == old["lists/validation.lst"]
    for rel, data in old.items():  # the old shards are as they were; the old lists and merged indexes are gone
        if rel.startswith(("lists/", "idx/train-merged", "idx/validation-merged", "idx/test-merged")):
            assert not (out / rel).exists(), rel
        else:
            assert (out / rel).read_bytes() == data, rel
    assert m1["increments"] == 1
    assert m1["class_counts"]["train"] == {"cat": m0["class_counts"]["train"]["cat"] + 1,
                                           "dog": m0["class_counts"]["train"]["dog"] + 1}
    assert [e["path"] for e in map(json.loads, (out / ERRORS).read_text().splitlines())] == ["dog/gone.jpg"]


def test_an_increment_with_nothing_new_leaves_the_dataset_as_it_was(tmp_path, out):
    options, m0, previous = first_dataset(tmp_path, out)
    manifest_bytes = (out / MANIFEST).read_bytes()
    o = Output(out, layout_for(options, previous))
    o.shard("train", 0, 1, previous.next_ids()["train"], [Img("cat/bad.jpg", reason="truncated")])
    o.finish()
    result = finalize(options, previous)
    assert result["nothing_new"] is True and "Nothing new" in result["summary_text"]
    assert (out / MANIFEST).read_bytes() == manifest_bytes
    assert not (out / "train/data-inc0001-00000-of-00001.rec").exists()
    assert dataset_files(m0) <= files_under(out)
    assert not (out / "_work").exists()


def test_the_id_of_a_skipped_last_image_is_not_given_out_again(tmp_path, out):
    o = Output(out, Layout())
    o.shard("train", 0, 1, 0, [Img("cat/a.jpg", (0,)), Img("dog/b.jpg", (1,)), Img("cat/c.jpg", reason="truncated")])
    o.finish()
    options = options_for(tmp_path, incremental=True)
    finalize(options)
    previous = load_previous(str(out), options.identity())
    assert previous.next_ids()["train"] == 3, "ids 0..2 were planned, id 2 for the skipped cat/c.jpg"
