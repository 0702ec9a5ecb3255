"""ExcludeExisting: drop the images an earlier run already put in the dataset (``--incremental``).

The images already in the dataset are the paths in its ``.lst`` files. They
meet the listed images in a join (Flatten + GroupByKey on the path), so no
worker holds the whole set of existing paths; only metadata crosses it.
"""

from __future__ import annotations

import apache_beam as beam

from imgrec import storage
from imgrec.env import WorkerEnv
from transforms.env import EnvDoFn

class _PathsInListFn(EnvDoFn):
    def process(self, uri: str):
        # uri: one .lst -> (relpath, None) per line
        with storage.open_read(uri) as f:
            for raw in f:
                line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
                if line:
                    yield line.rsplit("\t", 1)[-1], None


def _new_only(element):
    # (relpath, {"old": [None, ...], "new": [ImageRef, ...]}) -> ImageRef when the path is not in the dataset yet
    _, joined = element
    if not joined["old"]:
        yield from joined["new"]


class ExcludeExisting(beam.PTransform):
    """PCollection[ImageRef] -> PCollection[ImageRef] not listed in any of ``lists``."""

    def __init__(self, lists: list[str], env: WorkerEnv | None = None):
        super().__init__()
        self._lists = list(lists)
        self._env = env

    def expand(self, refs):
        existing = (
            refs.pipeline
            | "ExistingLists" >> beam.Create(self._lists)
            | "ExistingPaths" >> beam.ParDo(_PathsInListFn(self._env))
        )
        listed = refs | "KeyByPath" >> beam.Map(lambda r: (r.relpath, r))
        return (
            {"old": existing, "new": listed}
            | "JoinExisting" >> beam.CoGroupByKey()
            | "NewOnly" >> beam.FlatMap(_new_only)
        )
