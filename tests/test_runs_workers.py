"""Sorted runs of refs on disk (imgrec.runs) and the worker pool (imgrec.workers): pure unit tests."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from imgrec import runs, workers
from imgrec.planning import image_key


def _refs(n, start=0, prefix="c"):
    return [
        runs.RunRef(image_key("%s/%06d.jpg" % (prefix, i), "0"), "%s/%06d.jpg" % (prefix, i), 100 + i, "v%d" % i,
                    runs.join_labels([prefix] if i % 3 else [prefix, "extra"]), "" if i % 2 else "ab" * 32)
        for i in range(start, start + n)
    ]


def test_run_round_trip_sorted_by_key_then_path(tmp_path):
    refs = _refs(500)
    # two refs with the same key (identical content under --check-duplicates) sort by path
    refs.append(refs[0]._replace(relpath="a/first.jpg"))
    path = str(tmp_path / "r.run")
    assert runs.write_run(path, refs) == 501
    with runs.Run(path) as run:
        got = run.refs(*run.span(0, 1 << 64))
    assert got == sorted(refs, key=lambda r: (r.key, r.relpath))
    assert [r.relpath for r in got if r.key == refs[0].key] == ["a/first.jpg", refs[0].relpath]
    assert runs.label_names(got[0]) in ((got[0].labels,), tuple(got[0].labels.split("\x1f")))


def test_run_ranges_and_counts(tmp_path):
    a, b = str(tmp_path / "a.run"), str(tmp_path / "b.run")
    ra, rb = _refs(300, 0, "a"), _refs(200, 0, "b")
    runs.write_run(a, ra)
    runs.write_run(b, rb)
    lo, hi = 1 << 62, 3 << 62
    got = runs.read_range([a, b], lo, hi)
    want = sorted((r for r in ra + rb if lo <= r.key < hi), key=lambda r: (r.key, r.relpath))
    assert got == want and got
    bounds = [0, 1 << 62, 1 << 63, 1 << 64]
    counts, nbytes = runs.count_ranges([a, b], bounds)
    for i in range(3):
        inside = [r for r in ra + rb if bounds[i] <= r.key < bounds[i + 1]]
        assert counts[i] == len(inside)
        assert nbytes[i] == sum(r.size for r in inside)
    assert counts.sum() == 500


def test_run_empty_and_unicode_paths(tmp_path):
    path = str(tmp_path / "e.run")
    assert runs.write_run(path, []) == 0
    with runs.Run(path) as run:
        assert len(run) == 0 and run.refs(*run.span(0, 1 << 64)) == []
    odd = runs.RunRef(5, "caf\u00e9/\udcfe.jpg", 1, "", "caf\u00e9", "")
    runs.write_run(path, [odd])
    with runs.Run(path) as run:
        assert run.refs(0, 1) == [odd]


def test_a_damaged_run_is_refused(tmp_path):
    path = tmp_path / "bad.run"
    runs.write_run(str(path), _refs(10))
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(runs.RunError, match="expected"):
        runs.Run(str(path))
    path.write_bytes(b"not a run at all, just text....")
    with pytest.raises(runs.RunError, match="not a run"):
        runs.Run(str(path))


# ---------------------------------------------------------------- the worker pool


def _part(task):
    n, fill = task
    return workers.Part([bytes([fill]) * n, b"|"], n + 1, (os.getpid(), n))


def _boom(task):
    if task == 3:
        raise ValueError("task 3 failed")
    return workers.Part([b"x"], 1, task)


def _die(task):
    if task == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return workers.Part([b"x"], 1, task)


@pytest.mark.parametrize("processes", [0, 2])
def test_pool_gives_parts_in_order(processes):
    tasks = [(i * 1000 + 1, i % 250) for i in range(40)]
    seen_pids = set()
    with workers.WorkerPool(processes=processes, threads=3) as pool:
        for (n, fill), part in zip(tasks, pool.map(_part, tasks)):
            assert part.size == n + 1
            assert bytes(part.data) == bytes([fill]) * n + b"|"
            part.release()
            pid, got_n = part.meta
            assert got_n == n
            seen_pids.add(pid)
    if processes:
        assert os.getpid() not in seen_pids and len(seen_pids) >= 1
    else:
        assert seen_pids == {os.getpid()}


def test_pool_moves_parts_larger_than_a_slot(monkeypatch):
    big = workers.SLOT_BYTES + 10
    with workers.WorkerPool(processes=1) as pool:
        parts = []
        for p in pool.map(_part, [(big, 7), (5, 1)]):
            parts.append((p.size, bytes(p.data[:3]), bytes(p.data[-1:])))
            p.release()
    assert parts == [(big + 1, b"\x07\x07\x07", b"|"), (6, b"\x01\x01\x01", b"|")]


@pytest.mark.parametrize("processes", [0, 2])
def test_pool_raises_a_task_error(processes):
    with workers.WorkerPool(processes=processes, threads=2) as pool:
        got = []
        with pytest.raises(ValueError, match="task 3 failed"):
            for part in pool.map(_boom, range(10)):
                got.append(part.meta)
                part.release()
    assert got == [0, 1, 2]


def test_pool_reports_a_worker_that_died():
    with workers.WorkerPool(processes=2) as pool:
        with pytest.raises(workers.WorkerDied, match="worker process died"):
            list(pool.map(_die, range(6)))


def test_pool_holds_parts_until_released_and_waits_for_a_slot():
    """A caller may keep parts (handing them to a writer thread): new tasks wait for a released slot.

    One worker: 2 parts in flight and 4 slots, so the caller may hold 2 parts while it asks for more.
    """
    held = []
    with workers.WorkerPool(processes=1) as pool:
        for i, part in enumerate(pool.map(_part, [(10, i) for i in range(12)])):
            held.append((i, part))
            if len(held) > 2:  # more parts arrive while two are held: their bytes stay intact
                j, old = held.pop(0)
                assert bytes(old.data) == bytes([j]) * 10 + b"|"
                old.release()
        for j, part in held:
            assert bytes(part.data) == bytes([j]) * 10 + b"|"
            part.release()


def test_pool_reuses_the_slot_given_back_last():
    """Each page of a slot costs every process that touches it a page fault once: a caller that releases each
    part as it comes keeps only the slots in flight (and the one it holds) in use, not all of them."""
    with workers.WorkerPool(processes=2) as pool:
        taken = []
        get = pool._free.get

        def spy(*args, **kw):
            taken.append(get(*args, **kw))
            return taken[-1]

        pool._free.get = spy
        for part in pool.map(_part, [(10, i) for i in range(40)]):
            part.release()
    assert len(taken) == 40
    assert len(set(taken)) <= pool._window + 1 < 2 * pool._window  # 2 * window slots exist


def test_usable_cores_follows_affinity():
    assert workers.usable_cores() == len(os.sched_getaffinity(0))
    assert np.int64(workers.usable_cores()) >= 1


# ---------------------------------------------------------------- the shard plan from runs

from imgrec import shardplan  # noqa: E402
from imgrec.planning import SplitRatios, assign_shard, assign_split, num_shards  # noqa: E402


def _expected_plan(refs, ratios, shard_size_mb, images_per_shard):
    """The plan made the straightforward way: every ref in memory, imgrec.planning's functions."""
    by_split = {}
    for r in refs:
        by_split.setdefault(assign_split(r.key, ratios), []).append(r)
    out = {}
    for split, members in by_split.items():
        n = num_shards(len(members), sum(r.size for r in members), shard_size_mb, images_per_shard)
        shards = {}
        for r in sorted(members, key=lambda r: (r.key, r.relpath)):
            shards.setdefault(assign_shard(r.key, split, ratios, n), []).append(r)
        out[split] = [shards[s] for s in sorted(shards)]
    return out


@pytest.mark.parametrize("images_per_shard,shard_mb", [(0, 0.01), (7, 256.0), (1, 256.0), (0, 256.0)])
def test_plan_from_runs_matches_planning(tmp_path, images_per_shard, shard_mb):
    ratios = SplitRatios(0.7, 0.2, 0.1)
    refs = _refs(150, 0, "a") + _refs(90, 0, "b") + _refs(3, 0, "c")
    paths = []
    for name in "abc":
        path = str(tmp_path / ("%s.run" % name))
        runs.write_run(path, [r for r in refs if r.relpath.startswith(name + "/")])
        paths.append(path)
    plan = shardplan.plan_shards(paths, ratios, shard_mb, images_per_shard, part_images=5, part_bytes=1 << 30)
    want = _expected_plan(refs, ratios, shard_mb, images_per_shard)
    assert set(plan.tasks) == set(want)
    for split, shards in want.items():
        tasks = plan.tasks[split]
        assert [len(s) for s in shards] == [t.records for t in tasks]
        first = 0
        for number, (task, members) in enumerate(zip(tasks, shards)):
            assert (task.shard, task.shards, task.first_id) == (number, len(shards), first)
            got = [r for p in task.parts for r in runs.read_range(paths, p.lo, p.hi)]
            assert got == members
            assert [p.first_id for p in task.parts] == [first + sum(q.count for q in task.parts[:i])
                                                         for i in range(len(task.parts))]
            assert sum(p.count for p in task.parts) == task.records and max(p.count for p in task.parts) <= 20
            first += task.records
    again = shardplan.Plan.from_json(plan.to_json())
    assert again.tasks == plan.tasks and again.totals == plan.totals


@pytest.mark.parametrize("dedup", [False, True])
def test_the_jobs_last_parts_are_cut_finer_and_nothing_else_moves(tmp_path, monkeypatch, dedup):
    """The last TAIL_PARTS parts of the job's last shard (the last split's) are cut in TAIL_CUT: the same records
    in the same order with the same ids; every other part is where it was."""
    ratios = SplitRatios(0.7, 0.2, 0.1)
    refs = _refs(400, 0, "a")
    twins = [refs[i]._replace(relpath="z/copy%d-%d.jpg" % (i, k), sha="%02d" % (i % 100) * 32, key=refs[i].key)
             for i in range(0, 400, 7) for k in range(3)]
    path = str(tmp_path / "a.run")
    runs.write_run(path, sorted(refs + twins, key=lambda r: (r.key, r.relpath)))
    flt = shardplan.RefFilter(dedup=dedup)
    monkeypatch.setattr(shardplan, "TAIL_CUT", 1)
    whole = shardplan.plan_shards([path], ratios, 256.0, 30, flt=flt, part_images=8, part_bytes=1 << 30)
    monkeypatch.setattr(shardplan, "TAIL_CUT", 4)
    cut = shardplan.plan_shards([path], ratios, 256.0, 30, flt=flt, part_images=8, part_bytes=1 << 30)
    before, after = whole.all_tasks(), cut.all_tasks()
    assert before[-1].split == "test" and len(before[-1].parts) >= 2
    assert before[:-1] == after[:-1]
    last, new = before[-1], after[-1]
    tail = min(len(last.parts), shardplan.TAIL_PARTS)
    assert new.parts[:len(last.parts) - tail] == last.parts[:len(last.parts) - tail]
    assert len(new.parts) > len(last.parts) and max(p.count for p in new.parts[len(last.parts) - tail:]) < max(
        p.count for p in last.parts[len(last.parts) - tail:])
    assert (new.records, new.first_id) == (last.records, last.first_id)

    def records(task):
        return [r for p in task.parts for r in shardplan.select_refs([path], p.lo, p.hi, flt)[0]]

    assert records(new) == records(last)
    assert [p.first_id for p in new.parts] == [new.first_id + sum(q.count for q in new.parts[:i])
                                               for i in range(len(new.parts))]


def test_plan_with_dedup_and_exclusion(tmp_path):
    ratios = SplitRatios()
    base = _refs(60, 0, "a")
    # three identical copies of one image (same content key and sha) and two of another
    twins = [base[0]._replace(relpath="z/copy%d.jpg" % i, sha="11" * 32, key=base[0].key) for i in range(3)]
    twins += [base[5]._replace(relpath="z/other%d.jpg" % i, sha="22" * 32, key=base[5].key) for i in range(2)]
    new = str(tmp_path / "new.run")
    runs.write_run(new, base + twins)
    old = str(tmp_path / "old.run")
    runs.write_run(old, base[10:30])  # already in the dataset
    flt = shardplan.RefFilter(dedup=True, exclude=(old,))
    plan = shardplan.plan_shards([new], ratios, 256.0, 0, flt=flt)
    kept = [r for t in plan.all_tasks() for p in t.parts for r in shardplan.select_refs([new], p.lo, p.hi, flt)[0]]
    assert len(kept) == sum(t.records for t in plan.all_tasks())
    paths = {r.relpath for r in kept}
    assert not paths & {r.relpath for r in base[10:30]}
    assert len([p for p in paths if p.startswith("z/copy")]) == 1 and len([p for p in paths if p.startswith("z/other")]) == 1
    _, groups = shardplan.select_refs([new], 0, 1 << 64, shardplan.RefFilter(dedup=False))
    assert sorted(len(g) for g in groups) == [2, 3]


_FORK_UNDER_GRPC = r"""
import os, sys
from concurrent import futures
import grpc
server = grpc.server(futures.ThreadPoolExecutor(2))  # gRPC threads running, as after a host's Beam pipeline
server.add_insecure_port("127.0.0.1:0")
server.start()
from imgrec import workers

def task(n):
    os.write(2, b"worker line %d\n" % n)
    return workers.Part([b"x" * n], n, n)

with workers.WorkerPool(processes=2) as pool:
    for part in pool.map(task, [1, 2, 3]):
        part.release()
print("parent line", file=sys.stderr)
server.stop(0)
"""


def test_forking_workers_under_grpc_keeps_its_notes_off_stderr_and_the_workers_stderr_on():
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, "-c", _FORK_UNDER_GRPC], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fork_posix" not in proc.stderr and "skipping fork() handlers" not in proc.stderr, proc.stderr
    assert all("worker line %d" % n in proc.stderr for n in (1, 2, 3)), proc.stderr
    assert "parent line" in proc.stderr
