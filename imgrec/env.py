"""The settings a process of the job must hold before it touches storage, as one value.

Beam's own ``--s3_*`` options do not reach our code, and a worker process
starts with none of the launcher's state: so the launcher builds one
``WorkerEnv`` from the job's options, the transforms carry it (it pickles: a
frozen dataclass of plain values, no clients), and every process applies it
where it starts working, in a ``DoFn.setup`` or at the top of a function that
runs in a worker. ``apply`` is idempotent: applying the same environment again
keeps the S3 client that was made for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imgrec import storage
from imgrec.options import ConvertOptions, S3Settings


@dataclass(frozen=True)
class WorkerEnv:
    """What every process of a job applies: how to reach S3, and whether local writes are fsynced."""

    s3: S3Settings = field(default_factory=S3Settings)
    fsync: bool = False  # --fsync: every local file is flushed to disk before it is renamed into place

    @classmethod
    def from_options(cls, options: ConvertOptions) -> WorkerEnv:
        """The environment of a job with these options."""
        return cls(s3=options.s3, fsync=options.fsync)

    def apply(self) -> None:
        """Make this process use these settings from now on (idempotent)."""
        storage.configure(s3=self.s3, fsync=self.fsync)
