"""Inputs that cannot escape: an S3 'folder' named '..' is refused, not followed."""

from __future__ import annotations

from conftest import run_cli


def test_class_prefix_named_dotdot_is_refused(moto_endpoint, s3_client, make_bucket, tmp_path):
    bucket = make_bucket("in")
    s3_client.put_object(Bucket=bucket, Key="photos/../evil/x.jpg", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key="photos/cat/y.jpg", Body=b"x")
    out = tmp_path / "out"
    proc = run_cli("--input", "s3://%s/photos/" % bucket, "--output", out, "--s3-endpoint-url", moto_endpoint,
                   check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: class folder name '..' cannot be used (it would escape the output or break .lst lines)"
    )
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.rglob("*.rec"))
