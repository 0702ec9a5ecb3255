"""An input folder of class folders, looked at before a job: its classes and what lies outside them. Pure code.

The classes are the sorted names of the top-level folders (or the ids a
``--class-map`` pins). Images directly in the input folder have no class and
are reported (``no_class``); a folder whose name is not UTF-8, or that is an
output folder of this tool, is reported instead of becoming a class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from imgrec import storage
from imgrec.classmap import load_class_map, lookalike_pairs, resolve_names, shown_name
from imgrec.errors import STAGE_LIST, ErrorRecord, UsageError
from imgrec.items import FolderListing
from imgrec.layout import OWNER_MARK


@dataclass(frozen=True)
class ClassFolders:
    """What an input folder holds: its class names in id order, the folders to list, the inputs outside them."""

    root: str
    classes: tuple[str, ...]  # names by class id (a --class-map may add classes without a folder)
    folders: tuple[str, ...]  # the class folders present, sorted
    root_errors: tuple[ErrorRecord, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def listings(self, exts: tuple[str, ...], max_file_bytes: int = 0) -> list[FolderListing]:
        return [FolderListing(self.root, name, (name,), exts, max_file_bytes) for name in self.folders]


def class_folder_problem(input_root: str, name: str) -> ErrorRecord | None:
    """Why the top-level folder ``name`` cannot be a class (an ErrorRecord), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return ErrorRecord(name, "non_utf8_name", STAGE_LIST,
                           "folder name is not valid UTF-8: its images are not converted")
    if not storage.is_s3(input_root) and os.path.exists(os.path.join(input_root, name, OWNER_MARK)):
        return ErrorRecord(name, "output_folder", STAGE_LIST,
                           "holds %s: an output folder of this tool, not a class" % OWNER_MARK)
    return None


def discover(root: str, exts: tuple[str, ...], class_map: str = "", allow_new_classes: bool = False,
             allow_lookalikes: bool = False) -> ClassFolders:
    """Look at the top level of ``root``: the class folders (or UsageError when there is none to use)."""
    dirs, files = storage.list_top(root)
    if OWNER_MARK in files:
        raise UsageError(
            "--input %s is an output folder of this tool (it holds %s), not a folder of class folders: "
            "give the folder the dataset was made from" % (root, OWNER_MARK)
        )
    root_errors = [
        ErrorRecord(name, "no_class", STAGE_LIST, "image directly in the input folder has no class folder")
        for name in files if os.path.splitext(name)[1].lower() in exts
    ]
    folders = []
    for name in dirs:
        problem = class_folder_problem(root, name)
        if problem:
            root_errors.append(problem)
        else:
            folders.append(name)
    bad = [d for d in folders if d in (".", "..") or "/" in d or any(c in d for c in "\t\n\r\x1f")]
    if bad:
        raise UsageError("class folder name %r cannot be used (it would escape the output or break .lst lines)" % bad[0])
    if not dirs:
        raise UsageError(
            "%s has no class folders: put each class's images in its own sub-folder (%d files found at the top level)"
            % (root, len(files))
        )
    if not folders:
        raise UsageError(
            "%s has no usable class folders: all %d are skipped (%s: %s)"
            % (root, len(dirs), root_errors[-1].reason, root_errors[-1].detail)
        )
    folders.sort()
    if class_map:
        classes = resolve_names({d: "as folder %s" % d for d in folders}, load_class_map(class_map), allow_new_classes)
    else:
        classes = list(folders)
    warnings = lookalike_warnings(classes, allow_lookalikes, "class folders")
    return ClassFolders(root, tuple(classes), tuple(folders), tuple(root_errors), tuple(warnings))


def lookalike_warnings(classes, allow: bool, what: str) -> list[str]:
    """Class names that differ only in case or Unicode form: refused (UsageError), or warnings when allowed."""
    pairs = lookalike_pairs(list(classes))
    if not pairs:
        return []
    lines = ["%s %s and %s differ %s" % (what, shown_name(a), shown_name(b), how) for a, b, how in pairs]
    if not allow:
        more = " (and %d more such pairs)" % (len(pairs) - 1) if len(pairs) > 1 else ""
        raise UsageError(
            "%s%s: they would be separate classes that look the same; rename or merge them, or pass "
            "--allow-lookalike-classes to keep them apart" % (lines[0], more)
        )
    return [line + ": kept as separate classes (--allow-lookalike-classes)" for line in lines]
