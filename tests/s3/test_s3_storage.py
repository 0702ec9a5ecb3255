"""imgrec.storage on s3:// URIs against a real S3-compatible server (moto, over HTTP)."""

from __future__ import annotations

import contextlib

import pytest

from imgrec import storage
from imgrec.env import WorkerEnv
from imgrec.options import S3Settings
from imgrec.storage import s3

from .s3util import free_port


@contextlib.contextmanager
def configured(**settings):
    """This process's S3 backend with ``settings`` for the block, then the defaults again."""
    WorkerEnv(s3=S3Settings(**settings)).apply()
    try:
        yield storage.backend_for("s3://")
    finally:
        WorkerEnv().apply()


def put(client, bucket, key, body=b"x"):
    client.put_object(Bucket=bucket, Key=key, Body=body)


def test_list_top_gives_class_folders_and_top_level_files(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    for key in ("photos/", "photos/cat/", "photos/cat/a.jpg", "photos/cat/deep/b.jpg", "photos/dog/c.png",
                "photos/README.txt", "photos-other/x.jpg", "elsewhere/cat/z.jpg"):
        put(s3_client, bucket, key)
    dirs, files = storage.list_top("s3://%s/photos/" % bucket)
    assert dirs == ["cat", "dog"]
    assert files == ["README.txt"]
    # Without the trailing slash the prefix is still a folder, not "photos*".
    assert storage.list_top("s3://%s/photos" % bucket) == (dirs, files)


def test_walk_files_lists_one_prefix_recursively_with_sizes(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    put(s3_client, bucket, "in/cat/", b"")  # console "folder" marker: not a file
    put(s3_client, bucket, "in/cat/a.jpg", b"12345")
    put(s3_client, bucket, "in/cat/deep/b.jpg", b"1")
    put(s3_client, bucket, "in/cats/not-this.jpg", b"1")
    put(s3_client, bucket, "in/cat//double.jpg", b"1")
    entries = sorted(storage.walk_files("s3://%s/in/cat" % bucket), key=lambda e: e.relpath)
    assert [(e.relpath, e.size, e.error) for e in entries] == [
        ("/double.jpg", 1, "bad_key"),
        ("a.jpg", 5, ""),
        ("deep/b.jpg", 1, ""),
    ]
    assert storage.list_recursive("s3://%s/in" % bucket) == ["cat/a.jpg", "cat/deep/b.jpg", "cats/not-this.jpg"]
    assert storage.list_recursive("s3://%s/nothing-here" % bucket) == []


def test_read_exists_delete_and_seekable_reader(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    body = bytes(range(256)) * 1000
    put(s3_client, bucket, "d/blob.bin", body)
    uri = "s3://%s/d/blob.bin" % bucket
    assert storage.read_bytes(uri) == body
    assert storage.exists(uri)
    assert not storage.exists("s3://%s/d/missing.bin" % bucket)
    with storage.open_read(uri) as f:
        f.seek(200_000)
        assert f.read(10) == body[200_000:200_010]
        f.seek(5)
        assert f.read(3) == body[5:8]
        assert f.seek(0, 2) == len(body)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        storage.read_bytes("s3://%s/d/missing.bin" % bucket)
    with pytest.raises(FileNotFoundError):
        with storage.open_read("s3://%s/d/missing.bin" % bucket):
            pass
    storage.delete(uri)
    storage.delete(uri)  # deleting what is gone is fine, as on local disk
    assert not storage.exists(uri)
    storage.write_text("s3://%s/d/t.txt" % bucket, "héllo\n")
    assert storage.read_text("s3://%s/d/t.txt" % bucket) == "héllo\n"


@pytest.mark.parametrize("size", [0, 1000])
def test_small_objects_are_written_whole(s3_client, make_bucket, s3_storage, size):
    bucket = make_bucket()
    data = b"r" * size
    with storage.atomic_writer("s3://%s/o/small.bin" % bucket) as f:
        f.write(data)
        assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0, "nothing visible before the end"
    assert s3_client.get_object(Bucket=bucket, Key="o/small.bin")["Body"].read() == data


def test_large_object_is_a_completed_multipart_upload(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    chunk = bytes(range(251)) * 4096  # ~1 MiB, not a divisor of the part size
    n = s3.PART_SIZE // len(chunk) + 2
    with storage.atomic_writer("s3://%s/o/big.rec" % bucket) as f:
        for _ in range(n):
            f.write(chunk)
        assert f.tell() == n * len(chunk)
        assert len(s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
        assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)
    got = s3_client.get_object(Bucket=bucket, Key="o/big.rec")["Body"].read()
    assert got == chunk * n
    assert not s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_error_mid_stream_aborts_the_upload_and_leaves_no_object(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    uri = "s3://%s/out/train/data-00000-of-00001.rec" % bucket

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        with storage.atomic_writer(uri) as f:
            f.write(b"\x01" * (s3.PART_SIZE + 3 * 1024 * 1024))  # past one part: parts are on the server
            uploads = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            assert [u["Key"] for u in uploads] == ["out/train/data-00000-of-00001.rec"]
            assert s3_client.list_parts(Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"])["Parts"]
            raise Crash("the shard failed half-way")
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket), "no object under any name"
    assert not s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the upload was aborted"
    assert not storage.exists(uri)


def test_error_before_the_first_part_leaves_no_object(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    with pytest.raises(KeyboardInterrupt):
        with storage.atomic_writer("s3://%s/x/summary.txt" % bucket) as f:
            f.write(b"partial")
            raise KeyboardInterrupt
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)


@pytest.mark.parametrize(
    "settings, expected",
    [
        (dict(sse="AES256"), {"ServerSideEncryption": "AES256"}),
        (dict(sse="aws:kms", sse_kms_key_id="alias/datasets"), {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/datasets"}),
    ],
)
def test_server_side_encryption_of_small_and_multipart_objects(moto_endpoint, s3_client, make_bucket, settings, expected):
    bucket = make_bucket()
    with configured(endpoint_url=moto_endpoint, **settings):
        storage.write_text("s3://%s/e/small.json" % bucket, "{}")
        with storage.atomic_writer("s3://%s/e/big.rec" % bucket) as f:
            f.write(b"\0" * (s3.PART_SIZE + 1))
    for key in ("e/small.json", "e/big.rec"):
        head = s3_client.head_object(Bucket=bucket, Key=key)
        assert {k: head.get(k) for k in expected} == expected, key


def test_requester_pays_header_is_sent_on_every_request(moto_endpoint, s3_client, make_bucket):
    bucket = make_bucket()
    put(s3_client, bucket, "in/cat/a.jpg", b"abc")
    sent = []
    with configured(endpoint_url=moto_endpoint, requester_pays=True) as backend:
        backend.client().meta.events.register(
            "before-send.s3", lambda request, **_: sent.append(request.headers.get("x-amz-request-payer"))
        )
        storage.list_top("s3://%s/in/" % bucket)
        list(storage.walk_files("s3://%s/in/cat" % bucket))
        assert storage.read_bytes("s3://%s/in/cat/a.jpg" % bucket) == b"abc"
        storage.write_text("s3://%s/out/x.txt" % bucket, "x")
    assert len(sent) >= 4
    assert set(sent) == {b"requester"}


def test_missing_bucket_is_one_clear_line(s3_storage):
    with pytest.raises(storage.StorageError) as info:
        storage.list_top("s3://no-such-bucket-here/photos/")
    message = str(info.value)
    assert "no-such-bucket-here" in message and "does not exist" in message
    assert "\n" not in message
    with pytest.raises(storage.StorageError, match="no-such-bucket-here"):
        storage.write_text("s3://no-such-bucket-here/out/x.txt", "x")


def test_empty_input_prefix_says_so(make_bucket, s3_storage):
    bucket = make_bucket()
    with pytest.raises(storage.StorageError, match="holds no objects"):
        storage.list_top("s3://%s/photos/" % bucket)


def test_unreachable_endpoint_gives_up_after_the_set_attempts_with_one_line(moto_endpoint):
    # moto_endpoint for its fake credentials: without any, boto3 stops before it sends a request
    dead = "http://127.0.0.1:%d" % free_port()  # nothing listens there
    attempts = []
    with configured(endpoint_url=dead) as backend:
        # before-send: once per attempt, including those whose connection is refused
        backend.client().meta.events.register("before-send.s3", lambda request, **_: attempts.append(request.url))
        with pytest.raises(storage.StorageError) as info:
            storage.list_top("s3://bucket/photos/")
    # retries give up on an endpoint that refuses connections: MAX_ATTEMPTS tries of the one request, no more
    assert len(attempts) == s3.MAX_ATTEMPTS, attempts
    assert all(url.startswith(dead + "/bucket") for url in attempts), attempts
    message = str(info.value)
    assert dead in message and "s3://bucket/photos/" in message and "--s3-endpoint-url" in message
    assert "\n" not in message


def test_settings_changes_take_effect_and_client_is_per_process(moto_endpoint):
    with configured(endpoint_url=moto_endpoint, region="eu-west-3") as backend:
        first = backend.client()
        assert backend.client() is first, "one client per process"
        assert first.meta.endpoint_url == moto_endpoint
        assert first.meta.region_name == "eu-west-3"
        WorkerEnv(s3=S3Settings(endpoint_url=moto_endpoint, region="eu-west-3")).apply()
        assert backend.client() is first, "the same settings keep the client"
        WorkerEnv(s3=S3Settings(endpoint_url=moto_endpoint, region="us-west-2")).apply()
        assert backend.client() is not first and backend.client().meta.region_name == "us-west-2"
        assert storage.backend_for("s3://") is backend, "one S3 backend per process, whatever its settings"


def test_missing_credentials_are_one_clear_line(moto_endpoint, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with configured(endpoint_url=moto_endpoint, region="us-east-2"):  # a new client: a new credential lookup
        with pytest.raises(storage.StorageError) as info:
            storage.list_top("s3://some-bucket/photos/")
    message = str(info.value)
    assert message.startswith("no AWS credentials found (needed to list s3://some-bucket/photos/)")
    assert "instance role" in message and "\n" not in message
