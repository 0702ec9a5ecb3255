"""ExcludeExisting: drop the images an earlier run already put in the dataset (``--incremental``).

The images already in the dataset are the paths in its ``.lst`` files. They
meet the listed images in a join (Flatten + GroupByKey on the path), so no
worker holds the whole set of existing paths; only metadata crosses it.
"""

from __future__ import annotations

import apache_beam as beam

from imgrec import storage
from imgrec.env import WorkerEnv

_OLD, _NEW = 0, 1


def _paths_in_list(uri: str, env: WorkerEnv | None):
    # uri: one .lst -> (relpath, (_OLD, None)) per line
    if env is not None:
        env.apply()
    with storage.open_read(uri) as f:
        for raw in f:
            line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
            if line:
                yield line.rsplit("\t", 1)[-1], (_OLD, None)


def _new_only(element):
    # (relpath, [(_OLD, None) | (_NEW, ImageRef)]) -> ImageRef when the path is not in the dataset yet
    _, tagged = element
    tagged = list(tagged)
    if not any(tag == _OLD for tag, _ in tagged):
        for tag, ref in tagged:
            if tag == _NEW:
                yield ref


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
            | "ExistingPaths" >> beam.FlatMap(_paths_in_list, self._env)
        )
        listed = refs | "KeyByPath" >> beam.Map(lambda r: (r.relpath, (_NEW, r)))
        return (
            (existing, listed)
            | "JoinExisting" >> beam.Flatten()
            | "GroupByPath" >> beam.GroupByKey()
            | "NewOnly" >> beam.FlatMap(_new_only)
        )
