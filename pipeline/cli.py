"""The command line: parsing for ``python -m pipeline.run``, and what every command shares.

``parse(argv)`` turns the arguments of ``python -m pipeline.run`` (``imgrec-convert``)
into validated ``ConvertOptions`` and the flags for Beam: our flags come from the
options table (``imgrec.options.OPTIONS``), a ``--config`` file gives defaults that
flags override, and every other argument must be a flag that one of Beam's
``PipelineOptions`` classes defines (``--runner``, ``--direct_num_workers``,
``--dask_client_address``, ``--flink_master``, ``--job_endpoint``, ``--project``, ...).
Anything else is refused before any work, with the nearest flag:

    $ python -m pipeline.run --input photos --output out --resise 256
    error: unrecognized arguments: --resise (did you mean --resize?)

Beam itself would only log "Discarding unparseable args" and run without it.

Shared by every command (run, verify, preview, im2rec): ``ArgumentParser``, whose
errors are one line (an ``OptionsError``: exit 2) and which names the nearest flag,
and ``add_version`` (``--version`` prints ``imgrec-beam X.Y.Z``).
"""

from __future__ import annotations

import argparse
import difflib
from typing import Iterable, Sequence

from imgrec import __version__
from imgrec.quiet import import_beam
from imgrec.options import ConvertOptions, OptionsError, add_options, from_args, load_config, option_flags

VERSION = "imgrec-beam %s" % __version__


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is an ``OptionsError`` (one line, exit 2) that names the nearest flag.

    Abbreviations (``--res`` for ``--resize``) are off unless asked for: with Beam's flags
    passed through, a prefix could mean one of ours or one of Beam's.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise OptionsError(message)

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            raise OptionsError(unrecognized(extras, self.flags()))
        return ns

    def flags(self) -> list[str]:
        return _flags_of(self)


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=VERSION, help="print the version and exit")


def nearest(flag: str, known: Iterable[str]) -> str | None:
    """The known flag closest to ``flag``, '-' and '_' alike (``--images_per_shard`` -> ``--images-per-shard``)."""
    by_key = {}
    for candidate in known:
        by_key.setdefault(candidate.replace("_", "-").lower(), candidate)
    found = difflib.get_close_matches(flag.replace("_", "-").lower(), list(by_key), n=1, cutoff=0.6)
    return by_key[found[0]] if found else None


def unrecognized(args: Sequence[str], known: Iterable[str]) -> str:
    """argparse's words for arguments nobody defines, each flag with the nearest known one."""
    known = list(known)
    named = [a.split("=", 1)[0] for a in args if a.startswith("-") and a not in ("-", "--")]
    shown = []
    for arg in named or list(args):  # a flag's value is not reported on its own
        near = nearest(arg, known) if arg.startswith("-") else None
        shown.append("%s (did you mean %s?)" % (arg, near) if near and near != arg else arg)
    return "unrecognized arguments: %s" % " ".join(shown)


# ---------------------------------------------------------------- Beam's flags


def _beam_parser():
    """A parser of every flag Beam's ``PipelineOptions`` subclasses define, as Beam builds it."""
    import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class Parser(_BeamArgumentParser):
        def error(self, message):
            raise OptionsError(message)

    parser = Parser(allow_abbrev=False)
    # the same classes, picked the same way, as PipelineOptions.get_all_options
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def _import_runner_options() -> bool:
    """Import the runners whose options classes Beam does not load itself; True when any was new."""
    import sys

    new = False
    # DaskOptions (--dask_client_address, ...) exist only once the Dask runner is imported,
    # which takes a while: only when a flag is not found otherwise.
    for module in ("apache_beam.runners.dask.dask_runner",):
        if module in sys.modules:
            continue
        try:
            __import__(module)
        except ImportError:  # dask is not installed: its flags stay unknown
            continue
        new = True
    return new


def beam_flags() -> list[str]:
    """Every flag Beam's options classes define (those of the runners imported so far)."""
    return _flags_of(_beam_parser())


def _flags_of(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]  # pylint: disable=protected-access


def check_beam_args(args: Sequence[str], ours: Sequence[str] | None = None, origin: str = "") -> None:
    """Refuse any argument that is not a flag of Beam's (or has a bad value), as one line.

    ``ours`` are the command's own flags (default: pipeline.run's), offered when one is
    near a misspelt flag; ``origin`` starts the message (where the arguments came from,
    e.g. a --config file). A Beam flag spelt like one of ours with '_' (``--dry_run``,
    ``--s3_endpoint_url``) is refused too: it would reach Beam, not this job.
    """
    if not args:
        return
    ours = list(option_flags() if ours is None else ours)
    names = [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]
    for name in names:
        if name in ours:  # only a config's pipeline_options can hold one of ours
            raise OptionsError("%s%s is an option of this job, not of Beam: give it outside pipeline_options"
                               % (origin, name))
    beams = set(beam_flags())
    for name in names:  # before Beam parses them: its --dry_run would take the next flag as its value
        twin = name.replace("_", "-")
        if name in beams and twin != name and twin in ours:
            raise OptionsError("%s%s is Beam's own option, not this job's: did you mean %s?" % (origin, name, twin))
    unknown = _beam_parser().parse_known_args(list(args))[1]
    if unknown and _import_runner_options():
        unknown = _beam_parser().parse_known_args(list(args))[1]
        beams = set(beam_flags())
    if unknown:
        raise OptionsError(origin + unrecognized(unknown, sorted(beams) + ([] if origin else ours)))


# ---------------------------------------------------------------- python -m pipeline.run


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m pipeline.run",
        description=(
            "Convert a folder of class folders (local or s3://) into sharded MXNet RecordIO "
            "(.rec + .idx) for SageMaker, MXNet/Gluon and DALI. Beam's own flags (--runner, "
            "--direct_num_workers, --dask_client_address, ...) go to Beam; any other flag is an error."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    add_options(parser)
    return parser


def parse(argv: Sequence[str]) -> tuple[ConvertOptions, list[str], argparse.Namespace]:
    """The validated options, the flags for Beam (the config's first) and the parsed namespace.

    Raises OptionsError (one line) for an unknown flag or a bad value, before any work.
    """
    argv = list(argv)
    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    config_beam_args: list[str] = []
    if pre.config:
        values, config_beam_args = load_config(pre.config)
        check_beam_args(config_beam_args, origin="--config %s: pipeline_options: " % pre.config)
        parser.set_defaults(**values)
    ns, beam_args = parser.parse_known_args(argv)
    check_beam_args(beam_args)
    return from_args(ns), config_beam_args + beam_args, ns
