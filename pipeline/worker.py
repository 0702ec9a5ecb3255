"""A worker process of the local runner: Beam's SDK harness, minus its start-up chatter.

The default runner starts one of these per core (``python -m pipeline.worker``).
A handler on the root logger before Beam is imported keeps the harness from
configuring a stderr handler of its own, so the user's terminal shows our
progress line, not each worker's connection log. Everything the worker logs
still reaches the launcher through Beam's logging service (shown with
``--log-level DEBUG``).
"""

import gc
import logging
import sys

if __name__ == "__main__":
    gc.disable()  # as in pipeline.run: Beam's modules are made without collections scanning them meanwhile

logging.getLogger().addHandler(logging.NullHandler())

from imgrec.quiet import import_beam, one_blas_thread  # noqa: E402

if __name__ == "__main__":
    one_blas_thread()  # before Beam's import loads numpy
import_beam(lean=__name__ == "__main__")  # a worker of the local runner: Beam without what it never uses

from apache_beam.runners.worker import sdk_worker_main  # noqa: E402  (after the handler, on purpose)

if __name__ == "__main__":
    from pipeline.tuning import tune_beam

    gc.freeze()  # ... and set aside for good once made
    gc.enable()
    tune_beam()  # each bundle's set-up reads DoFn signatures and option views: once each here, as in pipeline.run
    sdk_worker_main.main(sys.argv)
