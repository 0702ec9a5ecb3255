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

Tiny images (``make_tiny_dataset``, the small-file path of issue 17): 40x30
JPEGs of about 940 bytes, each an 80x60 crop of a source photo taken in turn,
reduced 2x, quality 80, drawn from one random stream in order, so the first
``n`` images of any tiny set are the same files and a smaller set is made of
hard links into a larger one already on disk:

    .bench/data/tiny-40x30-n400000/class_003/img_000123.jpg
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
TINY_SIZE = (40, 30)  # width, height of a tiny image
TINY_CROP = (80, 60)  # the crop of a source photo it is reduced from
TINY_QUALITY = 80
TINY_SEED = 0
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


def tiny_name(count: int) -> str:
    return "tiny-%dx%d-n%d" % (TINY_SIZE[0], TINY_SIZE[1], count)


def tiny_crops(photos: list[np.ndarray], count: int) -> list[tuple[int, int, int]]:
    """(photo index, x, y) of tiny images 0..count-1.

    Drawn in order from one stream (y then x per image), so the first ``n``
    crops do not depend on ``count``; the order of draws is fixed because the
    400,000-image set on disk was made with it.
    """
    rng = np.random.default_rng(TINY_SEED)
    cw, ch = TINY_CROP
    crops = []
    for i in range(count):
        k = i % len(photos)
        h, w = photos[k].shape[:2]
        y = int(rng.integers(0, h - ch))
        x = int(rng.integers(0, w - cw))
        crops.append((k, x, y))
    return crops


def make_tiny_image(photo: np.ndarray, x: int, y: int) -> bytes:
    cw, ch = TINY_CROP
    small = cv2.resize(photo[y : y + ch, x : x + cw], TINY_SIZE, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, TINY_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a tiny benchmark image")
    return buf.tobytes()


def _write_tiny(job: tuple[str, int, int, int]) -> None:
    path, k, x, y = job
    with open(path, "wb") as f:
        f.write(make_tiny_image(_WORKER_PHOTOS[k], x, y))


def _tiny_file(data: str, i: int) -> str:
    return os.path.join(data, "class_%03d" % (i % CLASSES), "img_%06d.jpg" % i)


def _larger_tiny_set(root: str, count: int) -> str | None:
    """A complete tiny set of at least ``count`` images already on disk (the smallest such), or None."""
    best = None
    for folder in glob.glob(os.path.join(root, "data", tiny_name(0)[:-1] + "*")):
        try:
            n = int(folder.rsplit("-n", 1)[1])
        except ValueError:
            continue
        if n >= count and os.path.exists(os.path.join(folder, _READY)) and (best is None or n < best[0]):
            best = (n, folder)
    return best[1] if best else None


def make_tiny_dataset(root: str, repo: str, count: int, processes: int = 2) -> str:
    """A folder of ``CLASSES`` class folders holding tiny images 0..count-1 (image i in class i % CLASSES)."""
    data = os.path.join(root, "data", tiny_name(count))
    if os.path.exists(os.path.join(data, _READY)):
        return data
    shutil.rmtree(data, ignore_errors=True)
    for c in range(CLASSES):
        os.makedirs(os.path.join(data, "class_%03d" % c))
    source = _larger_tiny_set(root, count)
    if source is not None:  # the same first images: link them
        for i in range(count):
            src, dst = _tiny_file(source, i), _tiny_file(data, i)
            try:
                os.link(src, dst)
            except OSError:  # file system without hard links
                shutil.copyfile(src, dst)
    else:
        paths, _ = source_photo_paths(repo)
        crops = tiny_crops(load_photos(paths), count)
        jobs = [(_tiny_file(data, i), k, x, y) for i, (k, x, y) in enumerate(crops)]
        print("bench: generating %d tiny images in %s" % (count, data), file=sys.stderr, flush=True)
        with multiprocessing.get_context("spawn").Pool(processes, _init_worker, (paths,)) as workers:
            for _ in workers.imap_unordered(_write_tiny, jobs, chunksize=256):
                pass
    with open(os.path.join(data, _READY), "w") as f:
        f.write("%d\n" % count)
    return data


_MEAN_BYTES: dict[str, float] = {}


def mean_bytes(data: str) -> float:
    """Mean file size of a data set's images (cached: a set's files never change once complete)."""
    if data not in _MEAN_BYTES:
        files = image_files(data)
        _MEAN_BYTES[data] = sum(os.path.getsize(p) for p in files) / max(len(files), 1)
    return _MEAN_BYTES[data]
