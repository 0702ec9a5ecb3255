"""Skipped inputs as values: one ``ErrorRecord`` per input that did not become a record."""

from __future__ import annotations

import json
from typing import Iterable, NamedTuple

# Stages an error can come from, in data-flow order.
STAGE_LIST = "list"
STAGE_READ = "read"
STAGE_VALIDATE = "validate"
STAGE_ENCODE = "encode"


class ErrorRecord(NamedTuple):
    path: str  # relative to the input root (non-UTF-8 bytes shown as \udcXX escapes)
    reason: str  # short tag: empty_file, truncated, decode_failed, broken_symlink, ...
    stage: str
    detail: str = ""

    def to_json(self) -> dict:
        return {"path": printable(self.path), "reason": self.reason, "stage": self.stage, "detail": self.detail}


def printable(path: str) -> str:
    """A path that can be written as UTF-8 whatever bytes its name had."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8") if _has_surrogates(path) else path


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def to_jsonl(errors: Iterable[ErrorRecord]) -> str:
    return "".join(json.dumps(e.to_json(), ensure_ascii=False, sort_keys=True) + "\n" for e in errors)


def from_json(d: dict) -> ErrorRecord:
    return ErrorRecord(d["path"], d["reason"], d["stage"], d.get("detail", ""))
