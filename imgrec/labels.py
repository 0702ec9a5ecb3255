"""Label files: im2rec ``.lst``, CSV, JSON Lines and SageMaker Ground Truth manifests. Pure code, no Beam.

A label file names images (paths relative to ``--input``, or absolute paths
and ``s3://`` references inside it) and gives each one or more labels. Two
passes read it:

* ``scan_label_file`` on the launcher streams the whole file once with
  constant memory: it checks every line (a malformed line becomes a message
  with its line number; the job is refused before any work), collects the
  class names or ids, the widest label set, and cuts the file into chunks
  of about ``CHUNK_BYTES`` at line starts.
* ``read_chunk`` in the Beam workers parses one chunk again and turns each
  line into class ids, so the entries of a large file never sit in one
  process's memory.

How label values are read (``--labels-as``): ``names`` (class names, ids given
by sorted name or ``--class-map``), ``class-ids`` (whole numbers; negative
values are padding and ignored, as written by ``--label-format class-ids``)
or ``multi-hot`` (a 0/1 vector, one position per class). ``auto`` never
changes what a file means silently:

* ``.lst``: when every line has the same number W > 1 of label columns and
  every value is 0 or 1, the columns are a multi-hot vector over W classes
  (SageMaker's multi-label list); otherwise they are class ids. Both readings
  are kept while the file streams past (each with its own counts and refused
  lines) and the one the rule picks is used at the end.
* CSV and JSON Lines: class ids when every label is a whole number >= 0,
  class names when no label is a number; a file that mixes them is refused
  at the first line that breaks the pattern of its first label.
* Ground Truth manifests: a single value is a class id; a list is class ids
  when the attribute's metadata says ``...-multilabel`` (Ground Truth's own
  output), else multi-hot (the SageMaker algorithm's layout). ``source-ref``
  and ``image-ref`` both name the image.

Paths: relative to ``--input``, or absolute paths and ``s3://`` references
inside it; ``--refs-root PREFIX`` reads references under PREFIX as paths
under ``--input`` (a manifest whose images were copied elsewhere). A CSV may
start with Excel's ``sep=X`` line, which sets its delimiter.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, Mapping, Sequence

from imgrec import storage
from imgrec.errors import UsageError

FORMAT_LST, FORMAT_CSV, FORMAT_JSONL, FORMAT_MANIFEST = "lst", "csv", "jsonl", "manifest"
FORMATS = (FORMAT_LST, FORMAT_CSV, FORMAT_JSONL, FORMAT_MANIFEST)
_EXTENSIONS = {".lst": FORMAT_LST, ".csv": FORMAT_CSV, ".jsonl": FORMAT_JSONL, ".ndjson": FORMAT_JSONL,
               ".json": FORMAT_JSONL, ".manifest": FORMAT_MANIFEST}

AUTO, NAMES, CLASS_IDS, MULTI_HOT = "auto", "names", "class-ids", "multi-hot"
LABELS_AS = (AUTO, NAMES, CLASS_IDS, MULTI_HOT)

# Output label formats (--label-format); "" is one scalar label per record.
SINGLE = ""
OUTPUT_FORMATS = (MULTI_HOT, CLASS_IDS)
DEFAULT_PAD = -1.0

# One chunk of the label file per Beam element: a 10-million-line file becomes ~150
# elements, and a worker holds one chunk's lines (a few MiB) at a time.
CHUNK_BYTES = 4 << 20
# The launcher reads the label file in blocks of this size.
READ_BLOCK = 1 << 20
# Malformed lines are listed one by one up to this many, then counted.
MAX_REPORTED = 20
_SEPARATOR = ";"  # between labels in one CSV field
# ... and when the fields themselves are separated by ';' (Excel's sep=; line): the other usual list mark
_SEPARATOR_AFTER_SEMICOLON = ","
# Excel's first line naming the field delimiter, and the delimiters it is understood with.
_EXCEL_SEP = re.compile(r"^sep=(.)\s*$", re.IGNORECASE)
_EXCEL_DELIMITERS = (",", ";", "\t", "|")
_DIGITS = re.compile(r"^[0-9]+$")
# A label that reads as a number (nan and inf are names, as a person would read them).
_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
# The keys that name the image in an augmented manifest line: Ground Truth writes
# source-ref; SageMaker's developer guide writes image-ref in its training examples.
REF_KEYS = ("source-ref", "image-ref")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class LabelLineError(ValueError):
    """What is wrong with one line (the caller adds the file and line number)."""


class LabelFileError(UsageError):
    """The label file cannot be used; ``problems`` holds one message per problem, each naming its line."""

    def __init__(self, uri: str, lines: Sequence[str], total: int | None = None):
        self.uri = uri
        self.problems = list(lines)
        self.total = len(self.problems) if total is None else total
        more = self.total - len(self.problems)
        if more > 0:
            self.problems.append("%s: ... and %d more problem lines" % (uri, more))
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return list(self.problems)


@dataclass(frozen=True)
class Entry:
    """One label line: the image (relative to the input root) and its label values as written."""

    lineno: int
    relpath: str
    values: tuple  # names (str) or numbers, or a 0/1 vector
    reading: str = ""  # NAMES/CLASS_IDS/MULTI_HOT when the line itself decides (Ground Truth), else ""
    names: tuple = ()  # ((class id, name), ...) from Ground Truth metadata


@dataclass(frozen=True)
class Chunk:
    """Bytes ``[start, end)`` of the label file, whose first line is line ``first_line``."""

    index: int
    start: int
    end: int
    first_line: int


@dataclass(frozen=True)
class LabelSpec:
    """Everything a worker needs to turn a chunk of the label file into class ids (small, picklable)."""

    uri: str
    format: str
    input_root: str
    exts: tuple[str, ...]
    reading: str = NAMES  # the file's reading of label values, never AUTO
    attribute: str = ""  # Ground Truth: the label attribute
    header: bool = False  # CSV: the first line (after Excel's sep= line) is a header
    name_to_id: tuple[tuple[str, int], ...] = ()
    labels_as: str = AUTO  # --labels-as, as given
    delimiter: str = ","  # CSV: between the fields (Excel's sep= line may change it)
    skip_lines: int = 0  # lines 1..skip_lines are not entries: Excel's sep= line and the header
    refs_root: str = ""  # --refs-root: references under this prefix are paths under input_root

    @functools.cached_property
    def _name_index(self) -> dict[str, int]:
        return dict(self.name_to_id)

    def ids_of(self, entry: Entry) -> tuple[int, ...]:
        return class_ids(entry, self.reading, self._name_index)


@dataclass
class LabelScan:
    """What the launcher learnt from one pass over the label file."""

    spec: LabelSpec
    lines: int = 0
    entries: int = 0
    names: dict[str, int] = field(default_factory=dict)  # name -> first line (names reading)
    ids: dict[int, int] = field(default_factory=dict)  # class id -> first line (class-ids / multi-hot)
    id_names: dict[int, str] = field(default_factory=dict)  # class id -> name from Ground Truth metadata
    max_labels: int = 0  # most labels on one line
    multi_label_lines: int = 0  # lines with zero or several labels
    width: int = 0  # multi-hot vector width
    chunks: list[Chunk] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one line each: the file is usable, but may not mean this


# ---------------------------------------------------------------- format and paths


def detect_format(uri: str, first_line: str = "") -> str:
    """The format of a label file, from its extension (and, for JSON, its first line)."""
    ext = posixpath.splitext(uri.rstrip("/"))[1].lower()
    fmt = _EXTENSIONS.get(ext)
    if fmt == FORMAT_JSONL and any('"%s"' % key in first_line for key in REF_KEYS):
        return FORMAT_MANIFEST
    if fmt is None:
        raise LabelLineError(
            "cannot tell the format of %s from its extension: use .lst, .csv, .jsonl or .manifest "
            "(or --labels-format)" % uri
        )
    return fmt


def safe_relpath(path: str, input_root: str, refs_root: str = "") -> str:
    """``path`` from a label file as a path relative to the input root, or LabelLineError.

    Relative paths are normalised ('a/./b', 'a//b', 'a/x/../b'); absolute paths
    and ``s3://`` references must lie inside the input root, or under
    ``refs_root`` (``--refs-root``), which stands for the input root. A path
    that climbs out with '..' or points elsewhere is refused. The test is on
    the text of the path: symbolic links inside the input root are followed as
    in folder mode.
    """
    if not path:
        raise LabelLineError("the path is empty")
    if any(c in path for c in "\t\n\r\0"):
        raise LabelLineError("the path %r holds a tab, line break or NUL" % path)
    if refs_root and path.startswith(as_prefix(refs_root)):
        return _relative_inside(path[len(as_prefix(refs_root)):], path)
    root_is_s3 = storage.is_s3(input_root)
    if path.startswith("s3://"):
        if not root_is_s3:
            raise LabelLineError(
                "%s is an s3:// reference, but --input %s is a local folder%s"
                % (path, input_root, _refs_hint(path, refs_root, "if it holds a copy of the images, "))
            )
        prefix = input_root.rstrip("/") + "/"
        if not path.startswith(prefix):
            raise LabelLineError("%s is outside the input root %s%s" % (path, prefix, _refs_hint(path, refs_root)))
        rel = path[len(prefix):]
    elif path.startswith("/"):
        if root_is_s3:
            raise LabelLineError("%s is a local absolute path, but --input %s is on S3%s"
                                 % (path, input_root, _refs_hint(path, refs_root)))
        root = posixpath.normpath(os.path.abspath(input_root).replace(os.sep, "/"))
        absolute = posixpath.normpath(path)
        if not absolute.startswith(root.rstrip("/") + "/"):
            raise LabelLineError("absolute path %s is outside the input root %s%s" % (path, root, _refs_hint(path, refs_root)))
        rel = absolute[len(root.rstrip("/")) + 1:]
    else:
        rel = path
    return _relative_inside(rel, path)


def as_prefix(refs_root: str) -> str:
    """``--refs-root`` as the text every reference under it starts with."""
    return refs_root.rstrip("/") + "/"


def _refs_hint(path: str, refs_root: str, when: str = "") -> str:
    """How --refs-root would take ``path`` (or why the given one does not)."""
    if refs_root:
        return " and not under --refs-root %s" % as_prefix(refs_root)
    parent = posixpath.dirname(path.rstrip("/"))
    return "; %spass --refs-root with the prefix that --input stands for (e.g. --refs-root %s/)" % (when, parent)


def _relative_inside(rel: str, shown: str) -> str:
    """A path relative to the input root, normalised, or LabelLineError naming ``shown`` (the path as written)."""
    if _URL.match(rel):
        raise LabelLineError("%s: only s3:// references and paths are understood" % shown)
    normal = posixpath.normpath(rel)
    if normal == ".." or normal.startswith("../"):
        raise LabelLineError("%s climbs out of the input root with '..'" % shown)
    if normal in (".", "") or normal.startswith("/"):
        raise LabelLineError("%s names the input root itself, not an image" % shown)
    return normal


# ---------------------------------------------------------------- one line of each format


def parse_lst_line(text: str) -> tuple[str, tuple]:
    """im2rec's list line: ``index<TAB>label[<TAB>label...]<TAB>path`` (fields stripped, path last)."""
    fields = [f.strip() for f in text.strip().split("\t")]
    if len(fields) < 3:
        raise LabelLineError(
            "expected 'index<TAB>label[<TAB>label...]<TAB>path' (3 or more tab-separated fields), got %d" % len(fields)
        )
    try:
        int(fields[0])
    except ValueError:
        raise LabelLineError("the index %r is not a whole number" % fields[0]) from None
    values = []
    for token in fields[1:-1]:
        try:
            value = float(token)
        except ValueError:
            raise LabelLineError("the label %r is not a number" % token) from None
        if not math.isfinite(value):
            raise LabelLineError("the label %r is not a finite number" % token)
        values.append(value)
    return fields[-1], tuple(values)


def parse_csv_line(text: str, delimiter: str = ",") -> tuple[str, tuple]:
    """``path,label`` or ``path,label1;label2`` (fields may be quoted; spaces around them ignored).

    With another ``delimiter`` (Excel's ``sep=`` line) the fields are split on it;
    after ``sep=;`` the labels of one field are separated by ','.
    """
    try:
        rows = list(csv.reader([text], delimiter=delimiter))
    except csv.Error as exc:
        raise LabelLineError("not a CSV row (%s)" % exc) from None
    fields = rows[0] if rows else []
    separator = _SEPARATOR_AFTER_SEMICOLON if delimiter == _SEPARATOR else _SEPARATOR
    if len(fields) != 2:
        if delimiter == ",":
            raise LabelLineError(
                "expected 2 comma-separated fields 'path,label' (labels separated by ';'), got %d" % len(fields))
        raise LabelLineError("expected 2 fields separated by %r as the sep= line says ('path%slabel', labels "
                             "separated by %r), got %d" % (delimiter, delimiter, separator, len(fields)))
    path, labels = fields[0].strip(), fields[1]
    return path, tuple(t.strip() for t in labels.split(separator) if t.strip())


def excel_delimiter(text: str) -> str | None:
    """The delimiter named by Excel's ``sep=X`` first line, None when ``text`` is not one."""
    found = _EXCEL_SEP.match(text)
    if not found:
        return None
    if found.group(1) not in _EXCEL_DELIMITERS:
        raise LabelLineError("Excel's sep= line names %r; only ',', ';', tab and '|' are understood" % found.group(1))
    return found.group(1)


def _json_object(text: str) -> dict:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise LabelLineError("not valid JSON (%s)" % str(exc).split(":")[0]) from None
    if not isinstance(obj, dict):
        raise LabelLineError("expected a JSON object, got %s" % type(obj).__name__)
    return obj


def _json_label(value: Any, what: str) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise LabelLineError("%s %r is not a class name or a number" % (what, value))
    if isinstance(value, float) and not math.isfinite(value):
        raise LabelLineError("%s %r is not a finite number" % (what, value))
    return value


def parse_jsonl_line(text: str) -> tuple[str, tuple]:
    """``{"path": "cat/1.jpg", "labels": ["cat", "pet"]}`` (or ``"label": "cat"``)."""
    obj = _json_object(text)
    path = obj.get("path")
    if not isinstance(path, str):
        raise LabelLineError('expected a "path" string, as in {"path": "cat/1.jpg", "labels": ["cat"]}')
    if "labels" in obj:
        labels = obj["labels"]
        if not isinstance(labels, list):
            raise LabelLineError('"labels" must be a list, got %s' % type(labels).__name__)
    elif "label" in obj:
        labels = [obj["label"]]
    else:
        raise LabelLineError('expected "labels": [...] (or "label") beside "path"')
    return path, tuple(_json_label(v, "label") for v in labels)


def manifest_attribute(obj: dict, wanted: str) -> str:
    """The label attribute of a Ground Truth line: ``wanted``, or the one attribute beside the image ref."""
    if wanted:
        if wanted not in obj:
            raise LabelLineError("has no %r attribute (--label-attribute)" % wanted)
        return wanted
    candidates = sorted(k for k in obj if k not in REF_KEYS and not k.endswith("-metadata"))
    with_metadata = [k for k in candidates if k + "-metadata" in obj]
    if len(candidates) == 1:
        return candidates[0]
    if len(with_metadata) == 1:
        return with_metadata[0]
    if not candidates:
        raise LabelLineError("has no label attribute beside %s" % ("/".join(k for k in REF_KEYS if k in obj) or REF_KEYS[0]))
    raise LabelLineError("has several label attributes (%s): choose one with --label-attribute" % ", ".join(candidates))


def parse_manifest_line(text: str, attribute: str, labels_as: str) -> tuple[str, tuple, str, tuple, str]:
    """An augmented manifest line: (image ref, values, reading, metadata names, attribute)."""
    obj = _json_object(text)
    refs = [key for key in REF_KEYS if key in obj]
    if len(refs) > 1:
        raise LabelLineError('has both "source-ref" and "image-ref": which one names the image? Keep one')
    ref = obj.get(refs[0]) if refs else None
    if not isinstance(ref, str):
        raise LabelLineError('expected a "source-ref" (or "image-ref") string')
    attr = manifest_attribute(obj, attribute)
    value = obj[attr]
    if isinstance(value, str):  # SageMaker's examples write "0" and "[1, 0, 1]" as strings
        text_value = value.strip()
        try:
            value = json.loads(text_value) if text_value.startswith("[") else int(text_value)
        except ValueError:
            raise LabelLineError("%s %r is neither a class id nor a list" % (attr, value)) from None
    metadata = obj.get(attr + "-metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    names: list[tuple[int, str]] = []
    class_map = metadata.get("class-map")
    if isinstance(class_map, dict):
        for key, name in class_map.items():
            if isinstance(name, str) and str(key).isdigit():
                names.append((int(key), name))
    if isinstance(value, list):
        values = tuple(_json_label(v, attr + " value") for v in value)
        multilabel_metadata = str(metadata.get("type", "")).endswith("multilabel")
        if labels_as == AUTO:
            reading = CLASS_IDS if multilabel_metadata else MULTI_HOT
        elif labels_as in (CLASS_IDS, MULTI_HOT):
            reading = labels_as
        else:
            raise LabelLineError("--labels-as %s does not apply to Ground Truth manifests (class ids or multi-hot)" % labels_as)
    else:
        values = (_json_label(value, attr),)
        if labels_as == MULTI_HOT:
            raise LabelLineError("%s is a single value, but --labels-as multi-hot expects a list" % attr)
        reading = CLASS_IDS
        if isinstance(metadata.get("class-name"), str) and _whole(values[0]):
            names.append((int(values[0]), metadata["class-name"]))
    return ref, values, reading, tuple(sorted(set(names))), attr


def _whole(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, str) and bool(_NUMBER.match(value)) and float(value).is_integer()


def is_numeric(value) -> bool:
    """A label value that reads as a class id (a whole number >= 0)."""
    return _whole(value) and float(value) >= 0


def is_number(value) -> bool:
    """A label value written as a number (whole or not); 'nan' and 'inf' are names."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return bool(_NUMBER.match(value))


# What a CSV / JSON Lines label is, for --labels-as auto.
KIND_ID, KIND_NAME, KIND_OTHER = "id", "name", "other"
_KIND_WORDS = {
    KIND_ID: "a class id (a whole number >= 0)",
    KIND_NAME: "a class name (not a number)",
    KIND_OTHER: "a number that is not a class id (a whole number >= 0)",
}
_PATTERN_WORDS = {KIND_ID: "class ids", KIND_NAME: "class names"}


def label_kind(value) -> str:
    if is_numeric(value):
        return KIND_ID
    return KIND_OTHER if is_number(value) else KIND_NAME


def label_name(value) -> str:
    if isinstance(value, str):
        return value
    return "%d" % value if float(value).is_integer() else repr(value)


# ---------------------------------------------------------------- values -> class ids


def class_ids(entry: Entry, file_reading: str, name_to_id: Mapping[str, int]) -> tuple[int, ...]:
    """The sorted, distinct class ids of a line (padding and zeros of a multi-hot vector left out)."""
    reading = entry.reading or file_reading
    if reading == NAMES:
        return tuple(sorted({name_to_id[label_name(v)] for v in entry.values}))
    if reading == MULTI_HOT:
        return tuple(i for i, v in enumerate(entry.values) if float(v) == 1)
    return tuple(sorted({int(float(v)) for v in entry.values if float(v) >= 0}))


def check_values(entry: Entry, reading: str, fmt: str) -> None:
    """Raise LabelLineError when the values cannot be read the way ``reading`` says."""
    if reading == CLASS_IDS:
        for v in entry.values:
            if not _whole(v) or (float(v) < 0 and fmt != FORMAT_LST):
                if fmt == FORMAT_LST:
                    hint = " (one of the line's %d label columns: a .lst holds class ids, or one 0/1 per class)" % len(
                        entry.values)
                elif fmt == FORMAT_MANIFEST:
                    hint = ""
                else:
                    hint = "; use --labels-as names for class names"
                raise LabelLineError("the label %r is not a class id (a whole number >= 0)%s" % (v, hint))
    elif reading == MULTI_HOT:
        for v in entry.values:
            if isinstance(v, bool) or not isinstance(v, (int, float, str)) or label_name(v) not in ("0", "1"):
                raise LabelLineError("the multi-hot value %r is not 0 or 1" % (v,))


def encode_label(ids: int | Sequence[int], label_format: str, width: int, pad: float = DEFAULT_PAD):
    """The record label for an image's class ids: an int (single-label) or a float vector of ``width``."""
    if not label_format:
        return ids
    ids = (ids,) if isinstance(ids, int) else tuple(ids)
    if label_format == MULTI_HOT:
        vector = [0.0] * width
        for i in ids:
            vector[i] = 1.0
        return tuple(vector)
    if len(ids) > width:
        raise ValueError("%d labels do not fit --label-width %d" % (len(ids), width))
    return tuple(float(i) for i in ids) + (float(pad),) * (width - len(ids))


def decode_label(values: Sequence[float], label_format: str, pad: float = DEFAULT_PAD) -> tuple[int, ...]:
    """The class ids a record label stands for (the inverse of ``encode_label``)."""
    if not label_format:
        return (int(values[0]),)
    if label_format == MULTI_HOT:
        return tuple(i for i, v in enumerate(values) if v == 1)
    return tuple(int(v) for v in values if v != pad)


# ---------------------------------------------------------------- the launcher's pass


def _blocks_to_lines(f: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset of the line, the line without its newline), reading in blocks."""
    offset = 0
    lineno = 0
    tail = b""
    while True:
        block = f.read(READ_BLOCK)
        if not block:
            break
        data = tail + block
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            lineno += 1
            yield lineno, offset, data[start:nl]
            offset += nl + 1 - start
            start = nl + 1
        tail = data[start:]
    if tail:
        yield lineno + 1, offset, tail


def _decode(raw: bytes, lineno: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LabelLineError("is not UTF-8 text") from None
    if lineno == 1:
        text = text.lstrip("\ufeff")
    return text.rstrip("\r")


def _is_header(path: str, exts: Sequence[str]) -> bool:
    return posixpath.splitext(path)[1].lower() not in exts


def parse_line(spec: LabelSpec, text: str, lineno: int) -> Entry:
    """One non-blank line of the label file as an Entry with a safe relative path.

    ``Entry.reading`` is set when the line decides it (Ground Truth) or
    ``--labels-as`` does; otherwise the file's reading (``spec.reading``,
    known once the launcher has seen every line) applies.
    """
    names: tuple = ()
    reading = ""
    if spec.format == FORMAT_LST:
        path, values = parse_lst_line(text)
    elif spec.format == FORMAT_CSV:
        path, values = parse_csv_line(text, spec.delimiter)
    elif spec.format == FORMAT_JSONL:
        path, values = parse_jsonl_line(text)
    else:
        path, values, reading, names, _ = parse_manifest_line(text, spec.attribute, spec.labels_as)
    if not reading and spec.labels_as != AUTO:
        reading = spec.labels_as
    return Entry(lineno, safe_relpath(path, spec.input_root, spec.refs_root), values, reading, names)


def _lines_of(data: bytes, first_line: int) -> Iterator[tuple[int, bytes]]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for i, raw in enumerate(lines):
        yield first_line + i, raw


class _Problems:
    """Messages about lines, in line order: the first MAX_REPORTED kept, the rest counted."""

    def __init__(self):
        self.kept: list[tuple[int, str]] = []
        self.total = 0

    def add(self, lineno: int, message: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_REPORTED:
            self.kept.append((lineno, message))


class _Tally:
    """What one reading of the label values makes of the file: its classes, label counts and refused lines.

    ``reading`` is NAMES, CLASS_IDS or MULTI_HOT, or AUTO for a CSV / JSON Lines
    file whose labels decide at the end (``pattern``: the kind of its first label).
    """

    def __init__(self, reading: str):
        self.reading = reading
        self.problems = _Problems()
        self.names: dict[str, int] = {}  # name -> first line
        self.ids: dict[int, int] = {}  # class id -> first line
        self.max_labels = 0
        self.multi_label_lines = 0
        self.width = 0  # multi-hot vector width
        self.width_line = 0
        self.pattern = ""  # AUTO: KIND_ID or KIND_NAME, from the first label
        self.pattern_seen: tuple[int, Any] = (0, None)  # (line, label) that set the pattern
        self.broken = False  # AUTO: a label that breaks the pattern was reported

    def final_reading(self) -> str:
        if self.reading != AUTO:
            return self.reading
        return NAMES if self.pattern == KIND_NAME else CLASS_IDS


class _Scanner:
    """The launcher's pass: one call of ``feed`` per line, constant memory apart from the class sets.

    For a ``.lst`` read with ``--labels-as auto`` two tallies run side by side
    (class ids and multi-hot) until a line rules the multi-hot reading out; the
    survivor's refused lines are the ones reported.
    """

    def __init__(self, uri, input_root, exts, fmt, labels_as, attribute, single_label, label_width, refs_root=""):
        self.uri = uri
        self.input_root, self.exts, self.fmt = input_root, tuple(exts), fmt
        self.labels_as, self.attribute, self.refs_root = labels_as, attribute, refs_root
        self.single_label = single_label
        self.label_width = label_width
        self.scan: LabelScan | None = None
        self.problems = _Problems()  # lines that no reading can use
        self.tallies: list[_Tally] = []
        self.lst_columns = 0  # label columns of the first .lst line
        self.entries = 0  # lines that parsed
        self.lst_multi_hot = True  # so far every .lst line has the same W > 1 label columns, all 0 or 1
        self.delimiter = ","
        self.sep_line = 0  # 1 when line 1 is Excel's sep= line
        self.chunks: list[Chunk] = []
        self.chunk_start, self.chunk_first = 0, 1
        self.end = 0

    def problem(self, lineno: int, message: str) -> None:
        self.problems.add(lineno, "%s line %d: %s" % (self.uri, lineno, message))

    def feed(self, lineno: int, offset: int, raw: bytes) -> None:
        self.end = offset + len(raw) + 1
        if offset - self.chunk_start >= CHUNK_BYTES:
            self.chunks.append(Chunk(len(self.chunks), self.chunk_start, offset, self.chunk_first))
            self.chunk_start, self.chunk_first = offset, lineno
        try:
            text = _decode(raw, lineno)
        except LabelLineError as exc:
            self.problem(lineno, str(exc))
            return
        if self.scan is not None:
            self.scan.lines = lineno
        if not text.strip():
            return
        if self.scan is None:
            try:
                spec = self.first_spec(text, lineno)
            except LabelLineError as exc:
                raise LabelFileError(self.uri, ["%s line %d: %s" % (self.uri, lineno, exc)]) from None
            if spec is None:  # Excel's sep= line: the next line may be the header
                return
            self.scan = LabelScan(spec, lines=lineno)
            self.tallies = self.start_tallies(spec)
            if lineno <= spec.skip_lines:
                return
        try:
            entry = parse_line(self.scan.spec, text, lineno)
            self.check_common(entry)
        except LabelLineError as exc:
            self.problem(lineno, str(exc))
            return
        self.entries += 1
        for tally in self.tallies:
            reading = entry.reading or tally.reading
            try:
                n = self.check(entry, reading, tally)
            except LabelLineError as exc:
                tally.problems.add(lineno, "%s line %d: %s" % (self.uri, lineno, exc))
                continue
            self.collect(entry, reading, n, tally)

    def first_spec(self, text: str, lineno: int) -> LabelSpec | None:
        """The file's spec from its first non-blank line; None for Excel's sep= line (the next line decides)."""
        fmt = self.fmt or detect_format(self.uri, text)
        if fmt == FORMAT_CSV and lineno == 1:
            delimiter = excel_delimiter(text)
            if delimiter is not None:
                self.delimiter, self.sep_line = delimiter, 1
                return None
        header = False
        if fmt == FORMAT_CSV:  # the first line with fields (after Excel's sep= line, if any)
            try:
                path, _ = parse_csv_line(text, self.delimiter)
            except LabelLineError:
                path = ""
            header = bool(path) and _is_header(path, self.exts)
        attribute = self.attribute
        if fmt == FORMAT_MANIFEST:
            if self.labels_as == NAMES:
                raise LabelLineError("--labels-as names does not apply to Ground Truth manifests (their labels are class ids)")
            if not attribute:
                attribute = manifest_attribute(_json_object(text), "")
        return LabelSpec(self.uri, fmt, self.input_root, self.exts, NAMES, attribute, header, labels_as=self.labels_as,
                         delimiter=self.delimiter, skip_lines=lineno if header else self.sep_line,
                         refs_root=self.refs_root)

    def start_tallies(self, spec: LabelSpec) -> list[_Tally]:
        if self.labels_as != AUTO:
            return [_Tally(self.labels_as)]
        if spec.format == FORMAT_LST:
            return [_Tally(CLASS_IDS), _Tally(MULTI_HOT)]
        if spec.format == FORMAT_MANIFEST:
            return [_Tally(CLASS_IDS)]  # every line carries its own reading
        return [_Tally(AUTO)]

    def check_common(self, entry: Entry) -> None:
        """What no reading can accept; for an automatic .lst, drop the multi-hot tally once a line rules it out."""
        fmt = self.scan.spec.format
        if fmt == FORMAT_LST:
            if not entry.reading:
                check_values(entry, CLASS_IDS, fmt)  # not a whole number: neither a class id nor 0/1
            if not self.lst_columns:
                self.lst_columns = len(entry.values)
            binary = all(float(v) in (0.0, 1.0) for v in entry.values)
            if self.lst_columns == 1 or len(entry.values) != self.lst_columns or not binary:
                self.lst_multi_hot = False
                if self.labels_as == AUTO:
                    self.tallies = [t for t in self.tallies if t.reading != MULTI_HOT]
        for class_id, name in entry.names:
            known = self.scan.id_names.setdefault(class_id, name)
            if known != name:
                raise LabelLineError("the metadata names class %d %r, an earlier line named it %r" % (class_id, name, known))

    def check(self, entry: Entry, reading: str, tally: _Tally) -> int:
        """The number of labels on the line under ``reading``; LabelLineError when it cannot be used so."""
        fmt = self.scan.spec.format
        if reading in (CLASS_IDS, MULTI_HOT):
            check_values(entry, reading, fmt)
        if reading == MULTI_HOT:
            if tally.width and len(entry.values) != tally.width:
                raise LabelLineError(
                    "a multi-hot vector of %d values, but line %d has %d: all must have the same width%s"
                    % (len(entry.values), tally.width_line, tally.width,
                       " (--labels-as multi-hot)" if self.labels_as == MULTI_HOT else "")
                )
            if not tally.width:
                tally.width, tally.width_line = len(entry.values), entry.lineno
        elif reading == AUTO:
            self.check_pattern(entry, tally)
        n = _label_count(entry, reading)
        if self.single_label and n != 1:
            raise LabelLineError(self.single_label_message(entry, reading, n))
        if self.label_width and n > self.label_width:
            raise LabelLineError("%d labels do not fit --label-width %d" % (n, self.label_width))
        return n

    def check_pattern(self, entry: Entry, tally: _Tally) -> None:
        """--labels-as auto on CSV / JSON Lines: every label a class id, or none a number; a mix is refused."""
        for value in entry.values:
            kind = label_kind(value)
            if not tally.pattern and kind != KIND_OTHER:
                tally.pattern, tally.pattern_seen = kind, (entry.lineno, value)
            if kind == tally.pattern or tally.broken:
                continue
            tally.broken = True
            if tally.pattern:
                line, first = tally.pattern_seen
                raise LabelLineError(
                    "the label %r is %s, but line %d has %s (%r): --labels-as auto reads class ids only when every "
                    "label is a whole number >= 0, and class names only when none is a number; pass --labels-as "
                    "names to read every label as a class name, or --labels-as class-ids to read them as class ids "
                    "(and correct this line)" % (value, _KIND_WORDS[kind], line, _PATTERN_WORDS[tally.pattern], first)
                )
            raise LabelLineError(
                "the label %r is %s: pass --labels-as names to read the labels as class names, or correct it"
                % (value, _KIND_WORDS[kind])
            )

    def single_label_message(self, entry: Entry, reading: str, n: int) -> str:
        """Why a line with ``n`` labels cannot be one scalar label, and the flags that decide."""
        fix = "pass --label-format multi-hot or class-ids for multi-label records"
        if self.scan.spec.format != FORMAT_LST:
            return "%d labels, but the output is single-label: pass --label-format multi-hot or class-ids for " \
                   "multi-label data" % n
        columns = len(entry.values)
        if reading == MULTI_HOT and self.labels_as == AUTO:
            return (
                "%d label columns, read as a multi-hot vector over %d classes (every line has %d columns of 0s and 1s), "
                "hold %d labels, but the output is single-label: %s, or --labels-as class-ids if the columns are "
                "class ids" % (columns, columns, columns, n, fix)
            )
        if reading == MULTI_HOT:
            return "%d label columns, read as multi-hot (--labels-as multi-hot), hold %d labels, but the output is " \
                   "single-label: %s" % (columns, n, fix)
        ids = ", ".join(str(i) for i in class_ids(entry, CLASS_IDS, {}))
        return "%d label column%s, read as class ids, give %d labels (%s), but the output is single-label: %s%s" % (
            columns, "s" if columns != 1 else "", n, ids or "none", fix,
            ", or --labels-as multi-hot if the columns are one 0/1 per class" if self.labels_as == AUTO else "")

    def collect(self, entry: Entry, reading: str, n: int, tally: _Tally) -> None:
        tally.max_labels = max(tally.max_labels, n)
        if n != 1:
            tally.multi_label_lines += 1
        if reading == MULTI_HOT:
            for i, v in enumerate(entry.values):
                if float(v) == 1:
                    tally.ids.setdefault(i, entry.lineno)
        elif reading == CLASS_IDS:
            for v in entry.values:
                if float(v) >= 0:
                    tally.ids.setdefault(int(float(v)), entry.lineno)
        elif reading == NAMES:
            for v in entry.values:
                tally.names.setdefault(label_name(v), entry.lineno)
        else:  # AUTO: both views until the end of the file
            for v in entry.values:
                tally.names.setdefault(label_name(v), entry.lineno)
                if is_numeric(v):
                    tally.ids.setdefault(int(float(v)), entry.lineno)

    def finish(self) -> LabelScan:
        scan = self.scan
        # An automatic .lst keeps the multi-hot reading only if every line allowed it.
        tally = self.tallies[-1] if self.tallies else _Tally(CLASS_IDS)
        kept = sorted(self.problems.kept + tally.problems.kept)[:MAX_REPORTED]
        total = self.problems.total + tally.problems.total
        if total:
            raise LabelFileError(self.uri, [message for _, message in kept], total)
        if scan is None or self.entries == 0:
            raise LabelFileError(self.uri, ["%s: the label file lists no images" % self.uri])
        self.chunks.append(Chunk(len(self.chunks), self.chunk_start, self.end, self.chunk_first))
        scan.chunks = self.chunks
        reading = tally.final_reading()
        scan.spec = dataclasses.replace(scan.spec, reading=reading)
        scan.entries = self.entries
        scan.max_labels, scan.multi_label_lines = tally.max_labels, tally.multi_label_lines
        scan.width = tally.width
        if reading == NAMES:
            scan.names = dict(tally.names)
        else:
            scan.ids = dict(tally.ids)
        if scan.width:  # every position of a multi-hot vector is a class
            for i in range(scan.width):
                scan.ids.setdefault(i, tally.width_line)
        if scan.spec.format == FORMAT_LST and self.lst_multi_hot and self.labels_as == CLASS_IDS:
            columns = self.lst_columns
            scan.warnings.append(
                "every line of %s has %d label columns of 0s and 1s, read as class ids (--labels-as class-ids): they "
                "name only classes %s; --labels-as auto reads them as a multi-hot vector over %d classes"
                % (self.uri, columns, ", ".join(str(i) for i in sorted(scan.ids)) or "none", columns))
        return scan


def scan_label_file(
    uri: str,
    input_root: str,
    exts: Sequence[str],
    fmt: str = "",
    labels_as: str = AUTO,
    attribute: str = "",
    single_label: bool = True,
    label_width: int = 0,
    refs_root: str = "",
) -> LabelScan:
    """Check every line of a label file and learn its classes; raises LabelFileError listing bad lines."""
    scanner = _Scanner(uri, input_root, exts, fmt, labels_as, attribute, single_label, label_width, refs_root)
    try:
        with storage.open_read(uri) as f:
            for lineno, offset, raw in _blocks_to_lines(f):
                scanner.feed(lineno, offset, raw)
    except FileNotFoundError:
        raise LabelFileError(uri, ["%s: the label file does not exist" % uri]) from None
    except IsADirectoryError:
        raise LabelFileError(uri, ["%s: is a folder, not a label file" % uri]) from None
    return scanner.finish()


def _label_count(entry: Entry, reading: str) -> int:
    if reading == MULTI_HOT:
        return sum(1 for v in entry.values if float(v) == 1)
    if reading == CLASS_IDS:
        return len({int(float(v)) for v in entry.values if float(v) >= 0})
    if reading == AUTO and entry.values and all(is_numeric(v) for v in entry.values):
        return len({int(float(v)) for v in entry.values})
    return len({label_name(v) for v in entry.values})


# ---------------------------------------------------------------- a worker's chunk


def read_chunk(spec: LabelSpec, chunk: Chunk) -> Iterator[Entry]:
    """The entries of one chunk of the label file (the launcher has already checked every line)."""
    with storage.open_read(spec.uri) as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    for lineno, raw in _lines_of(data, chunk.first_line):
        if lineno <= spec.skip_lines:
            continue
        try:
            text = _decode(raw, lineno)
            if not text.strip():
                continue
            yield parse_line(spec, text, lineno)
        except LabelLineError:
            continue  # reported and refused by the launcher's scan; the file changed since


def has_image_ext(relpath: str, exts: Sequence[str]) -> bool:
    return posixpath.splitext(relpath)[1].lower() in exts
