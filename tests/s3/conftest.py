"""A real S3-compatible HTTP server for the S3 tests: moto in server mode on 127.0.0.1.

The server runs as a subprocess for the whole session; every test makes its
own buckets (unique names), so tests do not see each other's objects. Nothing
is patched in-process: boto3 (ours and the job's) talks HTTP to the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from .s3util import Iam, free_port

# Fake credentials for the server; also stops boto3 from looking at the host's profile or instance metadata.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
SERVER_START_TIMEOUT = 60


def _start_moto(log_path: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **FAKE_AWS_ENV},
    )
    log.close()
    endpoint = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("moto server exited with %s; see %s" % (proc.returncode, log_path))
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):
                return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not answer on %s within %d s" % (endpoint, SERVER_START_TIMEOUT))


@pytest.fixture(scope="session")
def moto_log(tmp_path_factory) -> str:
    """The moto server's output: one access-log line per request it received."""
    return str(tmp_path_factory.mktemp("moto") / "moto.log")


@pytest.fixture(scope="session")
def moto_endpoint(moto_log):
    """The base URL of a moto S3 server started for this session (killed at the end)."""
    log_path = moto_log
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        for name in _UNSET:
            mp.delenv(name, raising=False)
        for attempt in range(3):  # the free port can be taken between probing and binding
            try:
                proc, endpoint = _start_moto(log_path)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        try:
            yield endpoint
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def s3_client(moto_endpoint):
    """A plain boto3 client on the server, for arranging and inspecting buckets."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def make_bucket(s3_client):
    """make_bucket(stem) -> the name of a new, empty bucket unique to this test."""

    def make(stem: str = "bkt") -> str:
        name = "%s-%s" % (stem, uuid.uuid4().hex[:10])
        s3_client.create_bucket(Bucket=name)
        return name

    return make


@pytest.fixture
def s3_storage(moto_endpoint):
    """This process's S3 backend (``imgrec.storage.s3.S3Storage``) configured for the server (reset afterwards)."""
    from imgrec import storage
    from imgrec.env import WorkerEnv
    from imgrec.options import S3Settings

    WorkerEnv(s3=S3Settings(endpoint_url=moto_endpoint)).apply()
    yield storage.backend_for("s3://")
    WorkerEnv().apply()


@pytest.fixture
def iam(moto_endpoint):
    """Make IAM users, then ``iam.enforce()``: the server checks every request until the test ends."""
    helper = Iam(moto_endpoint)
    try:
        yield helper
    finally:
        helper.relax()
