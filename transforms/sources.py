"""Sources that feed WriteToRecordIO: a folder of class folders, or a label file naming images under a folder.

    folder = ReadImageFolder("s3://bucket/photos/")
    p | folder | WriteToRecordIO("out/", classes=folder.classes)

Both look at their input when they are made -- the class folders, or every
line of the label file -- so a bad input is refused (one line, UsageError)
before a pipeline exists, and ``.classes`` (names in id order) and
``.warnings`` are known then. In the pipeline:

* ``ReadImageFolder`` emits one ``FolderListing`` per class folder (and a
  skipped input for each image lying directly in the folder): WriteToRecordIO
  lists the folders itself, in parallel, where its planner wants them.
  ``ListFolders()`` turns them into ``Image`` elements for pipelines of your own.
* ``ReadLabelFile`` emits an ``Image`` per labelled image found under the
  folder, and findings (listed but missing, present but unlisted, ...).
"""

from __future__ import annotations

import apache_beam as beam

from imgrec import folders, items
from imgrec.options import ConvertOptions
from transforms.label_sources import LabelSources, prepare_label_source


class ReadImageFolder(beam.PTransform):
    """PBegin -> the class folders of ``input`` to list (``FolderListing``) and the inputs outside them."""

    def __init__(self, input: str, exts=(".jpg", ".jpeg", ".png"), class_map: str = "", allow_new_classes: bool = False,
                 allow_lookalike_classes: bool = False, max_file_bytes: int = 0):
        super().__init__()
        self.found = folders.discover(input, tuple(exts), class_map, allow_new_classes, allow_lookalike_classes)
        self.classes = list(self.found.classes)
        self.warnings = list(self.found.warnings)
        self._exts = tuple(exts)
        self._max_file_bytes = max_file_bytes

    @classmethod
    def from_options(cls, options: ConvertOptions) -> "ReadImageFolder":
        return cls(options.input, options.exts, options.class_map, options.allow_new_classes,
                   options.allow_lookalike_classes, options.max_file_bytes)

    def expand(self, pbegin):
        elements = list(self.found.listings(self._exts, self._max_file_bytes)) + list(self.found.root_errors)
        return pbegin | "ClassFolders" >> beam.Create(elements)


class ListFolders(beam.PTransform):
    """FolderListing elements -> the Image (and skipped input, finding) elements they hold."""

    def expand(self, pcoll):
        return pcoll | "ListFolder" >> beam.FlatMap(items.flatten)


class ReadLabelFile(beam.PTransform):
    """PBegin -> an Image per image the label file names and the input holds, and findings."""

    def __init__(self, options: ConvertOptions):
        super().__init__()
        self._options = options
        self.source = prepare_label_source(options)
        self.classes = list(self.source.classes)
        problems = [(name, folders.class_folder_problem(options.input, name)) for name in self.source.folders]
        from dataclasses import replace

        self.source = replace(self.source, folders=tuple(name for name, problem in problems if problem is None))
        self.root_errors = [problem for _, problem in problems if problem is not None]
        what = "class names in %s" % options.labels
        self.warnings = list(self.source.warnings) + folders.lookalike_warnings(
            self.classes, options.allow_lookalike_classes, what)

    @property
    def max_labels(self) -> int:
        return self.source.max_labels

    def expand(self, pbegin):
        found = pbegin | "LabelFile" >> LabelSources(self.source, self._options)
        if not self.root_errors:
            return found
        skipped = pbegin | "UnusableFolders" >> beam.Create(self.root_errors)
        return (found, skipped) | "WithUnusableFolders" >> beam.Flatten()
