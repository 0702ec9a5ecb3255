"""imgrec.images: the re-encoded size is im2rec.py's, with or without the reduced-size JPEG decode."""

import cv2
import numpy as np
import pytest

from imgrec import images


def im2rec_size(w, h, size, crop):
    """im2rec.py's arithmetic: centre crop to the shorter side, then shorter edge to ``size``."""
    if crop:
        return size, size
    return (size, h * size // w) if h > w else (w * size // h, size)


def jpeg(w, h, seed=0):
    img = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


@pytest.mark.parametrize("w,h,size", [(741, 500, 250), (4000, 3000, 256), (1001, 2003, 250), (999, 777, 123), (300, 200, 150)])
@pytest.mark.parametrize("crop", [False, True])
def test_transcoded_size_is_im2rec_size_whatever_the_dct_reduction(w, h, size, crop):
    data = jpeg(w, h)
    info = images.probe(data)
    params = images.EncodeParams(resize=size, center_crop=crop)
    out = cv2.imdecode(np.frombuffer(images.transcode(data, info, params), np.uint8), cv2.IMREAD_COLOR)
    assert out.shape[1::-1] == im2rec_size(w, h, size, crop)
    # the same size without the reduced decode
    plain = images.EncodeParams(resize=size, center_crop=crop, reduced_decode=False)
    out = cv2.imdecode(np.frombuffer(images.transcode(data, info, plain), np.uint8), cv2.IMREAD_COLOR)
    assert out.shape[1::-1] == im2rec_size(w, h, size, crop)


def test_reduction_is_used_where_the_sides_are_not_multiples_of_the_factor():
    # 741x500 at --resize 250 decodes at 1/2 (371x250): the size still comes from 741x500
    info = images.probe(jpeg(741, 500))
    assert images._reduction(info, images.EncodeParams(resize=250)) == 2
