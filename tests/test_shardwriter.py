"""imgrec.shardwriter without Beam: shards written in parts (threads or worker processes) equal the command's."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest

from imgrec.finalize import shard_lst_lines
from imgrec import runs, shardplan, shardwriter, storage, workers
from imgrec.layout import Layout
from imgrec.options import ConvertOptions
from imgrec.planning import image_key


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in list(root.glob("*/*.rec")) + list(root.glob("idx/*/*.idx")))


def _write_with_parts(photos: Path, out: Path, scratch: Path, processes: int, part_images: int):
    opts = ConvertOptions(input=str(photos), output=str(out), images_per_shard=7)
    classes = sorted(p.name for p in photos.iterdir())
    paths = []
    for c in classes:
        refs = [runs.RunRef(image_key(c + "/" + e.relpath, "0"), c + "/" + e.relpath, e.size, e.version, c)
                for e in storage.walk_files(str(photos / c))]
        paths.append(str(scratch / (c + ".run")))
        runs.write_run(paths[-1], refs)
    plan = shardplan.plan_shards(paths, opts.ratios, opts.shard_size_mb, opts.images_per_shard,
                                 part_images=part_images)
    spec = shardwriter.WriteSpec(opts, tuple(classes))
    spec_path = str(scratch / "spec.pickle")
    shardwriter.save_spec(spec, spec_path)
    works = [
        shardwriter.ShardWork(t.split, t.shard, t.shards, t.first_id, t.records, tuple(
            shardwriter.PartJob(spec_path, t.split, t.shard, p.first_id, p.count, runs=tuple(paths), lo=p.lo, hi=p.hi)
            for p in t.parts))
        for t in plan.all_tasks()
    ]
    with workers.WorkerPool(processes, 2) as pool:
        return list(shardwriter.write_shards(works, spec, Layout(), pool)), plan


@pytest.mark.parametrize("processes,part_images", [(0, 3), (2, 3), (2, 1000)])
def test_parts_joined_give_the_commands_bytes(tmp_path, sample_dir, cli, processes, part_images):
    ref = tmp_path / "ref"
    cli("--input", sample_dir, "--output", ref, "--images-per-shard", 7, "--quiet")
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    records, plan = _write_with_parts(sample_dir, out, scratch, processes, part_images)
    assert sum(r.records for r in records) == 30
    assert sum(len(t.parts) for t in plan.all_tasks()) > len(records) or part_images == 1000
    assert _files(ref) == _files(out) and _files(ref)
    for rel in _files(ref):
        assert filecmp.cmp(ref / rel, out / rel, shallow=False), rel
    for r in records:  # the completion record matches the file it describes
        data = (out / r.rec).read_bytes()
        lines = list(shard_lst_lines(str(out), r))
        assert len(data) == r.bytes and len(r.offsets) == r.records == len(lines)
        assert [int(line.split(b"\t")[0]) for line in lines] == list(range(r.first_id, r.first_id + r.records))
        import hashlib

        assert hashlib.sha256(data).hexdigest() == r.sha256


def test_a_bad_image_in_a_part_is_a_recorded_skip(tmp_path, sample_dir):
    victim = sorted((sample_dir / "cat").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    records, _ = _write_with_parts(sample_dir, out, scratch, 2, 2)
    errors = [e for r in records for e in r.errors]
    assert [(e.path, e.stage) for e in errors] == [("cat/" + victim.name, "validate")]
    assert sum(r.records for r in records) == 29


def test_the_next_shard_streams_in_while_one_is_finished(tmp_path, sample_dir, monkeypatch):
    """A shard's finishing (last bytes, .idx, record) runs beside the next shard's parts, records still in order."""
    import threading

    added_elsewhere = threading.Event()
    overlapped: list[bool] = []
    finishing: list[object] = []
    real_add, real_finish = shardwriter._Shard.add, shardwriter._Shard.finish

    def add(self, part):
        if finishing and self is not finishing[-1]:
            added_elsewhere.set()
        return real_add(self, part)

    def finish(self):
        if not finishing:  # the first shard: wait (at most 10 s) for a part of another shard to arrive meanwhile
            finishing.append(self)
            overlapped.append(added_elsewhere.wait(10))
        return real_finish(self)

    monkeypatch.setattr(shardwriter._Shard, "add", add)
    monkeypatch.setattr(shardwriter._Shard, "finish", finish)
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    records, plan = _write_with_parts(sample_dir, out, scratch, 0, 3)
    assert overlapped == [True]
    assert [(r.split, r.shard) for r in records] == [(t.split, t.shard) for t in plan.all_tasks()]
    assert len(records) > 2 and sum(r.records for r in records) == 30


def test_a_shard_whose_finishing_fails_leaves_no_file_and_the_error_is_raised(tmp_path, sample_dir, monkeypatch):
    real_finish = shardwriter._Shard.finish
    seen: list[str] = []

    def finish(self):
        seen.append(self.rec_rel)
        if len(seen) == 2:
            raise OSError(28, "No space left on device")
        return real_finish(self)

    monkeypatch.setattr(shardwriter._Shard, "finish", finish)
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(OSError, match="No space left"):
        _write_with_parts(sample_dir, out, scratch, 2, 3)
    assert (out / seen[0]).is_file() and not (out / seen[1]).exists()
    leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.suffix not in (".rec", ".idx", ".json", ".lst")]
    assert leftovers == []
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.rec")) == [seen[0]]
