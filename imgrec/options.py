"""The job's options: one declarative table -> argparse, YAML configs, README table.

``OPTIONS`` is the single source: ``build_parser`` makes ``--help`` from it
(grouped by purpose, each with its default and an example) and
``options_markdown`` makes the README's option table from it, so the two
cannot drift apart. ``ConvertOptions`` is the frozen, validated result.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from imgrec.images import DEFAULT_MAX_PIXELS, EncodeParams
from imgrec.planning import SplitRatios


class OptionsError(ValueError):
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
    flags: tuple[str, ...]
    dest: str
    group: str
    help: str
    default: Any = None
    type: Any = str
    example: str = ""
    action: str | None = None
    choices: Sequence[Any] | None = None


OPTIONS: tuple[Opt, ...] = (
    Opt(("--input",), "input", "input", "Folder (or s3:// prefix) whose top-level sub-folders are the classes (or whose images --labels names).",
        example="--input ./photos"),
    Opt(("--exts",), "exts", "input",
        "Image file extensions to take, comma-separated, case-insensitive. The content decides the format, not the "
        "name: JPEG and PNG are stored as they are; other formats OpenCV reads (GIF, WebP, BMP, TIFF, ...) are "
        "re-encoded with --resize/--encoding and otherwise skipped (unsupported_format): mxnet, DALI and SageMaker do "
        "not all decode them.",
        default=".jpg,.jpeg,.png", example="--exts .jpg,.jpeg,.jfif"),
    Opt(("--max-pixels",), "max_pixels", "input",
        "Refuse images whose header declares more pixels than this (decompression bombs), in every format, before "
        "any pixel buffer exists; content whose size cannot be read from its header is refused too.",
        default=DEFAULT_MAX_PIXELS, type=int, example="--max-pixels 50000000"),
    Opt(("--max-file-size-mb",), "max_file_size_mb", "input",
        "Skip (and report as too_large) input files larger than this many MiB, before reading them. Only "
        "regular files are ever opened: FIFOs, devices and sockets are reported as not_regular_file.",
        default=DEFAULT_MAX_FILE_MB, type=float, example="--max-file-size-mb 1024"),
    Opt(("--validate",), "validate", "input",
        "How every image is checked: 'header' parses its dimensions and end marker; 'decode' also decodes it fully "
        "and refuses it when the decoder reports corrupt or missing data (corrupt_data), as re-encoding always does.",
        default="header", choices=("header", "decode"), example="--validate decode"),
    Opt(("--max-errors",), "max_errors", "input",
        "Fail (and write no manifest) when more inputs than this are skipped: a count, or a fraction of all inputs "
        "such as 0.01. Empty = carry on and report.",
        default="", example="--max-errors 0.01"),
    Opt(("--train-ratio",), "train_ratio", "split", "Share of images in the train split.",
        default=0.8, type=float, example="--train-ratio 0.7"),
    Opt(("--val-ratio",), "val_ratio", "split", "Share of images in the validation split.",
        default=0.2, type=float, example="--val-ratio 0.15"),
    Opt(("--test-ratio",), "test_ratio", "split", "Share of images in the test split.",
        default=0.0, type=float, example="--test-ratio 0.15"),
    Opt(("--split-seed",), "split_seed", "split",
        "Salt of the path hash that decides each image's split, shard and order.",
        default="0", example="--split-seed 2024"),
    Opt(("--labels",), "labels", "split",
        "Label file (local or s3://) naming images under --input and their labels: an im2rec .lst, a CSV "
        "(path,label or path,label1;label2), JSON Lines ({\"path\": ..., \"labels\": [...]}) or a SageMaker "
        "Ground Truth manifest (.manifest). Without it, each top-level folder of --input is a class.",
        default="", example="--labels labels.csv"),
    Opt(("--labels-format",), "labels_format", "split",
        "Format of --labels when its extension does not tell (.lst, .csv, .jsonl, .manifest).",
        default="", choices=("lst", "csv", "jsonl", "manifest"), example="--labels-format csv"),
    Opt(("--labels-as",), "labels_as", "split",
        "How the label values in --labels are read: class names, class ids (whole numbers; negative = padding) "
        "or multi-hot 0/1 vectors. 'auto': a .lst whose lines all have the same number W > 1 of label columns, "
        "all 0 or 1, is multi-hot over W classes, any other .lst gives class ids; CSV/JSON Lines give class ids "
        "when every label is a whole number >= 0, class names when none is a number, and a mix is refused; in a "
        "manifest a list is multi-hot unless its metadata says multilabel.",
        default="auto", choices=("auto", "names", "class-ids", "multi-hot"), example="--labels-as names"),
    Opt(("--label-attribute",), "label_attribute", "split",
        "The label attribute of a Ground Truth manifest; none = the one attribute beside source-ref (or image-ref).",
        default="", example="--label-attribute my-labelling-job"),
    Opt(("--refs-root",), "refs_root", "split",
        "For a label file whose paths point at another copy of the images (a manifest's s3:// refs, images "
        "since copied to --input): the prefix those paths start with, which stands for --input. A path under it "
        "is read as the rest of the path under --input, with the same safety rules as any path.",
        default="", example="--refs-root s3://bucket/images/"),
    Opt(("--label-format",), "label_format", "split",
        "Write multi-label records: labels as a float32 vector (IRHeader flag = its width). 'multi-hot': one 0/1 "
        "per class (SageMaker's multi_label=1 layout); 'class-ids': the image's class ids padded to --label-width. "
        "Default: one scalar label per image.",
        default="", choices=("multi-hot", "class-ids"), example="--label-format multi-hot"),
    Opt(("--label-width",), "label_width", "split",
        "Vector width of --label-format class-ids (0 = the most labels any image has). Readers need it: "
        "ImageRecordIter(label_width=...).",
        default=0, type=int, example="--label-width 5"),
    Opt(("--label-pad",), "label_pad", "split", "Value that pads --label-format class-ids vectors to their width.",
        default=-1.0, type=float, example="--label-pad -1"),
    Opt(("--class-map",), "class_map", "split",
        "Pin class ids: a previous run's classes.json or labels.txt (or a JSON list of names). A class not in it "
        "is an error unless --allow-new-classes.",
        default="", example="--class-map old/classes.json"),
    Opt(("--allow-new-classes",), "allow_new_classes", "split",
        "Classes missing from --class-map get the next ids after the map's, in sorted order.",
        default=False, type=None, action="store_true", example="--allow-new-classes"),
    Opt(("--allow-lookalike-classes",), "allow_lookalike_classes", "split",
        "Keep class names that differ only in case or Unicode normalisation ('Cat' and 'cat', NFC and NFD "
        "'caf\u00e9') as separate classes, with a warning; without it such names are refused.",
        default=False, type=None, action="store_true", example="--allow-lookalike-classes"),
    Opt(("--stratify",), "stratify", "split",
        "Give each class (each label set, for multi-label) every split's share to within one image, still "
        "decided by the path hash.",
        default=False, type=None, action="store_true", example="--stratify"),
    Opt(("--check-duplicates",), "check_duplicates", "split",
        "Read every image once more during planning to hash its content: identical files go to the same split, "
        "duplicates and label conflicts are listed in report.jsonl.",
        default=False, type=None, action="store_true", example="--check-duplicates"),
    Opt(("--dedup",), "dedup", "split",
        "Like --check-duplicates, and keep only one file (the first path) of each set of identical files.",
        default=False, type=None, action="store_true", example="--dedup"),
    Opt(("--pass-through",), "pass_through", "encoding",
        "Store the original file bytes unchanged (the default unless an encoding option is given).",
        default=None, type=None, action="store_true", example="--pass-through"),
    Opt(("--resize",), "resize", "encoding", "Re-encode with the shorter edge resized to N pixels, aspect kept.",
        default=0, type=int, example="--resize 256"),
    Opt(("--center-crop",), "center_crop", "encoding", "Re-encode the largest centred square.",
        default=False, type=None, action="store_true", example="--center-crop"),
    Opt(("--quality",), "quality", "encoding", "JPEG quality 1-100, or PNG compression 0-9.",
        default=95, type=int, example="--quality 90"),
    Opt(("--encoding",), "encoding", "encoding", "Format of re-encoded images.",
        default=".jpg", choices=(".jpg", ".png"), example="--encoding .png"),
    Opt(("--color",), "color", "encoding", "Decode as colour (1), grayscale (0) or unchanged with alpha (-1).",
        default=1, type=int, choices=(1, 0, -1), example="--color 0"),
    Opt(("--output",), "output", "output", "Folder (or s3:// prefix) to write the dataset to.",
        example="--output ./out"),
    Opt(("--name",), "name", "output", "File name stem of the shards: NAME-00000-of-00004.rec.",
        default="data", example="--name imagenet"),
    Opt(("--shard-size-mb",), "shard_size_mb", "output", "Target shard size in MiB (measured on input bytes).",
        default=256.0, type=float, example="--shard-size-mb 512"),
    Opt(("--images-per-shard",), "images_per_shard", "output",
        "Target number of images per shard (instead of --shard-size-mb).",
        default=0, type=int, example="--images-per-shard 10000"),
    Opt(("--idx-beside-rec",), "idx_beside_rec", "output",
        "Put each .idx next to its .rec (Gluon's ImageRecordDataset wants this) instead of OUT/idx/.",
        default=False, type=None, action="store_true", example="--idx-beside-rec"),
    Opt(("--overwrite",), "overwrite", "output", "Replace a different dataset already in --output.",
        default=False, type=None, action="store_true", example="--overwrite"),
    Opt(("--incremental",), "incremental", "output",
        "Scheduled runs over a growing input: convert only images not yet in --output into new shards and add "
        "them to its manifest; existing images keep their split, label, id and shard, and the class map stays "
        "fixed (a new class is an error unless --allow-new-classes). Nothing new: nothing changes.",
        default=False, type=None, action="store_true", example="--incremental"),
    Opt(("--resume",), "resume", "output",
        "After a crash: keep the shards already complete and verified (sha256) and redo only the rest.",
        default=False, type=None, action="store_true", example="--resume"),
    Opt(("--fsync",), "fsync", "output",
        "Flush every local output file to disk (fsync) before it is renamed into place, so a completed run "
        "survives a power cut. Off by default, like im2rec.py: a crashed or killed job never leaves output that "
        "looks complete either way; fsync costs about 0.3 s per GB written. S3 output is durable on upload.",
        default=False, type=None, action="store_true", example="--fsync"),
    Opt(("--single-file",), "single_file", "output",
        "Also write one .rec (and .idx) per split, the shards concatenated, under OUT/single/ (on S3 by "
        "server-side copy): SageMaker's documentation asks for one .rec per channel.",
        default=False, type=None, action="store_true", example="--single-file"),
    Opt(("--s3-endpoint-url",), "s3_endpoint_url", "s3",
        "Endpoint of an S3-compatible store (MinIO, Ceph, ...); the environment variable AWS_ENDPOINT_URL_S3 "
        "is used when this is not given. Credentials come only from boto3's standard chain.",
        default="", example="--s3-endpoint-url http://minio.local:9000"),
    Opt(("--s3-region",), "s3_region", "s3", "AWS region of the buckets (else boto3's chain: AWS_REGION, profile).",
        default="", example="--s3-region eu-west-1"),
    Opt(("--s3-sse",), "s3_sse", "s3",
        "Server-side encryption of every output object: AES256 (SSE-S3) or aws:kms (SSE-KMS).",
        default="", choices=("AES256", "aws:kms"), example="--s3-sse aws:kms"),
    Opt(("--s3-sse-kms-key-id",), "s3_sse_kms_key_id", "s3",
        "KMS key (id, ARN or alias) for --s3-sse aws:kms; without it S3 uses the account's aws/s3 key.",
        default="", example="--s3-sse-kms-key-id alias/datasets"),
    Opt(("--s3-requester-pays",), "s3_requester_pays", "s3",
        "Accept the request charges of requester-pays buckets (needed to read one).",
        default=False, type=None, action="store_true", example="--s3-requester-pays"),
    Opt(("--threads",), "threads", "runner",
        "Images checked/encoded at once inside each worker (OpenCV releases the GIL). 0 = one per core plus "
        "one, except 1 for local pass-through (short Python work, where more threads only add GIL hand-offs; "
        "a hash thread and a write thread still run beside it).",
        default=0, type=int, example="--threads 4"),
    Opt(("--read-threads",), "read_threads", "runner",
        "Images read ahead at once per worker, on their own threads, while --threads encode: for S3 input, "
        "where each read waits on the network. 0 = 16 for s3:// input, else no read-ahead.",
        default=0, type=int, example="--read-threads 32"),
    Opt(("--config",), "config", "runner", "YAML file of option values (and 'pipeline_options' for Beam); flags override it.",
        example="--config configs/direct.yaml"),
    Opt(("--log-level",), "log_level", "runner", "Logging level.",
        default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), example="--log-level DEBUG"),
    Opt(("--quiet",), "quiet", "runner",
        "For scheduled runs: no progress line and no summary on the terminal, only warnings and errors "
        "(summary.txt is still written).",
        default=False, type=None, action="store_true", example="--quiet"),
    Opt(("--dry-run",), "dry_run", "runner",
        "List, label and split without encoding or writing: print counts per class and split, the class "
        "imbalance, the shard count and the estimated output size. --output is optional.",
        default=False, type=None, action="store_true", example="--dry-run"),
)


def _format_default(opt: Opt) -> str:
    if opt.action == "store_true":
        return "off"
    if opt.default in (None, ""):
        return "required" if opt.dest in ("input", "output") else "none"
    return str(opt.default)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def add_options(parser: argparse.ArgumentParser) -> None:
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS}
    for opt in OPTIONS:
        text = "%s (default: %s; e.g. %s)" % (opt.help, _format_default(opt), opt.example)
        kwargs: dict[str, Any] = {"dest": opt.dest, "help": text.replace("%", "%%")}
        if opt.action:
            kwargs["action"] = opt.action
            kwargs["default"] = opt.default
        else:
            kwargs["default"] = opt.default
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
        lines.append("| option | default | what it does | example |")
        lines.append("|---|---|---|---|")
        for o in rows:
            lines.append("| `%s` | %s | %s | `%s` |" % (", ".join(o.flags), _format_default(o), o.help, o.example))
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
    known = {o.dest: o for o in OPTIONS}
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
        dest = key.replace("-", "_")
        if dest not in known or dest == "config":
            raise OptionsError("--config %s: unknown option %r" % (path, key))
        values[dest] = _config_value(path, key, known[dest], value)
    return values, beam_args


def _config_value(path: str, key: str, opt: Opt, value: Any) -> Any:
    """A config value checked and converted the way argparse treats the same flag."""
    if opt.action == "store_true":
        if not isinstance(value, bool):
            raise OptionsError("--config %s: %s must be true or false, got %r" % (path, key, value))
        return value
    if isinstance(value, list) and opt.type is str:
        value = ",".join(str(v) for v in value)
    try:
        value = opt.type(value) if opt.type and value is not None else value
    except (TypeError, ValueError):
        raise OptionsError("--config %s: %s: %r is not a valid %s" % (path, key, value, opt.type.__name__)) from None
    if opt.choices and value not in opt.choices:
        raise OptionsError(
            "--config %s: %s: %r is not one of %s" % (path, key, value, ", ".join(map(str, opt.choices)))
        )
    return value


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


@dataclass(frozen=True)
class ConvertOptions:
    """Everything the job needs to know, validated before any work starts."""

    input: str
    output: str
    exts: tuple[str, ...] = (".jpg", ".jpeg", ".png")
    ratios: SplitRatios = field(default_factory=SplitRatios)
    split_seed: str = "0"
    pass_through: bool = True
    encode: EncodeParams = field(default_factory=EncodeParams)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_size_mb: float = DEFAULT_MAX_FILE_MB
    validate: str = "header"
    name: str = "data"
    shard_size_mb: float = 256.0
    images_per_shard: int = 0
    idx_beside_rec: bool = False
    overwrite: bool = False
    threads: int = 0
    max_errors: float = -1.0  # -1 = no limit; >= 1 a count; (0, 1) a fraction of all inputs
    resume: bool = False
    fsync: bool = False
    incremental: bool = False
    read_threads: int = 0
    s3: S3Settings = field(default_factory=S3Settings)
    labels: str = ""  # label file; "" = class folders
    labels_format: str = ""
    labels_as: str = "auto"
    label_attribute: str = ""
    refs_root: str = ""  # label-file paths under this prefix are paths under --input
    label_format: str = ""  # "" (one scalar label), "multi-hot" or "class-ids"
    label_width: int = 0  # vector width; resolved by the launcher once the classes are known
    label_pad: float = -1.0
    class_map: str = ""
    allow_new_classes: bool = False
    allow_lookalike_classes: bool = False
    stratify: bool = False
    check_duplicates: bool = False  # implied by dedup
    dedup: bool = False
    single_file: bool = False
    dry_run: bool = False

    def fingerprint_fields(self) -> dict[str, Any]:
        """The options that decide the output bytes (what makes two datasets 'the same')."""
        d = self.to_json()
        # class_map/allow_new_classes act through the labels they give (in every shard's digest).
        for volatile in ("overwrite", "threads", "output", "s3", "max_errors", "resume", "class_map",
                         "allow_new_classes", "single_file", "dry_run", "incremental", "read_threads", "fsync",
                         "allow_lookalike_classes"):
            d.pop(volatile, None)
        # Datasets written before --max-file-size-mb existed carry no such field: at its
        # default the limit is left out, so they keep their identity (--incremental, re-runs).
        if d.get("max_file_size_mb") == DEFAULT_MAX_FILE_MB:
            d.pop("max_file_size_mb")
        return d

    @property
    def max_file_bytes(self) -> int:
        """``--max-file-size-mb`` in bytes: input files larger than this are skipped unread."""
        return int(self.max_file_size_mb * (1 << 20))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["exts"] = list(self.exts)
        return d


_SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def from_args(ns: argparse.Namespace) -> ConvertOptions:
    if not ns.input:
        raise OptionsError("--input is required (a folder of class folders, or an s3:// prefix)")
    dry_run = bool(getattr(ns, "dry_run", False))
    if not ns.output and not dry_run:
        raise OptionsError("--output is required (a folder or an s3:// prefix)")
    try:
        ratios = SplitRatios(ns.train_ratio, ns.val_ratio, ns.test_ratio)
    except ValueError as exc:
        raise OptionsError(str(exc)) from None
    exts = tuple(
        sorted({("." + e.strip().lstrip(".")).lower() for e in str(ns.exts).split(",") if e.strip()})
    )
    if not exts:
        raise OptionsError("--exts must list at least one extension")
    encoding_given = bool(ns.resize) or ns.center_crop or ns.encoding != ".jpg" or ns.color != 1 or ns.quality != 95
    if ns.pass_through and encoding_given:
        raise OptionsError(
            "--pass-through stores the original bytes; it cannot be combined with "
            "--resize, --center-crop, --quality, --encoding or --color"
        )
    pass_through = not encoding_given
    if ns.resize < 0:
        raise OptionsError("--resize must be a positive number of pixels, got %d" % ns.resize)
    if ns.encoding == ".jpg" and not 1 <= ns.quality <= 100:
        raise OptionsError("--quality for JPEG must be between 1 and 100, got %d" % ns.quality)
    if ns.encoding == ".png" and not 0 <= ns.quality <= 9:
        raise OptionsError("--quality for PNG is the compression level 0-9, got %d" % ns.quality)
    if ns.shard_size_mb <= 0:
        raise OptionsError("--shard-size-mb must be positive, got %g" % ns.shard_size_mb)
    if ns.images_per_shard < 0:
        raise OptionsError("--images-per-shard must be positive, got %d" % ns.images_per_shard)
    if ns.max_pixels <= 0:
        raise OptionsError("--max-pixels must be positive, got %d" % ns.max_pixels)
    if ns.read_threads < 0:
        raise OptionsError("--read-threads must be 0 (automatic) or more, got %d" % ns.read_threads)
    if ns.threads < 0:
        raise OptionsError("--threads must be 0 (one per core) or more, got %d" % ns.threads)
    if not ns.name or not set(ns.name) <= _SAFE_NAME_CHARS or ns.name.startswith("."):
        raise OptionsError(
            "--name %r: use letters, digits, '.', '_' and '-' only (it becomes part of file names)" % ns.name
        )
    max_file_mb = float(getattr(ns, "max_file_size_mb", DEFAULT_MAX_FILE_MB))
    if not 0 < max_file_mb <= MAX_FILE_MB:
        raise OptionsError("--max-file-size-mb must be above 0 and at most %g (RecordIO's record limit), got %g"
                           % (MAX_FILE_MB, max_file_mb))
    if ns.output:
        overlap = folders_overlap(ns.input, ns.output)
        if overlap:
            raise OptionsError(overlap)
    s3 = s3_settings(ns)
    label_fields = label_options(ns)
    return ConvertOptions(
        input=ns.input,
        output=ns.output,
        exts=exts,
        ratios=ratios,
        split_seed=str(ns.split_seed),
        pass_through=pass_through,
        encode=EncodeParams(
            resize=ns.resize,
            center_crop=bool(ns.center_crop),
            quality=ns.quality,
            encoding=ns.encoding,
            color=ns.color,
        ),
        max_pixels=ns.max_pixels,
        max_file_size_mb=max_file_mb,
        validate=ns.validate,
        name=ns.name,
        shard_size_mb=ns.shard_size_mb,
        images_per_shard=ns.images_per_shard,
        idx_beside_rec=bool(ns.idx_beside_rec),
        overwrite=bool(ns.overwrite),
        threads=ns.threads,
        max_errors=parse_max_errors(ns.max_errors),
        resume=bool(ns.resume),
        fsync=bool(ns.fsync),
        incremental=bool(ns.incremental),
        read_threads=ns.read_threads,
        s3=s3,
        single_file=bool(getattr(ns, "single_file", False)),
        dry_run=dry_run,
        **label_fields,
    )


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


def label_options(ns: argparse.Namespace) -> dict[str, Any]:
    """The validated label, class-map, stratify and duplicate options, as ConvertOptions fields."""
    labels = getattr(ns, "labels", "") or ""
    for flag, dest, default in (("--labels-format", "labels_format", ""), ("--labels-as", "labels_as", "auto"),
                                ("--label-attribute", "label_attribute", ""), ("--refs-root", "refs_root", "")):
        if not labels and (getattr(ns, dest, default) or default) != default:
            raise OptionsError("%s describes --labels FILE, which is not given" % flag)
    label_format = getattr(ns, "label_format", "") or ""
    width = getattr(ns, "label_width", 0) or 0
    pad = float(getattr(ns, "label_pad", -1.0))
    if not 0 <= width <= MAX_LABEL_WIDTH:
        raise OptionsError("--label-width must be 0 (automatic) to %d (labels each record carries), got %d"
                           % (MAX_LABEL_WIDTH, width))
    if not label_format and (width or pad != -1.0):
        raise OptionsError("--label-width and --label-pad shape multi-label records: give --label-format too")
    if label_format == "multi-hot" and pad != -1.0:
        raise OptionsError("--label-pad pads class-ids vectors; multi-hot vectors need no padding")
    if label_format == "class-ids" and pad >= 0 and pad == int(pad):
        raise OptionsError("--label-pad %g could be read as a class id: use a negative value such as -1" % pad)
    class_map = getattr(ns, "class_map", "") or ""
    allow_new = bool(getattr(ns, "allow_new_classes", False))
    incremental = bool(getattr(ns, "incremental", False))
    if allow_new and not class_map and not incremental:
        raise OptionsError("--allow-new-classes extends --class-map FILE (or an --incremental run's classes), "
                           "which is not given")
    dedup = bool(getattr(ns, "dedup", False))
    if incremental and (dedup or getattr(ns, "check_duplicates", False) or getattr(ns, "stratify", False)):
        raise OptionsError("--incremental adds new images without revisiting the old ones, so it cannot "
                           "--stratify or look for duplicates (--dedup, --check-duplicates) across them; "
                           "convert the whole collection again for that")
    return {
        "labels": labels,
        "labels_format": getattr(ns, "labels_format", "") or "",
        "labels_as": getattr(ns, "labels_as", "auto") or "auto",
        "label_attribute": getattr(ns, "label_attribute", "") or "",
        "refs_root": refs_root(getattr(ns, "refs_root", "") or "", getattr(ns, "input", "") or ""),
        "label_format": label_format,
        "label_width": width,
        "label_pad": pad,
        "class_map": class_map,
        "allow_new_classes": allow_new,
        "allow_lookalike_classes": bool(getattr(ns, "allow_lookalike_classes", False)),
        "stratify": bool(getattr(ns, "stratify", False)),
        "check_duplicates": dedup or bool(getattr(ns, "check_duplicates", False)),
        "dedup": dedup,
    }


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


def s3_settings(ns: argparse.Namespace) -> S3Settings:
    """The validated S3 settings from the parsed flags (and AWS_ENDPOINT_URL_S3)."""
    from urllib.parse import urlsplit

    endpoint = (getattr(ns, "s3_endpoint_url", "") or os.environ.get("AWS_ENDPOINT_URL_S3", "")).strip()
    if "@" in endpoint:  # checked first: the message must not repeat a secret
        raise OptionsError(
            "--s3-endpoint-url must not hold credentials; use the environment, an AWS profile or an instance role"
        )
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OptionsError("--s3-endpoint-url %r: expected a URL such as http://host:9000" % endpoint)
    sse = getattr(ns, "s3_sse", "") or ""
    key_id = getattr(ns, "s3_sse_kms_key_id", "") or ""
    if key_id and sse == "AES256":
        raise OptionsError("--s3-sse-kms-key-id needs --s3-sse aws:kms (AES256 is SSE-S3, which takes no key)")
    if key_id and not sse:
        sse = "aws:kms"
    return S3Settings(
        endpoint_url=endpoint,
        region=getattr(ns, "s3_region", "") or "",
        sse=sse,
        sse_kms_key_id=key_id,
        requester_pays=bool(getattr(ns, "s3_requester_pays", False)),
    )


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


def error_limit(max_errors: float, total_inputs: int) -> int | None:
    """The largest number of skipped inputs allowed, or None for no limit."""
    if max_errors < 0:
        return None
    if max_errors >= 1 or max_errors == 0:
        return int(max_errors)
    return int(max_errors * total_inputs)
