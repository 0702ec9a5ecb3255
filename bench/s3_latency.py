#!/usr/bin/env python3
"""How --read-threads hides S3 latency: the job reading from a local S3 server behind a delaying proxy.

    .venv/bin/python bench/s3_latency.py                    # 300 photos, 30 ms per GET, read-threads 1..32
    .venv/bin/python bench/s3_latency.py --images 600 --delay 0.05 --read-threads 1 8 32

moto's S3 server runs on 127.0.0.1; every GET passes through a proxy that waits
``--delay`` seconds first (tests/s3/flaky_proxy.py), as a real bucket's first-byte
latency would. The job runs S3 -> local in pass-through mode with the same runner
each time; only ``--read-threads`` changes. Prints images/s per setting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "s3"))
sys.path.insert(0, str(REPO))

from flaky_proxy import FlakyProxy  # noqa: E402

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
}


def start_moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **FAKE_ENV})
    for _ in range(300):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/moto-api/" % port, timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--delay", type=float, default=0.03, help="seconds added to every GET (default 0.03)")
    ap.add_argument("--read-threads", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--workers", type=int, default=0,
                    help="Beam worker processes (--direct_num_workers); default: the job's default, one process")
    args = ap.parse_args()

    import boto3

    from tests.s3.s3util import free_port  # noqa: E402

    port = free_port()
    moto = start_moto(port)
    tmp = Path(tempfile.mkdtemp(prefix="s3lat-"))
    try:
        endpoint = "http://127.0.0.1:%d" % port
        client = boto3.client("s3", endpoint_url=endpoint, **{"region_name": "us-east-1"},
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        client.create_bucket(Bucket="photos")
        photos = sorted((REPO / "sample" / "photos").rglob("*.jpg"))
        for i in range(args.images):
            src = photos[i % len(photos)]
            client.put_object(Bucket="photos", Key="in/%s/%05d.jpg" % (src.parent.name, i), Body=src.read_bytes())
        print("%d images in s3://photos/in/, %.0f ms added to every GET, %s"
              % (args.images, args.delay * 1000,
                 "%d worker processes" % args.workers if args.workers else "one process (the default runner)"))
        print("%14s %10s %10s" % ("read-threads", "seconds", "images/s"))
        with FlakyProxy(endpoint) as proxy:
            proxy.get_delay = args.delay
            for n in args.read_threads:
                out = tmp / ("out-%d" % n)
                start = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "pipeline.run", "--input", "s3://photos/in/", "--output", str(out),
                     "--s3-endpoint-url", proxy.url, "--read-threads", str(n), "--quiet"]
                    + (["--direct_num_workers", str(args.workers)] if args.workers else []),
                    cwd=REPO, env={**os.environ, **FAKE_ENV}, capture_output=True, text=True,
                )
                took = time.perf_counter() - start
                if proc.returncode:
                    print(proc.stderr)
                    return 1
                print("%14d %10.2f %10.0f" % (n, took, args.images / took))
    finally:
        moto.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
