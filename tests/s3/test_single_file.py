"""--single-file on S3: shards concatenated server-side (UploadPartCopy), against the moto S3 server.

moto enforces S3's 5 MiB minimum for every part but the last, as S3 does, so
a concatenation that copied small shards as parts would fail here. The
operations the client sends are observed with botocore's event hooks (the
requests still go over HTTP to the server).
"""

from __future__ import annotations

import json
import os
import random

import pytest

from conftest import SAMPLE, run_cli
from imgrec import storage

from .s3util import upload_tree

MIB = 1024 * 1024


class Calls:
    """The S3 operations (and their parameters) this process's client sends while in the ``with`` block."""

    def __init__(self):
        self.ops: list[tuple[str, dict]] = []

    def _record(self, params, model, **_):
        self.ops.append((model.name, dict(params)))

    def __enter__(self):
        storage.backend_for("s3://").client().meta.events.register("before-parameter-build.s3", self._record)
        return self

    def __exit__(self, *exc):
        storage.backend_for("s3://").client().meta.events.unregister("before-parameter-build.s3", self._record)

    def names(self) -> list[str]:
        return [name for name, _ in self.ops]


def blobs(sizes, seed=0):
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in sizes]


def put_all(s3_client, bucket, parts):
    uris = []
    for i, data in enumerate(parts):
        s3_client.put_object(Bucket=bucket, Key="shards/%02d.rec" % i, Body=data)
        uris.append(("s3://%s/shards/%02d.rec" % (bucket, i), len(data)))
    return uris


def test_large_shards_are_copied_without_reading_them(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    parts = blobs([5 * MIB + 3, 6 * MIB + 1, 1000])
    sources = put_all(s3_client, bucket, parts)
    dest = "s3://%s/single/train/data.rec" % bucket
    with Calls() as calls:
        storage.concatenate(dest, sources)
    assert s3_client.get_object(Bucket=bucket, Key="single/train/data.rec")["Body"].read() == b"".join(parts)
    assert calls.names() == ["CreateMultipartUpload"] + ["UploadPartCopy"] * 3 + ["CompleteMultipartUpload"]
    ranges = [p["CopySourceRange"] for name, p in calls.ops if name == "UploadPartCopy"]
    assert ranges == ["bytes=0-%d" % (len(p) - 1) for p in parts]


def test_small_shards_are_gathered_into_parts_of_at_least_5_mib(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    parts = blobs([100, 2 * MIB, 11 * MIB, 300, 10 * MIB + 1, 50], seed=1)
    sources = put_all(s3_client, bucket, parts)
    with Calls() as calls:
        storage.concatenate("s3://%s/out.rec" % bucket, sources)
    assert s3_client.get_object(Bucket=bucket, Key="out.rec")["Body"].read() == b"".join(parts)
    read = 0
    for name, params in calls.ops:
        if name == "GetObject":
            lo, hi = map(int, params["Range"][len("bytes="):].split("-"))
            read += hi - lo + 1
    # only what S3's part minimum forces is read back: 5 MiB for each of the two gathered parts
    assert read == 2 * 5 * MIB
    assert calls.names().count("UploadPartCopy") == 3 and calls.names().count("UploadPart") == 2


def test_a_failed_concatenation_leaves_no_object(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    sources = put_all(s3_client, bucket, blobs([6 * MIB]))
    sources.append(("s3://%s/shards/absent.rec" % bucket, 10))
    with pytest.raises(FileNotFoundError):
        storage.concatenate("s3://%s/out.rec" % bucket, sources)
    assert s3_client.list_objects_v2(Bucket=bucket, Prefix="out.rec").get("KeyCount") == 0
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_ground_truth_manifest_on_s3_to_single_files_on_s3(moto_endpoint, s3_client, make_bucket, tmp_path):
    """A Ground Truth manifest with s3:// references, S3 in and out, --single-file and sagemaker.json."""
    bucket = make_bucket()
    upload_tree(s3_client, SAMPLE, bucket, "photos")
    classes = sorted(os.listdir(SAMPLE))
    lines = []
    for cls in classes:
        for f in sorted(os.listdir(SAMPLE / cls))[1:]:  # the first image of each class is left unlisted
            lines.append({"source-ref": "s3://%s/photos/%s/%s" % (bucket, cls, f), "label": classes.index(cls),
                          "label-metadata": {"class-name": cls, "type": "groundtruth/image-classification"}})
    lines.append({"source-ref": "s3://%s/photos/cat/gone.jpg" % bucket, "label": 1,
                  "label-metadata": {"class-name": "cat"}})
    s3_client.put_object(Bucket=bucket, Key="labels/output.manifest",
                         Body="".join(json.dumps(l) + "\n" for l in lines).encode())
    out = "s3://%s/rec" % bucket
    run_cli("--input", "s3://%s/photos" % bucket, "--labels", "s3://%s/labels/output.manifest" % bucket,
            "--output", out, "--s3-endpoint-url", moto_endpoint, "--images-per-shard", "3", "--single-file",
            "--direct_running_mode=in_memory")

    def get(key):
        return s3_client.get_object(Bucket=bucket, Key="rec/" + key)["Body"].read()

    m = json.loads(get("manifest.json"))
    assert m["classes"] == classes
    assert m["images_listed"] == 25 and m["errors_by_reason"] == {"missing": 1}
    assert m["report_counts"]["unlisted"] == len(classes)
    for split, doc in m["splits"].items():
        assert get(doc["single_file"]["rec"]) == b"".join(get(s["rec"]) for s in doc["shards"])
        assert get(doc["single_file"]["idx"]) == get(doc["merged_idx"])
    sm = json.loads(get("sagemaker.json"))
    assert sm["channels"]["train"]["s3_uri"] == "s3://%s/rec/single/train/" % bucket
    assert sm["num_training_samples"] == m["splits"]["train"]["records"] and sm["num_classes"] == len(classes)
