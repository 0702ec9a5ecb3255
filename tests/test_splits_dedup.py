"""--stratify, identical files (--check-duplicates, --dedup) and --dry-run.

The stratification rule is checked as pure code against brute force and for
its stability guarantee, the Beam stage against the in-memory rule, and the
whole job on the bundled photos. Duplicates are made so that their path
hashes would put them in other splits than their originals.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
from fractions import Fraction

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import SAMPLE, load_manifest, run_cli
from imgrec.planning import (
    ImageRef,
    SplitRatios,
    assign_split,
    image_key,
    key_in_split,
    quota_counts,
    stratified_splits,
)
from transforms.curate import Stratify, single_unit

CLASSES = sorted(os.listdir(SAMPLE))
RATIOS = [SplitRatios(0.8, 0.2, 0.0), SplitRatios(0.7, 0.2, 0.1), SplitRatios(0.5, 0.25, 0.25), SplitRatios(1 / 3, 1 / 3, 1 / 3)]


def within_one(count: int, ratio: float, n: int) -> bool:
    return abs(count - Fraction(ratio).limit_denominator(10**6) * n) < 1


# ---------------------------------------------------------------- the rule, pure


@pytest.mark.parametrize("ratios", RATIOS)
def test_quota_counts_meet_the_quota_with_fewest_moves(ratios):
    rng = random.Random(7)
    active = ratios.active()
    for _ in range(300):
        n = rng.randrange(0, 40)
        draws = [rng.choice(active) for _ in range(n)]
        natural = {s: draws.count(s) for s in active}
        counts = quota_counts(n, natural, ratios)
        assert sum(counts.values()) == n
        assert all(within_one(counts[s], getattr(ratios, s), n) for s in active), (n, counts)
        # brute force over every way to cut n ranked images into the active splits
        nat_cuts = list(itertools.accumulate(natural[s] for s in active))[:-1]
        best = None
        for cuts in itertools.combinations_with_replacement(range(n + 1), len(active) - 1):
            sizes = [b - a for a, b in zip((0,) + cuts, cuts + (n,))]
            if all(within_one(c, getattr(ratios, s), n) for c, s in zip(sizes, active)):
                cost = sum(abs(c - nc) for c, nc in zip(cuts, nat_cuts))
                best = cost if best is None else min(best, cost)
        got = list(itertools.accumulate(counts[s] for s in active))[:-1]
        assert sum(abs(c - nc) for c, nc in zip(got, nat_cuts)) == best


def test_a_moved_image_gets_a_key_inside_its_new_split():
    ratios = SplitRatios(0.7, 0.2, 0.1)
    rng = random.Random(2)
    for _ in range(2000):
        key = rng.getrandbits(64)
        split = rng.choice(ratios.active())
        new = key_in_split(key, split, ratios)
        assert assign_split(new, ratios) == split
        assert (new == key) == (assign_split(key, ratios) == split)


def keys(n, rng):
    return [(rng.getrandbits(64), "p%d" % rng.getrandbits(32)) for _ in range(n)]


@pytest.mark.parametrize("ratios", RATIOS)
def test_balanced_classes_keep_their_hash_split(ratios):
    rng = random.Random(3)
    for _ in range(200):
        ks = keys(rng.randrange(1, 30), rng)
        natural = [assign_split(k, ratios) for k, _ in ks]
        n = len(ks)
        if all(within_one(natural.count(s), getattr(ratios, s), n) for s in ratios.active()):
            assert stratified_splits(ks, ratios) == natural


@pytest.mark.parametrize("ratios", RATIOS)
def test_adding_k_images_moves_at_most_k_plus_one_across_each_boundary(ratios):
    rng = random.Random(11)
    active = ratios.active()
    worst = 0
    for _ in range(400):
        old = keys(rng.randrange(0, 40), rng)
        k = rng.randrange(1, 6)
        new = old + keys(k, rng)
        before = stratified_splits(old, ratios)
        shuffled = new[:]
        rng.shuffle(shuffled)
        after = dict(zip(shuffled, stratified_splits(shuffled, ratios)))  # order of input does not matter
        assert [after[x] for x in new] == stratified_splits(new, ratios)
        crossings = [0] * (len(active) - 1)
        for item, split in zip(old, before):
            a, b = sorted((active.index(split), active.index(after[item])))
            for boundary in range(a, b):
                crossings[boundary] += 1
        assert max(crossings, default=0) <= k + 1, (k, crossings)
        worst = max(worst, max(crossings, default=0))
        n = len(new)
        counts = {s: list(after.values()).count(s) for s in active}
        assert all(within_one(counts[s], getattr(ratios, s), n) for s in active)
    assert worst >= 1, "the trials must include moves, or they test nothing"


def test_beam_stage_equals_the_in_memory_rule():
    ratios = SplitRatios(0.7, 0.2, 0.1)
    rng = random.Random(5)
    refs = []
    for label in range(3):
        for i in range(60 + 40 * label):
            key = rng.getrandbits(64)
            if i % 3 == 0:
                key = (key >> 8) | (0xAB << 56)  # many keys in one bucket: ranks must continue across buckets
            rel = "c%d/%d.jpg" % (label, i)
            refs.append(ImageRef(rel, 10, label, assign_split(key, ratios), key))
    refs.append(ImageRef("multi/a.jpg", 10, (0, 2), "train", 1 << 63))  # a label set is a stratum of its own
    expected = []
    for stratum in {r.label for r in refs}:
        group = [r for r in refs if r.label == stratum]
        splits = stratified_splits([(r.key, r.relpath) for r in group], ratios)
        expected += [r._replace(split=s, key=key_in_split(r.key, s, ratios)) for r, s in zip(group, splits)]
    moved = {e.relpath for e in expected} - {r.relpath for r in refs if r in expected}
    assert moved, "the rule must move some images, or this compares nothing"
    with TestPipeline(runner=FnApiRunner()) as p:
        out = p | beam.Create(refs) | beam.Map(single_unit) | Stratify(ratios)
        assert_that(out, equal_to(expected))


# ---------------------------------------------------------------- stratified runs and the dry run


def parse_table(text: str) -> dict[tuple[str, str], int]:
    lines = text.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("class "))
    splits = lines[head].split()[1:-1]
    out = {}
    for line in lines[head + 2:]:
        if line.startswith("-"):
            break
        name, *nums = line.split()
        out.update({(name, s): int(n) for s, n in zip(splits, nums)})
    return out


def test_stratify_end_to_end_and_its_dry_run(tmp_path):
    args = ["--input", SAMPLE, "--train-ratio", "0.5", "--val-ratio", "0.5", "--images-per-shard", "4"]
    plain = run_cli(*args, "--dry-run")
    counts = parse_table(plain.stdout)
    assert any(n != 3 for n in counts.values()), "without --stratify the sample's classes are not split 3/3"
    out = tmp_path / "out"
    run_cli(*args, "--output", out, "--stratify")
    m = load_manifest(out)
    assert m["class_counts"] == {s: {c: 3 for c in CLASSES} for s in ("train", "validation")}
    # the dry run forecasts exactly this run, and leaves its --output alone
    dry_out = tmp_path / "dry"
    proc = run_cli(*args, "--output", dry_out, "--stratify", "--dry-run")
    assert not dry_out.exists()
    assert parse_table(proc.stdout) == {(c, s): n for s, d in m["class_counts"].items() for c, n in d.items()}
    shards = dict(re.findall(r"(\w+) (\d+)", proc.stdout.split("Shards: ")[1].splitlines()[0]))
    assert shards == {s: str(len(d["shards"])) for s, d in m["splits"].items()}
    assert "Class imbalance: largest/smallest = 1.00" in proc.stdout
    total = sum(d["bytes"] for d in m["splits"].values())
    from imgrec.summary import human_bytes

    assert "; total %s (exact record sizes" % human_bytes(total) in proc.stdout


# ---------------------------------------------------------------- identical files


def other_split_name(folder: str, original: str, ratios: SplitRatios) -> str:
    """A new file name in ``folder`` whose path hash lands in another split than ``original``'s."""
    home = assign_split(image_key(original, "0"), ratios)
    for i in itertools.count():
        name = "%s/copy-%d.jpg" % (folder, i)
        if assign_split(image_key(name, "0"), ratios) != home:
            return name


@pytest.fixture(scope="module")
def with_copies(tmp_path_factory):
    root = tmp_path_factory.mktemp("dups") / "in"
    shutil.copytree(SAMPLE, root)
    ratios = SplitRatios(0.5, 0.5, 0.0)
    cat = "cat/" + sorted(os.listdir(SAMPLE / "cat"))[0]
    astro = "astronaut/" + sorted(os.listdir(SAMPLE / "astronaut"))[1]
    copies = {other_split_name("cat", cat, ratios): cat,  # same label
              other_split_name("rocket", cat, ratios): cat,  # another label: a conflict
              other_split_name("astronaut", astro, ratios): astro}
    for new, old in copies.items():
        (root / new).write_bytes((root / old).read_bytes())
    return root, copies, cat, astro


def splits_of(out, m) -> dict[str, str]:
    return {l.split("\t")[2]: s for s, d in m["splits"].items() for l in (out / d["lst"]).read_text().splitlines()}


def test_identical_files_share_a_split_and_conflicts_are_reported(with_copies, tmp_path):
    root, copies, cat, astro = with_copies
    out = tmp_path / "out"
    proc = run_cli("--input", root, "--output", out, "--train-ratio", "0.5", "--val-ratio", "0.5", "--check-duplicates")
    m = load_manifest(out)
    where = splits_of(out, m)
    assert len(where) == 33, "--check-duplicates keeps every file"
    for new, old in copies.items():
        assert where[new] == where[old], "identical files must share a split (%s, %s)" % (new, old)
    report = [json.loads(l) for l in (out / "report.jsonl").read_text().splitlines()]
    cat_group = sorted([cat] + [n for n, o in copies.items() if o == cat])
    rocket = next(n for n, o in copies.items() if o == cat and n.startswith("rocket/"))
    assert {"kind": "duplicate", "paths": cat_group, "split": where[cat], "kept": cat_group} in [
        {k: v for k, v in r.items() if k != "sha256"} for r in report]
    conflicts = [r for r in report if r["kind"] == "label_conflict"]
    assert len(conflicts) == 1 and conflicts[0]["paths"] == cat_group
    assert conflicts[0]["labels"][rocket] == ["rocket"] and conflicts[0]["labels"][cat] == ["cat"]
    assert m["report_counts"] == {"duplicate": 2, "label_conflict": 1}
    assert "2 duplicate, 1 label_conflict" in proc.stdout


def test_dedup_keeps_the_first_path_of_each_set(with_copies, tmp_path):
    root, copies, cat, astro = with_copies
    out = tmp_path / "out"
    run_cli("--input", root, "--output", out, "--train-ratio", "0.5", "--val-ratio", "0.5", "--dedup")
    m = load_manifest(out)
    where = splits_of(out, m)
    groups = {}
    for new, old in copies.items():
        groups.setdefault(old, [old]).append(new)
    kept = {min(g) for g in groups.values()}
    dropped = {p for g in groups.values() for p in g} - kept
    assert len(where) == 30 and kept <= set(where) and not dropped & set(where)
    report = [json.loads(l) for l in (out / "report.jsonl").read_text().splitlines()]
    assert sorted(tuple(r["kept"]) for r in report if r["kind"] == "duplicate") == sorted((k,) for k in kept)
