"""Benchmark data sets: real photographs, cropped, scaled and re-encoded, cached on disk.

The approach of ``../shared/bench/make_images.py``: every image is a random
crop / scale / flip / colour shift of one of the photographs that ship with
scikit-image and scikit-learn, saved as JPEG, so decode and encode costs look
like a photo collection rather than synthetic noise.

Two differences, both for caching: image ``i`` is drawn from its own random
stream (seeded by ``(seed, i)``), so a pool can be grown without changing the
images already in it; and a data set of ``n`` images is a tree of hard links to
the first ``n`` images of a pool, so the 5,000-, 10,000-, 20,000- and
50,000-image sets share their files.

    pool:     .bench/pool/500x375-q90-s0/img_000123.jpg
    data set: .bench/data/500x375-q90-s0-n20000/class_003/img_000123.jpg
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import shutil
import sys

import cv2
import numpy as np

SKIMAGE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
    "retina.jpg", "hubble_deep_field.jpg", "ihc.png", "grass.png", "gravel.png", "brick.png",
)
CLASSES = 10
JPEG_QUALITY = 90
_READY = ".complete"  # marker written after the last file of a data set


def source_photo_paths(repo: str) -> tuple[list[str], str]:
    """Paths of the source photographs and where they come from.

    scikit-image / scikit-learn (the ``bench`` extra) are preferred; without
    them the repository's bundled sample photos are used, and the table says so.
    """
    try:
        import skimage
        import sklearn.datasets
    except ImportError:
        paths = sorted(glob.glob(os.path.join(repo, "sample", "photos", "*", "*.jpg")))
        return paths, "bundled sample/photos (scikit-image/scikit-learn not installed)"
    root = os.path.join(os.path.dirname(skimage.__file__), "data")
    paths = [os.path.join(root, n) for n in SKIMAGE_PHOTOS]
    paths += sorted(glob.glob(os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", "*.jpg")))
    return [p for p in paths if os.path.exists(p)], "scikit-image + scikit-learn photographs"


def load_photos(paths: list[str]) -> list[np.ndarray]:
    photos = [img for img in (cv2.imread(p, cv2.IMREAD_COLOR) for p in paths) if img is not None]
    if not photos:
        raise SystemExit("no source photos found: pip install -e '.[bench]'")
    return photos


def make_image(photos: list[np.ndarray], index: int, seed: int, width: int, height: int) -> bytes:
    """JPEG bytes of image ``index``: a random crop of a source photo, scaled, flipped, colour-shifted."""
    rng = np.random.default_rng([seed, index])
    src = photos[rng.integers(len(photos))]
    h, w = src.shape[:2]
    side = int(min(h, w) * rng.uniform(0.4, 1.0))  # crop 40-100% of the shorter side
    cw, ch = min(w, int(side * width / height)), min(h, side)
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    img = cv2.resize(src[y : y + ch, x : x + cw], (width, height), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    shift = rng.integers(-25, 26, size=3).astype(np.int16)
    img = np.clip(img.astype(np.int16) + shift, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode benchmark image %d" % index)
    return buf.tobytes()


_WORKER_PHOTOS: list[np.ndarray] = []


def _init_worker(paths: list[str]) -> None:
    cv2.setNumThreads(1)
    _WORKER_PHOTOS[:] = load_photos(paths)


def _write_one(job: tuple[str, int, int, int, int]) -> int:
    path, index, seed, width, height = job
    data = make_image(_WORKER_PHOTOS, index, seed, width, height)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return len(data)


def pool_name(width: int, height: int, seed: int) -> str:
    return "%dx%d-q%d-s%d" % (width, height, JPEG_QUALITY, seed)


def grow_pool(root: str, repo: str, count: int, width: int, height: int, seed: int, processes: int) -> str:
    """Make sure the pool holds images 0..count-1; returns its folder."""
    pool = os.path.join(root, "pool", pool_name(width, height, seed))
    os.makedirs(pool, exist_ok=True)
    jobs = [
        (os.path.join(pool, "img_%06d.jpg" % i), i, seed, width, height)
        for i in range(count)
        if not os.path.exists(os.path.join(pool, "img_%06d.jpg" % i))
    ]
    if jobs:
        paths, _ = source_photo_paths(repo)
        print("bench: generating %d %dx%d images in %s" % (len(jobs), width, height, pool), file=sys.stderr, flush=True)
        with multiprocessing.get_context("spawn").Pool(processes, _init_worker, (paths,)) as workers:
            for _ in workers.imap_unordered(_write_one, jobs, chunksize=16):
                pass
    return pool


def make_dataset(root: str, repo: str, count: int, width: int, height: int, seed: int = 0, processes: int = 2) -> str:
    """A folder of ``CLASSES`` class folders holding ``count`` images (hard links into the pool)."""
    name = "%s-n%d" % (pool_name(width, height, seed), count)
    data = os.path.join(root, "data", name)
    if os.path.exists(os.path.join(data, _READY)):
        return data
    pool = grow_pool(root, repo, count, width, height, seed, processes)
    shutil.rmtree(data, ignore_errors=True)
    for i in range(count):
        cls = os.path.join(data, "class_%03d" % (i % CLASSES))
        if i < CLASSES:
            os.makedirs(cls, exist_ok=True)
        src = os.path.join(pool, "img_%06d.jpg" % i)
        dst = os.path.join(cls, "img_%06d.jpg" % i)
        try:
            os.link(src, dst)
        except OSError:  # file system without hard links
            shutil.copyfile(src, dst)
    # The marker is not an image extension, so neither tool picks it up.
    with open(os.path.join(data, _READY), "w") as f:
        f.write("%d\n" % count)
    return data


def image_files(data: str) -> list[str]:
    """Every image of a data set, in a stable order."""
    return sorted(glob.glob(os.path.join(data, "class_*", "*.jpg")))
