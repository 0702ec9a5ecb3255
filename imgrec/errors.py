"""Errors of two kinds: skipped inputs as values, and the problems that stop a job.

* ``ErrorRecord``: one input that did not become a record (a value, counted and
  written to ``errors.jsonl``; the job goes on).
* ``ImgrecError``: a problem that stops the job, with the one line (or few)
  a person reads and the command's exit code: ``UsageError`` (2: options,
  input or output cannot be used as given; refused before any work) and
  ``JobFailed`` (1: the job ran but did not produce a dataset). Every module's
  errors derive from these, so a command has one handler for all of them.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, NamedTuple

# Stages an error can come from, in data-flow order.
STAGE_LIST = "list"
STAGE_READ = "read"
STAGE_VALIDATE = "validate"
STAGE_ENCODE = "encode"


# A runner re-raises a step's exception with the step's name appended to its message.
_STEP_TAG = re.compile(r" \[while running '[^']*'\]$")


class ImgrecError(Exception):
    """A problem a person can act on: ``lines()`` to print, ``exit_code`` for the command. Never a traceback."""

    exit_code = 1
    prefix = ""  # put before the message when it is printed

    def lines(self) -> list[str]:
        return [self.prefix + _STEP_TAG.sub("", line) for line in (str(self).splitlines() or [type(self).__name__])]


class UsageError(ImgrecError, ValueError):
    """The options, input or output cannot be used as given (exit 2, before any work is done)."""

    exit_code = 2


class JobFailed(ImgrecError):
    """The job ran but did not produce a complete dataset (exit 1; no manifest is written)."""

    exit_code = 1


def find_error(exc: BaseException | None) -> ImgrecError | None:
    """The ImgrecError behind ``exc``, however a runner wrapped it (its cause or context chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImgrecError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


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
