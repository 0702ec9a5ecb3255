"""``python -m pipeline.im2rec`` against MXNet's own ``tools/im2rec.py`` (mxnet 1.9.1, run as a subprocess
in ``.venv-mxnet``) on the same image trees: every file they both write is compared byte for byte
(re-encoded images: decoded and compared within a small pixel tolerance, as OpenCV versions differ)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from imgrec import recordio
from imgrec.im2rec_compat import (
    ListEntry,
    LstItem,
    LstLineError,
    PackSettings,
    line_ranges,
    listing_from_paths,
    match_lists,
    parse_lst,
    parse_lst_line,
    record_label,
    shuffled,
    split_lists,
    walk_local,
    walk_order_key,
)

from im2rec.reference import (
    IM2REC,
    MX_PYTHON,
    OURS,
    TUTORIAL_LIST,
    TUTORIAL_PACK,
    assert_same_files,
    build_tree,
    files_in,
    im2rec,
    label_map_printed,
    ours,
)


@pytest.fixture
def tree(sample_dir) -> Path:
    return build_tree(sample_dir)


# ---------------------------------------------------------------- the tutorial's two commands


def test_tutorial_commands_give_im2rec_files_byte_for_byte(tree, tmp_path):
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    theirs.mkdir(), mine.mkdir()
    printed = im2rec(theirs, "example_rec", tree, *TUTORIAL_LIST).stdout
    ours_list = ours(mine, "example_rec", tree, *TUTORIAL_LIST)
    assert_same_files(files_in(theirs), files_in(mine), extra={"example_rec_labels.txt"})
    assert {"example_rec_train.lst", "example_rec_test.lst"} <= set(files_in(mine))
    labels = (mine / "example_rec_labels.txt").read_text()
    assert labels == label_map_printed(printed)
    assert labels.splitlines()[:3] == [". 0", "astronaut 1", "cat 2"] and "cat/kitten 3" in labels
    assert "zoo " not in labels and "zoo/wild 7" in labels
    assert label_map_printed(ours_list.stdout) == labels

    im2rec(theirs, "example_rec", tree, *TUTORIAL_PACK)
    out = ours(mine, "example_rec", tree, *TUTORIAL_PACK)
    assert_same_files(files_in(theirs), files_in(mine), extra={"example_rec_labels.txt"})
    assert {"example_rec_train.rec", "example_rec_train.idx", "example_rec_test.rec", "example_rec_test.idx"} <= set(
        files_in(mine)
    )
    assert "skipped" not in out.stderr
    assert not list(mine.glob(".im2rec-work-*")), "temporary fragments left behind"


def test_nested_label_folder_is_warned_and_no_third_party_lines_reach_the_terminal(tree, tmp_path):
    """cat/kitten inside cat gets its own label in list mode: the files stay im2rec.py's, stderr says so."""
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    theirs.mkdir(), mine.mkdir()
    im2rec(theirs, "data", tree, "--list", "--recursive")
    listed = ours(mine, "data", tree, "--list", "--recursive")
    assert_same_files(files_in(theirs), files_in(mine), extra={"data_labels.txt"})
    warnings = [l for l in listed.stderr.splitlines() if l.startswith("warning: ")]
    assert warnings == [
        "warning: cat/kitten holds images and gets its own label 3, apart from cat (label 2): im2rec.py labels every "
        "folder that holds images, so each folder listed after it is numbered one higher; move its images into cat "
        "to give them its label (the lists are written as im2rec.py writes them)"
    ]
    packed = ours(mine, "data", tree, "--recursive", "--pass-through")  # record mode imports Beam
    assert (mine / "data.rec").stat().st_size > 0
    for proc in (listed, packed):
        assert not [l for l in proc.stderr.splitlines() if "apitools" in l or "bigquery" in l.lower()], proc.stderr


# ---------------------------------------------------------------- list mode variants


@pytest.mark.parametrize(
    "args",
    [
        ["--recursive", "--chunks", "2", "--train-ratio", "0.6", "--test-ratio", "0.2"],
        ["--recursive", "--no-shuffle", "--train-ratio", "0.5", "--exts", ".jpg", ".png"],
        ["--chunks", "2", "--no-shuffle", "--exts", ".jpg"],  # not recursive: ROOT's own images, label 0
    ],
    ids=["chunks2-test-val-train", "no-shuffle-val", "flat-chunks2"],
)
def test_list_mode_variants_match_im2rec(tree, tmp_path, args):
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    theirs.mkdir(), mine.mkdir()
    shutil.copy(tree / "cat" / "cat_00.jpg", tree / "second.jpg")  # two images in ROOT for the flat case
    im2rec(theirs, "data", tree, "--list", *args)
    ours(mine, "data", tree, "--list", *args)
    assert_same_files(files_in(theirs), files_in(mine), extra={"data_labels.txt"})
    if "--chunks" in args:
        assert any(n.startswith("data_1") for n in files_in(mine))


# ---------------------------------------------------------------- record mode variants


def write_lst(path: Path, rows) -> None:
    path.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))


def test_multi_label_list_with_pack_label_matches_im2rec(tree, tmp_path):
    images = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.suffix in (".jpg", ".png"))[:10]
    rows = [(i * 3 + 1, "%f" % (i % 2), "%f" % (i * 0.25), "%f" % (7 - i), rel) for i, rel in enumerate(images)]
    rows.append((99, "2.000000", images[0]))  # a single-label line among multi-label ones
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    for d in (theirs, mine):
        d.mkdir()
        write_lst(d / "multi.lst", rows)
        write_lst(d / "multi_b.lst", rows[::-1])
    args = ["multi", tree, "--pass-through", "--pack-label", "--num-thread", "2"]
    im2rec(theirs, *args)
    ours(mine, *args)
    assert_same_files(files_in(theirs), files_in(mine))
    with open(mine / "multi.rec", "rb") as f:
        header, _ = recordio.unpack(next(recordio.read_records(f)).payload)
    assert header.flag == 3 and header.label == (0.0, 0.0, 7.0) and header.id == 1


def decode_records(folder: Path, name: str) -> list[tuple[tuple, np.ndarray]]:
    keys = [k for k, _ in recordio.parse_idx((folder / (name + ".idx")).read_text())]
    out = []
    with open(folder / (name + ".rec"), "rb") as f:
        for rec in recordio.read_records(f):
            header, img = recordio.unpack(rec.payload)
            pixels = cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_UNCHANGED)
            out.append(((header.flag, header.label, header.id), pixels))
    assert [h[2] for h, _ in out] == keys
    return out


@pytest.mark.parametrize(
    "args, tolerance",
    [
        (["--resize", "64", "--quality", "90", "--num-thread", "2"], 2.0),
        (["--center-crop", "--resize", "48", "--encoding", ".png", "--color", "0", "--num-thread", "1"], 1.0),
    ],
    ids=["resize-jpg", "crop-gray-png"],
)
def test_reencoded_records_match_im2rec_within_tolerance(tree, tmp_path, args, tolerance):
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    theirs.mkdir(), mine.mkdir()
    im2rec(theirs, "re", tree, "--recursive", "--list")
    shutil.copy(theirs / "re.lst", mine / "re.lst")
    im2rec(theirs, "re", tree, *args)
    ours(mine, "re", tree, *args)
    a, b = decode_records(theirs, "re"), decode_records(mine, "re")
    assert len(a) == len(b) == len((theirs / "re.lst").read_text().splitlines())
    for (ha, ia), (hb, ib) in zip(a, b):
        assert ha == hb
        assert ia.shape == ib.shape, "%s: %s vs %s" % (ha, ia.shape, ib.shape)
        diff = np.abs(ia.astype(np.int16) - ib.astype(np.int16))
        assert diff.mean() <= tolerance, "record %s differs by %.2f on average" % (ha, diff.mean())
    short = 64 if "64" in args else 48
    assert all(min(img.shape[:2]) == short for _, img in b)


def test_bad_images_are_skipped_reported_and_the_rest_matches_im2rec(tree, tmp_path):
    (tree / "bad").mkdir()
    good = (tree / "cat" / "cat_00.jpg").read_bytes()
    (tree / "bad" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tree / "bad" / "empty.jpg").write_bytes(b"")
    rows = [
        (0, "0.000000", "astronaut/astronaut_00.jpg"),
        (1, "1.000000", "bad/truncated.jpg"),
        (2, "1.000000", "cat/cat_01.jpg"),
        (3, "1.000000", "bad/missing.jpg"),
        (4, "2.000000", "bad/empty.jpg"),
        ("five", "2.000000", "coffee/coffee_00.jpg"),
        (-6, "2.000000", "coffee/coffee_01.jpg"),
        (7, "3.000000", "flower/flower_05.png"),
    ]
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir(), theirs.mkdir()
    write_lst(mine / "b.lst", rows)
    with open(mine / "b.lst", "a") as f:
        f.write("only-two\tfields\n")
    out = ours(mine, "b", tree, "--pass-through", "--num-thread", "2", "--fragment-lines", "2")
    errors = [json.loads(line) for line in (mine / "b.errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["reason"]) for e in errors] == [
        (2, "truncated"), (4, "missing"), (5, "empty_file"),
        (6, "bad_lst_line"), (7, "bad_header_value"), (9, "bad_lst_line"),
    ]
    skipped = [line for line in out.stderr.splitlines() if line.startswith("skipped ")]
    assert [int(re.search(r"b\.lst line (\d+)", s).group(1)) for s in skipped] == [2, 4, 5, 6, 7, 9], out.stderr
    assert all(e["reason"] in s for e, s in zip(errors, skipped))
    assert "6 skipped" in out.stdout
    # The records that remain are exactly im2rec.py's for the list without the bad lines.
    write_lst(theirs / "b.lst", [rows[0], rows[2], rows[7]])
    im2rec(theirs, "b", tree, "--pass-through", "--num-thread", "2")
    assert (mine / "b.rec").read_bytes() == (theirs / "b.rec").read_bytes()
    assert (mine / "b.idx").read_bytes() == (theirs / "b.idx").read_bytes()


def test_help_lists_every_im2rec_option():
    theirs = subprocess.run([str(MX_PYTHON), str(IM2REC), "--help"], capture_output=True, text=True, timeout=120).stdout
    mine = run_cli("--help", module=OURS).stdout
    flags = lambda text: set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))  # noqa: E731
    assert flags(theirs) and flags(theirs) <= flags(mine), flags(theirs) - flags(mine)
    for section in ("Options for creating image lists", "Options for creating database", "prefix", "root"):
        assert section in mine
    assert "--read-threads" in mine and "--max-pixels" in mine


@pytest.mark.parametrize(
    "args, message",
    [
        (["--list", "--chunks", "0"], "--chunks must be 1 or more"),
        (["--pass-thru"], "unrecognized arguments: --pass-thru"),
        (["--list", "--exts", "jpg"], "start with a dot"),
    ],
)
def test_bad_arguments_fail_with_one_line(tree, tmp_path, args, message):
    proc = ours(tmp_path, "p", tree, *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_record_mode_without_lists_fails_clearly(tree, tmp_path):
    proc = ours(tmp_path, "nothing", tree, "--pass-through", check=False)
    assert proc.returncode == 2 and "did not find any .lst file starting with" in proc.stderr


# ---------------------------------------------------------------- pure logic


def test_walk_order_key_reproduces_os_walk_order(tree):
    listing = walk_local(str(tree), True, (".jpeg", ".jpg", ".png"))
    rels = [e.relpath for e in listing.entries]
    assert rels != sorted(rels)  # os.walk's order is not plain string order ...
    flat = sorted((p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()), reverse=True)
    # ... and the flat listing an s3:// prefix gives is put back into it, labels included.
    assert listing_from_paths(flat, True, (".jpeg", ".jpg", ".png")) == listing
    order = sorted(["b/x.jpg", "a.jpg", "b/c/y.jpg", "b/a.jpg"], key=walk_order_key)
    assert order == ["a.jpg", "b/a.jpg", "b/x.jpg", "b/c/y.jpg"]


def test_split_lists_slices_like_make_list():
    entries = [ListEntry(i, "f%d.jpg" % i, 0) for i in range(10)]
    parts = split_lists(entries, "/p/x", 3, 0.5, 0.25)
    # chunk_size 4; parts sized from chunk_size (test 1, train 2, val the rest), even for the short last chunk
    assert [(n, [e.index for e in es]) for n, es in parts] == [
        ("/p/x_0_test.lst", [0]), ("/p/x_0_val.lst", [3]), ("/p/x_0_train.lst", [1, 2]),
        ("/p/x_1_test.lst", [4]), ("/p/x_1_val.lst", [7]), ("/p/x_1_train.lst", [5, 6]),
        ("/p/x_2_test.lst", [8]), ("/p/x_2_val.lst", []), ("/p/x_2_train.lst", [9]),
    ]
    assert [n for n, _ in split_lists(entries, "x", 1, 1.0, 0.0)] == ["x.lst"]
    assert [e.index for e in shuffled(entries, True)] != list(range(10))
    assert shuffled(entries, False) == entries


def test_parse_lst_follows_read_list():
    assert parse_lst_line(" 3\t1.5\t 2 \ta/b c.jpg \n", 1) == LstItem(3, "a/b c.jpg", (1.5, 2.0), 1)
    assert isinstance(parse_lst_line("3\tpath.jpg", 2), LstLineError)
    assert isinstance(parse_lst_line("x\t1\tpath.jpg", 3), LstLineError)
    assert parse_lst_line("   ", 4) is None
    items = list(parse_lst(b"1\t0\ta.jpg\r\n2\t1\tb.jpg\r3\t1\tc.jpg", 10))
    assert [(i.id, i.line) for i in items] == [(1, 10), (2, 11), (3, 12)]
    assert record_label(LstItem(1, "a", (1.0, 2.0), 1), True) == (1.0, 2.0)
    assert record_label(LstItem(1, "a", (1.0, 2.0), 1), False) == 1.0
    assert record_label(LstItem(1, "a", (4.0,), 1), True) == 4.0


@pytest.mark.parametrize("per", [1, 2, 5, 100])
def test_line_ranges_cover_the_list_on_line_boundaries(tmp_path, per):
    data = b"".join(b"%d\t0\timg%d.jpg\r\n" % (i, i) for i in range(11)) + b"11\t0\tlast.jpg"
    (tmp_path / "l.lst").write_bytes(data)
    with open(tmp_path / "l.lst", "rb") as f:
        ranges = line_ranges(f, per)
    assert b"".join(data[r.start : r.end] for r in ranges) == data
    assert all(data[r.end - 1 : r.end] == b"\n" for r in ranges[:-1])
    ids = [i.id for r in ranges for i in parse_lst(data[r.start : r.end], r.first_line)]
    lines = [i.line for r in ranges for i in parse_lst(data[r.start : r.end], r.first_line)]
    assert ids == list(range(12)) and lines == list(range(1, 13))
    assert len(ranges) == -(-12 // per)


def test_match_lists_uses_im2rec_prefix_rule():
    names = ["data_train.lst", "data_val.lst", "database.lst", "data.rec", "other.lst", "data_labels.txt"]
    assert match_lists("/w/data", "/w", names) == ["/w/data_train.lst", "/w/data_val.lst", "/w/database.lst"]
    assert match_lists("s3://b/k/data_t", "s3://b/k", names) == ["s3://b/k/data_train.lst"]


# ---------------------------------------------------------------- the Beam stage


def test_pack_list_stage_keeps_list_order_across_fragments(tree, tmp_path):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.pack_list import PackList, plan_fragments

    rels = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.jpg"))[:7]
    lst = tmp_path / "s.lst"
    write_lst(lst, [(100 - i, "%f" % i, rel) for i, rel in enumerate(rels)])
    settings = PackSettings(root=str(tree), pass_through=True)
    with TestPipeline(runner=FnApiRunner()) as p:
        fragments = plan_fragments(str(lst), workers=1, max_lines=2)
        assert [f.index for f in fragments] == [0, 1, 2, 3] and {f.count for f in fragments} == {4}
        summaries = p | beam.Create(fragments) | PackList(settings, str(tmp_path / "work"))
        assert_that(
            summaries | beam.Map(lambda s: (s["records"], s["skipped"], s["rec"])),
            equal_to([(7, 0, str(tmp_path / "s.rec"))]),
        )
    expected = b"".join(
        piece
        for i, rel in enumerate(rels)
        for piece in recordio.frame(recordio.pack(float(i), 100 - i, (tree / rel).read_bytes()))
    )
    assert (tmp_path / "s.rec").read_bytes() == expected
    offsets = [off for _, off in recordio.parse_idx((tmp_path / "s.idx").read_text())]
    with open(tmp_path / "s.rec", "rb") as f:
        assert [r.offset for r in recordio.read_records(f)] == offsets
    assert not os.path.exists(tmp_path / "s.errors.jsonl")


def test_fragments_concatenate_in_order_and_a_retried_concat_returns_the_first_result(tree, tmp_path):
    from transforms.pack_list import concat_fragments, plan_fragments, write_fragment

    rels = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.png"))
    lst = tmp_path / "r.lst"
    write_lst(lst, [(i, "1.000000", rel) for i, rel in enumerate(rels)] + [(9, "1.000000", "gone.png")])
    settings = PackSettings(root=str(tree), pass_through=True)
    work = str(tmp_path / "work")
    fragments = plan_fragments(str(lst), workers=1, max_lines=2)
    assert len(fragments) == 4
    # Fragments may finish in any order.
    summaries = [write_fragment(f, settings, work, threads=2) for f in reversed(fragments)]
    first = concat_fragments(str(lst), summaries, work)
    assert (first["records"], first["skipped"]) == (len(rels), 1)
    assert not list((tmp_path / "work").rglob("fragment-*")), "fragments not freed after the concatenation"
    assert concat_fragments(str(lst), summaries, work) == first
    with open(tmp_path / "r.rec", "rb") as f:
        ids = [recordio.unpack(r.payload)[0].id for r in recordio.read_records(f)]
    assert ids == list(range(len(rels)))
    assert json.loads((tmp_path / "r.errors.jsonl").read_text())["path"] == "gone.png"
