"""Image checks and transcoding: probe, validate, decode, resize, crop, encode.

Pure functions over bytes. A bad image raises ``BadImage`` with a short
reason; callers turn it into an error record, never a crash.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from dataclasses import dataclass

import cv2
import numpy as np

# OpenCV's own guard; ours (``max_pixels``) is checked from the header first.
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's decompression-bomb limit

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_OTHER_SIGNATURES = (
    (b"BM", "bmp"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"RIFF", "webp"),
    (b"II*\0", "tiff"),
    (b"MM\0*", "tiff"),
    (b"\0\0\0\x0cjP  ", "jp2"),
    (b"P5", "pnm"),
    (b"P6", "pnm"),
)


def tune_for_threads() -> None:
    """Settings for a process that runs one image per thread (the shard writer).

    OpenCV's own thread pool would compete with ours for the same cores, so it
    is turned off. glibc is asked to keep freed buffers under 32 MiB instead of
    unmapping them: otherwise every decoded image is a fresh mapping and its
    page faults cost up to a third of a decode's CPU time (docs/benchmark.md).
    """
    cv2.setNumThreads(1)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
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


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg" | "png" | "other"
    width: int
    height: int


def probe(data: bytes) -> ImageInfo:
    """Read the format and dimensions from the header without decoding pixels."""
    if not data:
        raise BadImage("empty_file", "the file has 0 bytes")
    if data[:2] == b"\xff\xd8":
        return _probe_jpeg(data)
    if data[:8] == _PNG_SIGNATURE:
        return _probe_png(data)
    for signature, fmt in _OTHER_SIGNATURES:
        if data.startswith(signature) and (fmt != "webp" or data[8:12] == b"WEBP"):
            # Formats OpenCV reads but we do not parse: checked only by --validate decode.
            return ImageInfo(fmt, 0, 0)
    raise BadImage("not_an_image", "content is not a JPEG, PNG or other image OpenCV reads (starts with %r)" % data[:8])


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
    while pos + 4 <= n:
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
            height, width = struct.unpack_from(">HH", data, pos + 5)
            if width == 0 or height == 0:
                raise BadImage("bad_header", "JPEG declares %dx%d pixels" % (width, height))
            return ImageInfo("jpeg", width, height)
        if marker == 0xDA:  # start of scan before any frame header
            raise BadImage("bad_header", "JPEG has no frame header before its scan")
        pos += 2 + length
    raise BadImage("truncated", "JPEG ends before its frame header")


def check_structure(data: bytes, max_pixels: int) -> ImageInfo:
    """The cheap check done on every image, pass-through included.

    Dimensions are parsed from the header (and refused above ``max_pixels``
    before any pixel buffer exists) and the end-of-image marker must be there,
    which catches the common truncated upload or copy.
    """
    info = probe(data)
    if info.format == "jpeg":
        # EOI may be followed by padding or trailing metadata from some cameras.
        if data.rfind(b"\xff\xd9", max(0, len(data) - 4096)) == -1:
            raise BadImage("truncated", "JPEG has no end-of-image marker")
        if data.find(b"\xff\xda") == -1:
            raise BadImage("no_image_data", "JPEG has no scan (no pixel data)")
    elif info.format == "png":
        if data.rfind(_PNG_IEND, max(0, len(data) - 4096)) == -1:
            raise BadImage("truncated", "PNG has no IEND chunk")
        if data.find(b"IDAT") == -1:
            raise BadImage("no_image_data", "PNG has no IDAT chunk (no pixel data)")
    if info.width * info.height > max_pixels:
        raise BadImage(
            "too_many_pixels",
            "%dx%d = %d pixels exceeds --max-pixels %d" % (info.width, info.height, info.width * info.height, max_pixels),
        )
    return info


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


def decode(data: bytes, info: ImageInfo, params: EncodeParams) -> tuple[np.ndarray, int]:
    """Decode with OpenCV; returns the pixels and the DCT reduction factor used."""
    buf = np.frombuffer(data, dtype=np.uint8)
    factor = _reduction(info, params)
    flags = _reduced_flag(params.color, factor) if factor > 1 else _imread_flags(params.color)
    try:
        img = cv2.imdecode(buf, flags)
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
    img, factor = decode(data, info, params)
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
    """``--validate decode``: the image must decode to pixels."""
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _imread_flags(color))
    except cv2.error as exc:
        raise BadImage("decode_failed", str(exc).strip().splitlines()[-1]) from None
    if img is None or img.size == 0:
        raise BadImage("decode_failed", "OpenCV could not decode the image")
