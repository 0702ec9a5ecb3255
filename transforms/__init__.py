"""The job's Beam stages: ``WriteToRecordIO`` (the dataset, written inside a pipeline) and its sources.

    from transforms import ReadImageFolder, WriteToRecordIO

    with beam.Pipeline() as p:
        folder = ReadImageFolder("photos/")
        p | folder | WriteToRecordIO("out/", classes=folder.classes, resize=256)
"""

from imgrec.quiet import import_beam

import_beam()

from transforms.sources import ListFolders, ReadImageFolder, ReadLabelFile  # noqa: E402
from transforms.write_recordio import WriteToRecordIO  # noqa: E402

__all__ = ["ListFolders", "ReadImageFolder", "ReadLabelFile", "WriteToRecordIO"]
