"""Transient S3 failures are retried with backoff; permanent ones fail at once with one line.

The failures are real HTTP answers and broken connections, injected by a
proxy between the job's boto3 client and the moto server.
"""

from __future__ import annotations

import pytest

from imgrec import storage
from imgrec.env import WorkerEnv
from imgrec.options import S3Settings
from imgrec.storage import s3

from .flaky_proxy import FlakyProxy, Fault


@pytest.fixture
def proxy(moto_endpoint):
    with FlakyProxy(moto_endpoint) as p:
        WorkerEnv(s3=S3Settings(endpoint_url=p.url)).apply()
        try:
            yield p
        finally:
            WorkerEnv().apply()


def test_reads_survive_5xx_dropped_connections_and_bodies_cut_short(proxy, s3_client, make_bucket):
    bucket = make_bucket()
    body = bytes(range(256)) * 4096  # 1 MiB
    s3_client.put_object(Bucket=bucket, Key="in/cat/a.jpg", Body=body)
    key_path = "/%s/in/cat/a.jpg" % bucket
    proxy.add(Fault("GET", key_path, "500"), Fault("GET", key_path, "drop"), Fault("GET", key_path, "cut", times=2))
    assert storage.read_bytes("s3://%s/in/cat/a.jpg" % bucket) == body
    assert proxy.count("GET", key_path) == 5, proxy.requests  # 500, drop, cut, cut, then the whole body

    # The seekable reader (verify, --resume) re-opens a body that breaks off too.
    proxy.add(Fault("GET", key_path, "cut"), Fault("GET", key_path, "500"))
    with storage.open_read("s3://%s/in/cat/a.jpg" % bucket) as f:
        f.seek(1000)
        assert f.read() == body[1000:]
    assert proxy.count("GET", key_path) == 8


def test_listing_survives_throttling_and_server_errors(proxy, s3_client, make_bucket):
    bucket = make_bucket()
    for i in range(30):
        s3_client.put_object(Bucket=bucket, Key="in/cat/%02d.jpg" % i, Body=b"x")
    proxy.add(Fault("GET", "list-type=2", "503"), Fault("GET", "list-type=2", "500"))
    assert storage.list_top("s3://%s/in/" % bucket) == (["cat"], [])
    assert len(list(storage.walk_files("s3://%s/in/cat" % bucket))) == 30
    assert proxy.count("GET", "list-type=2") == 4


def test_multipart_upload_survives_failed_parts(proxy, s3_client, make_bucket):
    bucket = make_bucket()
    data = bytes(range(256)) * (s3.PART_SIZE // 256) + b"tail"
    proxy.add(Fault("PUT", "partNumber=1", "500"), Fault("PUT", "partNumber=2", "drop"), Fault("POST", "uploadId=", "503"))
    with storage.atomic_writer("s3://%s/out/big.rec" % bucket) as f:
        f.write(data[: len(data) // 2])
        f.write(data[len(data) // 2:])
    assert s3_client.get_object(Bucket=bucket, Key="out/big.rec")["Body"].read() == data
    assert proxy.count("PUT", "partNumber=1") == 2 and proxy.count("PUT", "partNumber=2") == 2


def test_access_denied_is_not_retried(proxy, s3_client, make_bucket):
    bucket = make_bucket()
    s3_client.put_object(Bucket=bucket, Key="in/cat/a.jpg", Body=b"x")
    key_path = "/%s/in/cat/a.jpg" % bucket
    proxy.add(Fault("GET", key_path, "403", times=100))
    # Every attempt botocore makes (a retry waits its backoff first), counted in the client itself too.
    attempts = []
    storage.backend_for("s3://").client().meta.events.register(
        "before-send.s3.GetObject", lambda request, **_: attempts.append(request.url)
    )
    with pytest.raises(storage.StorageError) as info:
        storage.read_bytes("s3://%s/in/cat/a.jpg" % bucket)
    assert proxy.count("GET", key_path) == 1, "a refusal is final: no retry"
    assert len(attempts) == 1, attempts
    message = str(info.value)
    assert message.startswith("access denied to s3://%s/in/cat/a.jpg" % bucket) and "s3:GetObject" in message


def test_endless_server_errors_end_in_one_line(proxy, s3_client, make_bucket):
    bucket = make_bucket()
    proxy.add(Fault("GET", "list-type=2", "500", times=100))
    with pytest.raises(storage.StorageError) as info:
        storage.list_top("s3://%s/in/" % bucket)
    assert proxy.count("GET", "list-type=2") == s3.MAX_ATTEMPTS
    message = str(info.value)
    assert "S3 kept failing (InternalError, HTTP 500) while trying to list s3://%s/in/" % bucket in message
    assert "\n" not in message
