"""Label files: every format, every malformed line named by its number, path safety, class maps.

Pure tests of ``imgrec.labels`` and ``imgrec.classmap`` first, then the real
command line: a CSV over a flat folder (missing and unlisted images reported),
a bad label file refused line by line, ``--class-map`` in folder mode.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import SAMPLE, load_manifest, run_cli
from imgrec import classmap, labels, recordio
from imgrec.labels import LabelFileError, LabelLineError, safe_relpath


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def scan(tmp_path, name, text, **kw):
    kw.setdefault("exts", (".jpg", ".png"))
    return labels.scan_label_file(write(tmp_path, name, text), str(tmp_path / "root"), **kw)


def entries(s: labels.LabelScan):
    """(line, relpath, class ids) of every entry, read chunk by chunk as the workers do."""
    out = []
    for chunk in s.chunks:
        for e in labels.read_chunk(s.spec, chunk):
            out.append((e.lineno, e.relpath, s.spec.ids_of(e)))
    return out


# ---------------------------------------------------------------- each format


def test_lst_one_and_several_label_columns(tmp_path):
    s = scan(tmp_path, "a.lst", "0\t2.000000\tcat/a.jpg\n7\t0.000000\tdog/b.jpg\n", single_label=True)
    assert s.spec.format == "lst" and s.spec.reading == "class-ids"
    assert entries(s) == [(1, "cat/a.jpg", (2,)), (2, "dog/b.jpg", (0,))]
    assert sorted(s.ids) == [0, 2]
    # several columns are class ids; negative values are padding (as --label-format class-ids writes)
    s = scan(tmp_path, "m.lst", "0\t1\t3\t-1\tx/a.jpg\n1\t0\t-1\t-1\tx/b.jpg\n", single_label=False)
    assert entries(s) == [(1, "x/a.jpg", (1, 3)), (2, "x/b.jpg", (0,))]
    assert s.max_labels == 2
    # the same columns read as multi-hot
    s = scan(tmp_path, "h.lst", "0\t1\t0\t1\tx/a.jpg\n1\t0\t0\t1\tx/b.jpg\n", single_label=False, labels_as="multi-hot")
    assert entries(s) == [(1, "x/a.jpg", (0, 2)), (2, "x/b.jpg", (2,))]
    assert s.width == 3 and sorted(s.ids) == [0, 1, 2]


def test_csv_with_and_without_header_names_and_ids(tmp_path):
    s = scan(tmp_path, "a.csv", "path,label\ncats/1.jpg,cat\n\"dogs/with, comma.jpg\",dog\n")
    assert s.spec.header and s.spec.reading == "names"
    assert sorted(s.names) == ["cat", "dog"]
    s.spec = labels.LabelSpec(**{**s.spec.__dict__, "name_to_id": (("cat", 0), ("dog", 1))})
    assert entries(s) == [(2, "cats/1.jpg", (0,)), (3, "dogs/with, comma.jpg", (1,))]
    # no header; every label a whole number: class ids
    s = scan(tmp_path, "b.csv", "x/1.jpg,3\nx/2.jpg, 0 \n")
    assert not s.spec.header and s.spec.reading == "class-ids"
    assert entries(s) == [(1, "x/1.jpg", (3,)), (2, "x/2.jpg", (0,))]
    # several labels separated by ';'
    s = scan(tmp_path, "c.csv", "x/1.jpg,cat;pet\nx/2.jpg,dog\n", single_label=False)
    assert sorted(s.names) == ["cat", "dog", "pet"] and s.max_labels == 2 and s.multi_label_lines == 1


def test_jsonl_labels_list_and_label_scalar(tmp_path):
    text = '{"path": "a/1.jpg", "labels": ["sky", "sea"]}\n\n{"path": "a/2.jpg", "label": "sky", "extra": 1}\n'
    s = scan(tmp_path, "l.jsonl", text, single_label=False)
    assert s.spec.format == "jsonl" and s.spec.reading == "names"
    assert s.names == {"sky": 1, "sea": 1}
    s = scan(tmp_path, "n.jsonl", '{"path": "a/1.jpg", "labels": [0, 4]}\n', single_label=False)
    assert s.spec.reading == "class-ids" and sorted(s.ids) == [0, 4]


def test_ground_truth_manifest_ids_names_multi_hot_and_s3_refs(tmp_path):
    root = "s3://bkt/photos"
    lines = [
        {"source-ref": "s3://bkt/photos/cat/1.jpg", "job": 0, "job-metadata": {"class-name": "cat", "type": "groundtruth/image-classification"}},
        {"source-ref": "s3://bkt/photos/dog/2.jpg", "job": "1", "job-metadata": {"class-name": "dog"}},
    ]
    path = write(tmp_path, "out.manifest", "".join(json.dumps(l) + "\n" for l in lines))
    s = labels.scan_label_file(path, root, (".jpg",))
    assert s.spec.format == "manifest" and s.spec.attribute == "job"
    assert s.id_names == {0: "cat", 1: "dog"}
    assert entries(s) == [(1, "cat/1.jpg", (0,)), (2, "dog/2.jpg", (1,))]
    assert classmap.resolve_ids(s.ids, s.id_names, None, False) == ["cat", "dog"]
    # multi-label: Ground Truth's own output lists class ids (metadata says multilabel) ...
    gt = {"source-ref": "s3://bkt/photos/a.jpg", "ml": [2, 0],
          "ml-metadata": {"type": "groundtruth/image-classification-multilabel", "class-map": {"0": "cat", "2": "owl"}}}
    # ... while SageMaker's training format without such metadata is a multi-hot vector (given as a string here)
    hot = {"source-ref": "s3://bkt/photos/b.jpg", "ml": "[0, 1, 1]"}
    path = write(tmp_path, "ml.manifest", json.dumps(gt) + "\n" + json.dumps(hot) + "\n")
    s = labels.scan_label_file(path, root, (".jpg",), single_label=False)
    assert entries(s) == [(1, "a.jpg", (0, 2)), (2, "b.jpg", (1, 2))]
    assert classmap.resolve_ids(s.ids, s.id_names, None, False) == ["cat", "1", "owl"]


def test_chunks_cover_every_line_once_with_its_number(tmp_path, monkeypatch):
    monkeypatch.setattr(labels, "CHUNK_BYTES", 64)
    monkeypatch.setattr(labels, "READ_BLOCK", 7)  # lines straddle the launcher's read blocks too
    rows = ["path,label"] + ["d/%03d.jpg,c%d" % (i, i % 3) for i in range(40)]
    s = scan(tmp_path, "big.csv", "\r\n".join(rows) + "\r\n")
    assert len(s.chunks) > 5
    assert [c.start for c in s.chunks[1:]] == [c.end for c in s.chunks[:-1]]
    s.spec = labels.LabelSpec(**{**s.spec.__dict__, "name_to_id": (("c0", 0), ("c1", 1), ("c2", 2))})
    got = entries(s)
    assert [(line, rel) for line, rel, _ in got] == [(i + 2, "d/%03d.jpg" % i) for i in range(40)]
    assert [ids for _, _, ids in got] == [(i % 3,) for i in range(40)]


# ---------------------------------------------------------------- malformed lines


BAD_LINES = [
    ("x.lst", "0\tcat/a.jpg\n", "line 1: expected 'index<TAB>label"),
    ("x.lst", "0\t1\tcat/a.jpg\nzero\t1\tcat/b.jpg\n", "line 2: the index 'zero' is not a whole number"),
    ("x.lst", "0\t1\tcat/a.jpg\n1\tone\tcat/b.jpg\n", "line 2: the label 'one' is not a number"),
    ("x.lst", "0\t1.5\tcat/a.jpg\n", "line 1: the label 1.5 is not a class id"),
    ("x.lst", "0\tnan\tcat/a.jpg\n", "line 1: the label 'nan' is not a finite number"),
    ("x.csv", "path,label\ncat/a.jpg,cat\ncat/b.jpg\n", "line 3: expected 2 comma-separated fields"),
    ("x.csv", "cat/a.jpg,cat,extra\n", "line 1: expected 2 comma-separated fields 'path,label'"),
    ("x.csv", "cat/a.jpg,cat\ncat/b.jpg,\n", "line 2: 0 labels, but the output is single-label"),
    ("x.csv", "cat/a.jpg,cat\ncat/b.jpg,cat;dog\n", "line 2: 2 labels, but the output is single-label"),
    ("x.jsonl", '{"path": "a.jpg", "labels": ["x"]}\n{"path": "b.jpg", "labels": ["x"]\n', "line 2: not valid JSON"),
    ("x.jsonl", '["a.jpg", "x"]\n', "line 1: expected a JSON object, got list"),
    ("x.jsonl", '{"labels": ["x"]}\n', 'line 1: expected a "path" string'),
    ("x.jsonl", '{"path": "a.jpg"}\n', 'line 1: expected "labels"'),
    ("x.jsonl", '{"path": "a.jpg", "labels": "x"}\n', 'line 1: "labels" must be a list'),
    ("x.jsonl", '{"path": "a.jpg", "labels": [true]}\n', "line 1: label True is not a class name or a number"),
    ("x.manifest", '{"source-ref": "a.jpg", "c": 0}\n{"c": 1}\n', 'line 2: expected a "source-ref" (or "image-ref") string'),
    ("x.manifest", '{"source-ref": "a.jpg", "c": 0}\n{"source-ref": "b.jpg", "d": 1}\n', "line 2: has no 'c' attribute"),
    ("x.manifest", '{"source-ref": "a.jpg", "c": "cat"}\n', "line 1: c 'cat' is neither a class id nor a list"),
    ("x.manifest", '{"source-ref": "a.jpg", "c": 0, "d": 1}\n', "line 1: has several label attributes (c, d)"),
    ("x.csv", "a.jpg,cat\n\xff\n", "line 2: is not UTF-8 text"),
    ("x.csv", "../up.jpg,cat\n", "line 1: ../up.jpg climbs out of the input root with '..'"),
    ("x.csv", "a/../../up.jpg,cat\n", "line 1: a/../../up.jpg climbs out of the input root"),
    ("x.csv", "/etc/passwd.jpg,cat\n", "line 1: absolute path /etc/passwd.jpg is outside the input root"),
    ("x.csv", "s3://bucket/a.jpg,cat\n", "line 1: s3://bucket/a.jpg is an s3:// reference, but --input"),
    ("x.csv", "a.jpg,cat\n./,cat\n", "line 2: ./ names the input root itself"),
]


@pytest.mark.parametrize("name,text,message", BAD_LINES, ids=[m.split(":")[1][:30] for _, _, m in BAD_LINES])
def test_each_malformed_line_is_named_by_its_number(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8").replace(b"\xc3\xbf", b"\xff"))
    with pytest.raises(LabelFileError) as info:
        labels.scan_label_file(str(path), str(tmp_path / "root"), (".jpg",))
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith(str(path) + " "), info.value.problems
    assert message in info.value.problems[0], info.value.problems


def test_many_bad_lines_are_listed_then_counted(tmp_path):
    text = "".join("img/%d.jpg\n" % i for i in range(30))
    with pytest.raises(LabelFileError) as info:
        scan(tmp_path, "many.csv", text)
    lines = info.value.problems
    assert info.value.total == 30
    assert [l.split(":")[0] for l in lines[:20]] == ["%s line %d" % (tmp_path / "many.csv", i) for i in range(1, 21)]
    assert lines[-1].endswith("... and 10 more problem lines")


def test_multi_hot_widths_and_label_width_are_checked(tmp_path):
    with pytest.raises(LabelFileError, match="line 2: a multi-hot vector of 2 values, but line 1 has 3"):
        scan(tmp_path, "w.lst", "0\t1\t0\t1\ta.jpg\n1\t1\t0\tb.jpg\n", labels_as="multi-hot", single_label=False)
    with pytest.raises(LabelFileError, match="line 1: the multi-hot value 2.0 is not 0 or 1"):
        scan(tmp_path, "v.lst", "0\t2\t0\ta.jpg\n", labels_as="multi-hot", single_label=False)
    with pytest.raises(LabelFileError, match="line 2: 3 labels do not fit --label-width 2"):
        scan(tmp_path, "c.csv", "a.jpg,x\nb.jpg,x;y;z\n", single_label=False, label_width=2)


def test_missing_or_empty_label_file(tmp_path):
    with pytest.raises(LabelFileError, match="does not exist"):
        labels.scan_label_file(str(tmp_path / "nope.csv"), str(tmp_path), (".jpg",))
    with pytest.raises(LabelFileError, match="lists no images"):
        scan(tmp_path, "empty.csv", "path,label\n\n")
    with pytest.raises(LabelFileError, match="cannot tell the format"):
        scan(tmp_path, "labels.txt", "a.jpg,cat\n")


# ---------------------------------------------------------------- path safety


@pytest.mark.parametrize(
    "path,root,expected",
    [
        ("cat/a.jpg", "/data/in", "cat/a.jpg"),
        ("./cat//a.jpg", "/data/in", "cat/a.jpg"),
        ("cat/x/../a.jpg", "/data/in", "cat/a.jpg"),
        ("/data/in/cat/a.jpg", "/data/in/", "cat/a.jpg"),
        ("s3://b/in/cat/a.jpg", "s3://b/in", "cat/a.jpg"),
        ("s3://b/in/cat/x/../a.jpg", "s3://b/in/", "cat/a.jpg"),
        ("cat/a..b.jpg", "/data/in", "cat/a..b.jpg"),
    ],
)
def test_paths_inside_the_input_root_are_normalised(path, root, expected):
    assert safe_relpath(path, root) == expected


@pytest.mark.parametrize(
    "path,root",
    [
        ("..", "/data/in"),
        ("../in2/a.jpg", "/data/in"),
        ("cat/../../a.jpg", "/data/in"),
        ("/data/in2/a.jpg", "/data/in"),
        ("/data/in/../x.jpg", "/data/in"),
        ("/etc/passwd", "/data/in"),
        ("s3://b/other/a.jpg", "s3://b/in"),
        ("s3://b/input-sibling/a.jpg", "s3://b/input"),
        ("s3://b/in/../x.jpg", "s3://b/in"),
        ("s3://b/in/a.jpg", "/data/in"),
        ("/data/in/a.jpg", "s3://b/in"),
        ("http://host/a.jpg", "/data/in"),
        ("a\tb.jpg", "/data/in"),
        ("", "/data/in"),
    ],
)
def test_paths_escaping_the_input_root_are_refused(path, root):
    with pytest.raises(LabelLineError):
        safe_relpath(path, root)


# ---------------------------------------------------------------- class maps


def test_class_map_files_and_their_mistakes(tmp_path):
    assert classmap.load_class_map(write(tmp_path, "classes.json", '{"dog": 1, "cat": 0}')) == ["cat", "dog"]
    assert classmap.load_class_map(write(tmp_path, "labels.txt", "cat\ndog\n")) == ["cat", "dog"]
    assert classmap.load_class_map(write(tmp_path, "list.json", '["cat", "dog"]')) == ["cat", "dog"]
    for text, message in [
        ('{"cat": 0, "dog": 2}', "ids must run from 0 to 1 without gaps; 1 missing"),
        ('{"cat": 0, "dog": 0}', "id 0 is given to both 'cat' and 'dog'"),
        ('{"cat": -1}', "must be a whole number >= 0"),
        ("cat\ncat\n", "the name 'cat' is used by ids 0 and 1"),
        ('{"cat": 0', "not valid JSON"),
    ]:
        with pytest.raises(classmap.ClassMapError, match=message.replace("(", r"\(")):
            classmap.load_class_map(write(tmp_path, "bad.json", text))
    with pytest.raises(classmap.ClassMapError, match="file not found"):
        classmap.load_class_map(str(tmp_path / "absent.json"))


def test_class_map_pins_ids_and_new_classes_need_permission():
    pinned = ["zebra", "cat"]
    assert classmap.resolve_names({"cat": 3}, pinned, False) == ["zebra", "cat"]
    with pytest.raises(classmap.ClassMapError, match=r"2 classes are not in --class-map: 'ant', 'dog' \(first seen on line 5 of x.csv\)"):
        classmap.resolve_names({"dog": 9, "ant": 5, "cat": 1}, pinned, False, "x.csv")
    assert classmap.resolve_names({"dog": 9, "ant": 5, "cat": 1}, pinned, True) == ["zebra", "cat", "ant", "dog"]
    assert classmap.resolve_ids({0: 1, 1: 2}, {}, pinned, False) == pinned
    with pytest.raises(classmap.ClassMapError, match="class id 3 is not in --class-map"):
        classmap.resolve_ids({3: 7}, {}, pinned, False)
    assert classmap.resolve_ids({3: 7}, {3: "owl"}, pinned, True) == ["zebra", "cat", "2", "owl"]
    with pytest.raises(classmap.ClassMapError, match="names class 1 'dog', but --class-map names it 'cat'"):
        classmap.resolve_ids({1: 1}, {1: "dog"}, pinned, False)


def test_labels_encode_and_decode():
    assert labels.encode_label(3, "", 0) == 3
    assert labels.encode_label((0, 2), "multi-hot", 4) == (1.0, 0.0, 1.0, 0.0)
    assert labels.encode_label((0, 2), "class-ids", 4, -1) == (0.0, 2.0, -1.0, -1.0)
    assert labels.encode_label(5, "class-ids", 2, -1) == (5.0, -1.0)
    with pytest.raises(ValueError):
        labels.encode_label((1, 2, 3), "class-ids", 2)
    for fmt in ("multi-hot", "class-ids"):
        assert labels.decode_label(labels.encode_label((1, 3), fmt, 4), fmt) == (1, 3)


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def flat_input(tmp_path_factory):
    """The sample photos in one flat folder 'img/CLASS-NAME', plus a file no label file lists."""
    root = tmp_path_factory.mktemp("flat") / "in"
    (root / "img").mkdir(parents=True)
    rows = []
    for cls in sorted(os.listdir(SAMPLE)):
        for f in sorted(os.listdir(SAMPLE / cls)):
            (root / "img" / ("%s-%s" % (cls, f))).write_bytes((SAMPLE / cls / f).read_bytes())
            rows.append(("img/%s-%s" % (cls, f), cls))
    return root, rows


def test_csv_labels_end_to_end_report_missing_and_unlisted(flat_input, tmp_path):
    root, rows = flat_input
    listed = rows[2:]  # the first two images are not listed
    csv = "path,label\n" + "".join("%s,%s\n" % r for r in listed) + "img/gone.jpg,cat\n"
    (tmp_path / "labels.csv").write_text(csv)
    out = tmp_path / "out"
    proc = run_cli("--input", root, "--labels", tmp_path / "labels.csv", "--output", out)
    m = load_manifest(out)
    assert m["classes"] == sorted({c for _, c in rows})
    assert m["images_listed"] == len(listed)
    expected = {rel: m["classes"].index(cls) for rel, cls in listed}
    got = {}
    for split, doc in m["splits"].items():
        lst = {int(l.split("\t")[0]): l.split("\t")[2] for l in (out / doc["lst"]).read_text().splitlines()}
        for shard in doc["shards"]:
            with open(out / shard["rec"], "rb") as f:
                for rec in recordio.read_records(f, shard["rec"]):
                    header, body = recordio.unpack(rec.payload)
                    rel = lst[header.id]
                    assert body == (root / rel).read_bytes()
                    got[rel] = header.label
    assert got == expected
    errors = [json.loads(l) for l in (out / "errors.jsonl").read_text().splitlines()]
    assert errors == [{"path": "img/gone.jpg", "reason": "missing", "stage": "list",
                       "detail": "listed on line %d of labels.csv, but not found under the input folder" % (len(listed) + 2)}]
    report = [json.loads(l) for l in (out / "report.jsonl").read_text().splitlines()]
    assert [r for r in report if r["kind"] == "unlisted"] == [{"kind": "unlisted", "path": p} for p, _ in rows[:2]]
    assert m["report_counts"]["unlisted"] == 2 and m["errors_by_reason"] == {"missing": 1}
    assert "2 unlisted" in proc.stdout and "missing" in proc.stdout


def test_dry_run_with_labels_reports_without_writing(flat_input, tmp_path):
    root, rows = flat_input
    (tmp_path / "labels.csv").write_text("".join("%s,%s\n" % r for r in rows[1:]) + "img/gone.jpg,cat\n")
    out = tmp_path / "out"
    proc = run_cli("--input", root, "--labels", tmp_path / "labels.csv", "--output", out, "--dry-run")
    assert not out.exists()
    assert "%d images would be converted into 5 classes." % (len(rows) - 1) in proc.stdout
    assert re.search(r"missing\s+1", proc.stdout) and "Findings: 1 unlisted" in proc.stdout
    assert '{"kind": "unlisted", "path": "%s"}' % rows[0][0] in proc.stdout


def test_bad_label_file_is_refused_line_by_line(flat_input, tmp_path):
    root, rows = flat_input
    text = "path,label\n%s,%s\nimg/x.jpg\n../../etc/shadow.jpg,cat\n%s,cat;dog\n" % (rows[0][0], rows[0][1], rows[1][0])
    (tmp_path / "bad.csv").write_text(text)
    out = tmp_path / "out"
    proc = run_cli("--input", root, "--labels", tmp_path / "bad.csv", "--output", out, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    bad = str(tmp_path / "bad.csv")
    assert lines == [
        "error: %s line 3: expected 2 comma-separated fields 'path,label' (labels separated by ';'), got 1" % bad,
        "error: %s line 4: ../../etc/shadow.jpg climbs out of the input root with '..'" % bad,
        "error: %s line 5: 2 labels, but the output is single-label: pass --label-format multi-hot or class-ids "
        "for multi-label data" % bad,
    ]
    assert not out.exists(), "a refused label file must leave no output behind"


def test_class_map_pins_folder_ids(tmp_path):
    classes = sorted(os.listdir(SAMPLE))
    pinned = ["zebra"] + classes[::-1][:-1]  # reversed, one class left out, one extra
    (tmp_path / "map.json").write_text(json.dumps({n: i for i, n in enumerate(pinned)}))
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE, "--output", out, "--class-map", tmp_path / "map.json", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: 1 class is not in --class-map: %r (first seen as folder %s); add it to the map, or pass "
        "--allow-new-classes to append it after id %d" % (classes[0], classes[0], len(pinned) - 1))
    run_cli("--input", SAMPLE, "--output", out, "--class-map", tmp_path / "map.json", "--allow-new-classes",
            "--train-ratio", "1", "--val-ratio", "0")
    m = load_manifest(out)
    assert m["classes"] == pinned + [classes[0]]
    assert json.loads((out / "classes.json").read_text()) == {n: i for i, n in enumerate(m["classes"])}
    assert m["class_counts"]["train"] == {c: 6 for c in classes}
    for line in (out / "lists" / "train.lst").read_text().splitlines():
        _, label, rel = line.split("\t")
        assert m["classes"][int(float(label))] == rel.split("/")[0]


# ---------------------------------------------------------------- --labels-as auto never changes a file's meaning


@pytest.mark.parametrize(
    "text,reading,ids",
    [
        ("0\t1\t0\t1\ta.jpg\n1\t0\t0\t1\tb.jpg\n", "multi-hot", [(0, 2), (2,)]),  # same 3 columns, all 0/1
        ("0\t1.000000\t0.000000\ta.jpg\n1\t0.000000\t1.000000\tb.jpg\n", "multi-hot", [(0,), (1,)]),  # %f, one-hot
        ("0\t1\ta.jpg\n1\t0\tb.jpg\n", "class-ids", [(1,), (0,)]),  # one column: class ids
        ("0\t1\t0\ta.jpg\n1\t1\tb.jpg\n", "class-ids", [(0, 1), (1,)]),  # widths differ
        ("0\t1\t0\ta.jpg\n1\t2\t0\tb.jpg\n", "class-ids", [(0, 1), (0, 2)]),  # a 2
        ("0\t1\t-1\ta.jpg\n1\t0\t1\tb.jpg\n", "class-ids", [(1,), (0, 1)]),  # padding, as class-ids output
    ],
    ids=["binary", "float-one-hot", "one-column", "widths-differ", "a-two", "padding"],
)
def test_lst_auto_reading_follows_the_rule(tmp_path, text, reading, ids):
    s = scan(tmp_path, "x.lst", text, single_label=False)
    assert s.spec.reading == reading
    assert [got for _, _, got in entries(s)] == ids
    if reading == "multi-hot":
        assert s.width == len(text.split("\n")[0].split("\t")) - 2 and sorted(s.ids) == list(range(s.width))


def test_lst_refusals_name_the_columns_and_the_flags(tmp_path):
    with pytest.raises(LabelFileError) as info:  # read as multi-hot: 2 of 4 classes on line 1
        scan(tmp_path, "m.lst", "0\t1\t0\t1\t0\ta.jpg\n1\t0\t0\t1\t0\tb.jpg\n")
    assert info.value.problems == [
        "%s line 1: 4 label columns, read as a multi-hot vector over 4 classes (every line has 4 columns of 0s and "
        "1s), hold 2 labels, but the output is single-label: pass --label-format multi-hot or class-ids for "
        "multi-label records, or --labels-as class-ids if the columns are class ids" % (tmp_path / "m.lst")]
    with pytest.raises(LabelFileError) as info:  # the widths differ: class ids, and line 1 has two of them
        scan(tmp_path, "c.lst", "0\t1\t0\ta.jpg\n1\t1\tb.jpg\n")
    assert info.value.problems == [
        "%s line 1: 2 label columns, read as class ids, give 2 labels (0, 1), but the output is single-label: pass "
        "--label-format multi-hot or class-ids for multi-label records, or --labels-as multi-hot if the columns "
        "are one 0/1 per class" % (tmp_path / "c.lst")]
    with pytest.raises(LabelFileError, match=r"line 2: 3 label columns, read as multi-hot \(--labels-as multi-hot\), "
                                             r"hold 0 labels, but the output is single-label"):
        scan(tmp_path, "h.lst", "0\t0\t1\t0\ta.jpg\n1\t0\t0\t0\tb.jpg\n", labels_as="multi-hot")
    with pytest.raises(LabelFileError, match=r"line 1: the label 1.5 is not a class id \(a whole number >= 0\) "
                                             r"\(one of the line's 2 label columns"):
        scan(tmp_path, "f.lst", "0\t1.5\t0\ta.jpg\n")


def test_lst_read_as_class_ids_on_purpose_warns_when_it_looks_multi_hot(tmp_path):
    s = scan(tmp_path, "m.lst", "0\t1\t0\t1\ta.jpg\n1\t0\t1\t1\tb.jpg\n", labels_as="class-ids", single_label=False)
    assert sorted(s.ids) == [0, 1]
    assert s.warnings == ["every line of %s has 3 label columns of 0s and 1s, read as class ids (--labels-as "
                          "class-ids): they name only classes 0, 1; --labels-as auto reads them as a multi-hot vector "
                          "over 3 classes" % (tmp_path / "m.lst")]
    assert scan(tmp_path, "n.lst", "0\t1\t0\t1\ta.jpg\n", single_label=False).warnings == []


@pytest.mark.parametrize(
    "text,line,message",
    [
        ("a.jpg,3\nb.jpg,2.5\n", 2, "the label '2.5' is a number that is not a class id (a whole number >= 0), but "
                                    "line 1 has class ids ('3')"),
        ("a.jpg,cat\nb.jpg,3\nc.jpg,4\n", 2, "the label '3' is a class id (a whole number >= 0), but line 1 has "
                                             "class names ('cat')"),
        ("a.jpg,3\nb.jpg,cat\n", 2, "the label 'cat' is a class name (not a number), but line 1 has class ids ('3')"),
        ("a.jpg,-1\nb.jpg,3\n", 1, "the label '-1' is a number that is not a class id (a whole number >= 0): pass "
                                   "--labels-as names"),
        ("a.jpg,cat;3\n", 1, "the label '3' is a class id (a whole number >= 0), but line 1 has class names ('cat')"),
    ],
    ids=["typo-among-ids", "id-among-names", "name-among-ids", "negative-first", "mixed-in-one-line"],
)
def test_csv_auto_refuses_a_mix_at_the_first_line_that_breaks_the_pattern(tmp_path, text, line, message):
    with pytest.raises(LabelFileError) as info:
        scan(tmp_path, "x.csv", text, single_label=False)
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith("%s line %d: " % (tmp_path / "x.csv", line))
    assert message in info.value.problems[0]
    assert "--labels-as names" in info.value.problems[0]


def test_csv_and_jsonl_auto_readings(tmp_path):
    assert scan(tmp_path, "a.csv", "a.jpg,3\nb.jpg,3.0\nc.jpg,03\n").spec.reading == "class-ids"
    s = scan(tmp_path, "b.csv", "a.jpg,nan\nb.jpg,cat\n")  # 'nan' is a name, not a number
    assert s.spec.reading == "names" and sorted(s.names) == ["cat", "nan"]
    s = scan(tmp_path, "c.jsonl", '{"path": "a.jpg", "labels": [0, 2.0]}\n{"path": "b.jpg", "label": "1"}\n', single_label=False)
    assert s.spec.reading == "class-ids" and sorted(s.ids) == [0, 1, 2]
    with pytest.raises(LabelFileError, match=r"line 2: the label 0.5 is a number that is not a class id"):
        scan(tmp_path, "d.jsonl", '{"path": "a.jpg", "label": "x"}\n{"path": "b.jpg", "label": 0.5}\n')
    # explicit readings decide, the mix is then fine or refused per line
    s = scan(tmp_path, "e.csv", "a.jpg,cat\nb.jpg,3\n", labels_as="names")
    assert sorted(s.names) == ["3", "cat"]
    with pytest.raises(LabelFileError, match="line 1: the label 'cat' is not a class id"):
        scan(tmp_path, "f.csv", "a.jpg,cat\nb.jpg,3\n", labels_as="class-ids")


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_excel_sep_line_sets_the_delimiter_and_the_header_follows_it(tmp_path, delimiter):
    other = "," if delimiter == ";" else ";"
    quoted = "x/a%sb.jpg" % (delimiter if delimiter != "\t" else " ")  # a path may hold the delimiter, quoted
    text = "sep=%s\npath%slabel\n\n\"%s\"%scat\nx/c.jpg%scat%sdog\n" % (
        delimiter, delimiter, quoted, delimiter, delimiter, other)
    s = scan(tmp_path, "e.csv", text, single_label=False)
    assert s.spec.delimiter == delimiter and s.spec.header and s.spec.skip_lines == 2
    s.spec = labels.LabelSpec(**{**s.spec.__dict__, "name_to_id": (("cat", 0), ("dog", 1))})
    assert entries(s) == [(4, quoted, (0,)), (5, "x/c.jpg", (0, 1))]
    # a sep= line without a header; blank lines before the header; a sep= line that is not first is data
    s = scan(tmp_path, "n.csv", "sep=;\nx/a.jpg;cat\n")
    assert not s.spec.header and s.spec.skip_lines == 1 and sorted(s.names) == ["cat"]
    s = scan(tmp_path, "b.csv", "sep=,\n\n\npath,label\nx/a.jpg,cat\n")
    assert s.spec.header and s.spec.skip_lines == 4 and sorted(s.names) == ["cat"]
    with pytest.raises(LabelFileError, match="line 2: expected 2 comma-separated fields"):
        scan(tmp_path, "late.csv", "x/a.jpg,cat\nsep=;\n")
    with pytest.raises(LabelFileError, match=r"line 1: Excel's sep= line names ':'; only ',', ';', tab and '\|'"):
        scan(tmp_path, "odd.csv", "sep=:\nx/a.jpg:cat\n")
    with pytest.raises(LabelFileError, match=r"line 2: expected 2 fields separated by ';' as the sep= line says"):
        scan(tmp_path, "bad.csv", "sep=;\nx/a.jpg,cat\n")


def test_image_ref_names_the_image_and_both_refs_are_refused(tmp_path):
    root = "s3://bkt/photos"
    path = write(tmp_path, "guide.json", '{"image-ref": "s3://bkt/photos/a.jpg", "class": "1"}\n')
    s = labels.scan_label_file(path, root, (".jpg",))
    assert s.spec.format == "manifest" and s.spec.attribute == "class"
    assert entries(s) == [(1, "a.jpg", (1,))]
    both = '{"source-ref": "s3://bkt/photos/a.jpg", "image-ref": "s3://bkt/photos/b.jpg", "class": 0}\n'
    with pytest.raises(LabelFileError, match='line 1: has both "source-ref" and "image-ref"'):
        labels.scan_label_file(write(tmp_path, "both.manifest", both), root, (".jpg",))


@pytest.mark.parametrize(
    "path,refs_root,expected",
    [
        ("s3://b/img/cat/1.jpg", "s3://b/img", "cat/1.jpg"),
        ("s3://b/img/cat/./1.jpg", "s3://b/img/", "cat/1.jpg"),
        ("/mnt/old/cat/1.jpg", "/mnt/old", "cat/1.jpg"),
        ("cat/1.jpg", "s3://b/img/", "cat/1.jpg"),  # a plain relative path is unaffected
    ],
)
def test_refs_root_maps_references_onto_the_input(path, refs_root, expected):
    assert safe_relpath(path, "/data/in", refs_root) == expected
    assert safe_relpath(path, "s3://copy/in", refs_root) == expected  # onto an S3 copy too


@pytest.mark.parametrize(
    "path,refs_root,message",
    [
        ("s3://b/img/../x.jpg", "s3://b/img", "climbs out of the input root"),
        ("s3://b/img/", "s3://b/img", "names the input root itself"),
        ("s3://b/img2/x.jpg", "s3://b/img", "is an s3:// reference, but --input /data/in is a local folder and not "
                                            "under --refs-root s3://b/img/"),
        ("s3://b/img/http://x", "s3://b/img", "only s3:// references and paths are understood"),
    ],
)
def test_refs_root_keeps_the_path_safety_rules(path, refs_root, message):
    with pytest.raises(LabelLineError, match=re.escape(message)):
        safe_relpath(path, "/data/in", refs_root)
    with pytest.raises(LabelLineError, match=re.escape("pass --refs-root with the prefix that --input stands for")):
        safe_relpath("s3://b/img/cat/1.jpg", "/data/in")


def test_ground_truth_class_list_as_class_map(tmp_path):
    doc = {"document-version": "2018-11-28", "labels": [{"label": "cat"}, {"label": "dog"}, {"label": "owl"}]}
    assert classmap.load_class_map(write(tmp_path, "class_labels.json", json.dumps(doc))) == ["cat", "dog", "owl"]
    for labels_, message in [
        ([{"label": "cat"}, {"name": "dog"}], "labels[1] is {'name': 'dog'}, expected {\"label\": \"class name\"}"),
        ([{"label": "cat"}, {"label": "cat"}], "the name 'cat' is used by ids 0 and 1"),
        ([], "lists no classes"),
    ]:
        with pytest.raises(classmap.ClassMapError, match=re.escape(message)):
            classmap.load_class_map(write(tmp_path, "bad.json", json.dumps({"labels": labels_})))


def test_classes_named_by_metadata_count_without_an_image():
    # Ground Truth metadata naming class 3 keeps it (and the unnamed 2) in the class map
    assert classmap.resolve_ids({0: 1, 1: 2}, {0: "cat", 1: "dog", 3: "owl"}, None, False) == ["cat", "dog", "2", "owl"]
    with pytest.raises(classmap.ClassMapError, match="class id 3 is not in --class-map"):
        classmap.resolve_ids({0: 1}, {3: "owl"}, ["cat", "dog"], False)
