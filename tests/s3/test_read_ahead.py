"""--read-threads: reads run ahead of encoding on their own threads; the output does not change."""

from __future__ import annotations

from conftest import SAMPLE, run_cli

from .flaky_proxy import FlakyProxy
from .s3util import download_tree, upload_tree


def test_read_ahead_through_a_slow_s3_gives_the_same_bytes(moto_endpoint, s3_client, make_bucket, tmp_path):
    src = make_bucket("in")
    upload_tree(s3_client, SAMPLE, src, "photos/")
    local = tmp_path / "local"
    args = ["--images-per-shard", "5", "--resize", "40"]
    run_cli("--input", SAMPLE, "--output", local, *args)
    with FlakyProxy(moto_endpoint) as proxy:
        proxy.get_delay = 0.02
        out = tmp_path / "from-s3"
        run_cli("--input", "s3://%s/photos/" % src, "--output", out, "--s3-endpoint-url", proxy.url,
                "--read-threads", "8", "--threads", "1", *args)
        gets = proxy.count("GET", "/photos/")
    assert gets >= 30, "every image was read through the slow proxy"
    for p in local.rglob("*"):
        if p.is_file() and p.name not in ("manifest.json", "summary.txt", "sagemaker.json"):
            assert (out / p.relative_to(local)).read_bytes() == p.read_bytes(), p


def test_read_threads_must_not_be_negative(tmp_path):
    proc = run_cli("--input", SAMPLE, "--output", tmp_path / "o", "--read-threads", "-1", check=False)
    assert proc.returncode == 2 and "--read-threads must be 0" in proc.stderr
