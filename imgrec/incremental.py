"""``--incremental``: what a scheduled run needs to know about the dataset already in --output.

The previous manifest fixes the class map, the ids already used per split
and the number of earlier increments; the new shards of increment N are named
``NAME-incNNNN-00000-of-0000M.rec`` so they never collide with existing ones,
and the dataset's lists and merged indexes after it ``lists/SPLIT-incNNNN.lst``
and ``idx/SPLIT-merged-incNNNN.idx``, so the previous manifest's stay as they
are until the new manifest replaces it (the commit: see ``imgrec.finalize``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from imgrec import storage
from imgrec.errors import UsageError
from imgrec.layout import CLASSES_JSON, INCREMENT_SUFFIX, MANIFEST
from imgrec.options import identity_changes


class IncrementalError(UsageError):
    """The output cannot take an increment as asked (message says why)."""


@dataclass(frozen=True)
class Previous:
    manifest: dict
    batch: int  # the number of this increment (1 for the first run after the initial conversion)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    def next_ids(self) -> dict[str, int]:
        """The first free record id of every split (ids of skipped images are never reused)."""
        return {split: doc.get("next_id", doc["records"]) for split, doc in self.manifest["splits"].items()}

    def lists(self, output: str) -> list[str]:
        """The ``.lst`` of every split: the images already in the dataset."""
        return [storage.join(output, doc["lst"]) for doc in self.manifest["splits"].values()]


def batch_name(name: str, batch: int) -> str:
    return name + INCREMENT_SUFFIX % batch


def load_previous(output: str, identity: dict) -> Previous | None:
    """The dataset in ``output`` to add to, or None when there is none yet (the first run converts all)."""
    uri = storage.join(output, MANIFEST)
    if not storage.exists(uri):
        return None
    try:
        manifest = json.loads(storage.read_text(uri))
    except ValueError:
        raise IncrementalError("%s is not valid JSON: cannot add to that dataset" % uri) from None
    changed = identity_changes(manifest.get("identity"), identity)
    if changed:
        raise IncrementalError(
            "--incremental must use the input and options of the dataset in %s; these differ: %s "
            "(convert again without --incremental, with --overwrite, to change them)" % (output, ", ".join(changed))
        )
    return Previous(manifest, int(manifest.get("increments", 0)) + 1)


def class_map_uri(output: str) -> str:
    return storage.join(output, CLASSES_JSON)
