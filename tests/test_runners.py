"""The same job on real distributed engines writes the same bytes as the default runner.

* Dask: ``--runner=DaskRunner`` against a ``dask.distributed`` LocalCluster of two
  worker processes started here. A worker plugin logs, from inside each worker
  process, every class listed and every shard written, with its PID: the work must
  be spread over both workers, and each class and shard handled exactly once.
* Portable: ``--runner=PortableRunner`` against Beam's local job service and an
  EXTERNAL SDK worker pool, both started here as subprocesses outside the project
  folder (the topology of Flink or Spark with a worker-pool sidecar). The workers
  get the code from the installed package only: no ``--save_main_session``.

Both runs use the repository's own ``configs/*.yaml`` with the addresses given as
flags, which also shows that a flag overrides the config file.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from conftest import REPO, SAMPLE, load_manifest, run_cli

# Several shards per split from the 30 sample photos.
ARGS = ["--images-per-shard", "3", "--train-ratio", "0.6", "--val-ratio", "0.2", "--test-ratio", "0.2"]

# Manifest fields that describe the run rather than the dataset (and, inside its
# "options", those that ConvertOptions.fingerprint_fields leaves out).
RUN_FIELDS = {"output", "wall_seconds", "metrics"}
RUN_OPTIONS = {"output", "threads", "overwrite"}

SPREAD_WAIT = 10.0  # seconds a dask worker's first shard write waits for the other worker to write one
JOB_TIMEOUT = 240  # seconds; a portable job whose workers never start would otherwise wait forever


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """One copy of the bundled sample shared by the reference run and the runner runs."""
    dst = tmp_path_factory.mktemp("runners") / "photos"
    shutil.copytree(SAMPLE, dst)
    return dst


@pytest.fixture(scope="module")
def reference(photos) -> Path:
    """The dataset as the default runner writes it."""
    out = photos.parent / "out-default"
    run_cli("--input", photos, "--output", out, *ARGS, "--config", REPO / "configs" / "direct.yaml")
    return out


def dataset_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def assert_same_dataset(expected: Path, got: Path) -> None:
    """Every output file byte for byte; the manifest up to the fields that describe the run."""
    want, have = dataset_files(expected), dataset_files(got)
    assert sorted(have) == sorted(want), "different output files"
    assert sum(name.endswith(".rec") for name in want) >= 6, "the comparison needs several shards"
    for name in want:
        if name == "manifest.json":
            a, b = json.loads(want[name]), json.loads(have[name])
            for doc in (a, b):
                for field in RUN_FIELDS:
                    doc.pop(field, None)
                for field in RUN_OPTIONS:
                    doc["options"].pop(field, None)
            assert b == a, "manifest.json differs beyond the run's own fields"
        elif name != "summary.txt":  # names the output folder and the run time
            assert have[name] == want[name], "%s differs" % name


def test_reference_run_has_every_split(reference):
    manifest = load_manifest(reference)
    assert set(manifest["splits"]) == {"train", "validation", "test"}
    assert sum(s["records"] for s in manifest["splits"].values()) == 30


# ---------------------------------------------------------------------------- Dask


def _log_calls(module, name: str, log_path: str, describe, wait_for_other: float = 0.0) -> None:
    """Wrap ``module.name`` so that each call appends ``[pid, name, what]`` to ``log_path``.

    ``wait_for_other``: the first call in this process then waits (up to that many
    seconds) until another process has logged a call of the same name.
    """
    real = getattr(module, name)
    if getattr(real, "logged_to", None) == log_path:
        return
    me = os.getpid()
    waited = []

    def other_called() -> bool:
        with open(log_path, encoding="utf-8") as f:
            lines = [line for line in f if line.endswith("\n")]  # not a line another process is appending
        return any(pid != me and called == name for pid, called, _ in map(json.loads, lines))

    def logged(*args, **kwargs):
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps([me, name, describe(args)]) + "\n")
        if wait_for_other and not waited:
            deadline = time.monotonic() + wait_for_other
            while time.monotonic() < deadline and not other_called():
                time.sleep(0.05)
            waited.append(True)
        return real(*args, **kwargs)

    logged.logged_to = log_path
    setattr(module, name, logged)


class LogWorkerCalls(WorkerPlugin):
    """Runs in every dask worker process: logs each class listing and each shard write."""

    def __init__(self, log_path: str):
        self.log_path = log_path

    def setup(self, worker):
        from imgrec import items, shardwriter

        # FolderListing.items(self): one class folder listed; _Shard.finish(self): one shard written.
        # A shard of 3 sample photos takes milliseconds, as do the join tasks before it (the same dask
        # task prefix): dask then often keeps every write task next to its input, on one worker (in 1
        # of 4 runs even when each write lasted 1 s). A real shard keeps its worker busy for seconds,
        # and the other worker then takes the next shards. So a worker's first shard write waits
        # until the other worker writes one too: dask sees a busy worker and an idle one, and moves
        # the waiting shard tasks. A job whose shards could not run apart (one task writing them
        # all, say) waits SPREAD_WAIT s and fails the test.
        _log_calls(items.FolderListing, "items", self.log_path, lambda a: a[0].folder)
        _log_calls(shardwriter._Shard, "finish", self.log_path, lambda a: "%s/%d" % (a[0].work.split, a[0].work.shard),
                   wait_for_other=SPREAD_WAIT)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A LocalCluster of two single-threaded worker processes, and the log its workers write."""
    log_path = str(tmp_path_factory.mktemp("dask") / "calls.jsonl")
    # The plugin is defined in this test module, which the workers cannot import.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        client.wait_for_workers(2)
        client.register_plugin(LogWorkerCalls(log_path), name="log-worker-calls")
        yield client, cluster.scheduler_address, log_path
    finally:
        client.close()
        cluster.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_dask_runner_writes_the_same_bytes_spread_over_two_workers(photos, reference, dask_cluster):
    client, address, log_path = dask_cluster
    out = photos.parent / "out-dask"
    run_cli(
        "--input", photos, "--output", out, *ARGS,
        "--config", REPO / "configs" / "dask.yaml",
        "--dask_client_address=%s" % address,
        timeout=JOB_TIMEOUT,
    )
    assert_same_dataset(reference, out)

    calls = [json.loads(line) for line in Path(log_path).read_text().splitlines()]
    worker_pids = set(client.run(os.getpid).values())
    assert len(worker_pids) == 2
    assert {pid for pid, _, _ in calls} <= worker_pids, "work ran outside the dask workers"

    manifest = load_manifest(out)
    shards = collections.Counter(what for _, name, what in calls if name == "finish")
    expected_shards = {"%s/%d" % (split, i) for split, doc in manifest["splits"].items() for i in range(len(doc["shards"]))}
    assert set(shards) == expected_shards
    assert set(shards.values()) == {1}, "a shard was written more than once: %s" % shards
    listed = collections.Counter(what for _, name, what in calls if name == "items")
    assert listed == collections.Counter(manifest["classes"]), "each class must be listed exactly once"

    writers = {pid for pid, name, _ in calls if name == "finish"}
    assert len(writers) == 2, "all %d shards were written by one worker" % len(shards)


# ---------------------------------------------------------------------------- Portable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("service exited with %s:\n%s" % (proc.returncode, log.read_text()[-3000:]))
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError("nothing listens on port %d after %ds:\n%s" % (port, timeout, log.read_text()[-3000:]))


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    """Beam's local job service and an EXTERNAL worker pool, run away from the project folder."""
    home = tmp_path_factory.mktemp("portable")
    env = dict(os.environ)
    # The pool starts SDK workers as `python ...` from PATH: the one of this environment.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    job_port, pool_port = free_port(), free_port()
    commands = {
        "job-service": ["apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)],
        "worker-pool": ["apache_beam.runners.worker.worker_pool_main", "--service_port", str(pool_port)],
    }
    procs, logs = {}, {}
    try:
        for name, args in commands.items():
            logs[name] = home / ("%s.log" % name)
            with open(logs[name], "wb") as log:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", *args], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        wait_for_port(job_port, procs["job-service"], logs["job-service"])
        wait_for_port(pool_port, procs["worker-pool"], logs["worker-pool"])
        yield job_port, pool_port, logs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 15)  # the pool's SDK workers are in its process group
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def test_portable_runner_with_external_worker_pool_writes_the_same_bytes(photos, reference, portable_services):
    job_port, pool_port, logs = portable_services
    out = photos.parent / "out-portable"
    run_cli(
        "--input", photos, "--output", out, *ARGS,
        "--config", REPO / "configs" / "portable-local.yaml",
        "--job_endpoint=localhost:%d" % job_port,
        "--environment_config=localhost:%d" % pool_port,
        timeout=JOB_TIMEOUT,
    )
    assert_same_dataset(reference, out)
    pool_log = logs["worker-pool"].read_text()
    assert "Starting worker" in pool_log, "the job did not run in the EXTERNAL worker pool:\n" + pool_log[-3000:]
    assert "Running job" in logs["job-service"].read_text()


# ---------------------------------------------------------------------------- WriteToRecordIO in a pipeline of one's own

TRANSFORM_OPTIONS = {"images_per_shard": 3, "train_ratio": 0.6, "val_ratio": 0.2, "test_ratio": 0.2}


def _pairs(photos: Path) -> list[tuple[str, str]]:
    return [(str(p), p.parent.name) for p in sorted(photos.glob("*/*")) if p.is_file()]


def _run_own_pipeline(runner, beam_args, photos, out):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms import WriteToRecordIO

    p = beam.Pipeline(runner=runner, options=PipelineOptions(beam_args))
    p | beam.Create(_pairs(photos)) | WriteToRecordIO(str(out), input=str(photos), **TRANSFORM_OPTIONS)
    result = p.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:
            client.close()  # the Dask runner's own client; the cluster outlives this test


def test_write_to_recordio_in_a_dask_pipeline_writes_the_commands_bytes(photos, reference, dask_cluster):
    from apache_beam.runners.dask.dask_runner import DaskRunner

    _, address, _ = dask_cluster
    out = photos.parent / "out-own-dask"
    _run_own_pipeline(DaskRunner(), ["--dask_client_address=%s" % address], photos, out)
    assert_same_dataset(reference, out)


def test_write_to_recordio_in_a_portable_pipeline_writes_the_commands_bytes(photos, reference, portable_services):
    from apache_beam.runners.portability.portable_runner import PortableRunner

    job_port, pool_port, _ = portable_services
    out = photos.parent / "out-own-portable"
    _run_own_pipeline(PortableRunner(), ["--job_endpoint=localhost:%d" % job_port, "--environment_type=EXTERNAL",
                                         "--environment_config=localhost:%d" % pool_port], photos, out)
    assert_same_dataset(reference, out)


def test_portable_runner_without_a_job_service_answers_at_once(tmp_path):
    # run_cli's timeout is the bound (Beam alone would wait 300 s, then time out with a gRPC error)
    proc = run_cli("--input", SAMPLE, "--output", tmp_path / "out", "--runner=PortableRunner",
                   "--job_endpoint=localhost:%d" % free_port(), check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no Beam job service answers at localhost:"), proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


# ---------------------------------------------------------------------------- runner options


def test_short_dask_runner_name_and_one_partition_per_class():
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.dask.dask_runner import DaskOptions

    from pipeline.runners import DASK_MAX_PARTITIONS, RUNNER_ALIASES, pipeline_options

    for args in (["--runner=DaskRunner"], ["--runner", "DaskRunner"]):
        opts, runner = pipeline_options(args, 5)
        assert runner is None
        assert opts.view_as(StandardOptions).runner == RUNNER_ALIASES["DaskRunner"]
        assert opts.view_as(DaskOptions).npartitions == 5
    opts, _ = pipeline_options(["--runner=DaskRunner"], 21841)
    assert opts.view_as(DaskOptions).npartitions == DASK_MAX_PARTITIONS
    opts, _ = pipeline_options(["--runner=DaskRunner", "--dask_partition_size=7"], 5)
    assert opts.view_as(DaskOptions).npartitions is None and opts.view_as(DaskOptions).partition_size == 7
