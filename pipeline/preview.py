"""Pictures of a converted dataset, so a person sees at a glance that labels match images.

    python -m pipeline.preview ./out --split train
    python -m pipeline.preview s3://bucket/rec/ --split validation --per-class 10 --out-dir ./preview

Writes two PNG files (into OUT/preview/ unless --out-dir is given):

* ``<split>-contact-sheet.png``: one row per class, titled with the class name
  and label, holding a few images decoded from the records themselves; the
  row an image sits in is the label stored in its record header;
* ``class-counts.png``: a bar chart of images per class, one bar per split.

Images are chosen through the split's ``.lst`` and ``.idx`` files and read by
random access, so a large split is not read in full. Drawing is OpenCV only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

from imgrec.quiet import one_blas_thread  # stdlib only: numpy is not loaded yet

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "imgrec-preview":
    one_blas_thread()  # the command's process: before numpy is loaded

import cv2
import numpy as np

from imgrec import recordio, storage
from imgrec.layout import MANIFEST
from imgrec.options import OptionsError, check_location
from pipeline.cli import ArgumentParser, add_version
from pipeline.verify import add_s3_flags, configure_s3

PREVIEW_DIR = "preview"
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
INK = (40, 40, 40)
CELL_BACKGROUND = (225, 225, 225)
# One colour per split (BGR), the same in every chart.
SPLIT_COLORS = {"train": (180, 119, 31), "validation": (14, 127, 255), "test": (44, 160, 44)}
OTHER_COLOR = (128, 128, 128)


class PreviewError(Exception):
    """The output cannot be previewed as asked (message says why)."""


def ascii_text(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only; anything else becomes '?'."""
    return text.encode("ascii", "replace").decode("ascii")


def put_text(img: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.55, color=INK, thickness: int = 1):
    cv2.putText(img, ascii_text(text), origin, FONT, scale, color, thickness, cv2.LINE_AA)


def text_width(text: str, scale: float = 0.55, thickness: int = 1) -> int:
    return cv2.getTextSize(ascii_text(text), FONT, scale, thickness)[0][0]


# ---------------------------------------------------------------- contact sheet


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on a contact sheet: a header, then per class a title band and a row of cells."""

    rows: int
    columns: int
    thumb: int = 128
    pad: int = 8
    title: int = 30
    header: int = 44
    min_width: int = 560

    @property
    def width(self) -> int:
        return max(self.min_width, self.pad + self.columns * (self.thumb + self.pad))

    @property
    def height(self) -> int:
        return self.header + self.rows * (self.title + self.thumb + self.pad) + self.pad

    def row_top(self, row: int) -> int:
        return self.header + row * (self.title + self.thumb + self.pad)

    def cell(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of a thumbnail cell, end-exclusive."""
        x0 = self.pad + col * (self.thumb + self.pad)
        y0 = self.row_top(row) + self.title
        return x0, y0, x0 + self.thumb, y0 + self.thumb


def fit(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` scaled to fit a ``side`` x ``side`` square, aspect kept, centred on the cell background."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.dtype != np.uint8:
        img = (img / 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
    h, w = img.shape[:2]
    scale = min(side / w, side / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    cell = np.full((side, side, 3), CELL_BACKGROUND, np.uint8)
    y, x = (side - nh) // 2, (side - nw) // 2
    cell[y : y + nh, x : x + nw] = small
    return cell


def undecodable_cell(side: int) -> np.ndarray:
    cell = np.full((side, side, 3), CELL_BACKGROUND, np.uint8)
    cv2.line(cell, (0, 0), (side - 1, side - 1), (0, 0, 200), 2)
    cv2.line(cell, (0, side - 1), (side - 1, 0), (0, 0, 200), 2)
    put_text(cell, "no decode", (6, side // 2 - 6), 0.45, (0, 0, 200))
    return cell


@dataclass(frozen=True)
class SheetRow:
    title: str
    images: list  # decoded images (np.ndarray) or None for one that does not decode


def contact_sheet(heading: str, rows: list[SheetRow], columns: int, thumb: int = 128) -> tuple[np.ndarray, SheetLayout]:
    layout = SheetLayout(rows=len(rows), columns=max(1, columns), thumb=thumb)
    sheet = np.full((layout.height, layout.width, 3), WHITE, np.uint8)
    put_text(sheet, heading, (layout.pad, 28), 0.65, INK, 2)
    for r, row in enumerate(rows):
        put_text(sheet, row.title, (layout.pad, layout.row_top(r) + layout.title - 9))
        for c in range(layout.columns):
            x0, y0, x1, y1 = layout.cell(r, c)
            if c < len(row.images):
                img = row.images[c]
                sheet[y0:y1, x0:x1] = fit(img, thumb) if img is not None else undecodable_cell(thumb)
            else:
                cv2.rectangle(sheet, (x0, y0), (x1 - 1, y1 - 1), CELL_BACKGROUND, 1)
    return sheet, layout


# ---------------------------------------------------------------- bar chart


@dataclass(frozen=True)
class ChartLayout:
    """Where the bars go: per class a group of one bar per split, class names on the left."""

    classes: int
    splits: int
    label_width: int
    plot_width: int = 560
    bar: int = 14
    gap: int = 12
    top: int = 78
    pad: int = 10
    count_room: int = 70

    @property
    def width(self) -> int:
        return self.label_width + self.plot_width + self.count_room

    @property
    def height(self) -> int:
        return self.top + self.classes * (self.splits * self.bar + self.gap) + self.pad

    def group_top(self, class_index: int) -> int:
        return self.top + class_index * (self.splits * self.bar + self.gap)

    def bar_box(self, class_index: int, split_index: int, count: int, max_count: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of one bar, end-exclusive; its length is proportional to ``count``."""
        y0 = self.group_top(class_index) + split_index * self.bar
        length = round(self.plot_width * count / max_count) if max_count else 0
        return self.label_width, y0, self.label_width + length, y0 + self.bar - 2


def bar_chart(title: str, classes: list[str], counts: dict[str, dict[str, int]]) -> tuple[np.ndarray, ChartLayout]:
    """Images per class (rows) and split (one coloured bar each), drawn with OpenCV."""
    splits = list(counts)
    label_width = 20 + max([text_width(c) for c in classes] + [text_width("class")])
    layout = ChartLayout(classes=len(classes), splits=max(1, len(splits)), label_width=label_width)
    img = np.full((layout.height, layout.width, 3), WHITE, np.uint8)
    put_text(img, title, (layout.pad, 26), 0.65, INK, 2)
    x = layout.pad
    for split in splits:  # legend
        color = SPLIT_COLORS.get(split, OTHER_COLOR)
        cv2.rectangle(img, (x, 40), (x + 14, 54), color, -1)
        label = "%s (%d)" % (split, sum(counts[split].values()))
        put_text(img, label, (x + 20, 53), 0.5)
        x += 20 + text_width(label, 0.5) + 24
    max_count = max([n for per in counts.values() for n in per.values()] + [0])
    for ci, name in enumerate(classes):
        top = layout.group_top(ci)
        put_text(img, name, (layout.pad, top + (layout.splits * layout.bar) // 2 + 5))
        for si, split in enumerate(splits):
            n = counts[split].get(name, 0)
            x0, y0, x1, y1 = layout.bar_box(ci, si, n, max_count)
            if x1 > x0:
                cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), SPLIT_COLORS.get(split, OTHER_COLOR), -1)
            put_text(img, str(n), (x1 + 4, y1 - 1), 0.4, INK)
    axis_bottom = layout.group_top(len(classes)) - layout.gap // 2
    cv2.line(img, (layout.label_width - 1, layout.top - 4), (layout.label_width - 1, axis_bottom), INK, 1)
    return img, layout


# ---------------------------------------------------------------- reading the output


def read_manifest(out: str) -> dict:
    try:
        return json.loads(storage.read_text(storage.join(out, MANIFEST)))
    except FileNotFoundError:
        raise PreviewError("%s has no %s: not a finished output of pipeline.run" % (out, MANIFEST)) from None
    except (ValueError, UnicodeDecodeError):
        raise PreviewError("%s/%s is not valid JSON" % (out.rstrip("/"), MANIFEST)) from None


def pick_records(out: str, manifest: dict, split: str, per_class: int, classes: list[str]) -> list[tuple[str, int]]:
    """``(shard .rec path, byte offset)`` of up to ``per_class`` records of each class, chosen from the ``.lst``.

    Records are taken in id order, which is already a fixed pseudo-random
    order of the images, so the same output always shows the same pictures.
    """
    doc = manifest["splits"][split]
    wanted: dict[int, list[int]] = {i: [] for i in range(len(classes))}
    for line in storage.read_text(storage.join(out, doc["lst"])).splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        label = int(float(fields[1]))
        if label in wanted and len(wanted[label]) < per_class:
            wanted[label].append(int(fields[0]))
    ids = {rid for chosen in wanted.values() for rid in chosen}
    located = []
    for shard in doc["shards"]:
        for key, offset in recordio.parse_idx(storage.read_text(storage.join(out, shard["idx"])), shard["idx"]):
            if key in ids:
                located.append((shard["rec"], offset))
    return located


def load_rows(out: str, manifest: dict, split: str, per_class: int, classes: list[str]) -> list[SheetRow]:
    """One row per class, grouped by the label in each record's own header."""
    images: dict[int, list] = {i: [] for i in range(len(classes))}
    by_shard: dict[str, list[int]] = {}
    for rec, offset in pick_records(out, manifest, split, per_class, classes):
        by_shard.setdefault(rec, []).append(offset)
    for rec, offsets in by_shard.items():
        with storage.open_read(storage.join(out, rec)) as f:
            for offset in offsets:
                header, data = recordio.unpack(recordio.read_record_at(f, offset, rec))
                label = header.label[0] if isinstance(header.label, tuple) else header.label
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
                if 0 <= int(label) < len(classes):
                    images[int(label)].append(img if img is not None and img.size else None)
    totals = manifest.get("class_counts", {}).get(split, {})
    return [
        SheetRow(
            "%s  (label %d, %d image%s in %s)" % (name, i, totals.get(name, 0), "" if totals.get(name, 0) == 1 else "s", split),
            images[i][:per_class],
        )
        for i, name in enumerate(classes)
    ]


def write_png(uri: str, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise PreviewError("could not encode %s as PNG" % uri)
    storage.write_bytes(uri, buf.tobytes())


def preview(out: str, split: str, per_class: int = 6, max_classes: int = 100, out_dir: str | None = None,
            thumb: int = 128) -> list[str]:
    """Write the contact sheet of ``split`` and the class-count chart; returns the paths written."""
    manifest = read_manifest(out)
    if split not in manifest.get("splits", {}):
        raise PreviewError("split %r is not in %s (it has: %s)" % (split, out, ", ".join(manifest.get("splits", {})) or "none"))
    classes = [str(c) for c in manifest["classes"]]
    shown = classes[:max_classes]
    note = "" if len(shown) == len(classes) else " (first %d of %d classes)" % (len(shown), len(classes))
    rows = load_rows(out, manifest, split, per_class, shown)
    target = out_dir if out_dir else storage.join(out, PREVIEW_DIR)
    sheet, _ = contact_sheet("%s: %s, up to %d images per class%s" % (out.rstrip("/"), split, per_class, note), rows,
                             per_class, thumb)
    sheet_uri = storage.join(target, "%s-contact-sheet.png" % split)
    write_png(sheet_uri, sheet)
    counts = {s: {name: int(n) for name, n in manifest.get("class_counts", {}).get(s, {}).items()} for s in manifest["splits"]}
    chart, _ = bar_chart("Images per class and split%s" % note, shown, counts)
    chart_uri = storage.join(target, "class-counts.png")
    write_png(chart_uri, chart)
    return [sheet_uri, chart_uri]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m pipeline.preview",
        description="Draw a contact sheet (a few decoded images per class) and a bar chart of images per class and split.",
    )
    add_version(parser)
    parser.add_argument("output", metavar="OUT", help="the --output folder (or s3:// prefix) of pipeline.run")
    parser.add_argument("--split", default="train", help="split to draw the contact sheet of (default: train)")
    parser.add_argument("--per-class", type=int, default=6, help="images per class row (default: 6)")
    parser.add_argument("--max-classes", type=int, default=100, help="draw at most this many classes (default: 100)")
    parser.add_argument("--thumb", type=int, default=128, help="thumbnail size in pixels (default: 128)")
    parser.add_argument("--out-dir", default=None, help="where to write the PNG files (default: OUT/preview)")
    add_s3_flags(parser, writes=True)
    return parser


def run(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_location("OUT", args.output)
        if args.out_dir:
            check_location("--out-dir", args.out_dir)
    except OptionsError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    for flag, value, low in (("--per-class", args.per_class, 1), ("--max-classes", args.max_classes, 1), ("--thumb", args.thumb, 16)):
        if value < low:
            print("error: %s must be at least %d, got %d" % (flag, low, value), file=sys.stderr)
            return 2
    try:
        if storage.is_s3(args.output) or storage.is_s3(args.out_dir or ""):
            configure_s3(args)
    except OptionsError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    try:
        written = preview(args.output, args.split, args.per_class, args.max_classes, args.out_dir, args.thumb)
    except (PreviewError, storage.StorageError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print("error: %s is missing: run python -m pipeline.verify %s" % (exc.filename, args.output), file=sys.stderr)
        return 1
    except recordio.RecordIOError as exc:
        print("error: %s (run python -m pipeline.verify %s)" % (exc, args.output), file=sys.stderr)
        return 1
    for uri in written:
        print("wrote %s" % uri)
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
