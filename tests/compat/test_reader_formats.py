"""What is stored decodes in the real readers: mxnet 1.9.1 and DALI (CPU), whatever kind of image went in.

Issue 15, item 11. Pass-through stores JPEG and PNG content as it is, whatever the
file is named: every kind of those (progressive, CMYK, 16-bit, interlaced,
animated PNG, a JPEG with a video appended, ...) is converted, then read back
through ``mx.image.imdecode`` (MXIndexedRecordIO), ``mx.io.ImageRecordIter`` and
DALI's ``fn.readers.mxnet`` + ``fn.decoders.image``. Other formats (GIF, WebP,
TIFF, ...) are skipped in pass-through and re-encoded with ``--resize``; the
re-encoded records are read the same way. The last test shows why they are not
stored as they are: a reader cannot decode them.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import imagefactory as fac
from conftest import load_manifest, run_cli

from .conftest import run_helper

KINDS = fac.reader_kinds()
OTHER = fac.other_formats()


def make_tree(root, files):
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def convert(tmp_path_factory, name, files, *flags):
    root = tmp_path_factory.mktemp(name) / "in"
    make_tree(root, files)
    out = root.parent / "out"
    run_cli("--input", root, "--output", out, "--train-ratio", "1", "--val-ratio", "0", "--exts", ".jpg,.png", *flags)
    return out, load_manifest(out)


def shard_pairs(out, manifest):
    return [[str(out / s["rec"]), str(out / s["idx"])] for s in manifest["splits"]["train"]["shards"]]


def ids_to_paths(out, manifest):
    lines = (out / manifest["splits"]["train"]["lst"]).read_text().splitlines()
    return {int(line.split("\t")[0]): line.split("\t")[-1] for line in lines}


def reference_thumb(data: bytes) -> np.ndarray:
    """What mxnet should see: OpenCV's colour decode (no EXIF turn, as mxnet's OpenCV), RGB, 8x8 area average."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (8, 8), interpolation=cv2.INTER_AREA).astype(int)


def read_everywhere(mx_python, dali_python, out, manifest):
    """(mxnet records, ImageRecordIter items of one epoch, DALI items of one epoch) for the train split."""
    shards = shard_pairs(out, manifest)
    doc = manifest["splits"]["train"]
    records, epoch = run_helper(mx_python, "mx_read.py", {"tasks": [
        {"kind": "records", "shards": shards},
        {"kind": "iter", "path_imgrec": ";".join(p[0] for p in shards), "path_imgidx": str(out / doc["merged_idx"]),
         "epochs": 1, "data_shape": [3, 32, 32], "resize": 32, "shards": shards},
    ]})["results"]
    (dali,) = run_helper(dali_python, "dali_read.py", {"readers": [
        {"path": [p[0] for p in shards], "index_path": str(out / doc["merged_idx"]), "batch_size": 4},
    ]})["results"]
    return records["records"], epoch["epochs"][0], dali


@pytest.fixture(scope="module")
def pass_through(tmp_path_factory):
    files = {("cat/" if i % 2 else "dog/") + name: data for i, (name, data) in enumerate(sorted(KINDS.items()))}
    out, manifest = convert(tmp_path_factory, "formats-pass-through", files)
    return files, out, manifest


def test_every_jpeg_and_png_kind_is_stored_as_it_is(pass_through):
    files, out, manifest = pass_through
    assert manifest["errors"] == 0
    assert manifest["splits"]["train"]["records"] == len(files)


def test_mxnet_and_dali_decode_every_stored_kind(mx_python, dali_python, pass_through):
    files, out, manifest = pass_through
    records, epoch, dali = read_everywhere(mx_python, dali_python, out, manifest)
    paths = ids_to_paths(out, manifest)
    assert sorted(paths[r["id"]] for r in records) == sorted(files), "mx.image.imdecode decoded every record"
    for rec in records:
        data = files[paths[rec["id"]]]
        shape = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION).shape
        assert rec["shape"] == [shape[0], shape[1], 3], paths[rec["id"]]
        # the right pixels, not just some: within a few levels of OpenCV's decode (CMYK and 16-bit conversions differ slightly)
        diff = np.abs(np.array(rec["thumb"]).reshape(8, 8, 3) - reference_thumb(data)).mean()
        assert diff < 4, (paths[rec["id"]], diff)
    assert len(epoch) == len(files), "ImageRecordIter returned one epoch of every record"
    assert dali["epoch_size"] == len(files) and len(dali["items"]) == len(files)
    assert all(len(item["shape"]) == 3 and item["shape"][2] == 3 for item in dali["items"]), "DALI decoded every record"


@pytest.fixture(scope="module")
def reencoded(tmp_path_factory):
    files = {"cat/%s.jpg" % name: data for name, data in OTHER.items()}
    files.update({"dog/" + name: data for name, data in KINDS.items()})
    out, manifest = convert(tmp_path_factory, "formats-reencoded", files, "--resize", "40")
    return files, out, manifest


def test_other_formats_are_re_encoded_and_decode_everywhere(mx_python, dali_python, reencoded):
    files, out, manifest = reencoded
    # all but PFM, whose floating-point samples OpenCV's 8-bit decode would turn black (refused instead)
    assert manifest["errors_by_reason"] == {"unsupported_format": 1} and "cat/pfm.jpg" in (out / "errors.jsonl").read_text()
    assert manifest["splits"]["train"]["records"] == len(files) - 1
    records, epoch, dali = read_everywhere(mx_python, dali_python, out, manifest)
    assert len(records) == len(epoch) == dali["epoch_size"] == len(files) - 1
    assert all(min(r["shape"][:2]) == 40 and r["shape"][2] == 3 for r in records)
    assert all(min(item["shape"][:2]) == 40 for item in dali["items"])


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    paths = {}
    for name, data in OTHER.items():
        paths[name] = root / name
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def raw_decodes(mx_python, dali_python, raw_files):
    names = sorted(raw_files)
    files = [str(raw_files[n]) for n in names]
    mx = run_helper(mx_python, "reader_decode.py", {"reader": "mxnet", "files": files})["results"]
    dali = run_helper(dali_python, "reader_decode.py", {"reader": "dali", "files": files})["results"]
    return dict(zip(names, zip(mx, dali)))


# What the readers make of the other formats' raw bytes (mxnet 1.9.1, and DALI on the CPU): a reader that
# cannot decode a format is why it is never stored as it is. BMP and TIFF decode in both, but SageMaker's
# image classification documents .jpg and .png images only, so they are re-encoded (or skipped) too.
MXNET_FAILS = {"animated.gif", "gif", "lossy.webp", "lossless.webp", "alpha.webp", "animated.webp", "ppm", "pgm", "pbm",
               "pam", "pfm", "sunras", "hdr", "jp2", "j2k", "avif"}
DALI_FAILS = {"animated.gif", "gif", "pam", "pfm", "sunras", "hdr", "avif"}


def test_the_readers_cannot_decode_what_is_never_stored_as_it_is(raw_decodes):
    got_mx = {name for name, (mx, _) in raw_decodes.items() if not mx["ok"]}
    got_dali = {name for name, (_, dali) in raw_decodes.items() if not dali["ok"]}
    assert (got_mx, got_dali) == (MXNET_FAILS, DALI_FAILS), raw_decodes
    assert all(mx["error"] for name, (mx, _) in raw_decodes.items() if name in MXNET_FAILS)
