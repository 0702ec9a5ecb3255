"""Entry points: ``pipeline.run`` (the job) and its small companion commands."""

import logging
import time

# Importing Beam logs a GCP-only warning ("apitools not found") through the root
# logger, which would configure logging as a side effect and print it to every
# user. A handler on the root logger prevents that; entry points then configure
# logging themselves with force=True.
logging.getLogger().addHandler(logging.NullHandler())

# When the command started, imports included: the wall time users see.
STARTED = time.time()
