"""configs/*.yaml: each one loads, names only real options and Beam flags, and flags override it.

The direct, dask and portable-local configs also run end to end in test_runners.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    StandardOptions,
    _BeamArgumentParser,
)

import apache_beam.runners.dask.dask_runner  # noqa: F401  (registers the --dask_* flags)
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from conftest import REPO, run_cli
from imgrec.options import OptionsError, load_config
from pipeline.cli import parse
from pipeline.runners import RUNNER_ALIASES, pipeline_options

CONFIGS = REPO / "configs"
NAMES = ("direct", "dask", "portable-local", "flink", "spark", "dataflow")
RUNNERS = {
    "direct": "DirectRunner",
    "dask": RUNNER_ALIASES["DaskRunner"],
    "portable-local": "PortableRunner",
    "flink": "PortableRunner",
    "spark": "PortableRunner",
    "dataflow": "DataflowRunner",
}


def config(name: str) -> Path:
    return CONFIGS / ("%s.yaml" % name)


def unknown_beam_flags(flags: list[str]) -> list[str]:
    """The flags no Beam options class defines (Beam itself only warns about them, then drops them)."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(flags)
    return unknown


def test_the_shipped_configs_are_all_there():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_names_real_options_and_beam_flags(name, tmp_path):
    values, beam_args = load_config(str(config(name)))
    assert values, "a config sets at least one of our options"
    assert unknown_beam_flags(beam_args) == []
    options, all_beam_args, _ = parse(["--config", str(config(name)), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    for dest, value in values.items():
        assert getattr(options, dest) == value
    opts, runner = pipeline_options(all_beam_args, 3)
    assert opts.view_as(StandardOptions).runner == RUNNERS[name]
    if name == "direct":
        assert isinstance(runner, FnApiRunner)
    else:
        assert runner is None  # Beam builds it from --runner


@pytest.mark.parametrize("name", ("portable-local", "flink", "spark"))
def test_portable_configs_use_an_external_worker_pool(name):
    opts, _ = pipeline_options(load_config(str(config(name)))[1])
    portable = opts.view_as(PortableOptions)
    assert portable.environment_type == "EXTERNAL"
    assert portable.environment_config.endswith(":50000")  # where `IMAGE --worker_pool` listens
    assert portable.job_endpoint


def test_dataflow_config_runs_the_project_image():
    values, beam_args = load_config(str(config("dataflow")))
    flags = dict(arg[2:].split("=", 1) for arg in beam_args)
    assert flags["sdk_container_image"].rsplit("/", 1)[-1].startswith("imgrec-beam:")
    assert flags["sdk_location"] == "container"
    assert "setup_file" not in flags and "save_main_session" not in flags


def test_flags_override_the_config(tmp_path):
    options, beam_args, _ = parse(
        [
            "--config", str(config("dask")), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--threads", "1", "--shard-size-mb", "64", "--dask_client_address=tcp://10.0.0.1:8786",
        ]
    )
    assert (options.threads, options.shard_size_mb) == (1, 64.0)
    assert load_config(str(config("dask")))[0]["threads"] != 1
    opts, _ = pipeline_options(beam_args, 3)
    assert opts.view_as(DaskOptions).address == "tcp://10.0.0.1:8786"


@pytest.mark.parametrize(
    "text, message",
    [
        ("threads: [1, 2]\n", "threads: [1, 2] is not a valid int"),
        ("images_per_shard: many\n", "images_per_shard: 'many' is not a valid int"),
        ("validate: fast\n", "validate: 'fast' is not one of header, decode"),
        ("overwrite: yes please\n", "overwrite must be true or false"),
        ("shards: 4\n", "unknown option 'shards'"),
        ("pipeline_options: [runner]\n", "'pipeline_options' must be a mapping"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_config_values_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(OptionsError, match="--config %s: " % path) as err:
        load_config(str(path))
    assert message in str(err.value)


def test_config_values_are_converted_like_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "exts: [.jpg, .webp]\nsplit_seed: 2024\nshard_size_mb: 64\ncenter_crop: true\n"
        "pipeline_options:\n  experiments: [a, b]\n  save_main_session: false\n  runner: DirectRunner\n"
    )
    values, beam_args = load_config(str(path))
    assert values == {"exts": ".jpg,.webp", "split_seed": "2024", "shard_size_mb": 64.0, "center_crop": True}
    assert beam_args == ["--experiments=a", "--experiments=b", "--runner=DirectRunner"]


def test_bad_config_on_the_command_line_is_one_line(tmp_path, sample_dir):
    path = tmp_path / "bad.yaml"
    path.write_text("quality: best\n")
    proc = run_cli("--config", path, "--input", sample_dir, "--output", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --config %s: quality: 'best' is not a valid int" % path
    ]
    assert not (tmp_path / "out").exists()


def test_docs_give_a_command_for_every_config():
    text = (REPO / "docs" / "runners.md").read_text()
    for name in NAMES:
        assert "--config configs/%s.yaml" % name in text, name


# ---------------------------------------------------------------- the options table: ConvertOptions, keywords, identity

import dataclasses  # noqa: E402
import pickle  # noqa: E402
import shlex  # noqa: E402

from imgrec.options import (  # noqa: E402
    FIRST_IDENTITY_FIELDS,
    GROUPED_FIELDS,
    JOB_OPTIONS,
    OPTIONS,
    ConvertOptions,
    from_kwargs,
)

BASE = ["--input", "/data/photos", "--output", "/data/rec"]


def test_convert_options_has_one_field_per_option_of_the_table():
    names = [f.name for f in dataclasses.fields(ConvertOptions)]
    expected = []
    for opt in JOB_OPTIONS:
        name = opt.into.split(".")[0] if opt.into else opt.dest
        if name not in expected:
            expected.append(name)
    assert names == expected
    assert set(GROUPED_FIELDS) <= set(names)
    for opt in OPTIONS:
        if opt.command_only:  # the command line's own: logging, --config
            assert opt.dest not in names
    options = from_kwargs(input="/data/photos", output="/data/rec", train_ratio=0.7, val_ratio=0.3, resize=224,
                          s3_region="eu-west-1")
    # every option is readable by its dest, also those inside a grouped field
    assert (options.train_ratio, options.ratios.train, options.resize, options.encode.resize) == (0.7, 0.7, 224, 224)
    assert options.s3_region == options.s3.region == "eu-west-1"
    assert pickle.loads(pickle.dumps(options)) == options  # Beam sends it to workers


def test_the_fields_defaults_are_what_parsing_gives(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert ConvertOptions(input="/data/photos", output="/data/rec") == from_kwargs(input="/data/photos",
                                                                                   output="/data/rec")
    assert parse(BASE)[0] == from_kwargs(input="/data/photos", output="/data/rec")


def test_keywords_and_flags_give_the_same_options(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    flags = parse(BASE + ["--resize", "256", "--quality", "90", "--train-ratio", "0.7", "--val-ratio", "0.2",
                          "--test-ratio", "0.1", "--exts", ".JPG,.png", "--labels", "l.csv", "--labels-as", "names",
                          "--max-errors", "1%", "--split-seed", "7", "--s3-sse-kms-key-id", "alias/k"])[0]
    keywords = from_kwargs(input="/data/photos", output="/data/rec", resize=256, quality=90, train_ratio=0.7,
                           val_ratio=0.2, test_ratio=0.1, exts=[".JPG", ".png"], labels="l.csv", labels_as="names",
                           max_errors="1%", split_seed=7, s3_sse_kms_key_id="alias/k")
    assert keywords == flags
    assert (keywords.pass_through, keywords.exts, keywords.max_errors, keywords.s3.sse) == (
        False, (".jpg", ".png"), 0.01, "aws:kms")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resise": 256}, "unknown option 'resise' (did you mean resize?)"),
        ({"train_ration": 0.7}, "unknown option 'train_ration' (did you mean train_ratio?)"),
        ({"quiet": True}, "quiet is an option of the command line (--quiet), not of the conversion"),
        ({"resize": "big"}, "resize: 'big' is not a valid int"),
        ({"resize": 2.5}, "resize: 2.5 is not a valid int"),
        ({"resize": True}, "resize: True is not a valid int"),
        ({"labels_as": "name"}, "labels_as: 'name' is not one of auto, names, class-ids, multi-hot"),
        ({"center_crop": "yes"}, "center_crop must be true or false, got 'yes'"),
        # the same checks as the flags, with the flags' words
        ({"quality": 0}, "--quality for JPEG must be between 1 and 100, got 0"),
        ({"labels_as": "names"}, "--labels-as describes --labels FILE, which is not given"),
        ({"train_ratio": 0.5}, "split ratios must sum to 1"),
        ({"output": "gs://b/rec"}, "--output gs://b/rec: the gs:// scheme is not supported"),
        ({"pass_through": True, "resize": 256}, "--pass-through stores the original bytes; it cannot be combined "
                                                "with --resize, --center-crop, --quality, --encoding or --color"),
    ],
)
def test_bad_keywords_are_one_clear_error(kwargs, message):
    with pytest.raises(OptionsError) as err:
        from_kwargs(**{"input": "/data/photos", "output": "/data/rec", **kwargs})
    assert message in str(err.value)


def test_pass_through_false_re_encodes_with_the_defaults():
    assert from_kwargs(input="/data/photos", output="/data/rec").pass_through is True
    assert from_kwargs(input="/data/photos", output="/data/rec", pass_through=False).pass_through is False


# What an option's example needs beside it to be valid (and a non-default value where the example is the default).
COMPANIONS = {
    "labels_format": ["--labels", "l.txt"],
    "labels_as": ["--labels", "l.csv"],
    "label_attribute": ["--labels", "l.manifest"],
    "refs_root": ["--labels", "l.manifest"],
    "label_width": ["--label-format", "class-ids"],
    "label_pad": ["--label-format", "class-ids"],
    "allow_new_classes": ["--class-map", "classes.json"],
    "encoding": ["--quality", "9"],
    "s3_sse_kms_key_id": ["--s3-sse", "aws:kms"],
}
VALUES = {"label_pad": ["--label-pad", "-2"]}  # the example, -1, is the default
# The split ratios must sum to 1: each example comes with another ratio that makes up the difference.
RATIOS = {"train_ratio": ["--val-ratio", "0.3"], "val_ratio": ["--train-ratio", "0.85"],
          "test_ratio": ["--train-ratio", "0.65"]}


@pytest.mark.parametrize("opt", [o for o in JOB_OPTIONS if o.dest not in ("input", "output", "pass_through")],
                         ids=lambda o: o.dest)
def test_an_option_changes_the_identity_exactly_when_it_affects_the_output(opt):
    """Each option's own example value, against the same options without it."""
    base = BASE + COMPANIONS.get(opt.dest, [])
    without = parse(base)[0]
    given = parse(base + VALUES.get(opt.dest, shlex.split(opt.example)) + RATIOS.get(opt.dest, []))[0]
    assert given != without, "the example must change the options"
    assert (given.identity() != without.identity()) == opt.affects_output
    assert (given.fingerprint_fields() != without.fingerprint_fields()) == opt.affects_output  # shard digests


def test_the_identity_writes_its_first_fields_always_and_later_ones_only_when_set():
    identity = parse(BASE)[0].identity()
    assert set(identity) == FIRST_IDENTITY_FIELDS  # as written up to commit 3be9796 (tests/fixtures)
    later = parse(BASE + ["--max-file-size-mb", "64", "--labels", "l.manifest", "--refs-root", "s3://b/i/"])[0]
    assert set(later.identity()) == FIRST_IDENTITY_FIELDS | {"max_file_size_mb", "refs_root"}
    affecting = {o.into.split(".")[0] if o.into else o.dest for o in JOB_OPTIONS if o.affects_output}
    assert FIRST_IDENTITY_FIELDS <= affecting


def test_every_option_says_whether_it_affects_the_output():
    with pytest.raises(TypeError):
        type(OPTIONS[0])(("--x",), "x", "input", "help")  # affects_output has no default


def test_verify_and_preview_take_their_s3_flags_from_the_table():
    from pipeline import im2rec, preview, verify

    table = {o.dest: o for o in OPTIONS}
    for module, wanted in ((verify, {"s3_endpoint_url", "s3_region", "s3_requester_pays"}),
                           (preview, {"s3_endpoint_url", "s3_region", "s3_requester_pays", "s3_sse", "s3_sse_kms_key_id"}),
                           (im2rec, {o.dest for o in OPTIONS if o.group == "s3"})):
        actions = {a.dest: a for a in module.build_parser()._actions if a.dest.startswith("s3_")}
        assert set(actions) == wanted, module.__name__
        for dest, action in actions.items():
            opt = table[dest]
            assert tuple(action.option_strings) == opt.flags
            assert action.help.replace("%%", "%").startswith(opt.help), dest
            assert action.default == opt.default and action.choices == opt.choices
