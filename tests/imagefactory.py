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


# ---------------------------------------------------------------- hostile and unusual formats (issue 15)


def _pil(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _pil_photo(w=64, h=48, seed=0):
    from PIL import Image

    return Image.fromarray(cv2.cvtColor(photo(w, h, seed), cv2.COLOR_BGR2RGB))


def interlaced_png(w=64, h=48, seed=0) -> bytes:
    """An 8-bit RGB PNG in Adam7 interlace (neither OpenCV nor Pillow writes one)."""
    rgb = cv2.cvtColor(photo(w, h, seed), cv2.COLOR_BGR2RGB)
    raw = b""
    for y0, x0, dy, dx in ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)):
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return _PNG_SIG + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def apng(w=64, h=48) -> bytes:
    """An animated PNG of three frames: its default image is the first."""
    frames = [_pil_photo(w, h, seed) for seed in range(3)]
    return _pil(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def _sof(data: bytes) -> int:
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return pos


def jpeg_with_frame(marker: int, w=64, h=48, precision=8) -> bytes:
    """A baseline JPEG whose frame header is relabelled SOFn (``marker``), with ``precision`` bits."""
    data = bytearray(jpeg(w, h))
    pos = _sof(data)
    data[pos + 1] = marker
    data[pos + 4] = precision
    return bytes(data)


def motion_photo(w=200, h=150, trailer=100_000) -> bytes:
    """A JPEG followed by an MP4-like trailer (what phones' "motion photos" append), far past 4 KiB.

    The trailer holds stray SOI/EOI-looking bytes early on, as real video data does.
    """
    body = bytes(np.random.default_rng(7).integers(0, 256, trailer, dtype=np.uint8))
    fake_mp4 = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom" + b"\xff\xd8\xff\xe1 junk \xff\xd9" + body
    return jpeg(w, h) + fake_mp4


def truncated_with_eoi(w=200, h=150) -> bytes:
    """The first half of a JPEG with an end-of-image marker appended: passes any structure check."""
    full = jpeg(w, h, seed=11)
    return full[: len(full) // 2] + b"\xff\xd9"


def frame_lie(w=4000, h=3000) -> bytes:
    """A complete 200x150 JPEG whose frame header claims ``w`` x ``h``: libjpeg decodes it with grey filler."""
    data = bytearray(jpeg(200, 150, seed=12))
    struct.pack_into(">HH", data, _sof(data) + 5, h, w)
    return bytes(data)


def other_formats(w=64, h=48) -> dict[str, bytes]:
    """One small image in every other format OpenCV decodes, by name; what mxnet/DALI may not read."""
    img = photo(w, h)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    pil = _pil_photo(w, h)
    frames = [_pil_photo(w, h, seed) for seed in range(3)]
    files = {
        "gif": _pil(pil.convert("P"), "GIF"),
        "animated.gif": _pil(frames[0].convert("P"), "GIF", save_all=True, append_images=[f.convert("P") for f in frames[1:]], duration=100, loop=0),
        "lossy.webp": cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes(),
        "lossless.webp": cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(),
        "alpha.webp": _pil(pil.convert("RGBA"), "WEBP"),
        "animated.webp": _pil(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100),
        "bmp": cv2.imencode(".bmp", img)[1].tobytes(),
        "tiff": cv2.imencode(".tiff", img)[1].tobytes(),
        "ppm": cv2.imencode(".ppm", img)[1].tobytes(),
        "pgm": cv2.imencode(".pgm", gray)[1].tobytes(),
        "pbm": cv2.imencode(".pbm", (gray > 110).astype(np.uint8) * 255)[1].tobytes(),  # one bit: black or white
        "pam": cv2.imencode(".pam", img)[1].tobytes(),
        "pfm": cv2.imencode(".pfm", img.astype(np.float32) / 255)[1].tobytes(),
        "sunras": cv2.imencode(".ras", img)[1].tobytes(),
        "hdr": cv2.imencode(".hdr", img.astype(np.float32) / 255)[1].tobytes(),
        "jp2": cv2.imencode(".jp2", img)[1].tobytes(),
        "j2k": _pil(pil, "JPEG2000", no_jp2=True),
        "avif": cv2.imencode(".avif", img)[1].tobytes(),
    }
    return files


def _tiff_set_size(data: bytearray, w: int, h: int) -> None:
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    for i in range(struct.unpack_from(order + "H", data, ifd)[0]):
        pos = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from(order + "HH", data, pos)
        if tag in (256, 257):
            struct.pack_into(order + ("H" if kind == 3 else "I"), data, pos + 8, w if tag == 256 else h)


def _boxes_named(data: bytes, name: bytes):
    """Offsets of the content of every ISO/JP2 box called ``name``, at any depth (by search, for test files)."""
    pos = data.find(name)
    while pos != -1:
        yield pos + 4
        pos = data.find(name, pos + 1)


def header_bomb(fmt: str, w=16000, h=16000) -> bytes:
    """A small real file of format ``fmt`` (a key of other_formats) whose header claims ``w`` x ``h`` pixels.

    16000 fits every format's fields (WebP's are 14 bits); 16000 x 16000 is
    over the default --max-pixels.
    """
    data = bytearray(other_formats()[fmt])
    if fmt == "bmp":
        struct.pack_into("<ii", data, 18, w, h)
    elif fmt.endswith("gif"):
        struct.pack_into("<HH", data, 6, w, h)
    elif fmt.endswith("webp"):
        chunk = bytes(data[12:16])
        if chunk == b"VP8 ":
            struct.pack_into("<HH", data, 26, w, h)
        elif chunk == b"VP8L":
            bits = struct.unpack_from("<I", data, 21)[0]
            struct.pack_into("<I", data, 21, (bits & ~0x0FFFFFFF) | (w - 1) | (h - 1) << 14)
        else:  # VP8X canvas
            data[24:27] = (w - 1).to_bytes(3, "little")
            data[27:30] = (h - 1).to_bytes(3, "little")
    elif fmt == "tiff":
        _tiff_set_size(data, w, h)
    elif fmt in ("ppm", "pgm", "pbm", "pam", "pfm", "hdr"):
        header = {
            "ppm": b"P6\n%d %d\n255\n", "pgm": b"P5\n# a comment\n%d %d\n255\n", "pbm": b"P4\n%d %d\n",
            "pam": b"P7\nWIDTH %d\nHEIGHT %d\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n",
            "pfm": b"PF\n%d %d\n-1.0\n", "hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n",
        }[fmt]
        dims = (h, w) if fmt == "hdr" else (w, h)
        return header % dims + bytes(64)
    elif fmt == "sunras":
        struct.pack_into(">ii", data, 4, w, h)
    elif fmt in ("jp2", "j2k"):
        for pos in _boxes_named(bytes(data), b"ihdr"):
            struct.pack_into(">II", data, pos, h, w)
        siz = bytes(data).find(b"\xff\x4f\xff\x51") + 2
        struct.pack_into(">II", data, siz + 6, w, h)  # Xsiz, Ysiz (the offsets after them are 0)
    elif fmt == "avif":
        for pos in _boxes_named(bytes(data), b"ispe"):
            struct.pack_into(">II", data, pos + 4, w, h)
    else:
        raise ValueError(fmt)
    return bytes(data)


def tiff_header(w: int, h: int, tile: tuple[int, int] | None = None, tags: dict | None = None) -> bytes:
    """A little-endian TIFF holding only its first directory (LONG values): enough for a header check."""
    entries = {256: w, 257: h}
    if tile:
        entries.update({322: tile[0], 323: tile[1]})
    entries.update(tags or {})
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", t, 4, 1, v) for t, v in sorted(entries.items()))
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(16)


def reader_kinds() -> dict[str, bytes]:
    """Every kind of JPEG and PNG that is stored as is, by file name: what the target readers must decode."""
    pil = _pil_photo(64, 48, seed=30)
    rgba16 = np.dstack([photo(64, 48, seed=31), np.full((48, 64), 200, np.uint8)]).astype(np.uint16) * 257
    gray16 = cv2.cvtColor(photo(64, 48, seed=39), cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    return {
        "baseline.jpg": jpeg(seed=32),
        "progressive.jpg": jpeg(progressive=True, seed=33),
        "extended-sof1.jpg": jpeg_with_frame(0xC1),
        "gray.jpg": jpeg(gray=True, seed=34),
        "cmyk.jpg": cmyk_jpeg(64, 48),
        "exif-rotated.jpg": exif_rotated_jpeg(80, 40),
        "subsampling-444.jpg": _pil(pil, "JPEG", subsampling=0),
        "subsampling-422.jpg": _pil(pil, "JPEG", subsampling=1),
        "restart-markers.jpg": cv2.imencode(".jpg", photo(64, 48, seed=35), [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])[1].tobytes(),
        "motion-photo.jpg": motion_photo(64, 48),
        "rgb.png": png(seed=36),
        "alpha.png": png(alpha=True, seed=37),
        "deep16.png": png(depth16=True, seed=38),
        "gray.png": _pil(pil.convert("L"), "PNG"),
        "gray16.png": cv2.imencode(".png", gray16)[1].tobytes(),
        "rgba16.png": cv2.imencode(".png", rgba16)[1].tobytes(),
        "palette.png": _pil(pil.convert("P"), "PNG"),
        "gray-alpha.png": _pil(pil.convert("LA"), "PNG"),
        "bilevel.png": _pil(pil.convert("1"), "PNG"),
        "interlaced.png": interlaced_png(seed=40),
        "animated.png": apng(),
        "jpeg-named.png": jpeg(seed=41),
        "png-named.jpg": png(seed=42),
    }
