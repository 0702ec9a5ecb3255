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
or ``multi-hot`` (a 0/1 vector, one position per class). ``auto`` means:
``.lst`` columns are class ids; CSV and JSON Lines labels are class ids when
every label in the file is a whole number >= 0, otherwise names; in a Ground
Truth manifest a single value is a class id, and a list is class ids when the
attribute's metadata says ``...-multilabel`` (Ground Truth's own output), else
multi-hot (the SageMaker algorithm's default).
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
_DIGITS = re.compile(r"^[0-9]+$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class LabelLineError(ValueError):
    """What is wrong with one line (the caller adds the file and line number)."""


class LabelFileError(ValueError):
    """The label file cannot be used; ``lines`` holds one message per problem, each naming its line."""

    def __init__(self, uri: str, lines: Sequence[str], total: int | None = None):
        self.uri = uri
        self.lines = list(lines)
        self.total = len(self.lines) if total is None else total
        more = self.total - len(self.lines)
        if more > 0:
            self.lines.append("%s: ... and %d more problem lines" % (uri, more))
        super().__init__("\n".join(self.lines))


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
    header: bool = False  # CSV: line 1 is a header
    name_to_id: tuple[tuple[str, int], ...] = ()
    labels_as: str = AUTO  # --labels-as, as given

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


# ---------------------------------------------------------------- format and paths


def detect_format(uri: str, first_line: str = "") -> str:
    """The format of a label file, from its extension (and, for JSON, its first line)."""
    ext = posixpath.splitext(uri.rstrip("/"))[1].lower()
    fmt = _EXTENSIONS.get(ext)
    if fmt == FORMAT_JSONL and '"source-ref"' in first_line:
        return FORMAT_MANIFEST
    if fmt is None:
        raise LabelLineError(
            "cannot tell the format of %s from its extension: use .lst, .csv, .jsonl or .manifest "
            "(or --labels-format)" % uri
        )
    return fmt


def safe_relpath(path: str, input_root: str) -> str:
    """``path`` from a label file as a path relative to the input root, or LabelLineError.

    Relative paths are normalised ('a/./b', 'a//b', 'a/x/../b'); absolute paths
    and ``s3://`` references must lie inside the input root. A path that climbs
    out with '..' or points elsewhere is refused. The test is on the text of the
    path: symbolic links inside the input root are followed as in folder mode.
    """
    if not path:
        raise LabelLineError("the path is empty")
    if any(c in path for c in "\t\n\r\0"):
        raise LabelLineError("the path %r holds a tab, line break or NUL" % path)
    root_is_s3 = storage.is_s3(input_root)
    if path.startswith("s3://"):
        if not root_is_s3:
            raise LabelLineError("%s is an s3:// reference, but --input %s is a local folder" % (path, input_root))
        prefix = input_root.rstrip("/") + "/"
        if not path.startswith(prefix):
            raise LabelLineError("%s is outside the input root %s" % (path, prefix))
        rel = path[len(prefix):]
    elif path.startswith("/"):
        if root_is_s3:
            raise LabelLineError("%s is a local absolute path, but --input %s is on S3" % (path, input_root))
        root = posixpath.normpath(os.path.abspath(input_root).replace(os.sep, "/"))
        absolute = posixpath.normpath(path)
        if not absolute.startswith(root.rstrip("/") + "/"):
            raise LabelLineError("absolute path %s is outside the input root %s" % (path, root))
        rel = absolute[len(root.rstrip("/")) + 1:]
    else:
        rel = path
    if _URL.match(rel):
        raise LabelLineError("%s: only s3:// references and paths are understood" % path)
    normal = posixpath.normpath(rel)
    if normal == ".." or normal.startswith("../"):
        raise LabelLineError("%s climbs out of the input root with '..'" % path)
    if normal in (".", "") or normal.startswith("/"):
        raise LabelLineError("%s names the input root itself, not an image" % path)
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


def parse_csv_line(text: str) -> tuple[str, tuple]:
    """``path,label`` or ``path,label1;label2`` (fields may be quoted; spaces around them ignored)."""
    try:
        rows = list(csv.reader([text]))
    except csv.Error as exc:
        raise LabelLineError("not a CSV row (%s)" % exc) from None
    fields = rows[0] if rows else []
    if len(fields) != 2:
        raise LabelLineError("expected 2 comma-separated fields 'path,label' (labels separated by ';'), got %d" % len(fields))
    path, labels = fields[0].strip(), fields[1]
    return path, tuple(t.strip() for t in labels.split(_SEPARATOR) if t.strip())


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
    """The label attribute of a Ground Truth line: ``wanted``, or the one attribute beside source-ref."""
    if wanted:
        if wanted not in obj:
            raise LabelLineError("has no %r attribute (--label-attribute)" % wanted)
        return wanted
    candidates = sorted(k for k in obj if k != "source-ref" and not k.endswith("-metadata"))
    with_metadata = [k for k in candidates if k + "-metadata" in obj]
    if len(candidates) == 1:
        return candidates[0]
    if len(with_metadata) == 1:
        return with_metadata[0]
    if not candidates:
        raise LabelLineError("has no label attribute beside source-ref")
    raise LabelLineError("has several label attributes (%s): choose one with --label-attribute" % ", ".join(candidates))


def parse_manifest_line(text: str, attribute: str, labels_as: str) -> tuple[str, tuple, str, tuple, str]:
    """A Ground Truth augmented manifest line: (source-ref, values, reading, metadata names, attribute)."""
    obj = _json_object(text)
    ref = obj.get("source-ref")
    if not isinstance(ref, str):
        raise LabelLineError('expected a "source-ref" string')
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
    return isinstance(value, str) and bool(_DIGITS.match(value))


def is_numeric(value) -> bool:
    """A label value that reads as a class id (a whole number >= 0)."""
    return _whole(value) and float(value) >= 0


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
                raise LabelLineError(
                    "the label %r is not a class id (a whole number >= 0)%s"
                    % (v, "" if fmt == FORMAT_LST else "; use --labels-as names for class names")
                )
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
    """One non-blank line of the label file as an Entry with a safe relative path."""
    names: tuple = ()
    reading = ""
    if spec.format == FORMAT_LST:
        path, values = parse_lst_line(text)
    elif spec.format == FORMAT_CSV:
        path, values = parse_csv_line(text)
    elif spec.format == FORMAT_JSONL:
        path, values = parse_jsonl_line(text)
    else:
        path, values, reading, names, _ = parse_manifest_line(text, spec.attribute, spec.labels_as)
    if not reading and spec.labels_as != AUTO:
        reading = spec.labels_as
    elif not reading and spec.format == FORMAT_LST:
        reading = CLASS_IDS
    return Entry(lineno, safe_relpath(path, spec.input_root), values, reading, names)


def _lines_of(data: bytes, first_line: int) -> Iterator[tuple[int, bytes]]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for i, raw in enumerate(lines):
        yield first_line + i, raw


class _Scanner:
    """The launcher's pass: one call of ``feed`` per line, constant memory apart from the class set."""

    def __init__(self, uri, input_root, exts, fmt, labels_as, attribute, single_label, label_width):
        self.uri = uri
        self.args = (input_root, tuple(exts), fmt, labels_as, attribute)
        self.labels_as = labels_as
        self.single_label = single_label
        self.label_width = label_width
        self.scan: LabelScan | None = None
        self.problems: list[str] = []
        self.total_problems = 0
        self.numeric_only = True  # every value so far reads as a class id (the auto reading of CSV/JSONL)
        self.width_line = 0
        self.chunks: list[Chunk] = []
        self.chunk_start, self.chunk_first = 0, 1
        self.end = 0

    def problem(self, lineno: int, message: str) -> None:
        self.total_problems += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append("%s line %d: %s" % (self.uri, lineno, message))

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
                self.scan = LabelScan(_first_spec(self.uri, text, lineno, *self.args), lines=lineno)
            except LabelLineError as exc:
                raise LabelFileError(self.uri, ["%s line %d: %s" % (self.uri, lineno, exc)]) from None
            if self.scan.spec.header:
                return
        try:
            entry = parse_line(self.scan.spec, text, lineno)
            n = self.check(entry)
        except LabelLineError as exc:
            self.problem(lineno, str(exc))
            return
        self.collect(entry, n)

    def check(self, entry: Entry) -> int:
        """The number of labels on the line; LabelLineError when the line cannot be used."""
        scan = self.scan
        if entry.reading:
            check_values(entry, entry.reading, scan.spec.format)
        if entry.reading == MULTI_HOT:
            if scan.width and len(entry.values) != scan.width:
                raise LabelLineError(
                    "a multi-hot vector of %d values, but line %d has %d: all must have the same width"
                    % (len(entry.values), self.width_line, scan.width)
                )
            if not scan.width:
                scan.width, self.width_line = len(entry.values), entry.lineno
        n = _label_count(entry)
        if self.single_label and n != 1:
            raise LabelLineError(
                "%d labels, but the output is single-label: pass --label-format multi-hot or class-ids "
                "for multi-label data" % n
            )
        if self.label_width and n > self.label_width:
            raise LabelLineError("%d labels do not fit --label-width %d" % (n, self.label_width))
        for class_id, name in entry.names:
            known = self.scan.id_names.setdefault(class_id, name)
            if known != name:
                raise LabelLineError("the metadata names class %d %r, an earlier line named it %r" % (class_id, name, known))
        return n

    def collect(self, entry: Entry, n: int) -> None:
        scan = self.scan
        scan.entries += 1
        scan.max_labels = max(scan.max_labels, n)
        if n != 1:
            scan.multi_label_lines += 1
        if entry.reading == MULTI_HOT:
            for i, v in enumerate(entry.values):
                if float(v) == 1:
                    scan.ids.setdefault(i, entry.lineno)
        elif entry.reading == CLASS_IDS:
            for v in entry.values:
                if float(v) >= 0:
                    scan.ids.setdefault(int(float(v)), entry.lineno)
        else:  # names, or CSV/JSON Lines read automatically: both views until the end of the file
            for v in entry.values:
                scan.names.setdefault(label_name(v), entry.lineno)
                if self.numeric_only and is_numeric(v):
                    scan.ids.setdefault(int(float(v)), entry.lineno)
                else:
                    self.numeric_only = False

    def finish(self) -> LabelScan:
        if self.total_problems:
            raise LabelFileError(self.uri, self.problems, self.total_problems)
        scan = self.scan
        if scan is None or scan.entries == 0:
            raise LabelFileError(self.uri, ["%s: the label file lists no images" % self.uri])
        self.chunks.append(Chunk(len(self.chunks), self.chunk_start, self.end, self.chunk_first))
        scan.chunks = self.chunks
        spec = scan.spec
        if self.labels_as != AUTO:
            reading = self.labels_as
        elif spec.format in (FORMAT_LST, FORMAT_MANIFEST):
            reading = CLASS_IDS
        else:
            reading = CLASS_IDS if self.numeric_only else NAMES
        scan.spec = dataclasses.replace(spec, reading=reading)
        if reading == NAMES:
            scan.ids = {}
        else:
            scan.names = {}
        if scan.width:  # every position of a multi-hot vector is a class
            for i in range(scan.width):
                scan.ids.setdefault(i, self.width_line)
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
) -> LabelScan:
    """Check every line of a label file and learn its classes; raises LabelFileError listing bad lines."""
    scanner = _Scanner(uri, input_root, exts, fmt, labels_as, attribute, single_label, label_width)
    try:
        with storage.open_read(uri) as f:
            for lineno, offset, raw in _blocks_to_lines(f):
                scanner.feed(lineno, offset, raw)
    except FileNotFoundError:
        raise LabelFileError(uri, ["%s: the label file does not exist" % uri]) from None
    except IsADirectoryError:
        raise LabelFileError(uri, ["%s: is a folder, not a label file" % uri]) from None
    return scanner.finish()


def _label_count(entry: Entry) -> int:
    if entry.reading == MULTI_HOT:
        return sum(1 for v in entry.values if float(v) == 1)
    if entry.reading == CLASS_IDS:
        return len({int(float(v)) for v in entry.values if float(v) >= 0})
    if entry.values and all(is_numeric(v) for v in entry.values):
        return len({int(float(v)) for v in entry.values})
    return len({label_name(v) for v in entry.values})


def _first_spec(uri, first_text, lineno, input_root, exts, fmt, labels_as, attribute) -> LabelSpec:
    fmt = fmt or detect_format(uri, first_text)
    header = False
    if fmt == FORMAT_CSV and lineno == 1:
        try:
            path, _ = parse_csv_line(first_text)
        except LabelLineError:
            path = ""
        header = bool(path) and _is_header(path, exts)
    if fmt == FORMAT_MANIFEST:
        if labels_as == NAMES:
            raise LabelLineError("--labels-as names does not apply to Ground Truth manifests (their labels are class ids)")
        if not attribute:
            attribute = manifest_attribute(_json_object(first_text), "")
    return LabelSpec(uri, fmt, input_root, tuple(exts), NAMES, attribute, header, labels_as=labels_as)


# ---------------------------------------------------------------- a worker's chunk


def read_chunk(spec: LabelSpec, chunk: Chunk) -> Iterator[Entry]:
    """The entries of one chunk of the label file (the launcher has already checked every line)."""
    with storage.open_read(spec.uri) as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    for lineno, raw in _lines_of(data, chunk.first_line):
        if lineno == 1 and spec.header:
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
