"""Importing Apache Beam without side effects on the host's logging.

Beam's GCP modules log "apitools not found ..." through the root logger when
they are imported without the GCP extras; with no handler on the root logger
that call configures logging for the whole process (``logging.basicConfig``)
and prints the line to every user. ``import_beam`` imports Beam with that one
record dropped and the root logger left exactly as it was found.
"""

from __future__ import annotations

import logging
import sys

_NOISE = "apitools not found"


class _DropImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


def import_beam() -> None:
    """Import apache_beam once, leaving the root logger's handlers and filters as they were."""
    if "apache_beam" in sys.modules:
        return
    root = logging.getLogger()
    guard, drop = logging.NullHandler(), _DropImportNoise()
    had_handlers = bool(root.handlers)
    if not had_handlers:
        root.addHandler(guard)  # so the import's logging.warning() does not call basicConfig()
    root.addFilter(drop)
    try:
        import apache_beam  # noqa: F401
        import apache_beam.io.gcp.internal.clients.bigquery  # noqa: F401  (where the line comes from)
    except ImportError:
        pass
    finally:
        root.removeFilter(drop)
        if not had_handlers:
            root.removeHandler(guard)
