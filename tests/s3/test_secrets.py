"""Secrets stay secret: credentials in the environment never reach logs or output files."""

from __future__ import annotations

import uuid

from conftest import SAMPLE, run_cli

from .s3util import upload_tree

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKE%s" % uuid.uuid4().hex[:12].upper(),
    "AWS_SECRET_ACCESS_KEY": "fakeSecret/%s" % uuid.uuid4().hex,
    "AWS_SESSION_TOKEN": "FakeSessionToken%s" % uuid.uuid4().hex,
}


def test_credentials_never_appear_in_logs_or_outputs(moto_endpoint, s3_client, make_bucket, tmp_path):
    src, dst = make_bucket("in"), make_bucket("out")
    upload_tree(s3_client, SAMPLE, src, "photos/")
    captured = []
    # a successful S3 -> S3 run at the most verbose level, a local output too, and a failing one
    ok = run_cli(
        "--input", "s3://%s/photos/" % src, "--output", "s3://%s/ds/" % dst, "--s3-endpoint-url", moto_endpoint,
        "--log-level", "DEBUG", "--images-per-shard", "5", env=SECRETS,
    )
    local = tmp_path / "local"
    ok2 = run_cli("--input", "s3://%s/photos/" % src, "--output", local, "--s3-endpoint-url", moto_endpoint, env=SECRETS)
    bad = run_cli(
        "--input", "s3://no-such-bucket-%s/x/" % uuid.uuid4().hex[:6], "--output", tmp_path / "o2",
        "--s3-endpoint-url", moto_endpoint, "--log-level", "DEBUG", env=SECRETS, check=False,
    )
    assert bad.returncode != 0
    for proc in (ok, ok2, bad):
        captured += [proc.stdout, proc.stderr]
    outputs = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=dst):
        for obj in page.get("Contents", []):
            outputs.append(s3_client.get_object(Bucket=dst, Key=obj["Key"])["Body"].read().decode("latin-1"))
    assert len(outputs) > 10
    outputs += [p.read_bytes().decode("latin-1") for p in local.rglob("*") if p.is_file()]
    assert any("manifest" in o or '"options"' in o for o in outputs)
    haystack = "\n".join(captured + outputs)
    assert "Converted 30 images" in haystack
    for name, secret in SECRETS.items():
        assert secret not in haystack, "%s leaked" % name
        # not even a recognisable part of it
        assert secret[4:16] not in haystack, "%s partly leaked" % name
