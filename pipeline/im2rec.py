"""A drop-in for MXNet's ``tools/im2rec.py`` (mxnet 1.9.1): the same arguments, the same files.

List mode writes the ``.lst`` files im2rec.py writes, byte for byte, and also
saves the folder -> label map it prints (``PREFIX_labels.txt``):

    python -m pipeline.im2rec ./example_rec ./example/ --recursive --list --train-ratio 0.7 --test-ratio 0.3

Record mode packs every ``.lst`` whose path starts with PREFIX into a ``.rec``
and ``.idx`` beside it, in the list's order, on Apache Beam with
``--num-thread`` encoding threads; bad images are skipped and reported:

    python -m pipeline.im2rec ./example_rec ./example/ --recursive --pass-through --pack-label --num-thread 8

PREFIX and ROOT may be ``s3://`` URIs. Flags that im2rec.py does not have and
that are not listed by ``--help`` must be Beam's, and go to its ``PipelineOptions``,
e.g. ``--runner=DaskRunner --dask_client_address=tcp://scheduler:8786``; any other
is refused, naming the nearest flag.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import uuid

from imgrec.quiet import one_blas_thread  # stdlib only: numpy is not loaded yet

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "imgrec-im2rec":
    one_blas_thread()  # the command's process: before numpy is loaded

from imgrec import images, storage
from imgrec.env import WorkerEnv
from imgrec.im2rec_compat import (
    DEFAULT_EXTS,
    WORK_MARK,
    PackSettings,
    encode_text,
    format_label_map,
    format_lst,
    labels_name,
    listing_from_paths,
    match_lists,
    nested_label_warnings,
    shuffled,
    split_lists,
    unlistable,
    walk_local,
)
from imgrec.options import OPTIONS, OptionsError, add_options, check_location, s3_settings
from pipeline.cli import ArgumentParser, add_version, check_beam_args, unrecognized

LOG = logging.getLogger("pipeline.im2rec")

# Reading from S3 waits on the network, not the CPU: several requests in flight per worker.
S3_READ_THREADS = 8


class UsageError(Exception):
    """Bad arguments or input: exit 2 with one line."""


def build_parser() -> argparse.ArgumentParser:
    """im2rec.py's arguments, groups, defaults and meanings, then ours."""
    parser = ArgumentParser(
        prog="python -m pipeline.im2rec",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Create an image list or make a record database by reading from an image list. "
        "A drop-in for MXNet's im2rec.py (same arguments, same files) that runs on Apache Beam; "
        "PREFIX and ROOT may be s3:// URIs. Beam's own flags (--runner, ...) go to Beam's PipelineOptions.",
        allow_abbrev=True,  # im2rec.py's argparse takes abbreviated flags (--pass for --pass-through)
    )
    add_version(parser)
    parser.add_argument("prefix", help="prefix of input/output lst and rec files.")
    parser.add_argument("root", help="path to folder containing images.")

    cgroup = parser.add_argument_group("Options for creating image lists")
    cgroup.add_argument("--list", action="store_true",
                        help="If this is set im2rec will create image list(s) by traversing root folder "
                        "and output to <prefix>.lst. "
                        "Otherwise im2rec will read <prefix>.lst and create a database at <prefix>.rec")
    cgroup.add_argument("--exts", nargs="+", default=list(DEFAULT_EXTS),
                        help="list of acceptable image extensions.")
    cgroup.add_argument("--chunks", type=int, default=1, help="number of chunks.")
    cgroup.add_argument("--train-ratio", type=float, default=1.0,
                        help="Ratio of images to use for training.")
    cgroup.add_argument("--test-ratio", type=float, default=0,
                        help="Ratio of images to use for testing.")
    cgroup.add_argument("--recursive", action="store_true",
                        help="If true recursively walk through subdirs and assign an unique label "
                        "to images in each folder. Otherwise only include images in the root folder "
                        "and give them label 0.")
    cgroup.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                        help="If this is passed, im2rec will not randomize the image order in <prefix>.lst")

    rgroup = parser.add_argument_group("Options for creating database")
    rgroup.add_argument("--pass-through", action="store_true",
                        help="whether to skip transformation and save image as is")
    rgroup.add_argument("--resize", type=int, default=0,
                        help="resize the shorter edge of image to the newsize, original images will "
                        "be packed by default.")
    rgroup.add_argument("--center-crop", action="store_true",
                        help="specify whether to crop the center image to make it rectangular.")
    rgroup.add_argument("--quality", type=int, default=95,
                        help="JPEG quality for encoding, 1-100; or PNG compression for encoding, 1-9")
    rgroup.add_argument("--num-thread", type=int, default=1,
                        help="number of images read and encoded at once (threads; OpenCV releases the GIL; "
                        "local pass-through reads on one thread and hashes and writes on two more). "
                        "Unlike im2rec.py, the records always stay in the input list's order.")
    rgroup.add_argument("--color", type=int, default=1, choices=[-1, 0, 1],
                        help="specify the color mode of the loaded image. "
                        "1: Loads a color image. Any transparency of image will be neglected. It is the default flag. "
                        "0: Loads image in grayscale mode. "
                        "-1:Loads image as such including alpha channel.")
    rgroup.add_argument("--encoding", type=str, default=".jpg", choices=[".jpg", ".png"],
                        help="specify the encoding of the images.")
    rgroup.add_argument("--pack-label", action="store_true",
                        help="Whether to also pack multi dimensional label in the record file")

    ogroup = parser.add_argument_group("Options added by pipeline.im2rec")
    ogroup.add_argument("--max-pixels", type=int, default=images.DEFAULT_MAX_PIXELS,
                        help="skip (and report) images whose header declares more pixels than this.")
    ogroup.add_argument("--fragment-lines", type=int, default=0,
                        help="at most this many list lines per fragment, the unit of parallel work; "
                        "0 = about 4 fragments per worker, at most 1000 lines each.")
    ogroup.add_argument("--read-threads", type=int, default=0,
                        help="images read at once inside each worker; 0 = 1 for a local ROOT, %d for s3://."
                        % S3_READ_THREADS)
    # pipeline.run's S3 flags, with the same meanings (one table: imgrec.options)
    add_options(parser, [o.dest for o in OPTIONS if o.group == "s3"],
                title="S3 (for s3:// PREFIX or ROOT; credentials come from boto3's chain)", describe=False)
    return parser


def validate(ns: argparse.Namespace) -> None:
    """Values im2rec.py would crash on or silently misuse; one clear line each."""
    if ns.chunks < 1:
        raise UsageError("--chunks must be 1 or more, got %d" % ns.chunks)
    for flag, value in (("--train-ratio", ns.train_ratio), ("--test-ratio", ns.test_ratio)):
        if not 0.0 <= value <= 1.0:
            raise UsageError("%s must be between 0 and 1, got %s" % (flag, value))
    if ns.num_thread < 1:
        raise UsageError("--num-thread must be 1 or more, got %d" % ns.num_thread)
    if ns.resize < 0:
        raise UsageError("--resize must be 0 (keep the size) or a positive edge length, got %d" % ns.resize)
    if ns.max_pixels < 1:
        raise UsageError("--max-pixels must be positive, got %d" % ns.max_pixels)
    if ns.fragment_lines < 0:
        raise UsageError("--fragment-lines must be 0 (automatic) or more, got %d" % ns.fragment_lines)
    if ns.read_threads < 0:
        raise UsageError("--read-threads must be 0 (automatic) or more, got %d" % ns.read_threads)
    bad_exts = [e for e in ns.exts if not e.startswith(".")]
    if bad_exts:
        # im2rec.py compares them with a name's extension, which starts with a dot: they would never match.
        raise UsageError("--exts values start with a dot, e.g. --exts .jpg .png (got %s)" % " ".join(bad_exts))


def normalize(uri: str) -> str:
    """im2rec.py makes PREFIX and ROOT absolute; an s3:// URI is already."""
    return uri if storage.is_s3(uri) else os.path.abspath(uri)


# ---------------------------------------------------------------- list mode


def make_lists(ns: argparse.Namespace) -> int:
    root, prefix = ns.root, ns.prefix
    if storage.is_s3(root):
        if ns.recursive:
            found = list(storage.walk_files(root))
            for entry in found:
                if entry.error:
                    print("warning: not listed %s: %s" % (entry.relpath, entry.detail or entry.error), file=sys.stderr)
            listing = listing_from_paths((e.relpath for e in found if not e.error), True, ns.exts)
        else:
            listing = listing_from_paths(storage.list_top(root)[1], False, ns.exts)
    else:
        if not os.path.isdir(root):
            raise UsageError("ROOT %s is not a folder" % root)
        listing = walk_local(root, ns.recursive, ns.exts)
    for line in listing.warnings + (nested_label_warnings(listing.label_dirs) if ns.recursive else []):
        print("warning: %s" % line, file=sys.stderr)
    if not listing.entries:
        hint = "" if ns.recursive else " (without --recursive only ROOT itself is searched)"
        raise UsageError("no images under %s with extensions %s%s" % (root, " ".join(ns.exts), hint))
    if ns.recursive:
        # im2rec.py prints the map; we print it the same way and also keep it.
        print(format_label_map(listing.label_dirs), end="")
    storage.write_bytes(labels_name(prefix), encode_text(format_label_map(listing.label_dirs)))
    ordered = shuffled(listing.entries, ns.shuffle)
    for path, entries in split_lists(ordered, prefix, ns.chunks, ns.train_ratio, ns.test_ratio):
        kept = []
        for e in entries:
            if unlistable(e.relpath):
                print("skipped: %r: a tab or line break in the name cannot be in a .lst" % e.relpath, file=sys.stderr)
            else:
                kept.append(e)
        storage.write_bytes(path, encode_text(format_lst(kept)))
        LOG.info("wrote %s: %d images", path, len(kept))
    LOG.info("wrote %s: %d labelled folders", labels_name(prefix), len(listing.label_dirs))
    return 0


# ---------------------------------------------------------------- record mode


def find_lists(prefix: str) -> tuple[str, list[str]]:
    """im2rec.py's choice of working folder (PREFIX if it is a folder, else its parent) and its lists."""
    if storage.is_s3(prefix):
        if prefix.endswith("/") or "/" not in prefix[len("s3://"):]:
            working_dir = prefix.rstrip("/")
        else:
            parent, base = prefix.rsplit("/", 1)
            working_dir = prefix if base in storage.list_top(parent)[0] else parent
        files = storage.list_top(working_dir)[1]
    else:
        working_dir = prefix if os.path.isdir(prefix) else os.path.dirname(prefix)
        if not os.path.isdir(working_dir):
            raise UsageError("folder %s does not exist (PREFIX is %s)" % (working_dir, prefix))
        files = [f for f in os.listdir(working_dir) if os.path.isfile(os.path.join(working_dir, f))]
    return working_dir, match_lists(prefix, working_dir, files)


def remove_tree(uri: str) -> None:
    for rel in storage.list_recursive(uri):
        storage.delete(storage.join(uri, rel))
    if not storage.is_s3(uri):
        shutil.rmtree(uri, ignore_errors=True)


def worker_threads(ns: argparse.Namespace, local_run: bool) -> int:
    """Threads that read and pack inside each fragment.

    In one process, ``--num-thread N`` is N encoding threads (OpenCV releases the
    GIL), except pass-through from local disk: short Python work per image, where a
    second thread only adds GIL hand-offs (the writer's hash and write threads
    still use a second core). Otherwise ``--read-threads`` (S3) or 1.
    """
    if ns.read_threads:
        return ns.read_threads
    if storage.is_s3(ns.root):
        return S3_READ_THREADS
    if local_run and not ns.pass_through:
        return ns.num_thread
    return 1


def make_records(ns: argparse.Namespace, beam_args: list[str], env: WorkerEnv) -> int:
    import apache_beam as beam

    from pipeline.runners import pipeline_options, runs_in_process
    from transforms.pack_list import MAX_FRAGMENT_LINES, PackList, done_path, plan_fragments

    root = ns.root
    if not storage.is_s3(root) and not os.path.isdir(root):
        raise UsageError("ROOT %s is not a folder" % root)
    working_dir, lists = find_lists(ns.prefix)
    if not lists:
        raise UsageError("did not find any .lst file starting with %s in %s" % (ns.prefix, working_dir))
    settings = PackSettings(
        root=root,
        pass_through=ns.pass_through,
        encode=images.EncodeParams(
            resize=ns.resize,
            center_crop=ns.center_crop,
            quality=ns.quality,
            encoding=ns.encoding,
            color=ns.color,
            # im2rec.py decodes at full size and resizes with cv2.resize's default (bilinear).
            reduced_decode=False,
        ),
        pack_label=ns.pack_label,
        max_pixels=ns.max_pixels,
    )
    opts, runner = pipeline_options(beam_args, len(lists))
    local_run = runs_in_process(opts)
    threads = worker_threads(ns, local_run)
    if local_run and not ns.fragment_lines:
        # one process writes the fragments one after the other: one fragment per list,
        # which then becomes the .rec by a rename instead of a copy
        fragments = [f for lst in lists for f in plan_fragments(lst, 1, 1 << 62, per_worker=1)]
    else:
        max_lines = ns.fragment_lines or MAX_FRAGMENT_LINES
        fragments = [f for lst in lists for f in plan_fragments(lst, ns.num_thread, max_lines)]
    if not local_run:
        opts, runner = pipeline_options(beam_args, len(fragments))  # Dask: one partition per fragment
    work_root = storage.join(working_dir, WORK_MARK + uuid.uuid4().hex[:12])
    if not storage.is_s3(work_root):
        try:
            os.makedirs(work_root)
        except OSError as exc:
            raise UsageError("cannot write in %s: %s" % (working_dir, exc.strerror or exc)) from None
    for lst in lists:
        print("Creating .rec file from", lst, "in", working_dir)
    try:
        p = beam.Pipeline(runner=runner, options=opts)
        _ = (
            p
            # Fragment(lst, index, count, ByteRange), spread over the workers
            | "Fragments" >> beam.Create(fragments)
            | "PackList" >> PackList(settings, work_root, threads, env)
        )
        p.run().wait_until_finish()
        summaries = []
        for lst in lists:
            if not storage.exists(done_path(work_root, lst)):
                print("error: the job did not complete %s (no completion record)" % lst, file=sys.stderr)
                return 1
            summaries.append(json.loads(storage.read_text(done_path(work_root, lst))))
    finally:
        remove_tree(work_root)
    return report(summaries)


def report(summaries: list[dict]) -> int:
    """One line per skipped input (from the errors files), then one line per list."""
    for s in summaries:
        if s["errors"]:
            for line in storage.read_text(s["errors"]).splitlines():
                e = json.loads(line)
                path = " (%s)" % e["path"] if e["path"] else ""
                detail = ": " + e["detail"] if e["detail"] else ""
                print("skipped %s line %d%s: %s%s" % (e["lst"], e["line"], path, e["reason"], detail), file=sys.stderr)
    for s in summaries:
        line = "%s: %d records, %d bytes; %s" % (s["rec"], s["records"], s["bytes"], s["idx"])
        if s["skipped"]:
            line += "; %d skipped, listed in %s" % (s["skipped"], s["errors"])
        print(line)
    return 0


# ---------------------------------------------------------------- entry point


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        ns, beam_args = parser.parse_known_args(argv)
        check_location("PREFIX", ns.prefix)
        check_location("ROOT", ns.root)
    except OptionsError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    if not ns.list:
        # Beam imported without its GCP-only "apitools not found" line (list mode does not need Beam at all).
        from imgrec.quiet import import_beam, runs_locally

        import_beam(lean=runs_locally(beam_args))
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    for noisy in ("apache_beam", "botocore", "urllib3", "smart_open"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        validate(ns)
        if ns.list:
            if beam_args:  # list mode runs no pipeline: there is nothing to give Beam's flags to
                raise UsageError(unrecognized(beam_args, parser.flags()))
        else:
            # a typo must not be ignored, as im2rec.py's argparse would not
            check_beam_args(beam_args, parser.flags())
        env = WorkerEnv(s3=s3_settings(ns))
        env.apply()
        ns.prefix, ns.root = normalize(ns.prefix), normalize(ns.root)
        return make_lists(ns) if ns.list else make_records(ns, beam_args, env)
    except (UsageError, OptionsError, storage.StorageError, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
