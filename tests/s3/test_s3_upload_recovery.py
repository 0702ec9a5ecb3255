"""Killed S3 runs: the next run aborts the multipart uploads they left and only those (issue 15, item 14),
redoes shards whose inputs changed (item 4) and completes an increment that never committed (item 1)."""

from __future__ import annotations

import json
import shutil
import signal

import cv2
import numpy as np

from conftest import SAMPLE, run_cli
from imgrec import crashpoints, recordio

from .s3util import download_tree, upload_tree

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


def test_resume_redoes_a_shard_whose_s3_input_changed_in_place(tmp_path, s3_client, make_bucket, moto_endpoint):
    """An object replaced by one of the same size has another ETag: the shard holding it is written again."""
    bucket = make_bucket("etag")
    upload_tree(s3_client, SAMPLE, bucket, "photos")
    out = tmp_path / "out"
    args = ["--input", "s3://%s/photos" % bucket, "--output", out, "--images-per-shard", "4",
            "--s3-endpoint-url", moto_endpoint]
    killed = run_cli(*args, env={crashpoints.ENV: "before-manifest"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    records = [json.loads(p.read_text()) for p in (out / "_work" / "shards").glob("*.json")]
    victim = "cat/cat_00.jpg"
    shard = next(r["rec"] for r in records if ("\t%s\n" % victim) in (out / r["lst_file"]).read_text())
    inodes = {r["rec"]: (out / r["rec"]).stat().st_ino for r in records}

    original = (SAMPLE / victim).read_bytes()
    changed = bytearray(original)
    middle = next(i for i in range(len(changed) // 2, len(changed)) if 0xFF not in changed[i - 1:i + 1])
    changed[middle] ^= 0x01  # the same size, still a whole JPEG
    s3_client.put_object(Bucket=bucket, Key="photos/" + victim, Body=bytes(changed))

    run_cli(*args, "--resume")
    kept = {rel for rel, ino in inodes.items() if (out / rel).stat().st_ino == ino}
    assert kept == set(inodes) - {shard}
    with open(out / shard, "rb") as f:
        payloads = [recordio.unpack(r.payload)[1] for r in recordio.read_records(f)]
    assert bytes(changed) in payloads and original not in payloads


def test_increment_on_s3_killed_before_its_commit_then_rerun(tmp_path, s3_client, make_bucket, moto_endpoint):
    """The --incremental commit on S3: killed after the new lists were written, the old manifest still holds;
    the next run adds every new image once."""
    root = tmp_path / "in"
    shutil.copytree(SAMPLE, root)
    bucket = make_bucket("inc")
    out = "s3://%s/ds" % bucket
    args = ["--input", root, "--output", out, "--images-per-shard", "4", "--incremental",
            "--s3-endpoint-url", moto_endpoint]
    run_cli(*args)
    before = download_tree(s3_client, bucket, "ds")
    for i in range(3):
        shutil.copy(root / "cat" / "cat_00.jpg", root / "cat" / ("copy_%d.jpg" % i))
    killed = run_cli(*args, env={crashpoints.ENV: "lists-written"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    now = download_tree(s3_client, bucket, "ds")
    assert all(now[rel] == data for rel, data in before.items() if not rel.startswith("_work/")), "old files intact"

    run_cli(*args)
    got = download_tree(s3_client, bucket, "ds")
    m = json.loads(got["manifest.json"])
    paths = [line.split("\t")[-1] for doc in m["splits"].values() for line in got[doc["lst"]].decode().splitlines()]
    images = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    assert sorted(paths) == sorted(images)
    assert not any(rel.startswith("_work/") for rel in got)
    assert not any(rel.startswith("lists/") and rel not in (d["lst"] for d in m["splits"].values()) for rel in got)
    ok = run_cli(out, "--s3-endpoint-url", moto_endpoint, module="pipeline.verify", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_resume_on_s3_output_keeps_finished_shards_and_writes_one_whose_lst_lines_are_gone(
        tmp_path, s3_client, make_bucket, moto_endpoint):
    """--resume with the output on S3: a shard whose .lst lines object is gone is written again, every other
    finished shard is kept as it was (same object, same ETag), and the dataset is a clean run's."""
    bucket = make_bucket("resume")
    out = "s3://%s/ds" % bucket
    args = ["--input", SAMPLE, "--output", out, "--images-per-shard", "4", "--s3-endpoint-url", moto_endpoint]
    killed = run_cli(*args, env={crashpoints.ENV: "before-manifest"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = download_tree(s3_client, bucket, "ds")
    records = [json.loads(data) for rel, data in left.items() if rel.startswith("_work/shards/") and rel.endswith(".json")]
    assert len(records) >= 3
    etag = {r["rec"]: s3_client.head_object(Bucket=bucket, Key="ds/" + r["rec"])["ETag"] for r in records}
    mtime = {r["rec"]: s3_client.head_object(Bucket=bucket, Key="ds/" + r["rec"])["LastModified"] for r in records}
    lost = sorted(records, key=lambda r: r["rec"])[0]
    s3_client.delete_object(Bucket=bucket, Key="ds/" + lost["lst_file"])

    run_cli(*args, "--resume")
    after = {rel: s3_client.head_object(Bucket=bucket, Key="ds/" + rel) for rel in etag}
    kept = {rel for rel, head in after.items() if head["LastModified"] == mtime[rel] and head["ETag"] == etag[rel]}
    assert kept == set(etag) - {lost["rec"]}, "every shard but the one whose .lst lines were lost is kept"
    got = download_tree(s3_client, bucket, "ds")
    assert not any(rel.startswith("_work/") for rel in got)
    clean = tmp_path / "clean"
    run_cli("--input", SAMPLE, "--output", clean, "--images-per-shard", "4")
    assert sorted(got) == sorted(str(p.relative_to(clean)) for p in clean.rglob("*") if p.is_file())
    for rel in got:
        if rel not in ("manifest.json", "summary.txt", "sagemaker.json"):  # these name the output
            assert got[rel] == (clean / rel).read_bytes(), rel
