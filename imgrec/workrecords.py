"""The records the job leaves under ``OUT/_work/`` between its stages: small, typed, versioned.

Each is a frozen dataclass with ``to_json``/``from_json`` (in the manner of
TFDS's ``_ShardInfo``) and a ``VERSION``; a record of another version is
refused with ``WorkRecordError`` instead of being misread. They are the
protocol between the stages, whichever runner and process runs each stage:

* ``ShardRecord``  ``_work/shards/<split>-<name>.json``: one shard is complete (written last, after its .rec/.idx,
  its records' .lst lines ``<split>-<name>.lst`` and, when its writer found identical files,
  ``<split>-<name>.found.jsonl``: one report item a line)
* ``Failure``      ``_work/failures/<id>.json``: why a stage stopped the job, with the exit code for the command
* ``ReportFragment`` ``_work/report/part-NNNNN-of-00016.json``: findings and counts (every fragment is written)
* ``Heartbeat``    ``_work/progress/<id>.json``: one writing process's counts so far
* ``imgrec.shardplan.Plan``  ``_work/plan.json``: every shard task of the job

No Beam here.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from array import array
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

from imgrec import storage
from imgrec.errors import ErrorRecord, from_json as error_from_json
from imgrec.layout import FAILURES


class WorkRecordError(ValueError):
    """A record under _work/ that this version cannot read."""


def _check_version(cls, d: Mapping) -> None:
    if d.get("version") != cls.VERSION:
        raise WorkRecordError("%s record of version %r, expected %d" % (cls.__name__, d.get("version"), cls.VERSION))


@dataclass(frozen=True)
class ShardRecord:
    """A written shard: where it is, what it holds, and what it was made from (for --resume)."""

    VERSION = 5  # 4: found items in a file of their own, offsets as base64 int64; 5: .lst lines in a file too

    split: str
    shard: int
    shards: int
    rec: str  # paths relative to the output root
    idx: str
    records: int  # records written
    planned: int  # images planned (written + skipped)
    bytes: int
    sha256: str
    digest: str  # what it was made from (images, versions, first id, options): compared by --resume
    first_id: int = 0
    offsets: Sequence[int] = ()  # byte offset of each record in the .rec (an array of int64; read back as one)
    lst_file: str = ""  # the .lst line of each record, in order, in this file (relative to the output root) ...
    lst_bytes: int = 0  # ... of this many bytes
    errors: tuple[ErrorRecord, ...] = ()  # inputs of this shard that were skipped
    shorter_edges: dict[str, int] = field(default_factory=dict)  # shorter image side -> images
    found: int = 0  # report items found while writing (identical files) ...
    found_file: str = ""  # ... in this file (relative to the output root), one JSON object a line
    resumed: bool = False  # kept from an earlier run by --resume (never stored as True)

    def to_json(self) -> dict[str, Any]:
        # field by field, not asdict(): that would deep-copy a shard's hundreds of thousands of offsets
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "resumed"}
        d["version"] = self.VERSION
        d["offsets"] = _pack_ints(self.offsets)
        d["errors"] = [e.to_json() for e in self.errors]
        d["shorter_edges"] = dict(self.shorter_edges)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ShardRecord":
        _check_version(cls, d)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["offsets"] = _unpack_ints(d.get("offsets", ""))
        values["errors"] = tuple(error_from_json(e) for e in d.get("errors", ()))
        return cls(**values)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)

    @classmethod
    def loads(cls, text: str) -> "ShardRecord":
        return cls.from_json(json.loads(text))


def _pack_ints(values: Sequence[int]) -> str:
    """int64 values as base64 of their little-endian bytes: a shard of 200,000 records in 2 MB of text,
    without a Python int per record on the way in or out."""
    packed = values if isinstance(values, array) and values.typecode == "q" else array("q", values)
    if sys.byteorder == "big":
        packed = array("q", packed)
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _unpack_ints(text: str) -> array:
    values = array("q", base64.b64decode(text))
    if sys.byteorder == "big":
        values.byteswap()
    return values


@dataclass(frozen=True)
class ReportFragment:
    """One of the report's fragments (``_work/report/part-NNNNN-of-00016.json``): counts per kind, and items."""

    VERSION = 1

    counts: dict[str, int] = field(default_factory=dict)
    items: tuple[dict, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"version": self.VERSION, "counts": dict(sorted(self.counts.items())), "items": list(self.items)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ReportFragment":
        _check_version(cls, d)
        return cls(dict(d["counts"]), tuple(d["items"]))


@dataclass(frozen=True)
class Heartbeat:
    """What one writing process has done so far (``_work/progress/<id>.json``), for the progress line."""

    VERSION = 1

    images: int = 0
    bytes: int = 0
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"version": self.VERSION, "images": self.images, "bytes": self.bytes, "errors": self.errors}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Heartbeat":
        _check_version(cls, d)
        return cls(int(d["images"]), int(d["bytes"]), int(d["errors"]))


@dataclass(frozen=True)
class Failure:
    """Why a stage of the job stopped it: what the command prints, and its exit code."""

    VERSION = 1

    message: str
    exit_code: int = 1
    kind: str = ""  # the error class, for logs and tests

    def to_json(self) -> dict[str, Any]:
        return {"version": self.VERSION, "message": self.message, "exit_code": self.exit_code, "kind": self.kind}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Failure":
        _check_version(cls, d)
        return cls(d["message"], int(d.get("exit_code", 1)), d.get("kind", ""))


def record_failure(output: str, exc) -> None:
    """Leave why a stage stopped the job (an ImgrecError) where the launcher looks: any runner, any process.

    Never raises: the job is failing already, and the output may be what failed.
    """
    failure = Failure("\n".join(exc.lines()), exc.exit_code, type(exc).__name__)
    try:
        storage.write_text(storage.join(output, FAILURES, "%s.json" % uuid.uuid4().hex), json.dumps(failure.to_json()))
    except Exception:  # noqa: BLE001 - best effort, see above
        pass


def read_failures(output: str) -> list[Failure]:
    """The failures stages recorded under ``output`` (for the launcher, after a failed run)."""
    out = []
    try:
        names = storage.list_recursive(storage.join(output, FAILURES))
    except Exception:  # noqa: BLE001 - nothing to report beyond the runner's own error then
        return out
    for rel in names:
        try:
            out.append(Failure.from_json(json.loads(storage.read_text(storage.join(output, FAILURES, rel)))))
        except (OSError, ValueError, KeyError, WorkRecordError):
            continue
    return out
