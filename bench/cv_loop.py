"""The plain-OpenCV limit: read, decode, resize, encode every image on N processes, nothing else.

No framing, no index, no checks: the least work that turns the same inputs
into the same kind of outputs, so its rate is the ceiling for our job.

    python bench/cv_loop.py --list FILES.txt --out DIR --workers 2 --resize 256 --quality 95
    python bench/cv_loop.py ... --reduce 8 --interpolation area    # the 4000x3000 mode

Each process takes every N-th file and appends its encoded images to its own
output file (large sequential writes).

``--malloc keep`` (the default) first tells glibc to keep freed buffers of up
to 32 MiB in the heap. Without it every decoded 500x375 image is a fresh
memory mapping: about 240 page faults per image, a third of the loop's CPU
time on this machine. ``--malloc plain`` measures the loop as it is.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import multiprocessing
import os

import cv2
import numpy as np

REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt() parameters


def keep_freed_buffers() -> bool:
    """Ask glibc not to map/unmap (and not to trim) buffers under 32 MiB; False where not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 256 << 20))
    except (OSError, AttributeError):
        return False


def shorter_edge_size(w: int, h: int, size: int) -> tuple[int, int]:
    """im2rec.py's target size: shorter edge to ``size``, the other by integer division."""
    return (size, h * size // w) if h > w else (w * size // h, size)


def work(args: tuple[list[str], str, int, int, int, int, bool]) -> int:
    paths, out, resize, quality, reduce, interpolation, keep = args
    cv2.setNumThreads(1)  # one process per core already
    if keep:
        keep_freed_buffers()
    done = 0
    with open(out, "wb", buffering=1 << 20) as f:
        for path in paths:
            with open(path, "rb") as src:
                data = src.read()
            img = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED[reduce])
            h, w = img.shape[:2]
            # the target comes from the full-size dimensions, as in the pipeline
            img = cv2.resize(img, shorter_edge_size(w * reduce, h * reduce, resize), interpolation=interpolation)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            f.write(buf)
            done += 1
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", required=True, help="text file with one image path per line")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--resize", type=int, default=256)
    ap.add_argument("--quality", type=int, default=95)
    ap.add_argument("--reduce", type=int, default=1, choices=sorted(REDUCED))
    ap.add_argument("--interpolation", default="linear", choices=sorted(INTERPOLATION))
    ap.add_argument("--malloc", default="keep", choices=("keep", "plain"),
                    help="keep: glibc keeps freed buffers (no page fault per image); plain: as is")
    args = ap.parse_args()
    with open(args.list) as f:
        paths = [line.rstrip("\n") for line in f if line.strip()]
    os.makedirs(args.out, exist_ok=True)
    n = args.workers
    jobs = [
        (paths[i::n], os.path.join(args.out, "part-%d.bin" % i), args.resize, args.quality, args.reduce,
         INTERPOLATION[args.interpolation], args.malloc == "keep")
        for i in range(n)
    ]
    with multiprocessing.Pool(n) as pool:
        done = sum(pool.map(work, jobs, chunksize=1))
    if done != len(paths):
        raise SystemExit("cv_loop: converted %d of %d images" % (done, len(paths)))
    print("cv_loop: %d images" % done)


if __name__ == "__main__":
    main()
