"""A whole job through an S3 that fails now and then: it retries, finishes, and writes the same bytes."""

from __future__ import annotations

import json

from conftest import SAMPLE, run_cli

from .flaky_proxy import Fault, FlakyProxy
from .s3util import download_tree, upload_tree

ARGS = ["--images-per-shard", "4"]
DESCRIBE_THE_RUN = ("manifest.json", "summary.txt", "sagemaker.json")


def test_job_survives_failing_uploads_reads_and_listings(moto_endpoint, s3_client, make_bucket, tmp_path):
    src, dst = make_bucket("in"), make_bucket("out")
    upload_tree(s3_client, SAMPLE, src, "photos/")
    local = tmp_path / "local"
    run_cli("--input", SAMPLE, "--output", local, *ARGS)

    with FlakyProxy(moto_endpoint) as proxy:
        proxy.add(
            Fault("PUT", "/train/data-00000-of-", "500", times=2),   # a shard upload fails twice
            Fault("PUT", "/idx/validation/", "503", times=2),      # throttled index uploads
            Fault("PUT", "/lists/train.lst", "drop"),               # the connection drops
            Fault("GET", "/photos/cat/", "500", times=3),           # image reads fail
            Fault("GET", "/photos/rocket/", "cut", times=2),        # bodies cut short
            Fault("GET", "list-type=2", "503", times=2),            # listings throttled
        )
        run_cli("--input", "s3://%s/photos/" % src, "--output", "s3://%s/ds/" % dst,
                "--s3-endpoint-url", proxy.url, *ARGS)
        injected = [r for r in proxy.requests if r[2] != "forwarded"]
    assert len(injected) == 2 + 2 + 1 + 3 + 2 + 2, injected  # every fault was really hit
    got = download_tree(s3_client, dst, "ds/")
    want = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(want)
    for rel, data in want.items():
        if rel not in DESCRIBE_THE_RUN:
            assert got[rel] == data, rel
    assert json.loads(got["manifest.json"])["errors"] == 0
