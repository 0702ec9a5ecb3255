"""LabelSources: a label file and the input tree -> one ImageRef per labelled image, and findings.

Launcher side, ``prepare_label_source`` scans the label file once (every line
checked, classes learnt, the file cut into chunks; see ``imgrec.labels``) and
fixes the class ids (``imgrec.classmap``). In the pipeline two listings meet
by relative path:

* the label file's chunks, parsed in parallel, one chunk per element;
* the input tree, listed in parallel, one element per top-level folder (and
  one for the images directly in the input folder).

A GroupByKey on the path then decides, per path: listed once and present ->
an ImageRef (its split from its path hash, as in folder mode); listed but
absent -> a ``missing`` error; listed on several lines with different labels
-> a ``conflicting_lines`` error (with the same labels: kept, and reported as
``repeated_line``); present but not listed -> an ``unlisted`` finding. No
step holds the whole label file or the whole listing in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from imgrec import classmap, findings, items, labels, storage
from imgrec.env import WorkerEnv
from transforms.env import EnvDoFn
from imgrec.options import ConvertOptions
from imgrec.items import classify_entry
from imgrec.layout import OWNER_MARK

# Tags of what a listed path is: a usable file, or why it is not.
_FILE, _BAD = 1, 2


@dataclass(frozen=True)
class LabelSource:
    """What the pipeline needs to read a label file: its spec, chunks and the input folders to list."""

    spec: labels.LabelSpec
    chunks: tuple[labels.Chunk, ...]
    folders: tuple[str, ...]  # top-level folders of --input, listed one per element
    root_files: bool  # images directly in --input
    classes: tuple[str, ...]  # names by class id
    max_labels: int
    lines: int
    warnings: tuple[str, ...] = ()  # about the label file, for the manifest and the summary


def prepare_label_source(options: ConvertOptions) -> LabelSource:
    """Scan the label file and fix the class ids (launcher side); raises LabelFileError / ClassMapError."""
    scan = labels.scan_label_file(
        options.labels,
        options.input,
        options.exts,
        fmt=options.labels_format,
        labels_as=options.labels_as,
        attribute=options.label_attribute,
        single_label=not options.label_format,
        label_width=options.label_width if options.label_format == labels.CLASS_IDS else 0,
        refs_root=options.refs_root,
    )
    pinned = classmap.load_class_map(options.class_map) if options.class_map else None
    where = os.path.basename(options.labels.rstrip("/"))
    if scan.spec.reading == labels.NAMES:
        classes = classmap.resolve_names(scan.names, pinned, options.allow_new_classes, where)
    else:
        classes = classmap.resolve_ids(scan.ids, scan.id_names, pinned, options.allow_new_classes, where)
    spec = scan.spec
    if spec.reading == labels.NAMES:
        spec = _with_names(spec, classes)
    dirs, files = storage.list_top(options.input)
    root_files = any(labels.has_image_ext(name, options.exts) for name in files)
    return LabelSource(spec, tuple(scan.chunks), tuple(dirs), root_files, tuple(classes), scan.max_labels, scan.lines,
                       tuple(scan.warnings))


def _with_names(spec: labels.LabelSpec, classes) -> labels.LabelSpec:
    from dataclasses import replace

    return replace(spec, name_to_id=tuple((name, i) for i, name in enumerate(classes)))


class _ParseChunkFn(EnvDoFn):
    def __init__(self, spec: labels.LabelSpec, env: WorkerEnv):
        super().__init__(env)
        self._spec = spec
        self._lines = Metrics.counter("imgrec", "label_lines")

    def process(self, chunk):
        # chunk: labels.Chunk -> (relpath, (_ENTRY, (line, class ids)))
        name = os.path.basename(self._spec.uri.rstrip("/"))
        for entry in labels.read_chunk(self._spec, chunk):
            self._lines.inc()
            if not labels.has_image_ext(entry.relpath, self._spec.exts):
                detail = "line %d of %s: the extension is not one of --exts (%s)" % (
                    entry.lineno, name, ",".join(self._spec.exts))
                yield (findings.FOUND, (findings.ERROR, 1, findings.error_item(entry.relpath, "unsupported_ext", detail))
                )
                continue
            yield findings.MAIN, (entry.relpath, (entry.lineno, self._spec.ids_of(entry)))


def list_root_files(input_root: str, exts) -> list[storage.FileEntry]:
    """The files directly in the input folder (not in its sub-folders), with their sizes."""
    if storage.is_s3(input_root):
        # One listing of the prefix; only done when images sit beside the folders.
        return [e for e in storage.walk_files(input_root) if "/" not in e.relpath]
    out = []
    for entry in sorted(os.scandir(input_root), key=lambda e: e.name):
        try:
            if entry.is_dir():
                continue
            st = entry.stat()
            out.append(storage.FileEntry(entry.name, st.st_size, version=storage.file_version(st)))
        except OSError:
            out.append(storage.FileEntry(entry.name, 0, "broken_symlink", "symbolic link to a missing file"))
    return out


class _ListFolderFn(EnvDoFn):
    def __init__(self, input_root: str, exts, env: WorkerEnv):
        super().__init__(env)
        self._input = input_root
        self._exts = exts
        self._listed = Metrics.counter("imgrec", "images_listed")

    def process(self, folder):
        # folder: a top-level folder name, or "" for the files directly in --input
        # -> (relpath, (_FILE, (size, version))) | (relpath, (_BAD, error json))
        if folder:
            entries = (
                e._replace(relpath=folder + "/" + e.relpath if e.relpath else folder)
                for e in storage.walk_files(storage.join(self._input, folder), self._input, OWNER_MARK)
            )
        else:
            entries = list_root_files(self._input, self._exts)
        ignored = 0
        for entry in entries:
            verdict = classify_entry(entry, self._exts)
            if verdict is True:
                self._listed.inc()
                yield findings.MAIN, (entry.relpath, (_FILE, (entry.size, entry.version)))
            elif verdict is False:
                ignored += 1
            else:
                error = verdict.to_json()  # its path printable: a name that is not UTF-8 cannot be a Beam key
                yield findings.MAIN, (error["path"], (_BAD, error))
        if ignored:
            yield (findings.FOUND, (findings.IGNORED, ignored, None))


def resolve_path(element, label_file: str, classes):
    """The Image (or findings) of one path, from everything known about it."""
    # element: (relpath, {"entries": [(line, ids)], "files": [(size, version)], "bad": [error json]})
    relpath, joined = element
    entries = sorted(joined["entries"])
    files, bad = joined["files"], (joined["bad"] or [None])[0]
    if not entries:
        if files:
            yield items.Finding(findings.UNLISTED, 1, {"kind": findings.UNLISTED, "path": relpath})
        return
    lines = ", ".join(str(line) for line, _ in entries)
    if len({tuple(ids) for _, ids in entries}) > 1:
        detail = "listed with different labels on lines %s of %s" % (lines, label_file)
        yield items.Finding(findings.ERROR, 1, findings.error_item(relpath, "conflicting_lines", detail))
        return
    if len(entries) > 1:
        item = {"kind": "repeated_line", "path": relpath, "lines": [line for line, _ in entries]}
        yield items.Finding("repeated_line", 1, item)
    line, ids = entries[0]
    if bad is not None:
        detail = "listed on line %d of %s; %s" % (line, label_file, bad.get("detail", ""))
        yield items.Finding(findings.ERROR, 1, findings.error_item(relpath, bad["reason"], detail))
        return
    if not files:
        detail = "listed on line %d of %s, but not found under the input folder" % (line, label_file)
        yield items.Finding(findings.ERROR, 1, findings.error_item(relpath, "missing", detail))
        return
    size, version = files[0]
    yield items.Finding(findings.LABELLED, 1, None)
    yield items.Image(relpath, tuple(classes[i] for i in ids), size, version)


class LabelSources(beam.PTransform):
    """PBegin -> PCollection of ``items.Image`` (labelled by the file) and ``items.Finding`` values."""

    def __init__(self, source: LabelSource, options: ConvertOptions):
        super().__init__()
        self._source = source
        self._options = options

    def expand(self, pbegin):
        source, options = self._source, self._options
        env = WorkerEnv.from_options(options)
        folders = list(source.folders) + ([""] if source.root_files else [])
        # (MAIN, (relpath, (line, ids))) | (FOUND, finding)
        parsed = (
            pbegin
            | "LabelChunks" >> beam.Create([(c.index, c) for c in source.chunks])
            # Spread the chunks over workers before parsing (Create may hand them all to one).
            | "SpreadChunks" >> beam.GroupByKey()
            | "UnkeyChunks" >> beam.FlatMap(lambda kv: kv[1])
            | "ParseChunk" >> beam.ParDo(_ParseChunkFn(source.spec, env))
        )
        # (MAIN, (relpath, (_FILE, (size, version)) | (_BAD, error))) | (FOUND, finding)
        listed = (
            pbegin
            | "Folders" >> beam.Create(list(enumerate(folders)))
            | "SpreadFolders" >> beam.GroupByKey()
            | "UnkeyFolders" >> beam.FlatMap(lambda kv: kv[1])
            | "ListFolder" >> beam.ParDo(_ListFolderFn(options.input, options.exts, env))
        )
        listed_main = listed | "Listed" >> beam.FlatMap(findings.main_of)
        # Image | Finding, by path: what the label file says meets what the folders hold
        joined = (
            {
                "entries": parsed | "Entries" >> beam.FlatMap(findings.main_of),
                "files": listed_main | "Files" >> beam.FlatMap(lambda kv: [(kv[0], kv[1][1])] if kv[1][0] == _FILE else []),
                "bad": listed_main | "Bad" >> beam.FlatMap(lambda kv: [(kv[0], kv[1][1])] if kv[1][0] == _BAD else []),
            }
            | "JoinByPath" >> beam.CoGroupByKey()
            | "ResolvePath" >> beam.FlatMap(resolve_path, os.path.basename(source.spec.uri.rstrip("/")), source.classes)
        )
        found = (
            (parsed, listed)
            | "SourceTagged" >> beam.Flatten()
            | "SourceFindings" >> beam.FlatMap(lambda t: [items.Finding(*t[1])] if t[0] == findings.FOUND else [])
        )
        return (joined, found) | "ImagesAndFindings" >> beam.Flatten()
