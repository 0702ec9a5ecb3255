"""Image checks and transcoding: probe, validate, decode, resize, crop, encode.

Pure functions over bytes. A bad image raises ``BadImage`` with a short
reason; callers turn it into an error record, never a crash.

``probe`` finds the format from the content, as OpenCV's ``imdecode`` does
(never from the file name), and reads the dimensions from the header of
every format OpenCV decodes, so ``--max-pixels`` holds before any pixel
buffer exists; content it cannot measure is refused, never decoded blind.
``check_storable`` says what may be stored as it is: JPEG and PNG, the
formats that mxnet 1.9.1, DALI and SageMaker all decode. Decodes go through
``decode_checked``, which also sees libjpeg's corrupt-data warnings
(libjpeg prints them and returns grey pixels in place of the missing data).
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
import tempfile
import threading
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

def tune_for_threads() -> None:
    """Settings for a process that runs one image per thread (the shard writer).

    OpenCV's own thread pool would compete with ours for the same cores, so it
    is turned off. glibc is asked to keep freed buffers under 32 MiB instead of
    unmapping them: otherwise every decoded image is a fresh mapping and its
    page faults cost up to a third of a decode's CPU time (docs/benchmark.md).
    """
    cv2.setNumThreads(1)
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded, libc's among them (find_library runs ldconfig)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameter numbers


class BadImage(ValueError):
    """An input that cannot become a record; ``reason`` is a short machine-friendly tag."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason
        self.detail = detail


# OpenCV's own guard; ours (``max_pixels``) is checked from the header first.
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's decompression-bomb limit

# What may be stored as it is: the formats that mxnet 1.9.1 (its OpenCV and
# libjpeg-turbo), DALI and SageMaker's image classification all decode.
# tests/compat/test_reader_formats.py reads every kind below back with mxnet and DALI.
STORABLE_FORMATS = ("jpeg", "png")
# JPEG frames stored as they are: Huffman-coded DCT with 8-bit samples (SOF0
# baseline, SOF1 extended, SOF2 progressive). Lossless, hierarchical,
# arithmetic-coded and 12-bit JPEGs are rare, and older libjpeg builds (and
# GPU decoders) refuse some of them: they are re-encoded or skipped instead.
STORABLE_JPEG_FRAMES = (0xC0, 0xC1, 0xC2)

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_CODING = {
    0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive", 0xC3: "lossless",
    0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical", 0xC9: "arithmetic-coded",
    0xCA: "arithmetic-coded progressive", 0xCB: "arithmetic-coded lossless", 0xCD: "arithmetic-coded hierarchical",
    0xCE: "arithmetic-coded hierarchical", 0xCF: "arithmetic-coded hierarchical",
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_PNG_IEND_CHUNK = b"\0\0\0\0" + _PNG_IEND
# The end marker is looked for in the tail first: that is every ordinary file,
# and costs one short search. Only when it is not there are the segments walked.
_TAIL = 4096
# Text headers (PNM, PAM, PFM, Radiance HDR) are searched this far for their
# dimensions; a header longer than this is refused, not read on.
_TEXT_HEADER_LIMIT = 65536

FORMAT_NAMES = {
    "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "gif": "GIF", "webp": "WebP", "tiff": "TIFF", "pnm": "PNM (PBM/PGM/PPM)",
    "pam": "PAM", "pfm": "PFM", "sunras": "Sun raster", "hdr": "Radiance HDR", "jp2": "JPEG 2000", "avif": "AVIF",
}


class ImageInfo(NamedTuple):
    """What a header says. A named tuple: made for every image, and cheaper to make than a frozen dataclass."""

    format: str  # a key of FORMAT_NAMES: "jpeg", "png", or another format OpenCV decodes
    width: int
    height: int
    jpeg_frame: int = 0  # JPEG only: the SOFn marker of its frame (0xC0 baseline, 0xC2 progressive, ...)
    bits: int = 8  # JPEG only: sample precision
    # Pixels in the decoder's largest buffer, where that can exceed width x height
    # (a TIFF tile may be larger than the image); 0 otherwise.
    buffer_pixels: int = 0


def probe(data: bytes) -> ImageInfo:
    """The format (from the content, as OpenCV finds it) and the dimensions (from the header), decoding no pixels."""
    if not data:
        raise BadImage("empty_file", "the file has 0 bytes")
    if data[:2] == b"\xff\xd8":
        return _probe_jpeg(data)
    if data[:8] == _PNG_SIGNATURE:
        return _probe_png(data)
    fmt = sniff_other(data)
    if fmt is None:
        raise BadImage("not_an_image", "content is not a JPEG, PNG or other image OpenCV reads (starts with %r)" % data[:8])
    width, height, buffer_pixels = _OTHER_PROBES[fmt](data)
    if width <= 0 or height <= 0:
        raise BadImage("bad_header", "%s header declares %dx%d pixels" % (FORMAT_NAMES[fmt], width, height))
    return ImageInfo(fmt, width, height, buffer_pixels=buffer_pixels)


def sniff(data: bytes) -> str | None:
    """The format of some content, from its signature alone (a key of FORMAT_NAMES), or None."""
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    if data[:8] == _PNG_SIGNATURE:
        return "png"
    return sniff_other(data)


def sniff_other(data: bytes) -> str | None:
    """The format OpenCV's imdecode would pick for content that is neither JPEG nor PNG (its signature checks)."""
    head = data[:32]
    if head[:2] == b"BM":
        return "bmp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] == b"ftyp" and _is_avif(data):
        return "avif"
    if head.startswith((b"#?RGBE", b"#?RADIANCE")):
        return "hdr"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"\x59\xa6\x6a\x95":
        return "sunras"
    if len(head) >= 3 and head[0:1] == b"P" and head[2:3].isspace():
        if head[1:2] in b"123456":
            return "pnm"
        if head[1:2] == b"7":
            return "pam"
        if head[1:2] in (b"F", b"f"):
            return "pfm"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "tiff"
    if head[:12] == b"\0\0\0\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51":
        return "jp2"
    return None


def _unpack(fmt: str, data: bytes, offset: int, what: str) -> tuple:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        raise BadImage("truncated", "%s header is incomplete" % what) from None


def _probe_png(data: bytes) -> ImageInfo:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise BadImage("truncated", "PNG header is incomplete")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise BadImage("bad_header", "PNG declares %dx%d pixels" % (width, height))
    return ImageInfo("png", width, height)


def _probe_jpeg(data: bytes) -> ImageInfo:
    pos = 2
    n = len(data)
    for _ in range(_MAX_SEGMENTS):
        if pos + 4 > n:
            break
        if data[pos] != 0xFF:
            raise BadImage("bad_header", "JPEG marker expected at byte %d" % pos)
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _JPEG_SOF:
            if pos + 9 > n:
                break
            bits = data[pos + 4]
            height, width = struct.unpack_from(">HH", data, pos + 5)
            if width == 0 or height == 0:
                raise BadImage("bad_header", "JPEG declares %dx%d pixels" % (width, height))
            return ImageInfo("jpeg", width, height, marker, bits)
        if marker == 0xDA:  # start of scan before any frame header
            raise BadImage("bad_header", "JPEG has no frame header before its scan")
        pos += 2 + length
    else:
        raise BadImage("bad_header", "JPEG has more than %d segments before its frame header" % _MAX_SEGMENTS)
    raise BadImage("truncated", "JPEG ends before its frame header")


# ------------------------------------------------- the other formats OpenCV decodes
# Each returns (width, height, buffer_pixels) as the decoder itself reads them.


def _probe_bmp(data: bytes) -> tuple[int, int, int]:
    (size,) = _unpack("<I", data, 14, "BMP")
    if size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sides
        width, height = _unpack("<HH", data, 18, "BMP")
    elif size >= 36:  # BITMAPINFOHEADER and later: signed, a negative height means top-down rows
        width, height = _unpack("<ii", data, 18, "BMP")
        height = abs(height)
    else:
        raise BadImage("bad_header", "BMP info header of %d bytes: dimensions cannot be read" % size)
    return width, height, 0


def _probe_gif(data: bytes) -> tuple[int, int, int]:
    # The logical screen: OpenCV draws frames on a canvas of this size and refuses frames outside it.
    width, height = _unpack("<HH", data, 6, "GIF")
    return width, height, 0


def _probe_webp(data: bytes) -> tuple[int, int, int]:
    (chunk,) = _unpack("4s", data, 12, "WebP")
    if chunk == b"VP8 ":
        start, width, height = _unpack("<3sHH", data, 23, "WebP")
        if start != b"\x9d\x01\x2a":
            raise BadImage("bad_header", "WebP lossy frame has no start code")
        return width & 0x3FFF, height & 0x3FFF, 0
    if chunk == b"VP8L":
        signature, bits = _unpack("<BI", data, 20, "WebP")
        if signature != 0x2F:
            raise BadImage("bad_header", "WebP lossless frame has no signature")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 0
    if chunk == b"VP8X":  # extended: the canvas, which every frame must fit
        w0, w1, w2, h0, h1, h2 = _unpack("<6B", data, 24, "WebP")
        return (w0 | w1 << 8 | w2 << 16) + 1, (h0 | h1 << 8 | h2 << 16) + 1, 0
    raise BadImage("bad_header", "WebP first chunk %r is not an image" % chunk)


def _probe_tiff(data: bytes) -> tuple[int, int, int]:
    """The first directory's ImageWidth/ImageLength (OpenCV decodes the first page), and its tile size."""
    order = "<" if data[:2] == b"II" else ">"
    (version,) = _unpack(order + "H", data, 2, "TIFF")
    if version == 42:
        (ifd,) = _unpack(order + "I", data, 4, "TIFF")
        (count,) = _unpack(order + "H", data, ifd, "TIFF")
        entry, first = struct.Struct(order + "HHI4s"), ifd + 2
    else:  # BigTIFF: 8-byte counts and offsets
        (ifd,) = _unpack(order + "Q", data, 8, "TIFF")
        (count,) = _unpack(order + "Q", data, ifd, "TIFF")
        entry, first = struct.Struct(order + "HHQ8s"), ifd + 8
    available = max(0, (len(data) - first) // entry.size)
    tags = {}
    for tag, kind, n, value in entry.iter_unpack(data[first : first + entry.size * min(count, available)]):
        if tag in (256, 257, 322, 323) and n >= 1:
            if kind == 3:  # SHORT
                tags[tag] = struct.unpack_from(order + "H", value)[0]
            elif kind == 4:  # LONG
                tags[tag] = struct.unpack_from(order + "I", value)[0]
            elif kind == 16:  # LONG8 (BigTIFF)
                tags[tag] = struct.unpack_from(order + "Q", value)[0]
    if 256 not in tags or 257 not in tags:
        raise BadImage("bad_header", "TIFF first directory has no readable ImageWidth/ImageLength")
    tile = tags.get(322, 0) * tags.get(323, 0)
    return tags[256], tags[257], tile


def _header_number(pattern: bytes, data: bytes, what: str) -> tuple[int, ...]:
    match = re.match(pattern, data[:_TEXT_HEADER_LIMIT])
    if match is None:
        raise BadImage("bad_header", "%s header: dimensions not found in its first %d bytes" % (what, _TEXT_HEADER_LIMIT))
    return tuple(int(g) for g in match.groups())


# Whitespace and '#' comments between the numbers of a PNM/PFM header (one
# character or comment per repetition: no exponential backtracking).
_GAP = rb"(?:\s|#[^\r\n]*[\r\n])+"


def _probe_pnm(data: bytes) -> tuple[int, int, int]:
    width, height = _header_number(rb"P[1-6]" + _GAP + rb"(\d+)" + _GAP + rb"(\d+)", data, "PNM")
    return width, height, 0


def _probe_pfm(data: bytes) -> tuple[int, int, int]:
    width, height = _header_number(rb"P[Ff]" + _GAP + rb"(\d+)" + _GAP + rb"(\d+)", data, "PFM")
    return width, height, 0


def _probe_pam(data: bytes) -> tuple[int, int, int]:
    head = data[:_TEXT_HEADER_LIMIT]
    end = head.find(b"ENDHDR")
    if end == -1:
        raise BadImage("bad_header", "PAM header: no ENDHDR in its first %d bytes" % _TEXT_HEADER_LIMIT)
    head = head[:end]
    widths = [int(v) for v in re.findall(rb"(?m)^[ \t]*WIDTH[ \t]+(\d+)", head)]
    heights = [int(v) for v in re.findall(rb"(?m)^[ \t]*HEIGHT[ \t]+(\d+)", head)]
    if not widths or not heights:
        raise BadImage("bad_header", "PAM header has no WIDTH or HEIGHT")
    return max(widths), max(heights), 0


def _probe_sunras(data: bytes) -> tuple[int, int, int]:
    width, height = _unpack(">ii", data, 4, "Sun raster")
    return width, height, 0


def _probe_hdr(data: bytes) -> tuple[int, int, int]:
    # After the header lines and an empty line, the resolution; OpenCV reads only "-Y <rows> +X <columns>".
    match = re.search(rb"\n\n-Y (\d+) \+X (\d+)", data[:_TEXT_HEADER_LIMIT])
    if match is None:
        raise BadImage("bad_header", "Radiance HDR header: no '-Y rows +X columns' line in its first %d bytes" % _TEXT_HEADER_LIMIT)
    height, width = int(match.group(1)), int(match.group(2))
    return width, height, 0


def _probe_jp2(data: bytes) -> tuple[int, int, int]:
    """The codestream's SIZ (what OpenJPEG allocates by), and for a boxed JP2 also its ihdr box: the larger."""
    if data[:4] == b"\xff\x4f\xff\x51":
        return _j2k_size(data, 0) + (0,)
    sizes = []
    for kind, start, end in _boxes(data, 0, len(data), "JPEG 2000"):
        if kind == b"jp2h":
            for sub, s, e in _boxes(data, start, end, "JPEG 2000"):
                if sub == b"ihdr":
                    height, width = _unpack(">II", data, s, "JPEG 2000")
                    sizes.append((width, height))
        elif kind == b"jp2c":
            sizes.append(_j2k_size(data, start))
            break
    if not sizes:
        raise BadImage("bad_header", "JPEG 2000 file has no image header or codestream")
    return max(sizes, key=lambda wh: wh[0] * wh[1]) + (0,)


def _j2k_size(data: bytes, pos: int) -> tuple[int, int]:
    soc, siz, _length, _caps, x1, y1, x0, y0 = _unpack(">HHHHIIII", data, pos, "JPEG 2000 codestream")
    if soc != 0xFF4F or siz != 0xFF51:
        raise BadImage("bad_header", "JPEG 2000 codestream does not start with its SIZ marker")
    return x1 - x0, y1 - y0


def _boxes(data: bytes, pos: int, end: int, what: str):
    """(type, content start, content end) of the ISO/JP2 boxes in data[pos:end]."""
    for _ in range(_MAX_SEGMENTS):
        if pos + 8 > end:
            return
        size, kind = _unpack(">I4s", data, pos, what)
        header = 8
        if size == 1:
            (size,) = _unpack(">Q", data, pos + 8, what)
            header = 16
        elif size == 0:  # to the end of its container
            size = end - pos
        if size < header:
            raise BadImage("bad_header", "%s box %r has a bad length" % (what, kind))
        yield kind, pos + header, min(pos + size, end)
        pos += size
    raise BadImage("bad_header", "%s has more than %d boxes in one container" % (what, _MAX_SEGMENTS))


def _is_avif(data: bytes) -> bool:
    """libavif's file-type check: an ftyp box naming avif or avis among its brands."""
    size, _ = struct.unpack_from(">I4s", data, 0)
    brands = data[8 : min(size, 4096, len(data))]
    return any(brands[i : i + 4] in (b"avif", b"avis") for i in range(0, len(brands) - 3, 4))


def _probe_avif(data: bytes) -> tuple[int, int, int]:
    """The largest image spatial extent ('ispe') among the items: the primary image, its grid, alpha, thumbnails."""
    sizes = []
    for kind, start, end in _boxes(data, 0, len(data), "AVIF"):
        if kind == b"meta":  # a full box: 4 bytes of version and flags before its children
            for sub, s, e in _boxes(data, start + 4, end, "AVIF"):
                if sub == b"iprp":
                    for prop, ps, pe in _boxes(data, s, e, "AVIF"):
                        if prop == b"ipco":
                            for item, is_, ie in _boxes(data, ps, pe, "AVIF"):
                                if item == b"ispe":
                                    sizes.append(_unpack(">II", data, is_ + 4, "AVIF"))
    if not sizes:
        raise BadImage("bad_header", "AVIF file declares no image size ('ispe'): its pixels cannot be measured")
    width, height = max(sizes, key=lambda wh: wh[0] * wh[1])
    return width, height, 0


_OTHER_PROBES = {
    "bmp": _probe_bmp, "gif": _probe_gif, "webp": _probe_webp, "tiff": _probe_tiff, "pnm": _probe_pnm,
    "pam": _probe_pam, "pfm": _probe_pfm, "sunras": _probe_sunras, "hdr": _probe_hdr, "jp2": _probe_jp2,
    "avif": _probe_avif,
}


# ------------------------------------------------------------ end of the image

# After a scan's entropy-coded data, the next marker: 0xFF followed by a byte
# that is not a stuffed zero and not a restart marker RSTn (0xFF itself is a fill
# byte before the marker, which the walk skips). A pattern that starts with a
# literal byte is searched for fast: 0.7 ms per 1.6 MB of scan, against 14 ms for "\xff+...".
# Real files have tens of segments (a progressive JPEG a few per scan) and
# boxes; a file made of millions of empty ones is refused instead of walked.
_MAX_SEGMENTS = 65536
_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def jpeg_end(data: bytes) -> int:
    """The offset just past a JPEG's end-of-image marker, found by walking its segments and scans.

    For files whose end marker is not near the end: a valid JPEG followed by
    other data (phone "motion photos" append an MP4) or a truncated one. The
    scans are skipped with one regular-expression search each, not byte by byte.
    """
    n = len(data)
    pos = 2
    for _ in range(_MAX_SEGMENTS):
        if pos + 2 > n:
            break
        if data[pos] != 0xFF:
            raise BadImage("bad_header", "JPEG marker expected at byte %d" % pos)
        marker = data[pos + 1]
        if marker == 0xD9:
            return pos + 2
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if pos + 4 > n:
            break
        length = data[pos + 2] << 8 | data[pos + 3]
        if length < 2:
            raise BadImage("bad_header", "JPEG segment at byte %d has length %d" % (pos, length))
        pos += 2 + length
        if marker == 0xDA:  # the scan's entropy-coded data runs to the next marker
            found = _AFTER_SCAN.search(data, pos)
            if found is None:
                raise BadImage("truncated", "JPEG has no end-of-image marker: its scan data runs to the end of the file")
            pos = found.start()
    else:
        raise BadImage("bad_header", "JPEG has more than %d segments before its end-of-image marker" % _MAX_SEGMENTS)
    raise BadImage("truncated", "JPEG has no end-of-image marker: the file ends inside a segment")


def png_end(data: bytes) -> int:
    """The offset just past a PNG's IEND chunk (length, type and CRC are fixed: one search, not a chunk walk)."""
    found = data.find(_PNG_IEND_CHUNK, 8)
    if found == -1:
        raise BadImage("truncated", "PNG has no IEND chunk")
    return found + len(_PNG_IEND_CHUNK)


def check_structure(data: bytes, max_pixels: int) -> ImageInfo:
    """The cheap check done on every image, pass-through included.

    Dimensions are parsed from the header of every format (and refused above
    ``max_pixels`` before any pixel buffer exists) and a JPEG's or PNG's end
    marker must be there, which catches the common truncated upload or copy.
    Data after the end marker is allowed: decoders stop at the marker.
    """
    info = probe(data)
    if info.format == "jpeg":
        if data.rfind(b"\xff\xd9", max(0, len(data) - _TAIL)) == -1:
            jpeg_end(data)  # raises with the reason, or finds the marker before trailing data
        if data.find(b"\xff\xda") == -1:
            raise BadImage("no_image_data", "JPEG has no scan (no pixel data)")
    elif info.format == "png":
        if data.rfind(_PNG_IEND, max(0, len(data) - _TAIL)) == -1:
            png_end(data)
        if data.find(b"IDAT") == -1:
            raise BadImage("no_image_data", "PNG has no IDAT chunk (no pixel data)")
    pixels = info.width * info.height
    if pixels > max_pixels or info.buffer_pixels > max_pixels:
        if info.buffer_pixels > pixels:
            pixels = info.buffer_pixels
            detail = "%s tiles of %d pixels exceed --max-pixels %d" % (FORMAT_NAMES[info.format], pixels, max_pixels)
        else:
            detail = "%dx%d = %d pixels exceeds --max-pixels %d" % (info.width, info.height, pixels, max_pixels)
        raise BadImage("too_many_pixels", detail)
    return info


def check_storable(info: ImageInfo) -> None:
    """Raise ``unsupported_format`` for an image that may not be stored as it is (pass-through).

    Records must decode in every target reader whatever the file was named:
    JPEG (the frame kinds in STORABLE_JPEG_FRAMES, 8-bit) and PNG.
    """
    if info.format == "png" or (info.format == "jpeg" and info.jpeg_frame in STORABLE_JPEG_FRAMES and info.bits == 8):
        return
    if info.format not in STORABLE_FORMATS:
        what = "%s content" % FORMAT_NAMES.get(info.format, info.format)
    else:
        coding = _JPEG_CODING.get(info.jpeg_frame, "unknown")
        what = "%s JPEG with %d-bit samples (SOF%d)" % (coding, info.bits, info.jpeg_frame - 0xC0)
    raise BadImage(
        "unsupported_format",
        "%s: records store JPEG (8-bit baseline or progressive) or PNG as is, the images mxnet, DALI and "
        "SageMaker all decode; re-encode it with --resize or --encoding" % what,
    )


@dataclass(frozen=True)
class EncodeParams:
    """im2rec.py's re-encoding options, with its meanings."""

    resize: int = 0  # shorter edge to this many pixels, aspect kept; 0 = keep
    center_crop: bool = False
    quality: int = 95  # JPEG 1-100, PNG compression 0-9
    encoding: str = ".jpg"
    color: int = 1  # 1 colour, 0 grayscale, -1 unchanged (alpha kept)
    reduced_decode: bool = True  # JPEG DCT-domain downscale when shrinking at least 2x


def _imread_flags(color: int) -> int:
    if color == 1:
        return cv2.IMREAD_COLOR
    if color == 0:
        return cv2.IMREAD_GRAYSCALE
    return cv2.IMREAD_UNCHANGED


def _reduction(info: ImageInfo, params: EncodeParams) -> int:
    """The largest JPEG DCT scale (1, 2, 4, 8) that keeps the shorter edge >= the target."""
    if not (params.reduced_decode and params.resize and info.format == "jpeg" and params.color in (0, 1)):
        return 1
    # The shorter edge is what --resize targets, with or without a centre crop.
    short = min(info.width, info.height)
    factor = 1
    for f in (2, 4, 8):
        if short // f >= params.resize:
            factor = f
    return factor


def _reduced_flag(color: int, factor: int) -> int:
    if color == 1:
        return {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    return {
        2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
        4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
        8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
    }[factor]


# ------------------------------------------------------------ decoder messages

# libjpeg reports corrupt or missing data through its default output_message,
# which OpenCV leaves in place: one line printed on the C stderr (fd 2), after
# which it decodes on and returns grey pixels for what is missing. These are the
# warnings that mean the pixels are not the image (not, say, a bad ICC profile).
_CORRUPT_MESSAGE = re.compile(
    rb"Corrupt JPEG data: (?!bad ICC marker)[^\r\n]*|Premature end of JPEG file|"
    rb"Inconsistent progression sequence[^\r\n]*|Invalid SOS parameters for sequential JPEG"
)
# Those lines name no file, and the image they belong to is reported with its
# path (errors.jsonl, verify): they are not passed on to the real stderr.
_CORRUPT_LINE = re.compile(b"(?:" + _CORRUPT_MESSAGE.pattern + rb")\r?\n")
# The capture file is emptied when no decode runs and it holds more than this.
_CAPTURE_KEEP = 1 << 20


class DecoderMessages:
    """What decoders print on fd 2 while ``cv2.imdecode`` runs, tied to the decode that printed it.

    opencv-python gives no other way to see libjpeg's warnings. While any
    decode runs, fd 2 points at an anonymous file, and each decode reads back
    what was printed while it ran; everything but the corrupt-data lines is
    passed on to the real stderr, so nothing another thread prints is lost.
    Decodes run in parallel (a lock around every decode would serialise them
    all), so a message seen during one may come from another: a decode that
    sees one runs again ``alone`` (no other decode meanwhile) to know for sure.
    Messages are rare, so only the images that print one are decoded twice and
    only those wait for the others; the cost per decode is a few system calls
    (about 5 us, measured). Whatever the process writes to fd 2 from C while a
    decode runs (a faulthandler dump, a child process's stderr) goes through
    the file too: the job starts no child processes.
    """

    def __init__(self):
        self._lock = threading.Condition()
        self._active = 0  # decodes running
        self._alone = False  # a decode runs alone
        self._waiting_alone = 0
        self._file = None  # the anonymous file fd 2 points at while decodes run
        self._sink = -1
        self._real = -1  # the real fd 2 while redirected (-1: it was closed)
        self._forwarded = 0  # bytes of the file already passed on

    def run(self, fn, alone: bool = False):
        """``(fn(), bytes printed on fd 2 while it ran)``; with ``alone``, no other decode runs meanwhile."""
        with self._lock:
            if alone:
                self._waiting_alone += 1
                while self._active or self._alone:
                    self._lock.wait()
                self._waiting_alone -= 1
                self._alone = True
            else:
                while self._alone or self._waiting_alone:
                    self._lock.wait()
            if self._active == 0:
                self._redirect()
            self._active += 1
            start = os.fstat(self._sink).st_size
        try:
            result = fn()
        finally:
            with self._lock:
                end = os.fstat(self._sink).st_size
                printed = os.pread(self._sink, end - start, start) if end > start else b""
                self._forward()
                self._active -= 1
                self._alone = False if alone else self._alone
                if self._active == 0:
                    self._restore()
                self._lock.notify_all()
        return result, printed

    def _redirect(self) -> None:
        if self._file is None:
            if hasattr(os, "memfd_create"):
                self._file = open(os.memfd_create("imgrec-decoder-messages", os.MFD_CLOEXEC), "w+b", buffering=0)
            else:
                self._file = tempfile.TemporaryFile(buffering=0)
            self._sink = self._file.fileno()
        try:
            self._real = os.dup(2)
        except OSError:  # fd 2 closed: what is printed has nowhere to go
            self._real = -1
        os.dup2(self._sink, 2)

    def _restore(self) -> None:
        real, self._real = self._real, -1
        if real >= 0:
            os.dup2(real, 2)
            os.close(real)
        else:
            os.close(2)
        self._forward(2 if real >= 0 else -1)
        if self._forwarded > _CAPTURE_KEEP:
            os.ftruncate(self._sink, 0)
            os.lseek(self._sink, 0, os.SEEK_SET)
            self._forwarded = 0

    def _forward(self, target: int | None = None) -> None:
        """Pass what was printed since the last call on to the real stderr."""
        end = os.fstat(self._sink).st_size
        if end <= self._forwarded:
            return
        chunk = memoryview(_CORRUPT_LINE.sub(b"", os.pread(self._sink, end - self._forwarded, self._forwarded)))
        self._forwarded = end
        target = self._real if target is None else target
        while chunk and target >= 0:
            try:
                chunk = chunk[os.write(target, chunk) :]
            except OSError:  # the real stderr is gone: as for any print to it
                return


_MESSAGES = DecoderMessages()


def corrupt_message(printed: bytes) -> str | None:
    """The first corrupt-data warning in what a decoder printed, as text, or None."""
    found = _CORRUPT_MESSAGE.search(printed)
    return found.group().decode("ascii", "replace") if found else None


def decode_checked(data: bytes, flags: int) -> np.ndarray | None:
    """``cv2.imdecode``, raising ``corrupt_data`` when the decoder reports corrupt or missing data.

    ``cv2.error`` passes through. A warning seen while other decodes ran is
    checked by decoding again alone: the image is refused only for its own.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    img, printed = _MESSAGES.run(lambda: cv2.imdecode(buf, flags))
    if corrupt_message(printed):
        img, printed = _MESSAGES.run(lambda: cv2.imdecode(buf, flags), alone=True)
        message = corrupt_message(printed)
        if message:
            raise BadImage("corrupt_data", "the decoder reports %r: the pixels would not be the image's" % message)
    return img


def decode(data: bytes, info: ImageInfo, params: EncodeParams) -> tuple[np.ndarray, int]:
    """Decode with OpenCV; returns the pixels and the DCT reduction factor used."""
    factor = _reduction(info, params)
    flags = _reduced_flag(params.color, factor) if factor > 1 else _imread_flags(params.color)
    try:
        img = decode_checked(data, flags)
    except cv2.error as exc:
        raise BadImage("decode_failed", str(exc).strip().splitlines()[-1]) from None
    if img is None or img.size == 0:
        raise BadImage("decode_failed", "OpenCV could not decode the image")
    return img, factor


def center_crop(img: np.ndarray) -> np.ndarray:
    """im2rec.py's centre crop: the largest centred square."""
    h, w = img.shape[:2]
    if h > w:
        margin = (h - w) // 2
        return img[margin : margin + w, :]
    margin = (w - h) // 2
    return img[:, margin : margin + h]


def resize_shorter(
    img: np.ndarray, size: int, interpolation: int, max_pixels: int = DEFAULT_MAX_PIXELS,
    source: tuple[int, int] | None = None,
) -> np.ndarray:
    """im2rec.py's resize: shorter edge to ``size``, the other edge by integer division.

    ``source`` is the (width, height) the target size is computed from, when ``img``
    is a DCT-reduced decode of it: the reduced image's sides are rounded up, so
    computing from them could come out a pixel off im2rec.py's size.
    """
    h, w = img.shape[:2]
    if source is not None:
        w, h = source
    if h > w:
        new_w, new_h = size, h * size // w
    else:
        new_w, new_h = w * size // h, size
    new_w, new_h = max(1, new_w), max(1, new_h)
    if new_w * new_h > max_pixels:
        # A very elongated image (say 5000x1) would grow to 1,280,000x256 pixels.
        raise BadImage(
            "too_many_pixels",
            "resizing %dx%d to a shorter edge of %d gives %dx%d, over --max-pixels %d" % (w, h, size, new_w, new_h, max_pixels),
        )
    if (new_w, new_h) == img.shape[1::-1]:
        return img
    return cv2.resize(img, (new_w, new_h), interpolation=interpolation)


def encode(img: np.ndarray, params: EncodeParams) -> bytes:
    if params.encoding == ".png":
        flags = [cv2.IMWRITE_PNG_COMPRESSION, params.quality]
    else:
        flags = [cv2.IMWRITE_JPEG_QUALITY, params.quality]
    if img.dtype != np.uint8 and params.encoding == ".jpg":
        # 16-bit PNG input: JPEG holds 8 bits per channel.
        img = (img / 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
    ok, buf = cv2.imencode(params.encoding, img, flags)
    if not ok:
        raise BadImage("encode_failed", "OpenCV could not encode the image as %s" % params.encoding)
    return buf.tobytes()


def full_size(img: np.ndarray, info: ImageInfo, factor: int) -> tuple[int, int] | None:
    """The (width, height) a full decode would give, for an image decoded at 1/``factor``.

    A reduced decode rounds each side up (ceil(side / factor)); an EXIF rotation
    applied by OpenCV swaps them. None when there was no reduction or the shape
    matches neither.
    """
    if factor <= 1 or not (info.width and info.height):
        return None
    h, w = img.shape[:2]
    reduced = (-(-info.width // factor), -(-info.height // factor))
    if (w, h) == reduced:
        return info.width, info.height
    if (h, w) == reduced:  # turned by a quarter for its EXIF orientation
        return info.height, info.width
    return None


def transcode(data: bytes, info: ImageInfo, params: EncodeParams, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Decode, crop, resize and re-encode one image the way im2rec.py does."""
    if info.format == "pfm":
        # OpenCV's 8-bit decode of a PFM drops its scale (a black image): refuse rather than store that.
        raise BadImage("unsupported_format", "PFM holds floating-point samples, which JPEG and PNG cannot; convert it first")
    img, factor = decode(data, info, params)
    if img.dtype.kind == "f":  # --color -1 keeps a Radiance HDR's (or a float TIFF's) floats
        raise BadImage(
            "unsupported_format",
            "%s holds floating-point samples, which JPEG and PNG cannot; re-encode with --color 1 or 0, "
            "or convert it first" % FORMAT_NAMES[info.format],
        )
    full = full_size(img, info, factor)
    if params.center_crop:
        img = center_crop(img)
        if full is not None:
            full = (min(full),) * 2
    if params.resize:
        # After a DCT-domain reduction, finish with an area resize (the better
        # filter for shrinking); otherwise keep im2rec.py's bilinear resize. The
        # size is im2rec.py's, computed from the full-size image (or its crop).
        interp = cv2.INTER_AREA if factor > 1 else cv2.INTER_LINEAR
        img = resize_shorter(img, params.resize, interp, max_pixels, full)
    return encode(img, params)


def full_decode_check(data: bytes, color: int = 1) -> None:
    """``--validate decode``: the image must decode to pixels, and the decoder report no corrupt data."""
    try:
        img = decode_checked(data, _imread_flags(color))
    except cv2.error as exc:
        raise BadImage("decode_failed", str(exc).strip().splitlines()[-1]) from None
    if img is None or img.size == 0:
        raise BadImage("decode_failed", "OpenCV could not decode the image")
