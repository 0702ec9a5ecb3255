"""A planned shard that receives no image is not written; every shard setting completes (issue 15, item 2)."""

import imagefactory as fac
from conftest import SAMPLE, load_manifest, run_cli
from imgrec import planning
from imgrec.planning import SplitRatios

RATIOS = SplitRatios(0.8, 0.2, 0.0)


def test_written_shards_numbers_the_non_empty_ones_densely():
    counts = {("train", 0): 2, ("train", 1): 0, ("train", 2): 1, ("train", 4): 3, ("validation", 0): 1}
    assert planning.written_shards(counts) == {
        ("train", 0): (0, 3),
        ("train", 2): (1, 3),
        ("train", 4): (2, 3),
        ("validation", 0): (0, 1),
    }


def test_written_shards_is_the_plan_when_no_shard_is_empty():
    counts = {("train", s): 5 for s in range(4)} | {("test", 0): 1, ("test", 1): 1}
    assert planning.written_shards(counts) == {key: (key[1], 4 if key[0] == "train" else 2) for key in counts}


def naive_plan_has_empty_shard(relpaths, shard_count):
    """Whether the shard rule alone (keys placed in shard_count(split) ranges) leaves a shard of a split empty."""
    per_split = {}
    for rel in relpaths:
        key = planning.image_key(rel, "0")
        per_split.setdefault(planning.assign_split(key, RATIOS), []).append(key)
    for split, keys in per_split.items():
        shards = shard_count(len(keys))
        if len({planning.assign_shard(k, split, RATIOS, shards) for k in keys}) < shards:
            return True
    return False


def check_complete(out, images):
    ok = run_cli(out, module="pipeline.verify", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    m = load_manifest(out)
    listed = [line.split("\t")[-1] for doc in m["splits"].values() for line in (out / doc["lst"]).read_text().splitlines()]
    assert sorted(listed) == sorted(images)
    for split, doc in m["splits"].items():
        shards = doc["shards"]
        assert all(s["records"] > 0 for s in shards)
        assert [s["rec"] for s in shards] == [
            "%s/%s" % (split, planning.shard_name("data", i, len(shards), "rec")) for i in range(len(shards))
        ]
    return m


def test_one_image_per_shard_on_the_sample_completes(tmp_path):
    images = sorted(str(p.relative_to(SAMPLE)) for p in SAMPLE.rglob("*") if p.is_file())
    assert naive_plan_has_empty_shard(images, lambda n: n), "the sample no longer leaves a shard empty"
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out, "--images-per-shard", "1")
    m = check_complete(out, images)
    train = m["splits"]["train"]
    assert len(train["shards"]) < train["records"]  # planned one per image; the empty ones were not written


def test_few_large_images_with_a_small_shard_size_complete(tmp_path):
    root = tmp_path / "in"
    names = ["big/photo_%d.jpg" % i for i in range(5)]  # both splits leave a shard empty
    for i, rel in enumerate(names):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(fac.jpeg(640, 480, seed=i))
    # by the byte rule every split gets as many shards as images (each image is far above 0.01 MiB)
    assert naive_plan_has_empty_shard(names, lambda n: n)
    out = tmp_path / "out"
    run_cli("--input", root, "--output", out, "--shard-size-mb", "0.01")
    check_complete(out, names)
    # and the same again is byte for byte the same dataset
    again = tmp_path / "again"
    run_cli("--input", root, "--output", again, "--shard-size-mb", "0.01")
    for p in out.rglob("*"):
        if p.is_file() and p.name not in ("manifest.json", "summary.txt"):
            assert (again / p.relative_to(out)).read_bytes() == p.read_bytes(), p
