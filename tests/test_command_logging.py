"""The command's terminal: Beam's own warnings and the Dataflow job page reach the user; Beam's step tracebacks
and progress chatter do not (one line of ours says why a job failed)."""

import subprocess
import sys
from types import SimpleNamespace

from conftest import REPO
from pipeline.runners import job_url

_SCRIPT = r"""
import logging
from pipeline.run import setup_logging
setup_logging(logging.INFO)
beam = logging.getLogger("apache_beam.runners.worker.sdk_worker")
beam.warning("Discarding unparseable args: ['--resise']")
beam.info("Running bundle for stage 3")
try:
    raise RuntimeError("boom in a DoFn")
except RuntimeError:
    beam.error("Error processing instruction 7", exc_info=True)
beam.error("Traceback (most recent call last):\n  File x\nRuntimeError: boom")
logging.getLogger("pipeline.api").info("10 classes under photos")
"""


def test_beam_warnings_reach_stderr_but_its_tracebacks_and_chatter_do_not():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING apache_beam.runners.worker.sdk_worker: Discarding unparseable args: ['--resise']" in proc.stderr
    assert "INFO pipeline.api: 10 classes under photos" in proc.stderr
    assert "Running bundle" not in proc.stderr
    assert "Traceback" not in proc.stderr and "boom" not in proc.stderr, proc.stderr


def test_job_url_names_the_dataflow_page_of_a_submitted_job():
    submitted = SimpleNamespace(_job=SimpleNamespace(id="2026-12-01_10_00_00-123", projectId="proj",
                                                     location="europe-west1"))
    assert job_url(submitted) == ("https://console.cloud.google.com/dataflow/jobs/europe-west1/"
                                  "2026-12-01_10_00_00-123?project=proj")
    assert job_url(SimpleNamespace(job_url="https://flink.example/#/job/abc")) == "https://flink.example/#/job/abc"
    assert job_url(SimpleNamespace()) is None  # the local runner has no page
