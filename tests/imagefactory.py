"""Makes the bad and the unusual-but-good inputs of real collections, on the fly and small."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def photo(w=64, h=48, seed=0) -> np.ndarray:
    """A smooth, photo-like BGR image (gradients plus noise), so JPEG behaves as on photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(w + h - 2, 1))], -1)
    img = img + rng.integers(-20, 21, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg(w=64, h=48, seed=0, **flags) -> bytes:
    params = []
    if flags.get("progressive"):
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    img = photo(w, h, seed)
    if flags.get("gray"):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return cv2.imencode(".jpg", img, params)[1].tobytes()


def png(w=64, h=48, seed=0, alpha=False, depth16=False) -> bytes:
    img = photo(w, h, seed)
    if alpha:
        img = np.dstack([img, np.full((h, w), 128, np.uint8)])
    if depth16:
        img = img.astype(np.uint16) * 257
    return cv2.imencode(".png", img)[1].tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(w=100_000, h=100_000) -> bytes:
    """A tiny PNG whose header declares w x h pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_without_pixels(w=8, h=8) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def jpeg_bomb() -> bytes:
    """A valid small JPEG whose frame header is patched to declare 65500 x 65500 pixels."""
    data = bytearray(jpeg(16, 16))
    pos = 2
    while True:
        marker = data[pos + 1]
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if marker in (0xC0, 0xC2):
            struct.pack_into(">HH", data, pos + 5, 65500, 65500)
            return bytes(data)
        pos += 2 + length


def cmyk_jpeg(w=40, h=30) -> bytes:
    from PIL import Image

    img = Image.new("CMYK", (w, h), (10, 200, 30, 5))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def exif_rotated_jpeg(w=80, h=40, orientation=6) -> bytes:
    """A w x h JPEG whose EXIF says 'rotate 90 degrees clockwise to display' (orientation 6)."""
    from PIL import Image

    img = Image.fromarray(cv2.cvtColor(photo(w, h), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


BAD = {
    # relpath -> (bytes, expected reason)
    "cat/empty.jpg": (b"", "empty_file"),
    "cat/notes.jpg": (b"this is a text file, not a picture\n", "not_an_image"),
    "cat/truncated.jpg": (None, "truncated"),
    "dog/truncated.png": (None, "truncated"),
    "dog/nopixels.png": (png_without_pixels(), "no_image_data"),
    "dog/bomb.png": (png_bomb(), "too_many_pixels"),
    "dog/bomb.jpg": (None, "too_many_pixels"),
    "cat/tab\tname.jpg": (None, "bad_filename"),
    "cat/new\nline.jpg": (None, "bad_filename"),
}


def make_bad_tree(root: Path) -> dict[str, str]:
    """Write every bad input under ``root``; returns {relpath: expected reason}."""
    full = jpeg(120, 90, seed=3)
    full_png = png(60, 40, seed=4)
    expected = {}
    for rel, (data, reason) in BAD.items():
        if data is None:
            data = {
                "cat/truncated.jpg": full[: len(full) // 2],
                "dog/truncated.png": full_png[: len(full_png) // 2],
                "dog/bomb.jpg": jpeg_bomb(),
            }.get(rel, jpeg(seed=9))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[rel] = reason
    (root / "dog").mkdir(exist_ok=True)
    os.symlink(root / "dog" / "does-not-exist.jpg", root / "dog" / "broken.jpg")
    expected["dog/broken.jpg"] = "broken_symlink"
    os.symlink(root / "dog", root / "dog" / "loop")
    expected["dog/loop"] = "symlink_loop"
    bad_name = os.path.join(os.fsencode(root / "cat"), b"latin1-\xe9t\xe9.jpg")
    with open(bad_name, "wb") as f:
        f.write(jpeg(seed=5))
    expected[os.fsdecode(b"cat/latin1-\xe9t\xe9.jpg")] = "non_utf8_name"
    return expected


def make_good_tree(root: Path) -> dict[str, bytes]:
    """Unusual but good inputs; returns {relpath: bytes}."""
    files = {
        "cat/UPPER.JPG": jpeg(seed=1),
        "cat/Mixed.Jpeg": jpeg(seed=2),
        "cat/gray.jpg": jpeg(gray=True, seed=3),
        "cat/progressive.jpg": jpeg(progressive=True, seed=4),
        "cat/cmyk.jpg": cmyk_jpeg(),
        "cat/rotated.jpg": exif_rotated_jpeg(80, 40),
        "cat/rotated-big.jpg": exif_rotated_jpeg(640, 320),
        "dog/alpha.png": png(alpha=True, seed=5),
        "dog/deep16.png": png(depth16=True, seed=6),
        "dog/one.png": png(1, 1, seed=7),
        "dog/long.png": png(600, 3, seed=8),
        "dog/with space ünïcödé 猫.jpg": jpeg(seed=9),
        "dog/nested/deeper/inner.jpg": jpeg(seed=10),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files
