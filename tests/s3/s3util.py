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
