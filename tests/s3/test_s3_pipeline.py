"""``python -m pipeline.run`` with s3:// input and output against a real S3-compatible server.

The endpoint reaches the job only through ``--s3-endpoint-url`` (no
``AWS_ENDPOINT_URL_S3`` in the environment), so a worker process that did not
get the job's S3 settings would talk to AWS itself and fail.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest

from conftest import SAMPLE, run_cli

from .s3util import download_tree, free_port, upload_tree

ARGS = ["--images-per-shard", "4", "--train-ratio", "0.6", "--val-ratio", "0.2", "--test-ratio", "0.2"]
# Beam's FnApiRunner with two worker processes: the S3 settings must reach them.
WORKER_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
IN_PROCESS = ["--direct_running_mode=in_memory"]
# These name the input and output (and the time taken); every other file must match byte for byte.
DESCRIBES_LOCATION = ("manifest.json", "summary.txt", "sagemaker.json")


def read_local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def comparable_manifest(raw: bytes) -> dict:
    """The manifest without the fields that say where input and output were and how long it took."""
    m = json.loads(raw)
    for key in ("input", "output", "wall_seconds"):
        m.pop(key)
    m["identity"].pop("input")
    for key in ("input", "output", "s3"):
        m["options"].pop(key)
    if "sagemaker" in m:
        m["sagemaker"] = comparable_sagemaker(m["sagemaker"])
    return m


def comparable_sagemaker(doc: dict) -> dict:
    """SageMaker hints without the channels' S3 URIs and the notes on where to upload."""
    doc = copy.deepcopy(doc)
    doc.pop("notes", None)
    for channel in doc["channels"].values():
        channel.pop("s3_uri")
    return doc


def assert_same_dataset(got: dict[str, bytes], reference: dict[str, bytes]):
    assert sorted(got) == sorted(reference), "the same files"
    for rel, data in reference.items():
        if rel not in DESCRIBES_LOCATION:
            assert got[rel] == data, "%s differs" % rel
    assert comparable_manifest(got["manifest.json"]) == comparable_manifest(reference["manifest.json"])
    if "sagemaker.json" in reference:
        assert comparable_sagemaker(json.loads(got["sagemaker.json"])) == comparable_sagemaker(
            json.loads(reference["sagemaker.json"])
        )
    assert any(rel.endswith(".rec") for rel in reference) and len(reference) > 10


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> dict[str, bytes]:
    """Every output file of a local -> local run of the bundled sample."""
    out = tmp_path_factory.mktemp("local") / "out"
    run_cli("--input", SAMPLE, "--output", out, *ARGS)
    return read_local_tree(out)


@pytest.fixture(scope="module")
def module_client(moto_endpoint):
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture(scope="module")
def photos_bucket(module_client) -> str:
    """A bucket holding the bundled sample under photos/ (read-only for the tests)."""
    bucket = "photos-%s" % uuid.uuid4().hex[:8]
    module_client.create_bucket(Bucket=bucket)
    assert len(upload_tree(module_client, SAMPLE, bucket, "photos")) >= 30
    return bucket


def test_s3_to_s3_in_worker_processes_matches_local_run(moto_endpoint, s3_client, make_bucket, photos_bucket, local_reference):
    out_bucket = make_bucket("out")
    proc = run_cli(
        "--input", "s3://%s/photos/" % photos_bucket, "--output", "s3://%s/ds/" % out_bucket,
        "--s3-endpoint-url", moto_endpoint, *ARGS, *WORKER_PROCESSES,
    )
    assert "Converted 30 images" in proc.stdout
    got = download_tree(s3_client, out_bucket, "ds")
    assert_same_dataset(got, local_reference)
    assert not s3_client.list_multipart_uploads(Bucket=out_bucket).get("Uploads"), "no upload left open"
    assert json.loads(got["manifest.json"])["input"] == "s3://%s/photos/" % photos_bucket


def test_local_to_s3_matches_local_run(moto_endpoint, s3_client, make_bucket, local_reference):
    out_bucket = make_bucket("out")
    run_cli("--input", SAMPLE, "--output", "s3://%s/ds" % out_bucket, "--s3-endpoint-url", moto_endpoint, *ARGS)
    assert_same_dataset(download_tree(s3_client, out_bucket, "ds"), local_reference)


def test_s3_to_local_matches_local_run(moto_endpoint, photos_bucket, local_reference, tmp_path):
    out = tmp_path / "out"
    run_cli("--input", "s3://%s/photos" % photos_bucket, "--output", out, "--s3-endpoint-url", moto_endpoint, *ARGS)
    assert_same_dataset(read_local_tree(out), local_reference)


def test_endpoint_from_environment_and_verify_on_s3_output(moto_endpoint, s3_client, make_bucket, photos_bucket):
    out_bucket = make_bucket("out")
    env = {"AWS_ENDPOINT_URL_S3": moto_endpoint}
    run_cli("--input", "s3://%s/photos/" % photos_bucket, "--output", "s3://%s/ds/" % out_bucket, *ARGS, env=env)
    ok = run_cli("s3://%s/ds/" % out_bucket, module="pipeline.verify", env=env)
    assert "OK" in ok.stdout and "30 records" in ok.stdout

    # verify really reads the shards from S3: a flipped byte in one of them is found.
    manifest = json.loads(s3_client.get_object(Bucket=out_bucket, Key="ds/manifest.json")["Body"].read())
    rec_key = "ds/" + manifest["splits"]["train"]["shards"][0]["rec"]
    data = bytearray(s3_client.get_object(Bucket=out_bucket, Key=rec_key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3_client.put_object(Bucket=out_bucket, Key=rec_key, Body=bytes(data))
    bad = run_cli("s3://%s/ds/" % out_bucket, module="pipeline.verify", env=env, check=False)
    assert bad.returncode == 1
    assert manifest["splits"]["train"]["shards"][0]["rec"] in bad.stderr


def one_line_error(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_missing_input_bucket_is_one_line(moto_endpoint, tmp_path):
    proc = run_cli("--input", "s3://no-such-input-bucket/photos/", "--output", tmp_path / "out",
                   "--s3-endpoint-url", moto_endpoint, check=False)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "'no-such-input-bucket' does not exist" in line and "--s3-endpoint-url" in line
    assert not (tmp_path / "out").exists()


def test_missing_output_bucket_is_one_line(moto_endpoint):
    proc = run_cli("--input", SAMPLE, "--output", "s3://no-such-output-bucket/ds/",
                   "--s3-endpoint-url", moto_endpoint, check=False)
    assert proc.returncode == 2
    assert "'no-such-output-bucket' does not exist" in one_line_error(proc)


def test_unreachable_endpoint_is_one_line(tmp_path):
    dead = "http://127.0.0.1:%d" % free_port()
    proc = run_cli("--input", "s3://photos/in/", "--output", tmp_path / "out", "--s3-endpoint-url", dead, check=False)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "cannot reach the S3 endpoint %s" % dead in line and "s3://photos/in/" in line


def test_bad_endpoint_and_sse_flags_are_refused_up_front(tmp_path, capsys):
    from pipeline.run import run

    for flags, expected in (
        (["--s3-endpoint-url", "minio:9000"], "expected a URL"),
        (["--s3-endpoint-url", "http://key:secret@minio:9000"], "must not hold credentials"),
        (["--s3-endpoint-url", "key:secret@minio:9000"], "must not hold credentials"),
        (["--s3-sse", "AES256", "--s3-sse-kms-key-id", "alias/k"], "needs --s3-sse aws:kms"),
    ):
        assert run(["--input", str(SAMPLE), "--output", str(tmp_path / "out"), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
        assert "secret" not in err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def list_only_credentials(iam):
    """Credentials of a user who may list buckets but not read objects, with the server enforcing IAM.

    Listing happens on the launcher, reading only in the workers: the refusal is raised inside Beam.
    """
    env = iam.user({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]})
    iam.enforce()
    return env


@pytest.mark.parametrize("mode", ["in_process", "worker_processes"])
def test_access_denied_inside_workers_is_one_line(moto_endpoint, photos_bucket, list_only_credentials, tmp_path, mode):
    proc = run_cli(
        "--input", "s3://%s/photos/" % photos_bucket, "--output", tmp_path / "out", "--s3-endpoint-url", moto_endpoint,
        *(IN_PROCESS if mode == "in_process" else WORKER_PROCESSES), env=list_only_credentials, check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: access denied to s3://%s/photos/" % photos_bucket), last
    assert "s3:GetObject" in last and "[while running" not in last
    assert list_only_credentials["AWS_SECRET_ACCESS_KEY"] not in proc.stderr + proc.stdout
    if mode == "in_process":
        # The launcher prints the one line and nothing else about it (worker processes log on their own stderr).
        assert one_line_error(proc) == last
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_write_to_recordio_in_ones_own_pipeline_writes_to_s3(moto_endpoint, s3_client, make_bucket, local_reference):
    """The library's transform, applied in a test's own pipeline to (uri, label) pairs, with an s3:// output."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from imgrec.env import WorkerEnv
    from transforms import WriteToRecordIO

    out_bucket = make_bucket("lib")
    pairs = [(str(p), p.parent.name) for p in sorted(Path(SAMPLE).glob("*/*")) if p.is_file()]
    options = {"images_per_shard": 4, "train_ratio": 0.6, "val_ratio": 0.2, "test_ratio": 0.2}
    try:
        with beam.Pipeline(runner=FnApiRunner()) as p:
            p | beam.Create(pairs) | WriteToRecordIO("s3://%s/ds/" % out_bucket, input=str(SAMPLE),
                                                     s3_endpoint_url=moto_endpoint, **options)
    finally:
        WorkerEnv().apply()  # this process's S3 settings back to the default
    got = download_tree(s3_client, out_bucket, "ds")
    assert_same_dataset(got, local_reference)
    assert not s3_client.list_multipart_uploads(Bucket=out_bucket).get("Uploads"), "no upload left open"


def test_check_duplicates_s3_to_s3_reports_what_a_local_run_reports(moto_endpoint, s3_client, make_bucket, tmp_path):
    """The identical files each shard's writer finds wait on S3 beside its record until the report is written."""
    import shutil

    root = tmp_path / "in"
    shutil.copytree(SAMPLE, root)
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        first = sorted(cls.iterdir())[0]
        shutil.copy(first, cls / ("copy-" + first.name))
    args = [*ARGS, "--check-duplicates"]
    local = tmp_path / "local"
    run_cli("--input", root, "--output", local, *args)
    reference = read_local_tree(local)
    assert len(reference["report.jsonl"].splitlines()) >= 5, "one set of identical files per class"

    in_bucket, out_bucket = make_bucket("in"), make_bucket("out")
    upload_tree(s3_client, root, in_bucket, "photos")
    run_cli("--input", "s3://%s/photos/" % in_bucket, "--output", "s3://%s/ds/" % out_bucket,
            "--s3-endpoint-url", moto_endpoint, *args)
    got = download_tree(s3_client, out_bucket, "ds")
    assert_same_dataset(got, reference)
    assert not [k for k in got if k.startswith("_work/")], "the job's work files are gone after the commit"
