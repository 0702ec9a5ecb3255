"""The IAM policy and the lifecycle rule in docs/s3.md work as written (on the moto server).

moto checks a policy's actions and resources; it does not evaluate conditions, so the
policy's ``s3:prefix`` conditions on listing are not exercised here.
"""

from __future__ import annotations

import json
import re
import uuid

from conftest import REPO, SAMPLE, run_cli

from .s3util import upload_tree

DOC = REPO / "docs" / "s3.md"


def doc_json(marker: str) -> str:
    """The ```json block that follows ``<!-- marker -->`` in docs/s3.md."""
    found = re.search(r"<!-- %s -->\s*```json\n(.*?)```" % re.escape(marker), DOC.read_text(), re.DOTALL)
    assert found, "docs/s3.md has no json block after <!-- %s -->" % marker
    return found.group(1)


def test_lifecycle_rule_is_accepted_and_aborts_incomplete_uploads(s3_client, make_bucket):
    bucket = make_bucket()
    rules = json.loads(doc_json("lifecycle-rule"))
    s3_client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=rules)
    (rule,) = s3_client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_the_job_and_verify_succeed_with_only_the_documented_permissions(moto_endpoint, s3_client, make_bucket, iam):
    src, dst = make_bucket("in"), make_bucket("out")
    upload_tree(s3_client, SAMPLE, src, "photos")
    policy = json.loads(doc_json("iam-policy").replace("INPUT-BUCKET", src).replace("OUTPUT-BUCKET", dst))
    env = iam.user(policy)
    iam.enforce()
    out = "s3://%s/photos-rec/" % dst
    endpoint = ["--s3-endpoint-url", moto_endpoint]
    proc = run_cli("--input", "s3://%s/photos/" % src, "--output", out, *endpoint, "--images-per-shard", "8", env=env)
    assert "Converted 30 images" in proc.stdout
    verified = run_cli(out, *endpoint, module="pipeline.verify", env=env)
    assert "OK" in verified.stdout

    # The policy is what lets it through: outside its prefixes the same user is refused.
    denied = run_cli(
        "--input", "s3://%s/photos/" % src, "--output", "s3://%s/other-%s/" % (dst, uuid.uuid4().hex[:6]),
        *endpoint, env=env, check=False,
    )
    assert denied.returncode == 2 and "Traceback" not in denied.stderr
    assert "error: access denied to s3://%s/other-" % dst in denied.stderr
