"""Helpers for the S3 tests: copy trees of files to and from a bucket."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def upload_tree(client, local_root, bucket: str, prefix: str) -> list[str]:
    """Upload every file under ``local_root`` to ``s3://bucket/prefix/...``; returns the relative paths."""
    rels = []
    for path in sorted(Path(local_root).rglob("*")):
        if path.is_file():
            rel = path.relative_to(local_root).as_posix()
            client.put_object(Bucket=bucket, Key=prefix.rstrip("/") + "/" + rel, Body=path.read_bytes())
            rels.append(rel)
    return rels


def download_tree(client, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``s3://bucket/prefix/`` as {relative key: bytes}."""
    prefix = prefix.rstrip("/") + "/"
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", ()):
            out[obj["Key"][len(prefix):]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


class Iam:
    """IAM users on the moto server, and the switch that makes the server enforce their policies.

    moto accepts any request until told (``POST /moto-api/reset-auth``) to authenticate and
    authorise every request from then on; ``relax`` turns that off again.
    """

    def __init__(self, endpoint: str):
        import boto3

        self._endpoint = endpoint
        self._iam = boto3.session.Session().client("iam", endpoint_url=endpoint, region_name="us-east-1")

    def user(self, policy: dict) -> dict[str, str]:
        """A new user allowed exactly ``policy``; returns its credentials as environment variables."""
        import json
        import uuid

        name = "user-%s" % uuid.uuid4().hex[:8]
        self._iam.create_user(UserName=name)
        self._iam.put_user_policy(UserName=name, PolicyName="job", PolicyDocument=json.dumps(policy))
        key = self._iam.create_access_key(UserName=name)["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def _set_unauthenticated_requests(self, count: str) -> None:
        import urllib.request

        request = urllib.request.Request(
            self._endpoint + "/moto-api/reset-auth", data=count.encode(), method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    def enforce(self) -> None:
        self._set_unauthenticated_requests("0")

    def relax(self) -> None:
        self._set_unauthenticated_requests("inf")
