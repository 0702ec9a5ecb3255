"""The engine seam: Beam's flags -> the pipeline options and runner object a job runs with, and runner quirks.

Everything that depends on which runner runs the job lives here (as
img2dataset keeps its ``distributor.py``): the local runner's set-up, the Dask
runner's partitions, the portable runner's job service check, and how the
job's result is waited for.

* The local runner (``DirectRunner``, the default): Beam's FnApiRunner in this
  process. Beam's own DirectRunner would first try to download the Prism runner
  binary, which fails (slowly) offline; the FnApiRunner is what it falls back
  to anyway. WriteToRecordIO then uses the cores itself (worker processes
  forked from this one, or threads). ``--direct_num_workers N`` (N > 1) starts
  N Beam worker processes (``python -m pipeline.worker``) instead.
* Dask: Beam's Dask runner takes all its parallelism from how each
  ``beam.Create`` is cut into dask partitions (by default 128 elements a
  partition: a list of classes would be ONE task); later stages keep that
  count. So: one partition per class folder or label chunk, up to
  ``DASK_MAX_PARTITIONS`` (every GroupByKey is an all-to-all dask shuffle whose
  task count grows faster than the partitions); ``--dask_npartitions`` overrides.
* The portable runner (Flink, Spark, a job server): the job service named by
  ``--job_endpoint`` is asked for first, so a job service that is not there is
  one line within seconds instead of a five-minute gRPC timeout.
"""

from __future__ import annotations

from imgrec.quiet import LOCAL_RUNNER_NAMES, import_beam

import_beam()

import logging
import socket
import sys

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, PortableOptions, StandardOptions

from imgrec.errors import UsageError

LOG = logging.getLogger("pipeline.runners")

# Beam accepts only dotted paths for runners outside its own package list.
RUNNER_ALIASES = {
    "DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner",
}
DASK_MAX_PARTITIONS = 64
# --runner values that mean the local runner (Beam's FnApiRunner).
LOCAL_RUNNERS = (None,) + LOCAL_RUNNER_NAMES
PORTABLE_RUNNERS = ("PortableRunner", "FlinkRunner", "SparkRunner")
# How long the job service of a portable runner has to answer a connection.
JOB_SERVICE_TIMEOUT = 10.0


def expand_aliases(beam_args: list[str]) -> list[str]:
    args = list(beam_args)
    for i, arg in enumerate(args):
        for short, full in RUNNER_ALIASES.items():
            if arg == "--runner=%s" % short:
                args[i] = "--runner=%s" % full
            elif arg == short and i > 0 and args[i - 1] == "--runner":
                args[i] = full
    return args


def pipeline_options(beam_args: list[str], first_elements: int = 1) -> tuple[PipelineOptions, object | None]:
    """Beam options, and the runner object to use (``None`` lets Beam pick from ``--runner``).

    ``first_elements``: how many elements the job starts from (class folders, label
    chunks), for the Dask runner's partitions.
    """
    args = expand_aliases(beam_args)
    opts = PipelineOptions(args)
    runner = opts.view_as(StandardOptions).runner
    if runner in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        direct = opts.view_as(DirectOptions)
        if "--direct_running_mode" in " ".join(args) or (direct.direct_num_workers or 1) == 1:
            return opts, FnApiRunner()
        # N worker processes, started as `python -m pipeline.worker` (Beam's own
        # multi_processing mode starts the same harness, but it prints its connection log
        # to the terminal). The runner keeps an environment it is given only in its
        # in_memory mode, which then warns that it will not be parallel: it is.
        from apache_beam.transforms.environments import SubprocessSDKEnvironment

        direct.direct_running_mode = "in_memory"
        logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").setLevel(logging.ERROR)
        worker = SubprocessSDKEnvironment.from_command_string("%s -m pipeline.worker" % sys.executable)
        return opts, FnApiRunner(default_environment=worker)
    if runner == RUNNER_ALIASES["DaskRunner"]:
        from apache_beam.runners.dask.dask_runner import DaskOptions

        dask = opts.view_as(DaskOptions)
        if not dask.npartitions and not dask.partition_size:
            dask.npartitions = max(1, min(first_elements, DASK_MAX_PARTITIONS))
    return opts, None


def check_reachable(opts: PipelineOptions) -> None:
    """Before a job is submitted: what the runner needs must answer (a portable runner's job service)."""
    if opts.view_as(StandardOptions).runner in PORTABLE_RUNNERS:
        check_job_service(opts)


def runs_in_process(opts: PipelineOptions) -> bool:
    """Whether ``pipeline_options`` gave the local runner that keeps the whole job in this process."""
    direct = opts.view_as(DirectOptions)
    return opts.view_as(StandardOptions).runner in LOCAL_RUNNERS and (direct.direct_num_workers or 1) == 1


def check_job_service(opts: PipelineOptions) -> None:
    """A portable runner's ``--job_endpoint`` must answer; else one line now (Beam would wait for minutes)."""
    endpoint = opts.view_as(PortableOptions).job_endpoint
    if not endpoint or endpoint == "embed":
        return
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=JOB_SERVICE_TIMEOUT):
            pass
    except ValueError:
        raise UsageError("--job_endpoint %r: expected HOST:PORT of a Beam job service" % endpoint) from None
    except OSError as exc:
        raise UsageError(
            "no Beam job service answers at %s (%s): start the job server (Flink, Spark or Beam's own) "
            "or correct --job_endpoint" % (endpoint, exc.strerror or exc)
        ) from None


def job_url(result) -> str | None:
    """The monitoring page of a job on a runner that has one (Dataflow), else None."""
    for name in ("job_url", "_job_url"):
        url = getattr(result, name, None)
        if isinstance(url, str) and url:
            return url
    job = getattr(result, "_job", None)
    job_id = getattr(job, "id", None)
    project = getattr(job, "projectId", None)
    location = getattr(job, "location", None)
    if job_id and project and location:
        return "https://console.cloud.google.com/dataflow/jobs/%s/%s?project=%s" % (location, job_id, project)
    return None
