"""``python -m pipeline.verify``: a good output passes; each kind of damage is caught and named.

One real pipeline output (the bundled photos, several shards per split) is
built per module; every corruption test damages its own copy of it.
"""

import collections
import json
import re
import io
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SAMPLE, load_manifest, run_cli
from imgrec import recordio
from imgrec import verify as V


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "out"
    run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "6")
    manifest = load_manifest(out)
    assert len(manifest["splits"]["train"]["shards"]) >= 3
    return out, manifest


@pytest.fixture
def damaged(good, tmp_path):
    """A private copy of the good output, to be damaged by the test."""
    src, manifest = good
    dst = tmp_path / "out"
    shutil.copytree(src, dst)
    return dst, manifest


def run_verify(out, *args):
    proc = run_cli(out, *args, module="pipeline.verify", check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def failing(out, *args):
    proc = run_verify(out, *args)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors, proc.stderr
    return errors


def index_of(out: Path, shard: dict) -> list[tuple[int, int]]:
    return recordio.parse_idx((out / shard["idx"]).read_text())


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def whole_record_shard(out: Path, manifest: dict, min_records: int = 3):
    """A train shard with at least ``min_records`` records whose record 1 is stored in one part."""
    for shard in manifest["splits"]["train"]["shards"]:
        index = index_of(out, shard)
        if len(index) < min_records:
            continue
        with open(out / shard["rec"], "rb") as f:
            f.seek(index[1][1])
            magic, lrec = struct.unpack("<II", f.read(8))
        assert magic == recordio.MAGIC
        if lrec >> 29 == 0:
            return shard, index
    raise AssertionError("no suitable shard in the test output")


# ---------------------------------------------------------------- a good output


def test_good_output_passes_and_prints_counts_per_class_and_split(good):
    out, manifest = good
    proc = run_verify(out)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
    # The table, row by row, against counts made from the .lst files and the sample folders.
    expected = collections.Counter()
    for split, doc in manifest["splits"].items():
        for line in (out / doc["lst"]).read_text().splitlines():
            _, label, rel = line.split("\t")
            assert manifest["classes"][int(float(label))] == rel.split("/")[0]
            expected[(rel.split("/")[0], split)] += 1
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines() if line.split()}
    splits = list(manifest["splits"])
    assert rows["class"] == splits + ["total"]
    for name in sorted(p.name for p in SAMPLE.iterdir()):
        want = [expected[(name, s)] for s in splits]
        assert rows[name] == [str(n) for n in want + [sum(want)]]
    assert rows["total"][-1] == str(sum(expected.values())) == "30"
    assert "%d records in %d shards" % (30, sum(len(d["shards"]) for d in manifest["splits"].values())) in proc.stdout


def test_no_decode_still_checks_structure(good):
    out, _ = good
    proc = run_verify(out, "--no-decode")
    assert proc.returncode == 0 and "images not decoded" in proc.stdout


# ---------------------------------------------------------------- damage, each caught and named


def test_flipped_byte_in_a_length_word(damaged):
    out, manifest = damaged
    shard, index = whole_record_shard(out, manifest)
    offset = index[1][1]
    with open(out / shard["rec"], "rb") as f:
        f.seek(offset + 5)
        byte = f.read(1)[0]
    patch(out / shard["rec"], offset + 5, bytes([byte ^ 0x01]))  # length +/- 256
    errors = failing(out)
    assert len(errors) == 1, errors
    line = errors[0]
    # Named: the file, the record (index and id) and the byte where it starts, and the length word at fault.
    assert line.startswith("error: %s: " % shard["rec"]), line
    assert "record 1, id %d" % index[1][0] in line and "at byte %d" % offset in line, line
    assert "length word at byte %d" % (offset + 4) in line and "the length word is wrong" in line, line


def test_truncated_shard(damaged):
    out, manifest = damaged
    shard = manifest["splits"]["train"]["shards"][-1]
    index = index_of(out, shard)
    path = out / shard["rec"]
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    errors = failing(out)
    assert any(
        shard["rec"] in e and "truncated" in e and "at byte %d" % index[-1][1] in e and "record %d" % (len(index) - 1) in e
        for e in errors
    ), errors
    assert any(shard["rec"] in e and "is %d bytes" % (size - 100) in e and str(size) in e for e in errors), errors


def test_idx_offset_off_by_four(damaged):
    out, manifest = damaged
    shard, index = whole_record_shard(out, manifest)
    key, offset = index[2]
    lines = (out / shard["idx"]).read_text().splitlines(keepends=True)
    lines[2] = recordio.format_idx_line(key, offset + 4)
    (out / shard["idx"]).write_text("".join(lines))
    errors = failing(out)
    assert errors == [
        "error: %s: line 3: key %d points at byte %d, but record 2 (id %d) starts at byte %d"
        % (shard["idx"], key, offset + 4, key, offset)
    ]


def test_merged_index_offset_off_by_four(damaged):
    out, manifest = damaged
    rel = manifest["splits"]["train"]["merged_idx"]
    entries = recordio.parse_idx((out / rel).read_text())
    key, offset = entries[-1]
    entries[-1] = (key, offset + 4)
    (out / rel).write_text("".join(recordio.format_idx_line(k, o) for k, o in entries))
    errors = failing(out)
    assert len(errors) == 1 and rel in errors[0] and "line %d" % len(entries) in errors[0] and str(offset) in errors[0]


def test_missing_shard(damaged):
    out, manifest = damaged
    shard = manifest["splits"]["validation"]["shards"][0]
    (out / shard["rec"]).unlink()
    errors = failing(out)
    assert "error: %s: missing (listed in manifest.json)" % shard["rec"] in errors


def test_missing_index(damaged):
    out, manifest = damaged
    shard = manifest["splits"]["train"]["shards"][1]
    (out / shard["idx"]).unlink()
    errors = failing(out)
    assert "error: %s: missing (listed in manifest.json)" % shard["idx"] in errors


def test_label_out_of_range(damaged):
    out, manifest = damaged
    shard, index = whole_record_shard(out, manifest)
    key, offset = index[1]
    bad = manifest["num_classes"]
    patch(out / shard["rec"], offset + 8 + 4, struct.pack("<f", float(bad)))  # IRHeader: flag, label, id, id2
    errors = failing(out)
    assert errors[0] == "error: %s: record 1 (id %d) at byte %d: label %d is outside the class map (%d classes, labels 0-%d)" % (
        shard["rec"], key, offset, bad, bad, bad - 1
    )


def test_image_that_does_not_decode(damaged):
    out, manifest = damaged
    shard, index = whole_record_shard(out, manifest)
    key, offset = index[1]
    patch(out / shard["rec"], offset + 8 + recordio.IRHEADER_SIZE, bytes(64))  # the JPEG/PNG header zeroed
    errors = failing(out)
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: %s: record 1 (id %d) at byte %d: image does not decode" % (shard["rec"], key, offset))


def test_changed_image_byte_caught_by_sha256(damaged):
    out, manifest = damaged
    shard, index = whole_record_shard(out, manifest)
    offset = index[1][1] + 8 + recordio.IRHEADER_SIZE + 2000  # inside the compressed data: still decodes
    with open(out / shard["rec"], "rb") as f:
        f.seek(offset)
        byte = f.read(1)[0]
    patch(out / shard["rec"], offset, bytes([byte ^ 0x01]))
    errors = failing(out)
    assert any(shard["rec"] in e and "sha256" in e and shard["sha256"] in e for e in errors), errors


def test_missing_manifest(damaged):
    out, _ = damaged
    (out / "manifest.json").unlink()
    errors = failing(out)
    assert errors == ["error: manifest.json: missing: the job did not finish, or %s is not an output folder of this tool" % out]


def test_unlisted_shard_file(damaged):
    out, manifest = damaged
    first = manifest["splits"]["train"]["shards"][0]["rec"]
    stray = "train/data-00009-of-00010.rec"
    shutil.copy(out / first, out / stray)
    errors = failing(out)
    assert errors == ["error: %s: is not listed in manifest.json (left over from another run?)" % stray]


def problems_of(out) -> list[str]:
    """verify_output in this process (no decoding: these checks are about ids, counts, lists and indexes)."""
    return [str(p) for p in V.verify_output(str(out), decode=False).problems]


def set_record_id(out: Path, shard: dict, record: int, new_id: int) -> None:
    offset = index_of(out, shard)[record][1]
    patch(out / shard["rec"], offset + 8 + 8, struct.pack("<Q", new_id))  # IRHeader: flag, label, id, id2


def rewrite_manifest(out: Path, change) -> None:
    doc = load_manifest(out)
    change(doc)
    (out / "manifest.json").write_text(json.dumps(doc))


def test_an_id_used_twice_in_a_split_names_both_shards(damaged):
    out, manifest = damaged
    first, _, third = manifest["splits"]["train"]["shards"][:3]
    taken = index_of(out, first)[0][0]
    set_record_id(out, third, 1, taken)
    offset = index_of(out, third)[1][1]
    duplicates = [p for p in problems_of(out) if "used twice" in p]
    assert duplicates == ["%s: record 1 (id %d) at byte %d: id %d is used twice in train (also in %s)"
                          % (third["rec"], taken, offset, taken, first["rec"])]


def test_an_id_used_twice_within_one_shard_names_that_shard(damaged):
    out, manifest = damaged
    shard = manifest["splits"]["validation"]["shards"][0]
    index = index_of(out, shard)
    set_record_id(out, shard, 2, index[0][0])
    problems = problems_of(out)
    assert "%s: record 2 (id %d) at byte %d: id %d is used twice in validation (also in %s)" % (
        shard["rec"], index[0][0], index[2][1], index[0][0], shard["rec"]) in problems
    # an unsound split: its totals are not compared (the duplicate is the problem, not the counts)
    assert not any(p.startswith("manifest.json: split validation") for p in problems), problems


def test_split_totals_class_counts_and_list_are_checked_against_the_records(damaged):
    out, manifest = damaged
    train = manifest["splits"]["train"]
    first_class = manifest["classes"][0]
    lst = (out / train["lst"]).read_text().splitlines(keepends=True)
    rid, label, rel = lst[1].rstrip("\n").split("\t")
    lst[1] = "%s\t%s\t%s\n" % (rid, "4.000000" if float(label) != 4 else "3.000000", rel)
    (out / train["lst"]).write_text("".join(lst))

    def change(doc):
        doc["splits"]["train"]["records"] = 99
        doc["class_counts"]["train"][first_class] = 1

    rewrite_manifest(out, change)
    total = sum(s["records"] for s in train["shards"])
    found = manifest["class_counts"]["train"][first_class]
    assert problems_of(out) == [
        "manifest.json: split train: 99 records listed, %d found in its shards" % total,
        "manifest.json: split train, class %s: 1 records listed in class_counts, %d found" % (first_class, found),
        "%s: id %s: label %s in the list, %g in the records" % (
            train["lst"], rid, "4" if float(label) != 4 else "3", float(label)),
    ]


def test_a_split_with_a_missing_shard_skips_its_totals_but_checks_its_merged_index(damaged):
    out, manifest = damaged
    train = manifest["splits"]["train"]
    shard = train["shards"][1]
    (out / shard["rec"]).unlink()
    rewrite_manifest(out, lambda doc: doc["splits"]["train"].__setitem__("records", 99))
    # The merged index is still checked against the missing shard's own .idx: it agrees.
    assert problems_of(out) == ["%s: missing (listed in manifest.json)" % shard["rec"]]
    (out / shard["idx"]).unlink()
    problems = problems_of(out)
    assert problems[:2] == ["%s: missing (listed in manifest.json)" % shard["rec"],
                            "%s: missing (listed in manifest.json)" % shard["idx"]]
    # without either file, the merged index holds lines for records no shard accounts for
    assert len(problems) == 3 and problems[2].startswith("%s: line " % train["merged_idx"]), problems


def test_manifest_record_count_of_a_shard_is_checked(damaged):
    out, manifest = damaged
    shard = manifest["splits"]["train"]["shards"][2]
    rewrite_manifest(out, lambda doc: doc["splits"]["train"]["shards"][2].__setitem__("records", 99))
    assert problems_of(out) == ["%s: holds %d records, manifest.json says 99" % (shard["rec"], shard["records"])]


def test_not_a_folder_is_a_usage_error(tmp_path):
    proc = run_verify(tmp_path / "nowhere")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: %s is not a folder" % (tmp_path / "nowhere")


# ---------------------------------------------------------------- the pure checks, no subprocess


def _jpeg(value: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def _shard(payloads):
    f = io.BytesIO()
    w = recordio.RecordWriter(f)
    entries = [(recordio.unpack(p)[0].id, w.write(p)) for p in payloads]
    return f.getvalue(), entries, w.sha256()


def test_read_shard_accepts_single_and_multi_label_records():
    data, entries, sha = _shard([recordio.pack(2, 0, _jpeg(10)), recordio.pack([0, 1], 1, _jpeg(20))])
    result = V.read_shard(io.BytesIO(data), "s.rec", num_classes=3)
    assert result.problems == [] and result.entries == entries
    assert result.labels == {0: (2.0,), 1: (0.0, 1.0)}
    assert (result.size, result.sha256) == (len(data), sha)


@pytest.mark.parametrize(
    "label, why",
    [
        (3, "label 3 is outside the class map (3 classes, labels 0-2)"),
        (-1, "label -1 is outside the class map (3 classes, labels 0-2)"),
        (1.5, "label 1.5 is not a class index (a whole number)"),
        (float("nan"), "label nan is not a class index (a whole number)"),
        ([0, 7], "label 7 is outside the class map (3 classes, labels 0-2)"),
    ],
)
def test_read_shard_names_bad_labels(label, why):
    data, entries, _ = _shard([recordio.pack(0, 0, _jpeg(1)), recordio.pack(label, 1, _jpeg(2))])
    result = V.read_shard(io.BytesIO(data), "s.rec", num_classes=3)
    assert [str(p) for p in result.problems] == ["s.rec: record 1 (id 1) at byte %d: %s" % (entries[1][1], why)]


def test_read_shard_names_empty_and_undecodable_images_in_record_order():
    data, entries, _ = _shard(
        [recordio.pack(0, 0, b""), recordio.pack(0, 1, _jpeg(5)), recordio.pack(0, 2, b"\xff\xd8not a jpeg")]
    )
    result = V.read_shard(io.BytesIO(data), "s.rec", num_classes=1, threads=2)
    assert [str(p) for p in result.problems] == [
        "s.rec: record 0 (id 0) at byte 0: record has no image bytes",
        "s.rec: record 2 (id 2) at byte %d: image does not decode (cv2.imdecode returned nothing; 12 bytes starting ff d8 6e 6f)"
        % entries[2][1],
    ]


def test_read_shard_hashes_the_whole_file_across_chunks(monkeypatch):
    monkeypatch.setattr(V, "READ_CHUNK", 7)  # records straddle many reads
    payloads = [recordio.pack(0, i, _jpeg(i) + recordio.MAGIC_BYTES * (i % 3)) for i in range(6)]
    data, entries, sha = _shard(payloads)
    result = V.read_shard(io.BytesIO(data), "s.rec", num_classes=1)
    assert result.problems == [] and result.entries == entries and result.sha256 == sha and result.size == len(data)


def test_read_shard_reports_trailing_garbage_at_its_byte():
    data, entries, _ = _shard([recordio.pack(0, 0, _jpeg(1))])
    result = V.read_shard(io.BytesIO(data + b"\x01\x02\x03\x04\x05\x06\x07\x08"), "s.rec", num_classes=1)
    assert not result.framing_ok and result.entries == entries
    assert "bad magic 0x04030201 at byte %d" % len(data) in str(result.problems[0])


def test_compare_index():
    found = [(0, 0), (1, 100), (2, 200)]
    assert V.compare_index(found, found, "a.idx", True) == []
    assert [str(p) for p in V.compare_index(found, [(0, 0), (1, 100), (3, 200)], "a.idx", True)] == [
        "a.idx: line 3: key 3, but the record at byte 200 has id 2"
    ]
    assert [str(p) for p in V.compare_index(found, found[:2], "a.idx", True)] == [
        "a.idx: has 2 lines but the shard has 3 records; record 2 (id 2) at byte 200 is not indexed"
    ]
    assert [str(p) for p in V.compare_index(found, found + [(3, 300)], "a.idx", True)] == [
        "a.idx: line 4: key 3 points at byte 300, but the shard has only 3 records"
    ]
    assert V.compare_index(found[:1], found, "a.idx", False) == []  # shard unreadable after record 0: said elsewhere


@pytest.mark.parametrize("label_format", ["multi-hot", "class-ids"])
def test_verify_reads_multi_label_outputs(tmp_path, label_format):
    """Multi-label records are checked against the manifest's label layout, not as class indexes."""
    import struct

    from conftest import SAMPLE, run_cli
    from imgrec import recordio

    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out, "--label-format", label_format, "--train-ratio", "1", "--val-ratio", "0")
    ok = run_cli(out, module="pipeline.verify", check=False)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"cat\s+6\s", ok.stdout)

    # Make one record's label vector invalid for its layout (a 2 in a multi-hot vector,
    # a class id past the class map for class ids) and check that verify names it.
    m = json.loads((out / "manifest.json").read_text())
    rec = out / m["splits"]["train"]["shards"][0]["rec"]
    with open(rec, "rb") as f:
        records = list(recordio.read_records(f))
    header, image = recordio.unpack(records[0].payload)
    bad = (2.0,) + header.label[1:] if label_format == "multi-hot" else (9.0,) + header.label[1:]
    payload = recordio.pack(bad, header.id, image)
    data = bytearray(rec.read_bytes())
    framed = b"".join(bytes(p) for p in recordio.frame(payload))
    assert len(framed) == len(b"".join(bytes(p) for p in recordio.frame(records[0].payload)))
    data[0 : len(framed)] = framed
    rec.write_bytes(bytes(data))
    proc = run_cli(out, module="pipeline.verify", check=False)
    assert proc.returncode == 1
    expected = "multi-hot label holds 2.0" if label_format == "multi-hot" else "label 9 is outside the class map"
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the label layout found


def test_describe_layout_names_what_the_records_hold():
    C = collections.Counter
    multi = V.LabelSpec("multi-hot", 3)
    assert V.describe_layout(C({0: 3}), [(1.0,), (0.0,), (1.0,)], V.LabelSpec()) == (
        "scalar labels (one class id per record; IRHeader flag 0), 2 distinct classes")
    assert V.describe_layout(C({3: 2}), [(1.0, 0.0, 1.0), (0.0, 1.0, 0.0)], multi) == (
        "multi-hot vectors of width 3 (IRHeader flag 3), 1-2 labels per record, 2 distinct label sets")
    assert V.describe_layout(C({2: 2}), [(0.0, -1.0), (1.0, 2.0)], V.LabelSpec("class-ids", 2)) == (
        "class-ids vectors of width 2 (IRHeader flag 2), 1-2 labels per record, 2 distinct label sets")
    assert V.describe_layout(C({2: 4}), [(1.0, 1.0)] * 4, V.LabelSpec("multi-hot", 2)) == (
        "multi-hot vectors of width 2 (IRHeader flag 2), 2 labels per record, 1 distinct label set; every record "
        "has the same labels (1/1): check the label file and --labels-as")
    assert V.describe_layout(C({0: 2, 3: 1}), [(1.0,), (0.0,), (1.0, 0.0, 0.0)], multi) == (
        "mixed label layouts: 2 scalar, 1 of width 3 records")
    assert V.describe_layout(C(), [], multi) == "no records"


def test_verify_prints_each_splits_label_layout_so_a_collapse_shows(good, tmp_path):
    out, _ = good
    proc = run_verify(out)
    assert "Labels found in the records:" in proc.stdout
    assert "  train: scalar labels (one class id per record; IRHeader flag 0), 5 distinct classes" in proc.stdout
    # The dataset: a multi-hot .lst read as class ids gives two classes and [1, 1] in every record.
    rows = ["%d\t%s\t%s\n" % (i, "\t".join("1" if k in (i % 10, (i + 3) % 10) else "0" for k in range(10)), rel)
            for i, rel in enumerate(sorted("%s/%s" % (p.parent.name, p.name) for p in SAMPLE.glob("*/*")))]
    (tmp_path / "hot.lst").write_text("".join(rows))
    collapsed = tmp_path / "collapsed"
    run_cli("--input", SAMPLE, "--labels", tmp_path / "hot.lst", "--labels-as", "class-ids", "--label-format",
            "multi-hot", "--output", collapsed)
    proc = run_verify(collapsed)
    assert proc.returncode == 0
    assert ("  train: multi-hot vectors of width 2 (IRHeader flag 2), 2 labels per record, 1 distinct label set; "
            "every record has the same labels (1/1)") in proc.stdout
