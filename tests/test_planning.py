"""Split assignment, shard planning and ids: exact expected values, no Beam."""

import collections

import pytest

from imgrec import planning
from imgrec.planning import ImageRef, SplitRatios


def test_ratios_are_validated():
    with pytest.raises(ValueError, match="sum to 1"):
        SplitRatios(0.8, 0.3, 0.0)
    with pytest.raises(ValueError, match="--val-ratio must be between 0 and 1"):
        SplitRatios(1.0, -0.5, 0.5)
    assert SplitRatios(0.7, 0.0, 0.3).active() == ["train", "test"]


def test_image_key_is_stable_and_salted():
    a = planning.image_key("cat/1.jpg", "0")
    assert a == planning.image_key("cat/1.jpg", "0")
    assert a != planning.image_key("cat/1.jpg", "1")
    assert a != planning.image_key("cat/2.jpg", "0")
    assert 0 <= a < 2**64
    # pinned: a change of hashing would move every user's images between splits
    assert planning.image_key("cat/1.jpg", "0") == int.from_bytes(
        __import__("hashlib").sha256(b"0\0cat/1.jpg").digest()[:8], "big"
    )


def test_split_shares_follow_ratios():
    ratios = SplitRatios(0.7, 0.2, 0.1)
    counts = collections.Counter(
        planning.assign_split(planning.image_key("c/%d.jpg" % i, "s"), ratios) for i in range(20000)
    )
    assert abs(counts["train"] / 20000 - 0.7) < 0.02
    assert abs(counts["validation"] / 20000 - 0.2) < 0.02
    assert abs(counts["test"] / 20000 - 0.1) < 0.02


def test_adding_images_never_moves_existing_ones():
    ratios = SplitRatios(0.8, 0.2, 0.0)
    before = {p: planning.assign_split(planning.image_key(p, "0"), ratios) for p in ("a/%d" % i for i in range(500))}
    grown = ["a/%d" % i for i in range(1000)]
    after = {p: planning.assign_split(planning.image_key(p, "0"), ratios) for p in grown}
    assert all(after[p] == s for p, s in before.items())


def test_split_bounds_cover_key_space_without_gaps():
    bounds = SplitRatios(0.5, 0.25, 0.25).bounds()
    assert bounds[0][1] == 0 and bounds[-1][2] == 2**64
    for (_, _, hi), (_, lo, _) in zip(bounds, bounds[1:]):
        assert hi == lo


@pytest.mark.parametrize(
    "records,total,mb,per,expected",
    [
        (0, 0, 256, 0, 0),
        (10, 100, 256, 0, 1),
        (1000, 3 * 256 * 1024 * 1024 + 1, 256, 0, 4),
        (1000, 10**12, 256, 0, 1000),  # never more shards than images
        (25, 0, 256, 10, 3),
        (30, 0, 256, 10, 3),
    ],
)
def test_num_shards(records, total, mb, per, expected):
    assert planning.num_shards(records, total, mb, per) == expected


def test_assign_shard_uses_position_in_split_range():
    ratios = SplitRatios(0.5, 0.5, 0.0)
    lo, hi = planning.split_range("validation", ratios)
    assert planning.assign_shard(lo, "validation", ratios, 4) == 0
    assert planning.assign_shard(hi - 1, "validation", ratios, 4) == 3
    assert planning.assign_shard(lo + (hi - lo) // 2, "validation", ratios, 4) == 2


def test_shards_come_out_near_equal():
    ratios = SplitRatios(1.0, 0.0, 0.0)
    counts = collections.Counter(
        planning.assign_shard(planning.image_key("x/%d" % i, "0"), "train", ratios, 8) for i in range(8000)
    )
    assert set(counts) == set(range(8))
    assert max(counts.values()) - min(counts.values()) < 200


def test_shard_bases_are_dense_per_split_in_shard_order():
    counts = {("validation", 1): 4, ("train", 1): 5, ("train", 0): 3, ("validation", 0): 2}
    assert planning.shard_bases(counts) == {
        ("train", 0): 0,
        ("train", 1): 3,
        ("validation", 0): 0,
        ("validation", 1): 2,
    }


def test_order_in_shard_is_by_key_and_mixes_classes():
    refs = [ImageRef("c%d/%d.jpg" % (i % 3, i), 1, i % 3, "train", planning.image_key("c%d/%d.jpg" % (i % 3, i), "0")) for i in range(30)]
    ordered = planning.order_in_shard(reversed(refs))
    assert [r.key for r in ordered] == sorted(r.key for r in refs)
    labels = [r.label for r in ordered]
    assert labels != sorted(labels)  # not grouped by class


def test_shard_name():
    assert planning.shard_name("data", 3, 16, "rec") == "data-00003-of-00016.rec"


def test_ref_batch_pickles_as_tuples_and_comes_back_as_image_refs():
    import pickle

    from imgrec.planning import RefBatch

    batch = RefBatch([ImageRef("a/b.jpg", 10, (0, 2), "train", 5), ImageRef("c/d.png", 2, 1, "validation", 1 << 63)])
    data = pickle.dumps(batch, protocol=4)
    assert b"ImageRef" not in data  # rows, not NamedTuples
    back = pickle.loads(data)
    assert type(back) is RefBatch and back == batch
    assert all(type(r) is ImageRef for r in back) and back[0].label == (0, 2) and back[1].key == 1 << 63
