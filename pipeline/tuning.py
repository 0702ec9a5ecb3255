"""Where the command's own process has Beam spend less of a run's fixed cost (``pipeline.run``'s ``main``).

Each change below leaves what Beam computes as it was and only stops it
computing the same thing again, or waiting longer than it must. They are made
in our own processes only: the command's (and the workers it forks) and the
local runner's worker processes (``pipeline.worker``); a process that imports
the library (``pipeline.api``, ``transforms``) gets Beam as it is. Each one
checks that Beam still has the function it replaces (Beam is pinned in
setup.py) and otherwise leaves Beam alone.

Measured on a 10-image run (2 cores, byte-compiled as installed): these with
the lean import's stand-ins (``imgrec.quiet``) took the run from 0.96 s to
0.76 s (medians of 30 alternating runs; docs/benchmark.md).
"""

from __future__ import annotations

import copy
import logging
import types

# How often Beam's state sampler looks at a bundle's step in the command's process (Beam's default: 200 ms).
STATE_SAMPLING_MS = 10


def tune_beam() -> None:
    sample_states_often()
    remember_signatures()
    remember_option_views()


def sample_states_often() -> None:
    """Beam's in-process runner ends every bundle by joining that bundle's state-sampler thread, which sleeps
    up to 200 ms between two looks at the running step: the job's writing is one long bundle, so the job
    waited 0-0.2 s after its last shard (0.12 s measured) before Finalize could start. The command's own
    process has the sampler look every 10 ms instead. Its looks time Beam's steps (Beam's msecs counters,
    which the job does not read); the job's own counters and its output do not depend on them."""
    try:
        from apache_beam.runners.worker import statesampler

        init = statesampler.StateSampler.__init__
        if init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):
            init.__defaults__ = (STATE_SAMPLING_MS,)
    except (ImportError, AttributeError):  # another Beam: its own sampler, left as it is
        pass


def remember_signatures() -> None:
    """Beam reads the signature of each method of each DoFn (``inspect.signature``) every time it builds the
    graph's runner form and every time it sets up a bundle: some 1,700 reads of the same few dozen functions in
    a 10-image run, about 0.05 s. Here each function's is read once: a plain function, or a method of one, is
    looked up by the function (and whether it is bound); any other callable is read as before. A function's
    signature does not change while the job runs, and each caller gets lists of its own, as from Beam."""
    try:
        from apache_beam.transforms import core

        read = core.get_function_args_defaults
    except (ImportError, AttributeError):  # another Beam: left as it is
        return
    if getattr(read, "remembers", False):
        return
    known: dict = {}

    def get_function_args_defaults(f):
        func = getattr(f, "__func__", f)
        if not isinstance(func, types.FunctionType):
            return read(f)
        key = (func, func is not f)
        if key not in known:
            known[key] = read(f)
        args, defaults = known[key]
        return list(args), list(defaults)

    get_function_args_defaults.remembers = True  # type: ignore[attr-defined]
    get_function_args_defaults.__doc__ = read.__doc__
    core.get_function_args_defaults = get_function_args_defaults


def remember_option_views() -> None:
    """Each ``options.view_as(SomeOptions)`` (Beam calls it some 130 times in a 10-image run, most of them for
    ``TypeOptions`` while it builds the graph) makes a new argument parser for that options class, adds every
    flag of it and parses the job's flags again: about 0.06 s in all. Here the flags an options class parsed
    from a list of flags are kept, and a later view of the same class over the same flags gets a deep copy of
    them instead of a second parse; the view is then set up exactly as Beam's ``PipelineOptions.__init__`` does
    (Beam 2.77). Views made with other flags, or with none (``sys.argv``), are made by Beam as before."""
    try:
        from apache_beam.options import pipeline_options as po

        make = po.PipelineOptions.__init__
        po.PipelineOptions._visible_option_list  # noqa: B018  (the method the set-up below relies on)
    except (ImportError, AttributeError):  # another Beam: left as it is
        return
    if getattr(make, "remembers", False):
        return
    parsed: dict = {}  # (options class, flags) -> what that class's parser made of those flags

    def __init__(self, flags=None, **kwargs):
        key = None
        if isinstance(flags, (list, tuple)) and all(isinstance(flag, str) for flag in flags):
            key = (type(self), tuple(flags))
        if key is None or key not in parsed:
            make(self, flags, **kwargs)
            if key is not None:
                parsed[key] = copy.deepcopy(self._visible_options)
            return
        logging.basicConfig()  # as Beam's: a no-op once the root logger has a handler
        self._flags = flags
        self._visible_options = copy.deepcopy(parsed[key])
        self._all_options = kwargs
        for option_name in self._visible_option_list():
            if option_name not in self._all_options:
                self._all_options[option_name] = getattr(self._visible_options, option_name)

    __init__.remembers = True  # type: ignore[attr-defined]
    __init__.__doc__ = make.__doc__
    po.PipelineOptions.__init__ = __init__
