"""A run killed mid-upload leaves a pending multipart upload; the next run aborts it, and only it (issue 15, item 14)."""

from __future__ import annotations

import json
import signal

import cv2
import numpy as np

from conftest import run_cli
from imgrec import crashpoints

# One split, one shard: three ~4 MiB images make a shard above the 8 MiB part size, so it is a multipart upload.
ARGS = ["--train-ratio", "1", "--val-ratio", "0", "--images-per-shard", "10"]


def noise_png(seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    return cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 0])[1].tobytes()


def pending(s3_client, bucket: str) -> dict[str, str]:
    """{key: upload id} of the multipart uploads not completed or aborted in ``bucket``."""
    found = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return {u["Key"]: u["UploadId"] for u in found}


def test_next_run_aborts_only_the_uploads_a_killed_run_left(tmp_path, s3_client, make_bucket, moto_endpoint):
    root = tmp_path / "in"
    (root / "noise").mkdir(parents=True)
    for i in range(3):
        (root / "noise" / ("%d.png" % i)).write_bytes(noise_png(i))
    bucket = make_bucket("mpu")
    out = "s3://%s/out" % bucket
    args = ["--input", root, "--output", out, *ARGS, "--s3-endpoint-url", moto_endpoint]

    # someone else's upload under the same prefix, in a folder the job writes to
    theirs = s3_client.create_multipart_upload(Bucket=bucket, Key="out/train/theirs.rec")["UploadId"]
    s3_client.upload_part(Bucket=bucket, Key="out/train/theirs.rec", UploadId=theirs, PartNumber=1, Body=b"x" * (5 << 20))

    killed = run_cli(*args, env={crashpoints.ENV: "multipart-part-sent"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = pending(s3_client, bucket)
    shard_key = "out/train/data-00000-of-00001.rec"
    assert set(left) == {shard_key, "out/train/theirs.rec"}, left
    records = s3_client.list_objects_v2(Bucket=bucket, Prefix="out/_work/uploads/").get("Contents", [])
    assert len(records) == 1
    record = json.loads(s3_client.get_object(Bucket=bucket, Key=records[0]["Key"])["Body"].read())
    assert record == {"bucket": bucket, "key": shard_key, "upload_id": left[shard_key]}

    run_cli(*args)
    assert pending(s3_client, bucket) == {"out/train/theirs.rec": theirs}
    assert not s3_client.list_objects_v2(Bucket=bucket, Prefix="out/_work/").get("Contents")
    ok = run_cli(out, "--s3-endpoint-url", moto_endpoint, module="pipeline.verify", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    s3_client.abort_multipart_upload(Bucket=bucket, Key="out/train/theirs.rec", UploadId=theirs)
