"""Warnings about a dataset that was written completely but may not be what its author meant. Pure code.

A warning is one line of text. Whatever finds one adds it to a ``WarningList``
(the launcher's checks before the job, ``finalize`` after it); ``finalize``
stores them in ``manifest.json`` as ``"warnings": [str, ...]`` and the summary
prints them under ``Warnings:`` (``summary_lines``). Nothing here knows which
checks exist: each check is a small function that returns its line, or None.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence

HEADING = "Warnings:"
# A warning names at most this many items (classes, folders), then counts the rest.
SHOWN = 10


class WarningList:
    """One-line warnings in the order they were found, each once."""

    def __init__(self, lines: Iterable[str] = ()):
        self._lines: list[str] = []
        self.extend(lines)

    def add(self, line: str | None) -> None:
        if not line:
            return
        if "\n" in line:
            raise ValueError("a warning is one line: %r" % line)
        if line not in self._lines:
            self._lines.append(line)

    def extend(self, lines: Iterable[str | None]) -> None:
        for line in lines:
            self.add(line)

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def to_json(self) -> list[str]:
        return list(self._lines)


def summary_lines(warnings: Sequence[str]) -> list[str]:
    """The summary's ``Warnings:`` block (nothing when there are none)."""
    if not warnings:
        return []
    return [HEADING] + ["  - %s" % line for line in warnings]


def few(names: Sequence[str], shown: int = SHOWN) -> str:
    """Names quoted and listed, up to ``shown`` of them, then counted."""
    text = ", ".join(repr(n) for n in names[:shown])
    return text + (" and %d more" % (len(names) - shown) if len(names) > shown else "")


def empty_classes(classes: Sequence[str], class_counts: Mapping[str, Mapping[str, int]]) -> str | None:
    """The classes of the class map that no record has (``class_counts``: split -> class -> records)."""
    used = {name for counts in class_counts.values() for name, n in counts.items() if n}
    empty = [name for name in classes if name not in used]
    if not empty:
        return None
    return (
        "%d class%s no images: %s; num_classes (%d) counts %s, so a model trained on this dataset has %s it "
        "never sees (add images, or remove %s: an empty folder, a --class-map entry)"
        % (len(empty), "es have" if len(empty) > 1 else " has", few(empty), len(classes),
           "them" if len(empty) > 1 else "it", "outputs" if len(empty) > 1 else "an output",
           "them" if len(empty) > 1 else "it")
    )
