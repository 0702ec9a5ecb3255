"""``python -m pipeline.preview``: the contact sheet shows each class's own pictures, the chart its counts.

The dataset is made of solid-colour images, one colour per class, so the test
can read the PNGs back and check that every thumbnail in a class's row has
that class's colour, and that every bar is as long as its count says.
"""

import collections
import shutil

import cv2
import numpy as np
import pytest

from conftest import SAMPLE, load_manifest, run_cli
from imgrec import recordio
from pipeline.preview import SPLIT_COLORS, ChartLayout, SheetLayout, text_width

# class folder -> (BGR colour, images); labels follow the sorted names: alpha, beta, delta, gamma.
COLOURED = {
    "gamma": ((200, 40, 30), 2),
    "alpha": ((30, 30, 220), 3),
    "delta": ((40, 210, 210), 9),
    "beta": ((40, 180, 40), 5),
}
CLASSES = sorted(COLOURED)
PER_CLASS = 4


@pytest.fixture(scope="module")
def coloured(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview")
    photos = root / "photos"
    for name, (colour, count) in COLOURED.items():
        (photos / name).mkdir(parents=True)
        for i in range(count):
            h, w = (30 + 7 * i, 50) if i % 2 else (60, 24 + 5 * i)  # landscape and portrait, letterboxed
            cv2.imwrite(str(photos / name / ("%s_%d.png" % (name, i))), np.full((h, w, 3), colour, np.uint8))
    out = root / "out"
    run_cli("--input", photos, "--output", out, "--images-per-shard", "4")
    proc = run_cli(out, "--split", "train", "--per-class", PER_CLASS, module="pipeline.preview")
    return out, load_manifest(out), proc


def split_counts(out, manifest):
    """{split: Counter(class name)} from the .lst files."""
    counts = {}
    for split, doc in manifest["splits"].items():
        counts[split] = collections.Counter(
            CLASSES[int(float(line.split("\t")[1]))] for line in (out / doc["lst"]).read_text().splitlines()
        )
    return counts


def test_prints_what_it_wrote(coloured):
    out, _, proc = coloured
    assert proc.stdout.splitlines() == [
        "wrote %s" % (out / "preview" / "train-contact-sheet.png"),
        "wrote %s" % (out / "preview" / "class-counts.png"),
    ]


def test_contact_sheet_rows_hold_their_own_class_pictures(coloured):
    out, manifest, _ = coloured
    sheet = cv2.imread(str(out / "preview" / "train-contact-sheet.png"))
    layout = SheetLayout(rows=len(CLASSES), columns=PER_CLASS)
    assert sheet.shape == (layout.height, layout.width, 3)
    in_train = split_counts(out, manifest)["train"]
    for row, name in enumerate(CLASSES):
        filled = min(PER_CLASS, in_train[name])
        assert filled > 0 or name == "gamma"
        for col in range(PER_CLASS):
            x0, y0, x1, y1 = layout.cell(row, col)
            centre = sheet[(y0 + y1) // 2, (x0 + x1) // 2].astype(int)
            if col < filled:
                assert np.abs(centre - COLOURED[name][0]).max() <= 2, (name, col, centre)
            else:
                assert centre.tolist() == [255, 255, 255], (name, col, centre)
        title_band = sheet[layout.row_top(row) : layout.row_top(row) + layout.title, : layout.width]
        assert (title_band < 100).any(), "each row has a title drawn above it"


def test_bar_chart_bars_are_as_long_as_the_counts(coloured):
    out, manifest, _ = coloured
    chart = cv2.imread(str(out / "preview" / "class-counts.png"))
    counts = split_counts(out, manifest)
    splits = list(manifest["splits"])
    layout = ChartLayout(classes=len(CLASSES), splits=len(splits), label_width=20 + max(text_width(c) for c in CLASSES + ["class"]))
    assert chart.shape == (layout.height, layout.width, 3)
    biggest = max(n for per in counts.values() for n in per.values())
    assert biggest >= 5  # delta's 9 images over two splits
    for ci, name in enumerate(CLASSES):
        for si, split in enumerate(splits):
            x0, y0, x1, y1 = layout.bar_box(ci, si, counts[split][name], biggest)
            line = chart[(y0 + y1) // 2, x0:].astype(int)
            colour = np.array(SPLIT_COLORS[split])
            run = 0
            while run < len(line) and np.abs(line[run] - colour).max() <= 2:
                run += 1
            assert run == round(layout.plot_width * counts[split][name] / biggest), (name, split, run)


def test_undecodable_record_is_drawn_as_a_cross_not_a_crash(coloured, tmp_path):
    src, manifest, _ = coloured
    out = tmp_path / "out"
    shutil.copytree(src, out)
    doc = manifest["splits"]["train"]
    first = min(int(line.split("\t")[0]) for line in (out / doc["lst"]).read_text().splitlines() if float(line.split("\t")[1]) == 1)
    for shard in doc["shards"]:
        offsets = dict(recordio.parse_idx((out / shard["idx"]).read_text()))
        if first in offsets:
            with open(out / shard["rec"], "r+b") as f:
                f.seek(offsets[first] + 8 + recordio.IRHEADER_SIZE)
                f.write(bytes(16))  # the PNG signature and IHDR gone
    proc = run_cli(out, "--split", "train", "--per-class", PER_CLASS, "--out-dir", tmp_path / "pv", module="pipeline.preview")
    assert "Traceback" not in proc.stderr
    sheet = cv2.imread(str(tmp_path / "pv" / "train-contact-sheet.png"))
    layout = SheetLayout(rows=len(CLASSES), columns=PER_CLASS)
    x0, y0, x1, y1 = layout.cell(1, 0)  # label 1 (beta), its first record
    assert sheet[(y0 + y1) // 2, (x0 + x1) // 2].tolist() == [0, 0, 200]
    x0, y0, x1, y1 = layout.cell(1, 1)
    assert np.abs(sheet[(y0 + y1) // 2, (x0 + x1) // 2].astype(int) - COLOURED["beta"][0]).max() <= 2


def test_sample_photos_preview_with_out_dir(tmp_path):
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out)
    proc = run_cli(out, "--split", "validation", "--out-dir", tmp_path / "pv", module="pipeline.preview")
    assert proc.returncode == 0
    sheet = cv2.imread(str(tmp_path / "pv" / "validation-contact-sheet.png"))
    chart = cv2.imread(str(tmp_path / "pv" / "class-counts.png"))
    layout = SheetLayout(rows=5, columns=6)
    assert sheet.shape == (layout.height, layout.width, 3) and chart is not None
    assert not (out / "preview").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split", "nope"], "error: split 'nope' is not in {out} (it has: train, validation)"),
        (["--per-class", "0"], "error: --per-class must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_one_line(coloured, args, message):
    out = coloured[0]
    proc = run_cli(out, *args, module="pipeline.preview", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == message.format(out=out)


def test_not_an_output_folder(tmp_path):
    proc = run_cli(tmp_path, module="pipeline.preview", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: %s has no manifest.json: not a finished output of pipeline.run" % tmp_path
