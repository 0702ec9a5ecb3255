"""A prefix of 5,000+ objects over several classes is listed completely, one class prefix per element.

The objects are tiny and made on the server by a thread pool; the listing is
the real listing (``FolderListing`` elements, as ``ReadImageFolder`` makes them) on
Beam's FnApiRunner with two worker processes.
Every class holds more than one page of objects (S3 returns at most 1,000 keys
per request), so the pagination of each class listing is exercised as well.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from imgrec import items
from imgrec.env import WorkerEnv
from imgrec.options import S3Settings

CLASSES = {"ant": 1300, "bee": 1250, "cat": 1400, "dog": 1100}  # 5,050 images
NOT_IMAGES = 5  # per class: listed, counted as ignored, not taken
PAGE = 1000  # S3's maximum keys per list request


def _object_keys() -> dict[str, list[str]]:
    keys = {}
    for name, count in CLASSES.items():
        images = ["photos/%s/%s/img_%05d.jpg" % (name, "sub%d" % (i % 3) if i % 4 == 0 else "", i) for i in range(count)]
        keys[name] = [k.replace("//", "/") for k in images] + [
            "photos/%s/notes_%02d.txt" % (name, i) for i in range(NOT_IMAGES)
        ]
    return keys


@pytest.fixture(scope="module")
def big_bucket(moto_endpoint):
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1", config=Config(max_pool_connections=32)
    )
    bucket = "many-%s" % uuid.uuid4().hex[:8]
    client.create_bucket(Bucket=bucket)
    keys = _object_keys()
    everything = [k for ks in keys.values() for k in ks]
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b"\xff"), everything))
    assert client.list_objects_v2(Bucket=bucket, Prefix="photos/ant/", MaxKeys=1)["KeyCount"] == 1
    print("made %d objects in %.1f s" % (len(everything), time.monotonic() - started))
    return bucket, keys


def _list_requests(log_path: str, bucket: str) -> list[dict]:
    """The ListObjectsV2 requests the server received for ``bucket`` (from its access log)."""
    requests = []
    pattern = re.compile(r'"GET (/%s\?[^ ]*list-type=2[^ ]*) HTTP' % re.escape(bucket))
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            found = pattern.search(line)
            if found:
                requests.append({k: v[0] for k, v in parse_qs(urlsplit(found.group(1)).query).items()})
    return requests


class _ListWithEnv(beam.DoFn):
    """FolderListing -> (relpath, label, pid) per image and (folder, ignored) per folder, in a worker with the env."""

    def __init__(self, env):
        self._env = env

    def setup(self):
        self._env.apply()

    def process(self, listing):
        for item in listing.items():
            if isinstance(item, items.Image):
                yield "image", (item.path, item.labels[0], os.getpid())
            elif isinstance(item, items.Finding):
                yield "ignored", (listing.folder, item.count)


def test_5000_objects_are_listed_completely_per_class(moto_endpoint, moto_log, big_bucket, tmp_path, s3_storage):
    from imgrec import storage

    bucket, keys = big_bucket
    root = "s3://%s/photos/" % bucket
    classes, files = storage.list_top(root)
    assert classes == sorted(CLASSES) and files == []

    env = WorkerEnv(s3=S3Settings(endpoint_url=moto_endpoint))
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    listed_before = len(_list_requests(moto_log, bucket))
    listings = [items.FolderListing(root, name, (name,), (".jpg",)) for name in classes]
    import sys

    from apache_beam.internal import cloudpickle_pickler

    cloudpickle = cloudpickle_pickler.cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
            (
                p
                | beam.Create(listings)
                | beam.ParDo(_ListWithEnv(env))  # which worker process listed each image
                | beam.combiners.ToList()
                | beam.Map(lambda rows, path=str(tmp_path / "rows.json"): open(path, "w").write(json.dumps(rows)))
            )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])

    found = json.loads((tmp_path / "rows.json").read_text())
    rows = [value for kind, value in found if kind == "image"]
    expected = sorted(k[len("photos/"):] for name in CLASSES for k in keys[name] if k.endswith(".jpg"))
    assert len(expected) >= 5000
    assert sorted(r[0] for r in rows) == expected, "every image listed exactly once"
    for relpath, label, _ in rows:
        assert label == relpath.split("/")[0]
    ignored = dict(tuple(value) for kind, value in found if kind == "ignored")
    assert ignored == {name: NOT_IMAGES for name in CLASSES}

    # One paginated listing per class prefix, never one listing of the whole input.
    requests = _list_requests(moto_log, bucket)[listed_before:]
    by_prefix: dict[str, int] = {}
    for query in requests:
        assert query.get("prefix", "") != "photos/" or query.get("delimiter") == "/", query
        by_prefix[query.get("prefix", "")] = by_prefix.get(query.get("prefix", ""), 0) + 1
    for name in CLASSES:
        pages = -(-(CLASSES[name] + NOT_IMAGES) // PAGE)
        assert by_prefix.get("photos/%s/" % name) == pages, (name, by_prefix)
    # The classes were spread over both worker processes (the test process lists nothing itself).
    listers = {pid for _, _, pid in rows}
    assert len(listers) == 2 and os.getpid() not in listers
