"""Identical images: one content hash per image, one split per content, conflicts and ``--dedup``. Pure code.

With ``--check-duplicates`` (or ``--dedup``) every image is read once more,
during planning, to hash its bytes (sha256). Its key -- which decides its
split, shard and place in the shard -- is then made from the hash instead of
the path, so identical files always share a split: a copy of a training image
can never sit in validation. Each set of identical files is reported; when
their labels differ it is reported as a label conflict naming every path;
``--dedup`` keeps only the first path (in sorted order) of each set.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from imgrec.planning import ImageRef, image_key


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(sha256: str, seed: str) -> int:
    """The key of an image made from its content: identical files get identical keys."""
    return image_key("sha256:" + sha256, seed)


def label_names(label, classes: Sequence[str]) -> list[str]:
    """An image's labels as class names: they are names already (the job's refs), or ids into ``classes``."""
    values = (label,) if isinstance(label, (int, str)) else tuple(label)
    return [v if isinstance(v, str) else classes[v] if 0 <= v < len(classes) else str(v) for v in values]


def resolve_identical(
    sha256: str, refs: Sequence[ImageRef], dedup: bool, classes: Sequence[str]
) -> tuple[list[ImageRef], list[dict]]:
    """The refs to keep of one set of identical images, and the findings to report about it."""
    members = sorted(refs, key=lambda r: r.relpath)
    if len(members) < 2:
        return members, []
    kept_paths, findings = identical_findings(
        sha256, [(r.relpath, label_names(r.label, classes)) for r in members], members[0].split, dedup
    )
    return [r for r in members if r.relpath in kept_paths], findings


def identical_findings(
    sha256: str, members: Sequence[tuple[str, Sequence[str]]], split: str, dedup: bool
) -> tuple[set[str], list[dict]]:
    """For one set of identical files ``(path, label names)`` sorted by path: the paths kept, and the findings."""
    paths = [path for path, _ in members]
    kept = paths[:1] if dedup else paths
    findings = [{"kind": "duplicate", "sha256": sha256, "paths": paths, "split": split, "kept": kept}]
    labels = {path: list(names) for path, names in members}
    if len({tuple(v) for v in labels.values()}) > 1:
        findings.append({"kind": "label_conflict", "sha256": sha256, "paths": paths, "labels": labels, "kept": kept})
    return set(kept), findings
