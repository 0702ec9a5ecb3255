"""EnvDoFn: the one place a stage's process applies the job's worker environment (S3 settings, fsync).

Beam's own ``--s3_*`` options do not reach our code, and a worker process starts
with none of the launcher's state, so every DoFn of the job derives from this
class: it carries the job's ``WorkerEnv`` (a small frozen value that pickles)
and applies it in ``setup``, once per DoFn instance and process, before any
element. ``WorkerEnv.apply`` is idempotent.
"""

from __future__ import annotations

import apache_beam as beam

from imgrec.env import WorkerEnv


class EnvDoFn(beam.DoFn):
    """A DoFn whose process has the job's WorkerEnv applied before its first element."""

    def __init__(self, env: WorkerEnv | None = None):
        super().__init__()
        self.env = env if env is not None else WorkerEnv()

    def setup(self):
        self.env.apply()
