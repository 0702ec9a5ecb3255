"""Check a converted dataset end to end and print its per-class counts.

    python -m pipeline.verify ./out
    python -m pipeline.verify s3://bucket/rec/ --no-decode

Every shard listed in ``manifest.json`` is read once, front to back: RecordIO
framing (magic, flags, lengths, padding), each record's header (labels inside
the class map, ids unique per split), each image decoded with OpenCV, each
``.idx`` line against the record it points at, the merged index, the ``.lst``
files, and the record counts, sizes and sha256 checksums in the manifest.

It prints the images per class and split, and per split the label layout
the records hold (scalar or vectors of which width, labels per record,
distinct label sets), so a dataset whose labels collapsed shows at a glance.

Exit status: 0 when everything checks out, 1 when a problem is found (one line
per problem on stderr: file, record, byte offset), 2 when OUT cannot be read.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from imgrec.quiet import one_blas_thread  # stdlib only: numpy is not loaded yet

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "imgrec-verify":
    one_blas_thread()  # the command's process: before numpy is loaded

from imgrec import storage
from imgrec.options import OptionsError, add_options, check_location
from imgrec.verify import count_table, verify_output
from pipeline.cli import ArgumentParser, add_version

LOG = logging.getLogger("pipeline.verify")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m pipeline.verify",
        description="Check every shard of a converted dataset against its manifest; print images per class and split.",
    )
    add_version(parser)
    parser.add_argument("output", metavar="OUT", help="the --output folder (or s3:// prefix) of pipeline.run")
    parser.add_argument(
        "--no-decode", dest="decode", action="store_false",
        help="skip decoding every image with OpenCV (framing, labels, indexes and checksums are still checked)",
    )
    parser.add_argument(
        "--threads", type=int, default=0,
        help="images decoded at once (OpenCV releases the GIL); 0 = number of cores (default: 0)",
    )
    parser.add_argument(
        "--max-problems", type=int, default=50, help="print at most this many problems (default: 50)"
    )
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="INFO reports each shard as it is read (default: WARNING)")
    add_s3_flags(parser)
    return parser


# pipeline.run's flags that say how to reach S3 (the options table, imgrec.options): reading, and writing
S3_READ_OPTIONS = ("s3_endpoint_url", "s3_region", "s3_requester_pays")
S3_WRITE_OPTIONS = ("s3_sse", "s3_sse_kms_key_id")


def add_s3_flags(parser: argparse.ArgumentParser, writes: bool = False) -> None:
    """How to reach an s3:// OUT: pipeline.run's flags of these names, with their meanings, from its table."""
    add_options(parser, S3_READ_OPTIONS + (S3_WRITE_OPTIONS if writes else ()))


def configure_s3(args: argparse.Namespace) -> None:
    """Apply the S3 flags (checked like pipeline.run's); raises OptionsError with a one-line message."""
    from imgrec.env import WorkerEnv
    from imgrec.options import s3_settings

    WorkerEnv(s3=s3_settings(args)).apply()


def run(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_location("OUT", args.output)
    except OptionsError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s", force=True)
    if args.threads < 0:
        print("error: --threads must be 0 (one per core) or more, got %d" % args.threads, file=sys.stderr)
        return 2
    out = args.output
    if storage.is_s3(out):
        try:
            configure_s3(args)
        except OptionsError as exc:
            print("error: %s" % exc, file=sys.stderr)
            return 2
    elif not os.path.isdir(out):
        print("error: %s is not a folder" % out, file=sys.stderr)
        return 2
    try:
        report = verify_output(out, decode=args.decode, threads=args.threads or os.cpu_count() or 1)
    except storage.StorageError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print("error: cannot read %s: %s" % (exc.filename or out, exc.strerror or exc), file=sys.stderr)
        return 2

    if report.classes:
        print("%s: %d records in %d shards, %d classes\n" % (out, report.records, report.shards, len(report.classes)))
        print(count_table(report), end="")
        print("\nLabels found in the records:")
        for split in report.splits:
            print("  %s: %s" % (split, report.layouts.get(split, "not read")))
    if report.ok:
        print("\nOK: every check passed%s." % ("" if args.decode else " (images not decoded: --no-decode)"))
        return 0
    for problem in report.problems[: args.max_problems]:
        print("error: %s" % problem, file=sys.stderr)
    hidden = len(report.problems) - args.max_problems
    if hidden > 0:
        print("error: ... and %d more problems (raise --max-problems to see them)" % hidden, file=sys.stderr)
    print("FAILED: %d problem%s in %s" % (len(report.problems), "" if len(report.problems) == 1 else "s", out),
          file=sys.stderr)
    return 1


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
