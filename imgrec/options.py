"""The job's options: one declarative table -> argparse, YAML configs, ConvertOptions, README table.

``OPTIONS`` is the single source. From it come ``--help`` (grouped by purpose,
each flag with its default and an example, ``add_options``), the README's
option table (``options_markdown``), the YAML config keys (``load_config``), the
fields of the frozen ``ConvertOptions`` and the keywords of the Python API
(``from_kwargs``). ``from_args`` (argparse) and ``from_kwargs`` share one
validation path, ``_validated``, so a value is refused with the same one-line
message however it was given.

Each option says whether it ``affects_output``: the options that do, together
with the input, are the dataset's identity (``ConvertOptions.identity``), which
decides whether a re-run or an ``--incremental`` run is about the same dataset,
and they are part of every shard's digest (``--resume``).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from imgrec.errors import UsageError
from imgrec.images import DEFAULT_MAX_PIXELS, EncodeParams
from imgrec.planning import SplitRatios


class OptionsError(UsageError):
    """An invalid option value; the message says which flag and why."""


# --max-file-size-mb: a photo, even a 100-megapixel one, is tens of MiB (the largest
# JPEGs seen in practice are a little over 100 MiB), while every image being encoded is
# held in memory once or twice per thread. Half of RecordIO's 512 MiB record limit, so
# anything accepted can also be stored as it is.
DEFAULT_MAX_FILE_MB = 256.0
MAX_FILE_MB = 512.0  # RecordIO's record limit (2**29 bytes): a larger file can never be a record
# --label-width: every record carries width float32 values, and mxnet's ImageRecordIter
# and DALI allocate that many per image. The largest public label spaces have tens of
# thousands of classes (ImageNet-21k: 21,841); 65,536 labels are 256 KiB per record.
MAX_LABEL_WIDTH = 65536


GROUPS = (
    ("input", "Input"),
    ("split", "Labels and split"),
    ("encoding", "Encoding"),
    ("output", "Output and sharding"),
    ("s3", "S3"),
    ("runner", "Runner"),
)


@dataclass(frozen=True)
class Opt:
    """One option of the job, as a flag, a YAML key, a keyword of ``from_kwargs`` and a ConvertOptions field.

    ``value`` turns the flag's value into the field's (``.jpg,.png`` -> a sorted tuple),
    raising OptionsError. ``into`` names where it lands when that is a member of a
    grouped field (``ratios.train``: ``ConvertOptions.ratios.train``). ``location``: a
    local path or an ``s3://`` URI, whose scheme is checked. ``command_only``: an option
    of the command line (logging, --config), not of the conversion. ``affects_output``:
    whether two runs that differ only in this option make different datasets (other
    records, another order or other file names); it must be stated for every option.
    """

    flags: tuple[str, ...]
    dest: str
    group: str
    help: str
    default: Any = None
    type: Any = str
    example: str = ""
    action: str | None = None
    choices: Sequence[Any] | None = None
    value: Callable[[Any], Any] | None = None
    into: str = ""
    location: bool = False
    command_only: bool = False
    affects_output: bool = field(kw_only=True)

    @property
    def flag(self) -> str:
        return self.flags[0]


def normalise_exts(value: str) -> tuple[str, ...]:
    """``--exts``: a sorted tuple of lower-case extensions with their dot (``.jpg,PNG`` -> ``('.jpg', '.png')``)."""
    exts = tuple(sorted({("." + e.strip().lstrip(".")).lower() for e in str(value).split(",") if e.strip()}))
    if not exts:
        raise OptionsError("--exts must list at least one extension")
    return exts


def parse_max_errors(value) -> float:
    """``--max-errors``: '' (no limit), a count such as 10, or a fraction such as 0.01 or 1%."""
    text = str(value if value is not None else "").strip()
    if not text:
        return -1.0
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise OptionsError("--max-errors must be a count (10), a fraction (0.01) or a percentage (1%%), got %r" % text) from None
    if number < 0 or (number >= 1 and number != int(number)):
        raise OptionsError("--max-errors must be a whole count or a fraction below 1, got %r" % text)
    return number


def _pass_through_unless_told(value) -> bool:
    # Not given (None) reads as pass-through here; _validated then decides from the encoding options.
    return True if value is None else bool(value)


OPTIONS: tuple[Opt, ...] = (
    Opt(("--input",), "input", "input", "Folder (or s3:// prefix) whose top-level sub-folders are the classes (or whose images --labels names).",
        example="--input ./photos", location=True, affects_output=True),
    Opt(("--exts",), "exts", "input",
        "Image file extensions to take, comma-separated, case-insensitive. The content decides the format, not the "
        "name: JPEG and PNG are stored as they are; other formats OpenCV reads (GIF, WebP, BMP, TIFF, ...) are "
        "re-encoded with --resize/--encoding and otherwise skipped (unsupported_format): mxnet, DALI and SageMaker do "
        "not all decode them.",
        default=".jpg,.jpeg,.png", example="--exts .jpg,.jpeg,.jfif", value=normalise_exts, affects_output=True),
    Opt(("--max-pixels",), "max_pixels", "input",
        "Refuse images whose header declares more pixels than this (decompression bombs), in every format, before "
        "any pixel buffer exists; content whose size cannot be read from its header is refused too.",
        default=DEFAULT_MAX_PIXELS, type=int, example="--max-pixels 50000000", affects_output=True),
    Opt(("--max-file-size-mb",), "max_file_size_mb", "input",
        "Skip (and report as too_large) input files larger than this many MiB, before reading them. Only "
        "regular files are ever opened: FIFOs, devices and sockets are reported as not_regular_file.",
        default=DEFAULT_MAX_FILE_MB, type=float, example="--max-file-size-mb 64", affects_output=True),
    Opt(("--validate",), "validate", "input",
        "How every image is checked: 'header' parses its dimensions and end marker; 'decode' also decodes it fully "
        "and refuses it when the decoder reports corrupt or missing data (corrupt_data), as re-encoding always does.",
        default="header", choices=("header", "decode"), example="--validate decode", affects_output=True),
    Opt(("--max-errors",), "max_errors", "input",
        "Fail (and write no manifest) when more inputs than this are skipped: a count, or a fraction of all inputs "
        "such as 0.01. Empty = carry on and report.",
        default="", example="--max-errors 0.01", value=parse_max_errors, affects_output=False),
    Opt(("--train-ratio",), "train_ratio", "split", "Share of images in the train split.",
        default=0.8, type=float, example="--train-ratio 0.7", into="ratios.train", affects_output=True),
    Opt(("--val-ratio",), "val_ratio", "split", "Share of images in the validation split.",
        default=0.2, type=float, example="--val-ratio 0.15", into="ratios.validation", affects_output=True),
    Opt(("--test-ratio",), "test_ratio", "split", "Share of images in the test split.",
        default=0.0, type=float, example="--test-ratio 0.15", into="ratios.test", affects_output=True),
    Opt(("--split-seed",), "split_seed", "split",
        "Salt of the path hash that decides each image's split, shard and order.",
        default="0", example="--split-seed 2024", value=str, affects_output=True),
    Opt(("--labels",), "labels", "split",
        "Label file (local or s3://) naming images under --input and their labels: an im2rec .lst, a CSV "
        "(path,label or path,label1;label2), JSON Lines ({\"path\": ..., \"labels\": [...]}) or a SageMaker "
        "Ground Truth manifest (.manifest). Without it, each top-level folder of --input is a class.",
        default="", example="--labels labels.csv", location=True, affects_output=True),
    Opt(("--labels-format",), "labels_format", "split",
        "Format of --labels when its extension does not tell (.lst, .csv, .jsonl, .manifest).",
        default="", choices=("lst", "csv", "jsonl", "manifest"), example="--labels-format csv", affects_output=True),
    Opt(("--labels-as",), "labels_as", "split",
        "How the label values in --labels are read: class names, class ids (whole numbers; negative = padding) "
        "or multi-hot 0/1 vectors. 'auto': a .lst whose lines all have the same number W > 1 of label columns, "
        "all 0 or 1, is multi-hot over W classes, any other .lst gives class ids; CSV/JSON Lines give class ids "
        "when every label is a whole number >= 0, class names when none is a number, and a mix is refused; in a "
        "manifest a list is multi-hot unless its metadata says multilabel.",
        default="auto", choices=("auto", "names", "class-ids", "multi-hot"), example="--labels-as names",
        affects_output=True),
    Opt(("--label-attribute",), "label_attribute", "split",
        "The label attribute of a Ground Truth manifest; none = the one attribute beside source-ref (or image-ref).",
        default="", example="--label-attribute my-labelling-job", affects_output=True),
    Opt(("--refs-root",), "refs_root", "split",
        "For a label file whose paths point at another copy of the images (a manifest's s3:// refs, images "
        "since copied to --input): the prefix those paths start with, which stands for --input. A path under it "
        "is read as the rest of the path under --input, with the same safety rules as any path.",
        default="", example="--refs-root s3://bucket/images/", affects_output=True),
    Opt(("--label-format",), "label_format", "split",
        "Write multi-label records: labels as a float32 vector (IRHeader flag = its width). 'multi-hot': one 0/1 "
        "per class (SageMaker's multi_label=1 layout); 'class-ids': the image's class ids padded to --label-width. "
        "Default: one scalar label per image.",
        default="", choices=("multi-hot", "class-ids"), example="--label-format multi-hot", affects_output=True),
    Opt(("--label-width",), "label_width", "split",
        "Vector width of --label-format class-ids (0 = the most labels any image has). Readers need it: "
        "ImageRecordIter(label_width=...).",
        default=0, type=int, example="--label-width 5", affects_output=True),
    Opt(("--label-pad",), "label_pad", "split", "Value that pads --label-format class-ids vectors to their width.",
        default=-1.0, type=float, example="--label-pad -1", affects_output=True),
    Opt(("--class-map",), "class_map", "split",
        "Pin class ids: a previous run's classes.json or labels.txt (or a JSON list of names). A class not in it "
        "is an error unless --allow-new-classes.",
        default="", example="--class-map old/classes.json", location=True, affects_output=False),
    Opt(("--allow-new-classes",), "allow_new_classes", "split",
        "Classes missing from --class-map get the next ids after the map's, in sorted order.",
        default=False, type=None, action="store_true", example="--allow-new-classes", affects_output=False),
    Opt(("--allow-lookalike-classes",), "allow_lookalike_classes", "split",
        "Keep class names that differ only in case or Unicode normalisation ('Cat' and 'cat', NFC and NFD "
        "'caf\u00e9') as separate classes, with a warning; without it such names are refused.",
        default=False, type=None, action="store_true", example="--allow-lookalike-classes", affects_output=False),
    Opt(("--stratify",), "stratify", "split",
        "Give each class (each label set, for multi-label) every split's share to within one image, still "
        "decided by the path hash.",
        default=False, type=None, action="store_true", example="--stratify", affects_output=True),
    Opt(("--check-duplicates",), "check_duplicates", "split",
        "Read every image once more during planning to hash its content: identical files go to the same split, "
        "duplicates and label conflicts are listed in report.jsonl.",
        default=False, type=None, action="store_true", example="--check-duplicates", affects_output=True),
    Opt(("--dedup",), "dedup", "split",
        "Like --check-duplicates, and keep only one file (the first path) of each set of identical files.",
        default=False, type=None, action="store_true", example="--dedup", affects_output=True),
    Opt(("--pass-through",), "pass_through", "encoding",
        "Store the original file bytes unchanged (the default unless an encoding option is given).",
        default=None, type=None, action="store_true", example="--pass-through",
        value=_pass_through_unless_told, affects_output=True),
    Opt(("--resize",), "resize", "encoding", "Re-encode with the shorter edge resized to N pixels, aspect kept.",
        default=0, type=int, example="--resize 256", into="encode.resize", affects_output=True),
    Opt(("--center-crop",), "center_crop", "encoding", "Re-encode the largest centred square.",
        default=False, type=None, action="store_true", example="--center-crop",
        into="encode.center_crop", affects_output=True),
    Opt(("--quality",), "quality", "encoding", "JPEG quality 1-100, or PNG compression 0-9.",
        default=95, type=int, example="--quality 90", into="encode.quality", affects_output=True),
    Opt(("--encoding",), "encoding", "encoding", "Format of re-encoded images.",
        default=".jpg", choices=(".jpg", ".png"), example="--encoding .png",
        into="encode.encoding", affects_output=True),
    Opt(("--color",), "color", "encoding", "Decode as colour (1), grayscale (0) or unchanged with alpha (-1).",
        default=1, type=int, choices=(1, 0, -1), example="--color 0", into="encode.color", affects_output=True),
    Opt(("--output",), "output", "output", "Folder (or s3:// prefix) to write the dataset to.",
        example="--output ./out", location=True, affects_output=False),
    Opt(("--name",), "name", "output", "File name stem of the shards: NAME-00000-of-00004.rec.",
        default="data", example="--name imagenet", affects_output=True),
    Opt(("--shard-size-mb",), "shard_size_mb", "output", "Target shard size in MiB (measured on input bytes).",
        default=256.0, type=float, example="--shard-size-mb 512", affects_output=True),
    Opt(("--images-per-shard",), "images_per_shard", "output",
        "Target number of images per shard (instead of --shard-size-mb).",
        default=0, type=int, example="--images-per-shard 10000", affects_output=True),
    Opt(("--idx-beside-rec",), "idx_beside_rec", "output",
        "Put each .idx next to its .rec (Gluon's ImageRecordDataset wants this) instead of OUT/idx/.",
        default=False, type=None, action="store_true", example="--idx-beside-rec", affects_output=True),
    Opt(("--overwrite",), "overwrite", "output", "Replace a different dataset already in --output.",
        default=False, type=None, action="store_true", example="--overwrite", affects_output=False),
    Opt(("--incremental",), "incremental", "output",
        "Scheduled runs over a growing input: convert only images not yet in --output into new shards and add "
        "them to its manifest; existing images keep their split, label, id and shard, and the class map stays "
        "fixed (a new class is an error unless --allow-new-classes). Nothing new: nothing changes.",
        default=False, type=None, action="store_true", example="--incremental", affects_output=False),
    Opt(("--resume",), "resume", "output",
        "After a crash: keep the shards already complete and verified (sha256) and redo only the rest.",
        default=False, type=None, action="store_true", example="--resume", affects_output=False),
    Opt(("--fsync",), "fsync", "output",
        "Flush every local output file to disk (fsync) before it is renamed into place, so a completed run "
        "survives a power cut. Off by default, like im2rec.py: a crashed or killed job never leaves output that "
        "looks complete either way; fsync costs about 0.3 s per GB written. S3 output is durable on upload.",
        default=False, type=None, action="store_true", example="--fsync", affects_output=False),
    Opt(("--single-file",), "single_file", "output",
        "Also write one .rec (and .idx) per split, the shards concatenated, under OUT/single/ (on S3 by "
        "server-side copy): SageMaker's documentation asks for one .rec per channel.",
        default=False, type=None, action="store_true", example="--single-file", affects_output=False),
    Opt(("--s3-endpoint-url",), "s3_endpoint_url", "s3",
        "Endpoint of an S3-compatible store (MinIO, Ceph, ...); the environment variable AWS_ENDPOINT_URL_S3 "
        "is used when this is not given. Credentials come only from boto3's standard chain.",
        default="", example="--s3-endpoint-url http://minio.local:9000",
        into="s3.endpoint_url", affects_output=False),
    Opt(("--s3-region",), "s3_region", "s3", "AWS region of the buckets (else boto3's chain: AWS_REGION, profile).",
        default="", example="--s3-region eu-west-1", into="s3.region", affects_output=False),
    Opt(("--s3-sse",), "s3_sse", "s3",
        "Server-side encryption of every output object: AES256 (SSE-S3) or aws:kms (SSE-KMS).",
        default="", choices=("AES256", "aws:kms"), example="--s3-sse aws:kms", into="s3.sse", affects_output=False),
    Opt(("--s3-sse-kms-key-id",), "s3_sse_kms_key_id", "s3",
        "KMS key (id, ARN or alias) for --s3-sse aws:kms; without it S3 uses the account's aws/s3 key.",
        default="", example="--s3-sse-kms-key-id alias/datasets", into="s3.sse_kms_key_id", affects_output=False),
    Opt(("--s3-requester-pays",), "s3_requester_pays", "s3",
        "Accept the request charges of requester-pays buckets (needed to read one).",
        default=False, type=None, action="store_true", example="--s3-requester-pays",
        into="s3.requester_pays", affects_output=False),
    Opt(("--workers",), "workers", "runner",
        "Worker processes of the local runner, forked from the job's process (no second Beam start-up): each "
        "lists folders and writes parts of shards, so the job uses every core whatever the GIL. -1 = one per "
        "usable core when there are two or more; 0 = none (threads of the job's process only).",
        default=-1, type=int, example="--workers 8", affects_output=False),
    Opt(("--threads",), "threads", "runner",
        "Parts of shards checked/encoded at once by threads when there are no worker processes (OpenCV "
        "releases the GIL), and per cluster worker. 0 = one per core plus one, except 1 for local pass-through.",
        default=0, type=int, example="--threads 4", affects_output=False),
    Opt(("--planner",), "planner", "runner",
        "How shards are planned: 'spill' keeps the refs in sorted runs on local disk (memory bounded by a "
        "part; the local runner's default), 'shuffle' passes them through Beam's shuffles (clusters' default). "
        "The output is the same.",
        default="auto", choices=("auto", "spill", "shuffle"), example="--planner shuffle", affects_output=False),
    Opt(("--read-threads",), "read_threads", "runner",
        "Images read ahead at once per worker, on their own threads, while --threads encode: for S3 input, "
        "where each read waits on the network. 0 = 16 for s3:// input, else no read-ahead.",
        default=0, type=int, example="--read-threads 32", affects_output=False),
    Opt(("--config",), "config", "runner", "YAML file of option values (and 'pipeline_options' for Beam); flags override it.",
        example="--config configs/direct.yaml", command_only=True, affects_output=False),
    Opt(("--log-level",), "log_level", "runner", "Logging level.",
        default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), example="--log-level DEBUG",
        command_only=True, affects_output=False),
    Opt(("--quiet",), "quiet", "runner",
        "For scheduled runs: no progress line and no summary on the terminal, only warnings and errors "
        "(summary.txt is still written).",
        default=False, type=None, action="store_true", example="--quiet", command_only=True, affects_output=False),
    Opt(("--dry-run",), "dry_run", "runner",
        "List, label and split without encoding or writing: print counts per class and split, the class "
        "imbalance, the shard count and the estimated output size. --output is optional.",
        default=False, type=None, action="store_true", example="--dry-run", affects_output=False),
)

JOB_OPTIONS = tuple(o for o in OPTIONS if not o.command_only)  # ConvertOptions fields, from_kwargs keywords
_BY_DEST = {o.dest: o for o in OPTIONS}


# ---------------------------------------------------------------- ConvertOptions, made from the table


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3; carried to every worker and applied there by ``imgrec.env.WorkerEnv.apply``.

    No credentials here: boto3 finds them (environment, profile, instance role).
    """

    endpoint_url: str = ""
    region: str = ""
    sse: str = ""  # "", "AES256" or "aws:kms"
    sse_kms_key_id: str = ""
    requester_pays: bool = False
    # s3:// prefix where every multipart upload is recorded while it is open (the output's _work/uploads/,
    # set by the launcher), so that a later run can abort what a killed one left; "" records nothing
    upload_journal: str = ""


# Options whose values travel together as one value object: ConvertOptions.ratios is a
# SplitRatios, .encode an EncodeParams, .s3 an S3Settings (what the stages take); each
# member option names its place with ``into="ratios.train"``.
GROUPED_FIELDS: dict[str, type] = {"ratios": SplitRatios, "encode": EncodeParams, "s3": S3Settings}


def _field_value(opt: Opt, raw: Any) -> Any:
    return opt.value(raw) if opt.value is not None else raw


def _grouped_default(name: str) -> Callable[[], Any]:
    members = {o.into.split(".", 1)[1]: _field_value(o, o.default) for o in JOB_OPTIONS if o.into.startswith(name + ".")}
    return lambda: GROUPED_FIELDS[name](**members)


def _field_specs() -> list[tuple]:
    """ConvertOptions' fields: one per option in table order, a grouped field where its first member stands."""
    specs, placed = [], set()
    for opt in JOB_OPTIONS:
        if opt.into:
            name = opt.into.split(".", 1)[0]
            if name not in placed:
                placed.add(name)
                specs.append((name, GROUPED_FIELDS[name], field(default_factory=_grouped_default(name))))
        elif opt.dest in ("input", "output"):
            specs.append((opt.dest, str))  # required: no default
        else:
            default = _field_value(opt, opt.default)
            specs.append((opt.dest, type(default), field(default=default)))
    return specs


def _member_property(opt: Opt) -> property:
    group, member = opt.into.split(".", 1)
    return property(lambda self: getattr(getattr(self, group), member), doc="``%s`` (%s)" % (opt.flag, opt.into))


class _ConvertOptionsBase:
    """What ConvertOptions does beyond holding the values (its fields come from ``OPTIONS``)."""

    def identity(self) -> dict[str, Any]:
        """What makes two datasets the same: the input and the options that affect the output.

        The fields of the first identities (``FIRST_IDENTITY_FIELDS``) are always written;
        any other is written only when not at its default, so an option added later
        changes neither the identity nor the shard digests of datasets written before it.
        Compare identities with ``identity_changes``, never with ``==``.
        """
        d = self.to_json()
        found = {name: d[name] for name in _IDENTITY_FIELDS
                 if name in FIRST_IDENTITY_FIELDS or d[name] != _DEFAULT_JSON.get(name)}
        found["input"] = location_key(self.input)
        return found

    def fingerprint_fields(self) -> dict[str, Any]:
        """The options that decide the output bytes, part of every shard's digest: the identity."""
        return self.identity()

    @property
    def max_file_bytes(self) -> int:
        """``--max-file-size-mb`` in bytes: input files larger than this are skipped unread."""
        return int(self.max_file_size_mb * (1 << 20))

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``options``: every field, grouped fields as objects."""
        return _jsonable(self)


ConvertOptions = make_dataclass(
    "ConvertOptions",
    _field_specs(),
    bases=(_ConvertOptionsBase,),
    frozen=True,
    kw_only=True,
    namespace={
        "__module__": __name__,  # so that instances pickle by reference, as Beam sends them to workers
        "__doc__": "Everything the job needs to know, validated before any work starts (``from_args``, "
                   "``from_kwargs``). One field per option of ``OPTIONS``, by its dest; ``ratios``, ``encode`` "
                   "and ``s3`` hold their member options as value objects, which are also readable by dest "
                   "(``options.train_ratio`` is ``options.ratios.train``).",
        **{o.dest: _member_property(o) for o in JOB_OPTIONS if o.into},
    },
)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _field_default(f) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


_DEFAULT_JSON = {f.name: _jsonable(_field_default(f)) for f in fields(ConvertOptions)
                 if not (f.default is MISSING and f.default_factory is MISSING)}
_IDENTITY_FIELDS = tuple(dict.fromkeys(
    o.into.split(".", 1)[0] if o.into else o.dest for o in JOB_OPTIONS if o.affects_output))
# The identity fields of every dataset written up to commit 3be9796, before --max-file-size-mb and
# --refs-root existed: always written, so that those datasets (and older code) see the same
# identity. Never add to this set: a new option is in the identity only when not at its default.
FIRST_IDENTITY_FIELDS = frozenset({
    "input", "exts", "ratios", "split_seed", "pass_through", "encode", "max_pixels", "validate", "name",
    "shard_size_mb", "images_per_shard", "idx_beside_rec", "labels", "labels_format", "labels_as",
    "label_attribute", "label_format", "label_width", "label_pad", "stratify", "check_duplicates", "dedup",
})
# Identity fields that name places, compared by location_key: "./photos/" and "photos" are one folder.
_LOCATION_FIELDS = ("input", "labels", "refs_root")


def location_key(uri: str) -> str:
    """How a dataset's identity names a place: one spelling per folder or prefix.

    A local path becomes absolute and normalised (``./photos/``, ``photos`` and
    ``/home/me/photos`` are one folder; ``a/../b`` is ``b``). Symbolic links are not
    resolved: the folder is the one the user names, so a scheduled job whose input is a
    link moved to each day's snapshot stays the same dataset. An ``s3://`` URI is
    kept as typed (keys are plain strings: ``a//b`` is not ``a/b``) but for its trailing '/'.
    """
    if not uri:
        return uri
    if uri.startswith("s3://"):
        return uri.rstrip("/") if uri.rstrip("/") != "s3:" else uri
    return os.path.abspath(uri)  # abspath normalises (normpath) as well


def identity_changes(recorded: Any, current: Mapping[str, Any]) -> list[str]:
    """The fields in which a dataset's recorded identity and this run's differ; [] = the same dataset.

    An option missing from either is at its default (left out at its default, or added
    after that dataset was written), and places are compared by ``location_key``, so the
    identities written by every earlier version of this tool compare as they should.
    """
    a = _comparable(recorded if isinstance(recorded, Mapping) else {})
    b = _comparable(current)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _comparable(identity: Mapping[str, Any]) -> dict[str, Any]:
    d = {k: v for k, v in identity.items() if not (k in _DEFAULT_JSON and v == _DEFAULT_JSON[k])}
    for name in _LOCATION_FIELDS:
        if isinstance(d.get(name), str):
            d[name] = location_key(d[name])
    return d


# ---------------------------------------------------------------- parsing and validation


def from_args(ns: argparse.Namespace) -> ConvertOptions:
    """The validated options from ``add_options``' flags (argparse has converted the types)."""
    return _validated({o.dest: getattr(ns, o.dest, o.default) for o in JOB_OPTIONS})


def from_kwargs(input_required: bool = True, **kwargs: Any) -> ConvertOptions:
    """The validated options from keywords named like the flags' dests: ``from_kwargs(input="photos",
    output="out", resize=256, train_ratio=0.8, labels_as="names")``.

    Values are converted and checked as a YAML config's are (``exts=[".jpg", ".png"]`` or
    ``".jpg,.png"``); an unknown keyword is refused with the nearest known one.
    ``input_required=False``: images may be named by absolute paths or URIs instead
    (``WriteToRecordIO`` without an ``input`` root).
    """
    raw = {o.dest: o.default for o in JOB_OPTIONS}
    for key, value in kwargs.items():
        opt = _BY_DEST.get(key)
        if opt is None:
            near = difflib.get_close_matches(key, [o.dest for o in JOB_OPTIONS], n=1)
            raise OptionsError("unknown option %r%s" % (key, " (did you mean %s?)" % near[0] if near else ""))
        if opt.command_only:
            raise OptionsError("%s is an option of the command line (%s), not of the conversion" % (key, opt.flag))
        raw[key] = coerce(opt, value, key)
    return _validated(raw, input_required)


def _validated(v: dict[str, Any], input_required: bool = True) -> ConvertOptions:
    """The one validation path: raw option values by dest (defaults filled in) -> ConvertOptions."""
    if not v["input"] and input_required:
        raise OptionsError("--input is required (a folder of class folders, or an s3:// prefix)")
    v = {**v, "input": v["input"] or ""}
    if not v["output"] and not v["dry_run"]:
        raise OptionsError("--output is required (a folder or an s3:// prefix)")
    for opt in JOB_OPTIONS:
        if opt.location and v[opt.dest]:
            check_location(opt.flag, v[opt.dest])
    try:
        SplitRatios(v["train_ratio"], v["val_ratio"], v["test_ratio"])
    except ValueError as exc:
        raise OptionsError(str(exc)) from None
    encoding_opts = [o for o in JOB_OPTIONS if o.into.startswith("encode.")]
    encoding_given = any(v[o.dest] != o.default for o in encoding_opts)
    if v["pass_through"] and encoding_given:
        flags = [o.flag for o in encoding_opts]
        raise OptionsError("--pass-through stores the original bytes; it cannot be combined with %s or %s"
                           % (", ".join(flags[:-1]), flags[-1]))
    pass_through = v["pass_through"] is not False and not encoding_given
    _check_numbers(v)
    if not v["name"] or not set(v["name"]) <= _SAFE_NAME_CHARS or v["name"].startswith("."):
        raise OptionsError(
            "--name %r: use letters, digits, '.', '_' and '-' only (it becomes part of file names)" % v["name"]
        )
    if v["output"] and v["input"]:
        overlap = folders_overlap(v["input"], v["output"])
        if overlap:
            raise OptionsError(overlap)
    values = {o.dest: _field_value(o, v[o.dest]) for o in JOB_OPTIONS}
    values.update(_label_values(v), pass_through=pass_through)
    return _build(values, s3=_s3_from(v))


def _build(values: dict[str, Any], **grouped: Any) -> ConvertOptions:
    """ConvertOptions from final values by dest: member options gathered into their grouped fields
    (unless ``grouped`` gives a grouped field whole)."""
    top: dict[str, Any] = {}
    members: dict[str, dict[str, Any]] = {name: {} for name in GROUPED_FIELDS if name not in grouped}
    for opt in JOB_OPTIONS:
        if not opt.into:
            top[opt.dest] = values[opt.dest]
        elif opt.into.split(".", 1)[0] in members:
            name, member = opt.into.split(".", 1)
            members[name][member] = values[opt.dest]
    return ConvertOptions(**top, **grouped, **{name: GROUPED_FIELDS[name](**m) for name, m in members.items()})


def _check_numbers(v: Mapping[str, Any]) -> None:
    if v["resize"] < 0:
        raise OptionsError("--resize must be a positive number of pixels, got %d" % v["resize"])
    if v["encoding"] == ".jpg" and not 1 <= v["quality"] <= 100:
        raise OptionsError("--quality for JPEG must be between 1 and 100, got %d" % v["quality"])
    if v["encoding"] == ".png" and not 0 <= v["quality"] <= 9:
        raise OptionsError("--quality for PNG is the compression level 0-9, got %d" % v["quality"])
    if v["shard_size_mb"] <= 0:
        raise OptionsError("--shard-size-mb must be positive, got %g" % v["shard_size_mb"])
    if v["images_per_shard"] < 0:
        raise OptionsError("--images-per-shard must be positive, got %d" % v["images_per_shard"])
    if v["max_pixels"] <= 0:
        raise OptionsError("--max-pixels must be positive, got %d" % v["max_pixels"])
    if v["read_threads"] < 0:
        raise OptionsError("--read-threads must be 0 (automatic) or more, got %d" % v["read_threads"])
    if v["threads"] < 0:
        raise OptionsError("--threads must be 0 (one per core) or more, got %d" % v["threads"])
    if v["workers"] < -1:
        raise OptionsError("--workers must be -1 (one per core), 0 (none) or more, got %d" % v["workers"])
    if not 0 < v["max_file_size_mb"] <= MAX_FILE_MB:
        raise OptionsError("--max-file-size-mb must be above 0 and at most %g (RecordIO's record limit), got %g"
                           % (MAX_FILE_MB, v["max_file_size_mb"]))


_SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _label_values(v: Mapping[str, Any]) -> dict[str, Any]:
    """The validated label, class-map, stratify and duplicate options, as field values by dest."""
    labels = v["labels"] or ""
    for dest in ("labels_format", "labels_as", "label_attribute", "refs_root"):
        if not labels and (v[dest] or _BY_DEST[dest].default) != _BY_DEST[dest].default:
            raise OptionsError("%s describes --labels FILE, which is not given" % _BY_DEST[dest].flag)
    label_format = v["label_format"] or ""
    width = v["label_width"] or 0
    pad = float(v["label_pad"])
    if not 0 <= width <= MAX_LABEL_WIDTH:
        raise OptionsError("--label-width must be 0 (automatic) to %d (labels each record carries), got %d"
                           % (MAX_LABEL_WIDTH, width))
    if not label_format and (width or pad != -1.0):
        raise OptionsError("--label-width and --label-pad shape multi-label records: give --label-format too")
    if label_format == "multi-hot" and pad != -1.0:
        raise OptionsError("--label-pad pads class-ids vectors; multi-hot vectors need no padding")
    if label_format == "class-ids" and pad >= 0 and pad == int(pad):
        raise OptionsError("--label-pad %g could be read as a class id: use a negative value such as -1" % pad)
    if v["allow_new_classes"] and not v["class_map"] and not v["incremental"]:
        raise OptionsError("--allow-new-classes extends --class-map FILE (or an --incremental run's classes), "
                           "which is not given")
    if v["incremental"] and (v["dedup"] or v["check_duplicates"] or v["stratify"]):
        raise OptionsError("--incremental adds new images without revisiting the old ones, so it cannot "
                           "--stratify or look for duplicates (--dedup, --check-duplicates) across them; "
                           "convert the whole collection again for that")
    return {
        "labels": labels,
        "labels_format": v["labels_format"] or "",
        "labels_as": v["labels_as"] or "auto",
        "label_attribute": v["label_attribute"] or "",
        "refs_root": refs_root(v["refs_root"] or "", v["input"] or ""),
        "label_format": label_format,
        "label_width": width,
        "label_pad": pad,
        "class_map": v["class_map"] or "",
        "check_duplicates": bool(v["dedup"] or v["check_duplicates"]),
    }


def coerce(opt: Opt, value: Any, name: str) -> Any:
    """A value given in YAML or as a keyword, checked and converted the way argparse treats the flag's text.

    ``name`` is how the caller refers to the option in the message (a YAML key, a keyword).
    """
    if opt.action == "store_true":
        if not isinstance(value, bool) and not (value is None and opt.default is None):
            raise OptionsError("%s must be true or false, got %r" % (name, value))
        return value
    if value is None:
        return opt.default
    if isinstance(value, (list, tuple)) and opt.type is str:
        value = ",".join(str(v) for v in value)
    try:
        value = _convert(opt.type, value)
    except (TypeError, ValueError):
        raise OptionsError("%s: %r is not a valid %s" % (name, value, opt.type.__name__)) from None
    if opt.choices and value not in opt.choices:
        raise OptionsError("%s: %r is not one of %s" % (name, value, ", ".join(map(str, opt.choices))))
    return value


def _convert(kind: type, value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        raise TypeError(value)  # True is an int to Python, not a number of pixels
    if kind is int and isinstance(value, float):
        if value != int(value):
            raise ValueError(value)  # 2.5 images per shard is not 2
        return int(value)
    return kind(value)


# ---------------------------------------------------------------- places: local paths and s3:// URIs

SUPPORTED_LOCATIONS = "a local path or an s3://bucket/prefix URI"
# "name:/" or "name://" at the start is taken for a URL, not a relative path (a local folder of
# that name can still be given as ./name:/...): never a local folder named "gs:" by accident.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/")


def check_location(flag: str, value: str) -> None:
    """Refuse a URL whose scheme this tool does not read or write, naming it and what is supported.

    Without this, ``gs://bucket/photos`` would be a local folder named ``gs:``.
    """
    found = _URL.match(value)
    if not found or value.startswith("s3://"):
        return
    scheme = found.group(1)
    if scheme.lower() == "s3":
        raise OptionsError("%s %s: write the scheme as s3:// (lower case, two slashes), e.g. s3://%s"
                           % (flag, value, value[found.end():].lstrip("/")))
    if scheme.lower() == "file":
        path = "/" + value[found.end():].lstrip("/")
        raise OptionsError("%s %s: file:// URLs are not read; give the local path, e.g. %s %s" % (flag, value, flag, path))
    raise OptionsError("%s %s: the %s:// scheme is not supported; use %s" % (flag, value, scheme, SUPPORTED_LOCATIONS))


def folders_overlap(input_uri: str, output_uri: str) -> str:
    """Why ``--output`` cannot be used with ``--input`` ("" when it can).

    The same folder, or one inside the other, is refused: an output inside the input
    is listed as images (its folders as classes) by the next run, and an input inside
    the output is in the way of the files this tool writes and removes there. Local
    folders are compared by real path (symbolic links, ``..`` and relative spellings
    resolved); s3:// URIs by bucket and key prefix, as S3 compares keys.
    """
    if input_uri.startswith("s3://") != output_uri.startswith("s3://"):
        return ""
    if input_uri.startswith("s3://"):
        # keys are plain strings: "a//b" is not "a/b"; only the trailing "/" is the tool's own spelling
        real_in, real_out = input_uri.rstrip("/"), output_uri.rstrip("/")
    else:
        real_in, real_out = os.path.realpath(input_uri), os.path.realpath(output_uri)
    shown = "" if (real_in, real_out) == (input_uri.rstrip("/"), output_uri.rstrip("/")) else (
        " (%s and %s)" % (real_in, real_out))
    if real_in == real_out:
        return "--output %s is the --input folder%s: choose another --output" % (output_uri, shown)
    if real_out.startswith(real_in.rstrip("/") + "/"):
        return ("--output %s is inside --input %s%s: the next run would list the output as images; "
                "choose an --output outside the input" % (output_uri, input_uri, shown))
    if real_in.startswith(real_out.rstrip("/") + "/"):
        return ("--input %s is inside --output %s%s: the output folder must hold only this tool's files; "
                "choose an --output outside the input" % (input_uri, output_uri, shown))
    return ""


def refs_root(value: str, input_root: str = "") -> str:
    """``--refs-root``: a prefix that label-file paths start with (its trailing '/' is implied).

    It must not lie inside ``--input``, nor ``--input`` inside it: a path under both
    could be read two ways (as a path under --input, or as the rest after the prefix).
    """
    value = value.strip()
    if not value:
        return ""
    if value.rstrip("/") in ("", "s3:"):
        raise OptionsError("--refs-root %r: give the prefix the label file's paths start with, e.g. "
                           "--refs-root s3://bucket/images/" % value)
    if "://" in value and not value.startswith("s3://"):
        raise OptionsError("--refs-root %r: only s3:// prefixes and paths are understood" % value)
    if input_root and _nested(value, input_root):
        raise OptionsError(
            "--refs-root %s and --input %s lie one inside the other, so a path under both could be read two ways; "
            "give --refs-root the prefix of the other copy of the images, or leave it out when the label file "
            "names the images under --input" % (value, input_root))
    return value


def _nested(a: str, b: str) -> bool:
    """Whether one of two different prefixes (both s3://, or both local) lies inside the other."""
    if a.startswith("s3://") != b.startswith("s3://"):
        return False
    if not a.startswith("s3://"):
        a, b = os.path.abspath(a), os.path.abspath(b)
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a != b and (a.startswith(b) or b.startswith(a))


def s3_settings(values: argparse.Namespace | Mapping[str, Any]) -> S3Settings:
    """The validated S3 settings from parsed flags (any of the ``--s3-*`` flags; AWS_ENDPOINT_URL_S3)."""
    given = vars(values) if isinstance(values, argparse.Namespace) else values
    return _s3_from({o.dest: given.get(o.dest, o.default) for o in JOB_OPTIONS if o.group == "s3"})


def _s3_from(v: Mapping[str, Any]) -> S3Settings:
    from urllib.parse import urlsplit

    endpoint = (v["s3_endpoint_url"] or os.environ.get("AWS_ENDPOINT_URL_S3", "")).strip()
    if "@" in endpoint:  # checked first: the message must not repeat a secret
        raise OptionsError(
            "--s3-endpoint-url must not hold credentials; use the environment, an AWS profile or an instance role"
        )
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OptionsError("--s3-endpoint-url %r: expected a URL such as http://host:9000" % endpoint)
    sse = v["s3_sse"] or ""
    key_id = v["s3_sse_kms_key_id"] or ""
    if key_id and sse == "AES256":
        raise OptionsError("--s3-sse-kms-key-id needs --s3-sse aws:kms (AES256 is SSE-S3, which takes no key)")
    if key_id and not sse:
        sse = "aws:kms"
    return S3Settings(
        endpoint_url=endpoint,
        region=v["s3_region"] or "",
        sse=sse,
        sse_kms_key_id=key_id,
        requester_pays=bool(v["s3_requester_pays"]),
    )


def error_limit(max_errors: float, total_inputs: int) -> int | None:
    """The largest number of skipped inputs allowed, or None for no limit."""
    if max_errors < 0:
        return None
    if max_errors >= 1 or max_errors == 0:
        return int(max_errors)
    return int(max_errors * total_inputs)


# ---------------------------------------------------------------- argparse, README, YAML


def _format_default(opt: Opt) -> str:
    if opt.action == "store_true":
        return "off"
    if opt.default in (None, ""):
        return "required" if opt.dest in ("input", "output") else "none"
    return str(opt.default)


def option_flags() -> list[str]:
    """Every flag of the job (for "did you mean")."""
    return [flag for opt in OPTIONS for flag in opt.flags]


def add_options(parser: argparse.ArgumentParser, dests: Iterable[str] | None = None, title: str | None = None,
                describe: bool = True) -> None:
    """Add the options (all, or those named by ``dests``) to ``parser``, in their groups.

    ``title`` replaces the group titles (one group for all); ``describe=False`` leaves
    the default and example out of the help (for a formatter that adds the default).
    """
    chosen = [o for o in OPTIONS if dests is None or o.dest in set(dests)]
    if title is not None:
        group = parser.add_argument_group(title)
        groups = {key: group for key, _ in GROUPS}
    else:
        groups = {key: parser.add_argument_group(name) for key, name in GROUPS if any(o.group == key for o in chosen)}
    for opt in chosen:
        text = "%s (default: %s; e.g. %s)" % (opt.help, _format_default(opt), opt.example) if describe else opt.help
        kwargs: dict[str, Any] = {"dest": opt.dest, "help": text.replace("%", "%%"), "default": opt.default}
        if opt.action:
            kwargs["action"] = opt.action
        else:
            kwargs["type"] = opt.type
            if opt.choices:
                kwargs["choices"] = opt.choices
            kwargs["metavar"] = opt.dest.upper() if not opt.choices else None
        groups[opt.group].add_argument(*opt.flags, **kwargs)


def options_markdown() -> str:
    """The README's option table, made from ``OPTIONS``."""
    lines = []
    for key, title in GROUPS:
        rows = [o for o in OPTIONS if o.group == key]
        if not rows:
            continue
        lines.append("**%s**\n" % title)
        lines.append("| option | default | what it does | example | dataset |")
        lines.append("|---|---|---|---|---|")
        for o in rows:
            lines.append("| `%s` | %s | %s | `%s` | %s |" % (", ".join(o.flags), _format_default(o), o.help, o.example,
                                                          "yes" if o.affects_output else ""))
        lines.append("")
    return "\n".join(lines)


def load_config(path: str) -> tuple[dict[str, Any], list[str]]:
    """Option values and Beam pipeline flags from a YAML config file."""
    import stat

    import yaml

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open, /dev/zero never end
            raise OptionsError("--config %s: not a regular file" % path)
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise OptionsError("--config %s: file not found" % path) from None
    except yaml.YAMLError as exc:
        raise OptionsError("--config %s: not valid YAML (%s)" % (path, str(exc).splitlines()[0])) from None
    if not isinstance(data, dict):
        raise OptionsError("--config %s: expected a mapping of option names to values" % path)
    values: dict[str, Any] = {}
    beam_args: list[str] = []
    for key, value in data.items():
        if key == "pipeline_options":
            if not isinstance(value, dict):
                raise OptionsError("--config %s: 'pipeline_options' must be a mapping" % path)
            for bkey, bval in value.items():
                if isinstance(bval, bool):
                    if bval:
                        beam_args.append("--%s" % bkey)
                elif isinstance(bval, list):  # a repeatable flag such as --experiments
                    beam_args.extend("--%s=%s" % (bkey, item) for item in bval)
                elif bval is not None:
                    beam_args.append("--%s=%s" % (bkey, bval))
            continue
        dest = str(key).replace("-", "_")
        if dest not in _BY_DEST or dest == "config":
            raise OptionsError("--config %s: unknown option %r" % (path, key))
        try:
            values[dest] = coerce(_BY_DEST[dest], value, key)
        except OptionsError as exc:
            raise OptionsError("--config %s: %s" % (path, exc)) from None
    return values, beam_args
