"""Entry points: ``pipeline.run`` (the job), its companion commands, and ``pipeline.convert`` (the job as a function)."""

import time

# When the command started, imports included: the wall time users see.
STARTED = time.time()


def __getattr__(name):
    # ``from pipeline import convert`` loads Beam; the other commands (verify, preview) do not need it.
    if name == "convert":
        from pipeline.api import convert

        return convert
    raise AttributeError("module 'pipeline' has no attribute %r" % name)
