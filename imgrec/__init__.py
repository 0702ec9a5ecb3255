"""Pure building blocks of the image-to-RecordIO job: codec, images, storage, planning.

Nothing in this package imports Beam; ``transforms/`` wraps these functions in
Beam stages and ``pipeline/`` holds the entry points.
"""

__version__ = "0.1.0"
