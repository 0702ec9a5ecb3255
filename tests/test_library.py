"""The job as a library: WriteToRecordIO in a pipeline of one's own, and pipeline.convert() in a host process.

Each writes the bytes the command writes for the same images and options; a
host's logging survives convert(); errors arrive as ImgrecErrors with the
command's one line.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from conftest import load_manifest, run_cli
from imgrec.errors import ImgrecError, UsageError
from imgrec.items import Image
from transforms import ReadImageFolder, WriteToRecordIO

OPTIONS = {"images_per_shard": 4, "train_ratio": 0.6, "val_ratio": 0.2, "test_ratio": 0.2}
FLAGS = ["--images-per-shard", "4", "--train-ratio", "0.6", "--val-ratio", "0.2", "--test-ratio", "0.2"]


def data_files(out: Path) -> dict[str, bytes]:
    """Every file a reader or a person uses, except those that name the run (summary, manifest)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "summary.txt")}


def pairs(photos: Path, absolute: bool = True) -> list[tuple[str, str]]:
    return [(str(p) if absolute else str(p.relative_to(photos)), p.parent.name)
            for p in sorted(photos.glob("*/*")) if p.is_file()]


@pytest.fixture
def command_output(sample_dir, tmp_path):
    out = tmp_path / "by-command"
    run_cli("--input", sample_dir, "--output", out, *FLAGS)
    return out


@pytest.mark.parametrize("planner", ["spill", "shuffle"])
def test_write_to_recordio_in_a_pipeline_of_ones_own(sample_dir, tmp_path, command_output, planner):
    out = tmp_path / "by-transform"
    with beam.Pipeline(runner=FnApiRunner()) as p:
        manifest = p | beam.Create(pairs(sample_dir)) | WriteToRecordIO(
            str(out), input=str(sample_dir), planner=planner, **OPTIONS)
        manifest | beam.Map(lambda m, path=str(tmp_path / "returned.json"): Path(path).write_text(json.dumps(m)))
    # complete when the `with` block ends: verifiable, and the command's bytes
    assert data_files(out) == data_files(command_output)
    assert run_cli(str(out), module="pipeline.verify").returncode == 0
    returned = json.loads((tmp_path / "returned.json").read_text())
    assert returned["splits"] == load_manifest(out)["splits"] == load_manifest(command_output)["splits"]


def test_images_without_an_input_root_keep_their_full_paths(sample_dir, tmp_path):
    out = tmp_path / "out"
    given = [Image(path, (label,)) for path, label in pairs(sample_dir)]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        p | beam.Create([given[:10], given[10:]]) | WriteToRecordIO(str(out), classes=["rocket", "astronaut", "cat",
                                                                                       "coffee", "flower"])
    m = load_manifest(out)
    assert m["classes"] == ["rocket", "astronaut", "cat", "coffee", "flower"]  # the ids given, not sorted
    lines = [line.split("\t") for split in m["splits"].values()
             for line in (out / split["lst"]).read_text().splitlines()]
    assert len(lines) == 30
    for _, label, path in lines:
        assert os.path.isabs(path) and m["classes"][int(float(label))] == Path(path).parent.name


def test_multi_label_pairs_and_a_bad_element_is_a_recorded_skip(sample_dir, tmp_path):
    out = tmp_path / "out"
    elements = [(path, [label, "photo"]) for path, label in pairs(sample_dir, absolute=False)]
    elements.append(("cat/does-not-exist.jpg", ["cat"]))
    elements.append(42)  # not an image at all
    with beam.Pipeline(runner=FnApiRunner()) as p:
        p | beam.Create(elements) | WriteToRecordIO(str(out), input=str(sample_dir), label_format="multi-hot")
    m = load_manifest(out)
    assert m["classes"][-1] == "photo" or "photo" in m["classes"]
    assert m["labels"]["format"] == "multi-hot" and m["labels"]["width"] == 6
    assert sum(s["records"] for s in m["splits"].values()) == 30
    reasons = sorted(json.loads(line)["reason"] for line in (out / "errors.jsonl").read_text().splitlines())
    assert reasons == ["bad_element", "missing"]


def test_a_folder_source_and_the_transform(sample_dir, tmp_path, command_output):
    out = tmp_path / "out"
    folder = ReadImageFolder(str(sample_dir))
    with beam.Pipeline(runner=FnApiRunner()) as p:
        p | folder | WriteToRecordIO(str(out), input=str(sample_dir), classes=folder.classes, **OPTIONS)
    assert data_files(out) == data_files(command_output)


def test_options_are_checked_when_the_transform_is_made(tmp_path):
    with pytest.raises(UsageError, match="did you mean resize"):
        WriteToRecordIO(str(tmp_path / "out"), resise=256)
    with pytest.raises(UsageError, match="--quality for JPEG must be between 1 and 100"):
        WriteToRecordIO(str(tmp_path / "out"), resize=256, quality=0)


def test_a_different_dataset_in_the_output_is_refused_when_the_transform_is_applied(sample_dir, tmp_path,
                                                                                      command_output):
    with pytest.raises(ImgrecError, match="already holds a different dataset"):
        with beam.Pipeline(runner=FnApiRunner()) as p:
            p | beam.Create(pairs(sample_dir)) | WriteToRecordIO(str(command_output), input=str(sample_dir),
                                                                 resize=64)


# ---------------------------------------------------------------- convert()


def test_convert_returns_the_manifest_and_leaves_the_hosts_logging_alone(sample_dir, tmp_path, command_output,
                                                                          capsys):
    from pipeline import convert

    root = logging.getLogger()
    stream = io.StringIO()
    host = logging.StreamHandler(stream)
    root.addHandler(host)
    before = (list(root.handlers), list(root.filters), root.level)
    try:
        manifest = convert(str(sample_dir), str(tmp_path / "out"), **OPTIONS)
        assert (list(root.handlers), list(root.filters), root.level) == before
        logging.getLogger("host.app").warning("the host still logs")
    finally:
        root.removeHandler(host)
    assert "the host still logs" in stream.getvalue()
    assert "apitools" not in stream.getvalue()
    out = capsys.readouterr()
    assert out.out == "" and out.err == "", "convert() printed something"
    assert manifest["splits"] == load_manifest(tmp_path / "out")["splits"]
    assert data_files(tmp_path / "out") == data_files(command_output)


def test_convert_raises_the_commands_error(tmp_path):
    from pipeline import convert

    with pytest.raises(ImgrecError) as info:
        convert(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert info.value.lines() == ["input folder %s does not exist" % (tmp_path / "nowhere")]
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="unknown option 'resise'"):
        convert(str(tmp_path), str(tmp_path / "out"), resise=3)
