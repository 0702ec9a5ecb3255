"""``python -m pipeline.im2rec`` with PREFIX and ROOT on S3 (moto's server on 127.0.0.1, over HTTP):
the tutorial's two commands give, in the bucket, the files MXNet's im2rec.py writes from the same tree on disk."""

from __future__ import annotations

from im2rec.reference import (
    TUTORIAL_LIST,
    TUTORIAL_PACK,
    assert_same_files,
    build_tree,
    files_in,
    im2rec,
    ours,
)
from s3.s3util import download_tree, upload_tree


def test_tutorial_commands_with_s3_prefix_and_root(sample_dir, tmp_path, moto_endpoint, s3_client, make_bucket):
    tree = build_tree(sample_dir)
    bucket = make_bucket("im2rec")
    upload_tree(s3_client, tree, bucket, "photos")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    prefix, root = "s3://%s/rec/example_rec" % bucket, "s3://%s/photos" % bucket
    endpoint = ["--s3-endpoint-url", moto_endpoint]

    im2rec(theirs, "example_rec", tree, *TUTORIAL_LIST)
    ours(None, prefix, root, *TUTORIAL_LIST, *endpoint)
    assert_same_files(files_in(theirs), download_tree(s3_client, bucket, "rec"), extra={"example_rec_labels.txt"})

    im2rec(theirs, "example_rec", tree, *TUTORIAL_PACK)
    out = ours(None, prefix, root, *TUTORIAL_PACK, *endpoint)
    mine = download_tree(s3_client, bucket, "rec")
    # Nothing else in the bucket's folder: the temporary fragments are gone.
    assert_same_files(files_in(theirs), mine, extra={"example_rec_labels.txt"})
    assert {"example_rec_train.rec", "example_rec_test.idx"} <= set(mine)
    records = len((theirs / "example_rec_train.lst").read_text().splitlines())
    assert "s3://%s/rec/example_rec_train.rec: %d records" % (bucket, records) in out.stdout
