"""Issue 15, items 9-12: hostile and unusual image content.

9. ``--max-pixels`` holds for every format OpenCV decodes, before any pixel buffer exists.
10. ``--validate decode`` (and re-encoding) refuses images whose decoder reports corrupt or missing data.
11. Only JPEG and PNG content is stored as is; other formats are re-encoded or skipped (``unsupported_format``).
12. A JPEG followed by other data (a "motion photo") is accepted; a truncated one is refused with the true reason.

The pure checks first, then the command line on small trees of such files.
(tests/compat/test_reader_formats.py reads the results with mxnet and DALI.)
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

import imagefactory as fac
from conftest import load_manifest, run_cli
from imgrec import images, recordio
from imgrec import verify as V

OTHER = fac.other_formats()


# ---------------------------------------------------------------- 9: the pixel limit in every format


@pytest.mark.parametrize("name", sorted(OTHER))
def test_probe_reads_the_size_opencv_decodes_in_every_format(name):
    data = OTHER[name]
    info = images.probe(data)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None, "OpenCV decodes %s" % name
    assert (info.width, info.height) == decoded.shape[1::-1]
    assert info.format not in images.STORABLE_FORMATS


@pytest.mark.parametrize("name", sorted(OTHER))
def test_a_header_bomb_in_every_format_is_refused_from_its_header(name):
    # a small real file whose header claims 16000 x 16000: never handed to a decoder
    bomb = fac.header_bomb(name)
    with pytest.raises(images.BadImage) as exc:
        images.check_structure(bomb, images.DEFAULT_MAX_PIXELS)
    assert exc.value.reason == "too_many_pixels"
    assert exc.value.detail == "16000x16000 = 256000000 pixels exceeds --max-pixels %d" % images.DEFAULT_MAX_PIXELS


def test_the_bmp_of_the_report_declaring_20000_square_is_refused():
    bomb = fac.header_bomb("bmp", 20000, 20000)
    with pytest.raises(images.BadImage, match="20000x20000 = 400000000 pixels exceeds --max-pixels"):
        images.check_structure(bomb, images.DEFAULT_MAX_PIXELS)


def test_tiff_tiles_larger_than_the_image_count_against_the_limit():
    # OpenCV allocates a buffer per tile: a 16x16 image with 16384x16384 tiles is a 1 GiB buffer
    assert images.probe(fac.tiff_header(16, 16)).buffer_pixels == 0
    with pytest.raises(images.BadImage) as exc:
        images.check_structure(fac.tiff_header(16, 16, tile=(16384, 16384)), 100_000_000)
    assert exc.value.reason == "too_many_pixels"
    assert exc.value.detail == "TIFF tiles of 268435456 pixels exceed --max-pixels 100000000"
    assert images.check_structure(fac.tiff_header(16, 16, tile=(256, 256)), 100_000_000).width == 16


@pytest.mark.parametrize(
    "data, detail",
    [
        (b"P6\n#" + b"x" * 70_000 + b"\n64 48\n255\n" + bytes(64), "PNM header: dimensions not found in its first 65536 bytes"),
        (b"P7\nWIDTH 64\nHEIGHT 48\n" + bytes(64), "PAM header: no ENDHDR in its first 65536 bytes"),
        (b"P7\nDEPTH 3\nENDHDR\n" + bytes(64), "PAM header has no WIDTH or HEIGHT"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n+X 64 -Y 48\n" + bytes(64),
         "Radiance HDR header: no '-Y rows +X columns' line in its first 65536 bytes"),
        (b"\0\0\0\x14ftypavif\0\0\0\0avif" + b"\0\0\0\x0cmeta\0\0\0\0" + bytes(32),
         "AVIF file declares no image size ('ispe'): its pixels cannot be measured"),
        (fac.tiff_header(64, 48, tags={256: 0})[:8] + b"\x01\x00" + bytes(12) + bytes(16),
         "TIFF first directory has no readable ImageWidth/ImageLength"),
        (b"BM" + bytes(12) + b"\x14\0\0\0" + bytes(40), "BMP info header of 20 bytes: dimensions cannot be read"),
        (b"RIFF\0\0\0\0WEBPALPH" + bytes(32), "WebP first chunk b'ALPH' is not an image"),
        (b"\0\0\0\x0cjP  \r\n\x87\n" + b"\0\0\0\x14ftypjp2 \0\0\0\0jp2 " + bytes(16), "JPEG 2000 file has no image header or codestream"),
    ],
    ids=["pnm-long-comment", "pam-no-end", "pam-no-size", "hdr-other-orientation", "avif-no-ispe", "tiff-no-size",
         "bmp-odd-header", "webp-no-frame", "jp2-no-codestream"],
)
def test_content_whose_size_cannot_be_read_is_refused_not_decoded(data, detail):
    with pytest.raises(images.BadImage) as exc:
        images.check_structure(data, images.DEFAULT_MAX_PIXELS)
    assert (exc.value.reason, exc.value.detail) == ("bad_header", detail)


def test_a_truncated_header_is_truncated():
    with pytest.raises(images.BadImage) as exc:
        images.check_structure(OTHER["bmp"][:20], images.DEFAULT_MAX_PIXELS)
    assert (exc.value.reason, exc.value.detail) == ("truncated", "BMP header is incomplete")


# ---------------------------------------------------------------- 11: what may be stored as it is


STORABLE = {
    "baseline.jpg": fac.jpeg(),
    "progressive.jpg": fac.jpeg(progressive=True),
    "extended-sof1.jpg": fac.jpeg_with_frame(0xC1),
    "gray.jpg": fac.jpeg(gray=True),
    "cmyk.jpg": fac.cmyk_jpeg(),
    "png": fac.png(),
    "alpha.png": fac.png(alpha=True),
    "deep16.png": fac.png(depth16=True),
    "interlaced.png": fac.interlaced_png(),
    "animated.png": fac.apng(),
}


@pytest.mark.parametrize("name", sorted(STORABLE))
def test_jpeg_and_png_kinds_are_storable(name):
    images.check_storable(images.check_structure(STORABLE[name], images.DEFAULT_MAX_PIXELS))


@pytest.mark.parametrize("name", sorted(OTHER))
def test_other_formats_are_not_storable_and_the_detail_says_what_to_do(name):
    with pytest.raises(images.BadImage) as exc:
        images.check_storable(images.probe(OTHER[name]))
    assert exc.value.reason == "unsupported_format"
    fmt = images.FORMAT_NAMES[images.probe(OTHER[name]).format]
    assert exc.value.detail.startswith("%s content: records store JPEG" % fmt)
    assert "--resize or --encoding" in exc.value.detail


@pytest.mark.parametrize(
    "marker, bits, what",
    [(0xC3, 8, "lossless JPEG with 8-bit samples (SOF3)"), (0xC1, 12, "extended sequential JPEG with 12-bit samples (SOF1)"),
     (0xC9, 8, "arithmetic-coded JPEG with 8-bit samples (SOF9)"), (0xC5, 8, "hierarchical JPEG with 8-bit samples (SOF5)")],
)
def test_jpeg_kinds_outside_what_every_reader_decodes_are_not_storable(marker, bits, what):
    info = images.probe(fac.jpeg_with_frame(marker, precision=bits))
    with pytest.raises(images.BadImage) as exc:
        images.check_storable(info)
    assert exc.value.reason == "unsupported_format" and exc.value.detail.startswith(what + ": ")


@pytest.mark.parametrize("name", sorted(set(OTHER) - {"pfm"}))
def test_other_formats_re_encode_to_what_opencv_decodes(name):
    data = OTHER[name]
    out = images.transcode(data, images.probe(data), images.EncodeParams(encoding=".png", quality=3))  # lossless
    assert images.probe(out).format == "png"
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR), reference)
    assert reference.std() > 10, "a picture, not a flat page"


@pytest.mark.parametrize("name, color", [("pfm", 1), ("hdr", -1)])
def test_floating_point_images_are_refused_not_re_encoded_black(name, color):
    data = OTHER[name]
    with pytest.raises(images.BadImage) as exc:
        images.transcode(data, images.probe(data), images.EncodeParams(color=color))
    assert exc.value.reason == "unsupported_format" and "floating-point samples" in exc.value.detail


def test_verify_flags_stored_content_that_is_not_jpeg_or_png():
    assert V.decode_problem(fac.jpeg()) is None and V.decode_problem(fac.png(alpha=True)) is None
    assert V.decode_problem(OTHER["animated.gif"]) == (
        "image is GIF, not JPEG or PNG: mxnet, DALI and SageMaker do not all decode it"
    )
    assert V.decode_problem(OTHER["lossy.webp"]).startswith("image is WebP, not JPEG or PNG")
    assert V.decode_problem(fac.jpeg_with_frame(0xC3)) == (
        "image is lossless JPEG with 8-bit samples (SOF3), which mxnet, DALI and SageMaker do not all decode"
    )
    assert V.decode_problem(fac.truncated_with_eoi()) == (
        "image data is corrupt (the decoder reports 'Corrupt JPEG data: premature end of data segment': "
        "the pixels would not be the image's)"
    )


# ---------------------------------------------------------------- 10: corrupt data the decoder reports


@pytest.mark.parametrize("data", [fac.truncated_with_eoi(), fac.frame_lie()], ids=["truncated+EOI", "frame-lie"])
def test_decode_check_and_re_encoding_refuse_what_libjpeg_reports_corrupt(data):
    info = images.check_structure(data, images.DEFAULT_MAX_PIXELS)  # the header check cannot see it
    for check in (lambda: images.full_decode_check(data), lambda: images.transcode(data, info, images.EncodeParams(resize=32))):
        with pytest.raises(images.BadImage) as exc:
            check()
        assert exc.value.reason == "corrupt_data"
        assert "'Corrupt JPEG data: premature end of data segment'" in exc.value.detail


def test_decode_check_accepts_good_images_of_every_stored_kind():
    for name, data in STORABLE.items():
        images.full_decode_check(data)
        images.full_decode_check(data, color=-1)


def test_a_corrupt_image_is_told_apart_from_good_ones_decoded_at_the_same_time(capfd):
    """Threads decode good and corrupt JPEGs at once: exactly the corrupt ones are refused, and
    what other threads print on stderr meanwhile still reaches it (libjpeg's own lines do not)."""
    good = [fac.jpeg(400, 300, seed=s) for s in range(4)]
    bad = [fac.truncated_with_eoi(400, 300), fac.frame_lie(1600, 1200)]
    work = [(d, False) for d in good] * 6 + [(d, True) for d in bad] * 6
    np.random.default_rng(0).shuffle(work)
    stop = threading.Event()

    def chatter():
        while not stop.is_set():
            os.write(2, b"a line from another thread\n")
            stop.wait(0.001)

    def verdict(item):
        data, _ = item
        try:
            images.full_decode_check(data)
            return False
        except images.BadImage as exc:
            assert exc.reason == "corrupt_data"
            return True

    stderr_before = os.fstat(2)
    talker = threading.Thread(target=chatter)
    talker.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            verdicts = list(pool.map(verdict, work))
    finally:
        stop.set()
        talker.join()
    assert verdicts == [corrupt for _, corrupt in work]
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (stderr_before.st_dev, stderr_before.st_ino), "fd 2 is restored"
    err = capfd.readouterr().err
    assert "a line from another thread" in err
    assert "Corrupt JPEG data" not in err


# ---------------------------------------------------------------- 12: data after the end of the image


def test_a_motion_photo_is_accepted_and_its_end_found():
    base = fac.jpeg(200, 150)
    data = fac.motion_photo(200, 150)
    assert data.rfind(b"\xff\xd9", len(data) - 4096) == -1, "the fast path cannot see its end marker"
    assert images.jpeg_end(data) == len(base)
    assert images.check_structure(data, images.DEFAULT_MAX_PIXELS).width == 200


@pytest.mark.parametrize(
    "data", [fac.jpeg(200, 150, progressive=True), cv2.imencode(".jpg", fac.photo(200, 150), [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])[1].tobytes()],
    ids=["progressive", "restart-markers"],
)
def test_the_walk_passes_every_scan_and_restart_marker(data):
    assert images.jpeg_end(data + bytes(10_000)) == len(data)


def test_a_truncated_jpeg_followed_by_data_gives_the_true_reason():
    full = fac.jpeg(200, 150)
    cut = full[: len(full) // 2] + bytes(10_000)  # no end-of-image marker anywhere
    with pytest.raises(images.BadImage) as exc:
        images.check_structure(cut, images.DEFAULT_MAX_PIXELS)
    assert (exc.value.reason, exc.value.detail) == (
        "truncated", "JPEG has no end-of-image marker: its scan data runs to the end of the file"
    )
    with pytest.raises(images.BadImage, match="the file ends inside a segment"):
        images.check_structure(full[:300], images.DEFAULT_MAX_PIXELS)


def test_a_file_of_endless_empty_segments_is_refused_not_walked():
    comments = b"\xff\xfe\x00\x02" * 70_000
    with pytest.raises(images.BadImage, match="JPEG has more than 65536 segments before its frame header"):
        images.check_structure(fac.jpeg()[:20] + comments, images.DEFAULT_MAX_PIXELS)
    head = fac.jpeg()
    head = head[: head.find(b"\xff\xda")]  # the header segments, frame header included
    with pytest.raises(images.BadImage, match="JPEG has more than 65536 segments before its end-of-image marker"):
        images.check_structure(head + comments, images.DEFAULT_MAX_PIXELS)


def test_a_png_followed_by_data_is_accepted_and_a_truncated_one_is_not():
    data = fac.png(200, 150)
    images.check_structure(data + bytes(10_000), images.DEFAULT_MAX_PIXELS)
    assert images.png_end(data + bytes(10_000)) == len(data)
    with pytest.raises(images.BadImage) as exc:
        images.check_structure(data[:-20] + bytes(10_000), images.DEFAULT_MAX_PIXELS)
    assert (exc.value.reason, exc.value.detail) == ("truncated", "PNG has no IEND chunk")


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A tree of JPEG/PNG photos and hostile or unusual files, all named as JPEG or PNG."""
    root = tmp_path_factory.mktemp("hostile") / "in"
    files = {}
    for i in range(4):
        files["cat/photo-%d.jpg" % i] = fac.jpeg(200, 150, seed=i)
        files["dog/photo-%d.png" % i] = fac.png(200, 150, seed=10 + i)
    files["dog/png-named.jpg"] = fac.png(120, 90, seed=20)
    files["cat/jpeg-named.png"] = fac.jpeg(120, 90, seed=21)
    files["cat/motion-photo.jpg"] = fac.motion_photo(200, 150)
    files["cat/truncated-eoi.jpg"] = fac.truncated_with_eoi()
    files["cat/frame-lie.jpg"] = fac.frame_lie(320, 240)  # under --max-pixels 100000 below
    files["dog/big.bmp.jpg"] = cv2.imencode(".bmp", fac.photo(400, 300))[1].tobytes()  # 120,000 pixels
    for name in ("animated.gif", "lossy.webp", "animated.webp", "tiff", "jp2"):
        files["dog/%s.jpg" % name] = OTHER[name]
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root, files


def _errors(out):
    lines = (out / "errors.jsonl").read_text().splitlines() if (out / "errors.jsonl").exists() else []
    return {e["path"]: e for e in map(json.loads, lines)}


def _stored(out):
    """{relpath: stored image bytes}."""
    m = load_manifest(out)
    found = {}
    for doc in m["splits"].values():
        paths = {int(line.split("\t")[0]): line.split("\t")[-1] for line in (out / doc["lst"]).read_text().splitlines()}
        for shard in doc["shards"]:
            with open(out / shard["rec"], "rb") as f:
                for rec in recordio.read_records(f):
                    header, body = recordio.unpack(rec.payload)
                    found[paths[header.id]] = body
    return found


def _convert(hostile, tmp_path, *flags, verify_problems=0):
    root, _ = hostile
    out = tmp_path / "out"
    proc = run_cli("--input", root, "--output", out, "--max-pixels", "100000", *flags)
    assert "Traceback" not in proc.stderr
    verify = run_cli(out, module="pipeline.verify", check=False)
    problems = [line for line in verify.stderr.splitlines() if line.startswith("error: ")]
    assert len(problems) == verify_problems, verify.stderr
    return out, proc, problems


UNSUPPORTED = {"dog/animated.gif.jpg": "GIF", "dog/lossy.webp.jpg": "WebP", "dog/animated.webp.jpg": "WebP",
               "dog/tiff.jpg": "TIFF", "dog/jp2.jpg": "JPEG 2000"}
CORRUPT = ("cat/truncated-eoi.jpg", "cat/frame-lie.jpg")


def test_pass_through_stores_jpeg_and_png_content_only(hostile, tmp_path):
    root, files = hostile
    out, proc, problems = _convert(hostile, tmp_path, verify_problems=2)
    errors = _errors(out)
    assert {p: e["reason"] for p, e in errors.items()} == {
        **{p: "unsupported_format" for p in UNSUPPORTED}, "dog/big.bmp.jpg": "too_many_pixels",
    }
    for path, fmt in UNSUPPORTED.items():
        assert errors[path]["stage"] == "validate"
        assert errors[path]["detail"].startswith("%s content: records store JPEG" % fmt)
        assert "re-encode it with --resize or --encoding" in errors[path]["detail"]
    assert errors["dog/big.bmp.jpg"]["detail"] == "400x300 = 120000 pixels exceeds --max-pixels 100000"
    stored = _stored(out)
    # JPEG and PNG content whatever the name, the motion photo with its trailer, byte for byte; the
    # header check cannot see corrupt scan data (--validate decode can, below)
    assert sorted(stored) == sorted(set(files) - set(errors))
    assert all(stored[p] == files[p] for p in stored)
    assert "unsupported_format" in proc.stdout
    # ... and pipeline.verify names them
    assert all("image data is corrupt (the decoder reports 'Corrupt JPEG data: premature end of data segment'" in p
               for p in problems)


def test_validate_decode_refuses_what_the_decoder_reports_corrupt(hostile, tmp_path):
    out, _, _ = _convert(hostile, tmp_path, "--validate", "decode")
    errors = _errors(out)
    for path in CORRUPT:
        assert errors[path]["reason"] == "corrupt_data"
        assert errors[path]["detail"].startswith("the decoder reports 'Corrupt JPEG data: premature end of data segment'")
    assert "cat/motion-photo.jpg" in _stored(out) and "cat/photo-0.jpg" in _stored(out)


def test_re_encoding_converts_other_formats_and_refuses_corrupt_data(hostile, tmp_path):
    root, files = hostile
    out, _, _ = _convert(hostile, tmp_path, "--resize", "32")
    errors = _errors(out)
    assert {p: e["reason"] for p, e in errors.items()} == {
        **{p: "corrupt_data" for p in CORRUPT}, "dog/big.bmp.jpg": "too_many_pixels",
    }
    stored = _stored(out)
    assert sorted(stored) == sorted(set(files) - set(errors))
    for path, body in stored.items():
        assert images.probe(body).format == "jpeg", path
        assert min(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape[:2]) == 32, path
