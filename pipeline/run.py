"""Convert a folder of class folders into sharded MXNet RecordIO files, on Apache Beam.

On one machine (the default runner: in this process, every core):

    python -m pipeline.run --input ./photos --output ./out

On a cluster, the same job with Beam's flags for the runner, for example:

    python -m pipeline.run --input s3://bucket/photos/ --output s3://bucket/rec/ \\
        --runner=DaskRunner --dask_client_address=tcp://scheduler:8786

Our own flags are listed by ``--help``; every other flag must be one of Beam's
(``pipeline.cli``). The job is a source transform (the folder, or a label
file) and ``transforms.WriteToRecordIO``, run by ``pipeline.api.run_job``;
this module only parses, sets up the terminal and prints the result.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

# This module is the process's entry point: `python -m pipeline.run`, or setup.py's console script.
THE_COMMAND = __name__ == "__main__" or os.path.basename(sys.argv[0]) == "imgrec-convert"

from imgrec.quiet import import_beam, one_blas_thread, runs_locally  # noqa: E402

if THE_COMMAND:
    # The command's own process: the imports below make some 180,000 objects (Beam's) and no
    # garbage; collections would scan them all meanwhile and right after (0.13-0.16 s of a 10-image run).
    # It waits until they are made, and main() then sets them aside for good (gc.freeze).
    gc.disable()
    one_blas_thread()  # before numpy is loaded (by Beam's import)

# The command's process on the local runner: Beam without the integrations the job never uses (imgrec.quiet).
import_beam(lean=THE_COMMAND and runs_locally(sys.argv[1:]))

from imgrec.errors import ImgrecError  # noqa: E402
from pipeline import STARTED  # noqa: E402
from pipeline import cli  # noqa: E402
from pipeline.tuning import tune_beam  # noqa: E402

LOG = logging.getLogger("pipeline.run")


class _BeamNoise(logging.Filter):
    """Beam's warnings reach the user; its tracebacks of a failed step do not (one line of ours says why)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam"):
            return True
        return record.exc_info is None and "Traceback (most recent call last)" not in record.getMessage()


def setup_logging(level: int) -> None:
    """The command's terminal: our lines and Beam's warnings, without Beam's tracebacks (--log-level DEBUG: all)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if level > logging.DEBUG:
        handler.addFilter(_BeamNoise())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("botocore", "urllib3", "smart_open"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))
    # Beam logs its progress at INFO (stages, bundles): only its warnings, unless debugging. The local
    # runner's worker processes relay their own start-up warnings through its job service: those are not
    # about the job (and every failure is one line of ours).
    logging.getLogger("apache_beam").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    if level > logging.DEBUG:
        logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options, beam_args, ns = cli.parse(argv)
    except ImgrecError as exc:
        return _fail(exc)
    setup_logging(logging.WARNING if ns.quiet else getattr(logging, ns.log_level))
    from pipeline.api import run_job

    try:
        manifest = run_job(options, beam_args, progress=not ns.quiet, started=STARTED)
    except ImgrecError as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        from pipeline.api import INTERRUPTED

        print("error: %s" % INTERRUPTED, file=sys.stderr)
        return 130
    if options.dry_run:
        print(manifest["summary_text"], end="")
    elif not ns.quiet:
        print(manifest["summary_text"], end="")
    elif not manifest.get("nothing_new"):
        for line in manifest.get("warnings", []):  # --quiet leaves the terminal only warnings and errors
            print("warning: %s" % line, file=sys.stderr)
    return 0


def _fail(exc: ImgrecError) -> int:
    for line in exc.lines():
        print("error: %s" % line, file=sys.stderr)
    return exc.exit_code


def main() -> None:
    gc.freeze()  # what is imported by now lives as long as the process: no collection scans it again
    gc.enable()
    tune_beam()
    code = run()
    # The job is over and everything is written. A normal interpreter exit would now
    # tear down Beam's modules and thread pools one object at a time (0.15 s here, a
    # tenth of a small run); flush what is buffered and leave at once instead.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
