"""Issue 15 on s3://: the size limit before reading, overlapping prefixes, an output prefix given as input."""

from __future__ import annotations

import json

import pytest

from conftest import SAMPLE, run_cli
from imgrec import storage

from .s3util import upload_tree


def test_read_refuses_an_object_over_the_limit_before_its_body(s3_client, make_bucket, s3_storage):
    bucket = make_bucket()
    s3_client.put_object(Bucket=bucket, Key="in/big.jpg", Body=b"x" * 5000)
    uri = "s3://%s/in/big.jpg" % bucket
    with pytest.raises(storage.UnusableFileError, match="5000 bytes, more than the limit of 4999") as caught:
        storage.read_bytes(uri, 4999)
    assert caught.value.reason == "too_large"
    assert storage.read_bytes(uri, 5000) == b"x" * 5000


def test_s3_input_over_the_size_limit_and_output_prefix_checks(s3_client, make_bucket, moto_endpoint, tmp_path):
    bucket = make_bucket()
    upload_tree(s3_client, SAMPLE, bucket, "photos")
    big = "cat/%s" % sorted((SAMPLE / "cat").iterdir())[0].name
    size = (SAMPLE / big).stat().st_size
    out = tmp_path / "out"
    endpoint = ["--s3-endpoint-url", moto_endpoint]
    # a limit just below that one photo's size (in MiB, as the flag takes it)
    limit = "%.9f" % ((size - 1) / (1 << 20))
    run_cli("--input", "s3://%s/photos/" % bucket, "--output", out, "--max-file-size-mb", limit, *endpoint)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    too_large = {e["path"] for e in errors if e["reason"] == "too_large"}
    assert big in too_large and all(e["stage"] == "list" for e in errors)

    proc = run_cli("--input", "s3://%s/photos" % bucket, "--output", "s3://%s/photos/rec/" % bucket, *endpoint,
                   check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --output s3://")
    assert "is inside --input" in proc.stderr

    run_cli("--input", SAMPLE, "--output", "s3://%s/ds" % bucket, *endpoint)
    proc = run_cli("--input", "s3://%s/ds" % bucket, "--output", tmp_path / "again", *endpoint, check=False)
    assert proc.returncode == 2
    assert "is an output folder of this tool" in proc.stderr.strip().splitlines()[-1]
