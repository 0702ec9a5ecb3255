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
        parts = [(p.size, bytes(p.data[:3]), bytes(p.data[-1:])) for p in pool.map(_part, [(big, 7), (5, 1)])]
    assert parts == [(big + 1, b"\x07\x07\x07", b"|"), (6, b"\x01\x01\x01", b"|")]


@pytest.mark.parametrize("processes", [0, 2])
def test_pool_raises_a_task_error(processes):
    with workers.WorkerPool(processes=processes, threads=2) as pool:
        got = []
        with pytest.raises(ValueError, match="task 3 failed"):
            for part in pool.map(_boom, range(10)):
                got.append(part.meta)
    assert got == [0, 1, 2]


def test_pool_reports_a_worker_that_died():
    with workers.WorkerPool(processes=2) as pool:
        with pytest.raises(workers.WorkerDied, match="worker process died"):
            list(pool.map(_die, range(6)))


def test_usable_cores_follows_affinity():
    assert workers.usable_cores() == len(os.sched_getaffinity(0))
    assert np.int64(workers.usable_cores()) >= 1
