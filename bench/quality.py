"""The quality cost of JPEG reduced-size (DCT-scaled) decoding, as PSNR.

Ours: ``imgrec.images.decode`` (which picks ``IMREAD_REDUCED_COLOR_2/4/8``) and
an INTER_AREA resize. Reference: a full decode and the same INTER_AREA resize
to the same size. Measured on the pixels before re-encoding, so the figure is
the cost of the reduced decode alone.
"""

from __future__ import annotations

import cv2
import numpy as np

from imgrec import images


def _pair(data: bytes, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    info = images.probe(data)
    params = images.EncodeParams(resize=size)
    reduced, factor = images.decode(data, info, params)
    # the job's own size rule: im2rec.py's size, computed from the full-size image
    ours = images.resize_shorter(reduced, size, cv2.INTER_AREA, source=images.full_size(reduced, info, factor))
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    ref = cv2.resize(full, (ours.shape[1], ours.shape[0]), interpolation=cv2.INTER_AREA)
    return ours, ref, factor


def reduced_decode_psnr(paths: list[str], size: int) -> tuple[float, float]:
    """Mean and minimum PSNR (dB) over ``paths`` for a shorter edge of ``size``."""
    values = []
    for path in paths:
        with open(path, "rb") as f:
            ours, ref, _ = _pair(f.read(), size)
        values.append(cv2.PSNR(ours, ref))
    return float(np.mean(values)), float(np.min(values))


def native_photo_psnr(paths: list[str], quality: int = 90) -> dict[int, tuple[float, float, int]]:
    """{factor: (mean dB, min dB, photos)} on unscaled photographs, JPEG-encoded at ``quality``.

    The benchmark's 4000x3000 images are small photographs scaled up, so they
    hold little fine detail and flatter the reduced decode; photographs at
    their own resolution are the harder case.
    """
    out: dict[int, tuple[float, float, int]] = {}
    photos = [img for img in (cv2.imread(p, cv2.IMREAD_COLOR) for p in paths) if img is not None]
    for factor in (2, 4, 8):
        values = []
        for img in photos:
            size = min(img.shape[:2]) // factor
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            ours, ref, used = _pair(buf.tobytes(), size)
            if used == factor:
                values.append(cv2.PSNR(ours, ref))
        if values:
            out[factor] = (float(np.mean(values)), float(np.min(values)), len(values))
    return out
