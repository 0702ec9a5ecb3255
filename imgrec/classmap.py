"""Stable class ids: which id each class name gets, optionally pinned by ``--class-map FILE``.

Without a map, ids follow the sorted class names (folder mode, names in a
label file) or the ids written in the label file. With ``--class-map``, the
map decides: every class in it keeps its id even when classes are added or
are absent from this input, so two datasets made at different times agree on
what label 3 means. A class the map does not know is an error, unless
``--allow-new-classes`` appends it after the map's last id (new names in
sorted order). The map file can be a previous run's ``classes.json``
(``{"name": id}``) or ``labels.txt`` (one name per line, the id is the line
number from 0), a JSON list of names, or a Ground Truth labelling job's class
list (``class_labels.json``, the label category configuration:
``{"document-version": ..., "labels": [{"label": "cat"}, ...]}``, where a
class's id is its position in ``labels``, as in the job's output manifest).
"""

from __future__ import annotations

import json
import unicodedata
from typing import Mapping

from imgrec import storage
from imgrec.errors import UsageError

# New classes are listed one by one up to this many in an error message.
_SHOWN = 5


class ClassMapError(UsageError):
    """The class map cannot be used, or does not cover the classes found (message says which and what to do)."""


def load_class_map(uri: str) -> list[str]:
    """The class names in id order from a ``classes.json``-style object, a JSON list or a ``labels.txt``."""
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        raise ClassMapError("--class-map %s: file not found" % uri) from None
    except UnicodeDecodeError:
        raise ClassMapError("--class-map %s: not UTF-8 text" % uri) from None
    stripped = text.lstrip("\ufeff").strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise ClassMapError("--class-map %s: not valid JSON (%s)" % (uri, exc)) from None
        if isinstance(data, list):
            names = data
        elif isinstance(data, dict) and isinstance(data.get("labels"), list):
            names = _names_from_ground_truth(uri, data["labels"])
        else:
            names = _names_from_object(uri, data)
    else:
        names = [line.rstrip("\r") for line in stripped.split("\n")]
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ClassMapError("--class-map %s: class %d has no name (%r)" % (uri, i, name))
    _check_unique(names, "--class-map %s" % uri)
    if not names:
        raise ClassMapError("--class-map %s: lists no classes" % uri)
    return list(names)


def _names_from_ground_truth(uri: str, items: list) -> list:
    """The names of a Ground Truth class list, ``[{"label": "cat"}, ...]``, in id order."""
    names = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            raise ClassMapError('--class-map %s: labels[%d] is %r, expected {"label": "class name"} (a Ground Truth '
                                'class list)' % (uri, i, item))
        names.append(item["label"])
    return names


def _names_from_object(uri: str, data: dict) -> list[str]:
    by_id: dict[int, str] = {}
    for name, class_id in data.items():
        if isinstance(class_id, bool) or not isinstance(class_id, int) or class_id < 0:
            raise ClassMapError("--class-map %s: the id of %r must be a whole number >= 0, got %r" % (uri, name, class_id))
        if class_id in by_id:
            raise ClassMapError("--class-map %s: id %d is given to both %r and %r" % (uri, class_id, by_id[class_id], name))
        by_id[class_id] = name
    missing = [i for i in range(len(by_id)) if i not in by_id]
    if missing:
        raise ClassMapError(
            "--class-map %s: ids must run from 0 to %d without gaps; %s missing" % (uri, len(by_id) - 1, _few(missing))
        )
    return [by_id[i] for i in range(len(by_id))]


def _few(items) -> str:
    items = list(items)
    shown = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in items[:_SHOWN])
    return shown + (" and %d more" % (len(items) - _SHOWN) if len(items) > _SHOWN else "")


def _check_unique(names, where: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ClassMapError("%s: the name %r is used by ids %d and %d" % (where, name, seen[name], i))
        seen[name] = i


def resolve_names(found: Mapping[str, object], pinned: list[str] | None, allow_new: bool, where: str = "") -> list[str]:
    """Class names in id order for classes known by name (folders, or names in a label file).

    ``found`` maps each name to where it was seen (a folder, a line number) for messages.
    """
    if pinned is None:
        return sorted(found)
    new = sorted(name for name in found if name not in pinned)
    if new and not allow_new:
        first = new[0]
        seen = " (first seen %s)" % _where(found[first], where) if found[first] not in (None, "") else ""
        raise ClassMapError(
            "%d class%s not in --class-map: %s%s; add %s to the map, or pass --allow-new-classes to append %s "
            "after id %d" % (len(new), "es are" if len(new) > 1 else " is", _few(new), seen,
                             "them" if len(new) > 1 else "it", "them" if len(new) > 1 else "it", len(pinned) - 1)
        )
    return list(pinned) + new


def _where(seen, where: str) -> str:
    return "on line %s of %s" % (seen, where) if isinstance(seen, int) and where else str(seen)


def resolve_ids(
    found: Mapping[int, object],
    id_names: Mapping[int, str],
    pinned: list[str] | None,
    allow_new: bool,
    where: str = "",
) -> list[str]:
    """Class names in id order for classes known by id (a ``.lst``, a manifest, numeric labels).

    The ids are kept as written. Names come from the map, else from the
    manifest's metadata, else the id itself; a class the metadata names is a
    class even where no line uses it. With a map, an id beyond it is an error
    unless ``--allow-new-classes``; a metadata name that contradicts the map
    is an error.
    """
    found = {**{i: "" for i in id_names}, **found}
    top = max(found) + 1 if found else 0
    if pinned is not None:
        beyond = sorted(i for i in found if i >= len(pinned))
        if beyond and not allow_new:
            first = beyond[0]
            raise ClassMapError(
                "class id%s %s %s not in --class-map (ids 0-%d)%s; extend the map, or pass --allow-new-classes"
                % ("s" if len(beyond) > 1 else "", _few(beyond), "are" if len(beyond) > 1 else "is", len(pinned) - 1,
                   " (first seen %s)" % _where(found[first], where) if found[first] not in (None, "") else "")
            )
        for class_id, name in sorted(id_names.items()):
            if class_id < len(pinned) and pinned[class_id] != name:
                raise ClassMapError(
                    "the label file's metadata names class %d %r, but --class-map names it %r" % (class_id, name, pinned[class_id])
                )
        names = list(pinned) + [id_names.get(i, str(i)) for i in range(len(pinned), top)]
    else:
        names = [id_names.get(i, str(i)) for i in range(top)]
    _check_unique(names, "class names")
    return names


def _lookalike_key(name: str) -> str:
    """What a name looks like, whatever its case and Unicode form (compatibility caseless matching)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def lookalike_pairs(names) -> list[tuple[str, str, str]]:
    """(first, second, how they differ) for class names that differ only in case or Unicode form.

    Such names ('Cat' and 'cat'; 'caf\u00e9' written precomposed (NFC) and with a
    combining accent (NFD)) are separate classes that print the same or nearly so.
    Each name after the first of a group is paired with the first, in sorted order.
    """
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(_lookalike_key(name), []).append(name)
    pairs = []
    for group in groups.values():
        for other in group[1:]:
            first = group[0]
            if unicodedata.normalize("NFC", first) == unicodedata.normalize("NFC", other):
                how = "only in Unicode normalisation (NFC/NFD: the same letters, composed differently)"
            elif first.casefold() == other.casefold():
                how = "only in case"
            else:
                how = "only in case or Unicode form"
            pairs.append((first, other, how))
    return pairs


def shown_name(name: str) -> str:
    """A class name for a message, with its code points spelt out when it is not plain ASCII."""
    return repr(name) if name.isascii() else "%r (%s)" % (name, ascii(name))
