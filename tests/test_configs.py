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
from pipeline.run import RUNNER_ALIASES, parse, pipeline_options

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
    opts, runner = pipeline_options(all_beam_args, classes=3)
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
    opts, _ = pipeline_options(beam_args, classes=3)
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
